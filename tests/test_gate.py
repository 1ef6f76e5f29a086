"""The intake gate wakes every waiter on resume, and pause/resume report whether they changed it."""

from __future__ import annotations

import anyio
import pytest

from montaged.gate import IntakeGate


@pytest.mark.anyio
async def test_waiters_block_while_paused_and_all_wake_on_resume() -> None:
    gate = IntakeGate()
    await gate.wait_open()  # open: returns at once
    assert gate.pause() and not gate.pause()
    woke: list[int] = []

    async def waiter(n: int) -> None:
        await gate.wait_open()
        woke.append(n)

    async with anyio.create_task_group() as tg:
        for n in range(3):
            tg.start_soon(waiter, n)
        await anyio.sleep(0.05)
        assert woke == [] and gate.paused
        assert gate.resume() and not gate.resume()
    assert sorted(woke) == [0, 1, 2] and not gate.paused
