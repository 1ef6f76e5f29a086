"""The supervisor: a crashing side task is logged, counted, backed off and restarted; start-up
errors, fatal errors and cancellation still end it. Delays are shrunk to milliseconds here; the
bounds below rest on the back-off arithmetic, not on machine speed."""

from __future__ import annotations

import anyio
import pytest
import structlog.testing
from anyio.abc import TaskStatus

from montaged import metrics
from montaged.backoff import Backoff
from montaged.supervise import Supervisor

pytestmark = pytest.mark.anyio


def restarts_metric(task: str) -> float:
    return metrics.REGISTRY.get_sample_value("montage_task_restarts_total", {"task": task}) or 0.0


def test_backoff_doubles_to_its_cap_and_resets() -> None:
    b = Backoff(0.5, 3.0)
    assert [b.next() for _ in range(5)] == [0.5, 1.0, 2.0, 3.0, 3.0]
    b.reset()
    assert b.next() == 0.5
    jittered = Backoff(1.0, 1.0, jitter=0.2)
    assert all(0.8 <= jittered.next() <= 1.0 for _ in range(50))
    with pytest.raises(ValueError, match="first"):
        Backoff(0.0, 1.0)


async def test_a_crashing_task_is_restarted_counted_and_reported() -> None:
    sup = Supervisor(first_delay=0.01, max_delay=0.05)
    runs = 0
    seen_degraded: list[dict[str, str]] = []
    before = restarts_metric("flaky")

    async def flaky() -> None:
        nonlocal runs
        runs += 1
        if runs <= 3:
            raise OSError(f"boom {runs}")
        seen_degraded.append(sup.degraded())  # up again: nothing degraded while it runs

    with anyio.fail_after(10):
        await sup.run("flaky", flaky)
    assert runs == 4
    assert restarts_metric("flaky") - before == 3
    assert seen_degraded == [{}]
    assert "flaky" not in sup.parts  # ended normally: no longer reported


async def test_health_names_the_part_while_it_waits_to_restart() -> None:
    sup = Supervisor(first_delay=30.0, max_delay=30.0)

    async def broken() -> None:
        raise RuntimeError("results key has the wrong type")

    async with anyio.create_task_group() as tg:
        tg.start_soon(sup.run, "redis_results", broken)
        with anyio.fail_after(5):
            while not sup.degraded():  # noqa: ASYNC110 - polling the health the way /healthz reads it
                await anyio.sleep(0.01)
        assert sup.degraded() == {"redis_results": "RuntimeError: results key has the wrong type"}
        assert metrics.REGISTRY.get_sample_value("montage_task_up", {"task": "redis_results"}) == 0
        tg.cancel_scope.cancel()


async def test_errors_before_started_propagate_and_later_ones_restart() -> None:
    sup = Supervisor(first_delay=0.01)

    async def cannot_bind(*, task_status: TaskStatus[int] = anyio.TASK_STATUS_IGNORED) -> None:
        raise PermissionError("socket folder not writable")

    async with anyio.create_task_group() as tg:
        with pytest.raises(PermissionError):
            await sup.start(tg, "control", cannot_bind)

    runs = 0
    stop = anyio.Event()

    async def serve(*, task_status: TaskStatus[int] = anyio.TASK_STATUS_IGNORED) -> None:
        nonlocal runs
        runs += 1
        task_status.started(4242)
        if runs == 1:
            raise ConnectionResetError("client vanished mid-accept")
        stop.set()
        await anyio.sleep_forever()

    async with anyio.create_task_group() as tg:
        with anyio.fail_after(10):
            assert await sup.start(tg, "control", serve) == 4242
            await stop.wait()
        tg.cancel_scope.cancel()
    assert runs == 2


async def test_fatal_errors_and_cancellation_are_not_swallowed() -> None:
    class StoreGone(Exception):
        pass

    sup = Supervisor(first_delay=0.01, fatal=(StoreGone,))

    async def gone() -> None:
        raise StoreGone("unreachable past its retries")

    with pytest.raises(StoreGone):
        await sup.run("claims", gone)

    with anyio.move_on_after(0.1) as scope:
        await sup.run("sleeper", anyio.sleep_forever)
    assert scope.cancelled_caught


async def test_a_task_that_ran_long_starts_its_backoff_afresh() -> None:
    sup = Supervisor(first_delay=0.02, max_delay=10.0, stable_seconds=0.2)
    runs = 0

    async def sometimes_stable() -> None:
        nonlocal runs
        runs += 1
        if runs == 4:
            await anyio.sleep(0.3)  # longer than stable_seconds: counts as a healthy run
        if runs < 6:
            raise ValueError("again")

    with structlog.testing.capture_logs() as logs:
        await sup.run("stable", sometimes_stable)
    delays = [e["retry_in"] for e in logs if e["event"].startswith("task crashed")]
    assert all(e["error_code"] == "task_crashed" and e["task"] == "stable" for e in logs[:5])
    # runs 1-3 crash at once (each delay at least 1.6x the last: doubling against 20% jitter),
    # run 4 ran long (back-off starts over at first_delay), run 5 grows again
    assert len(delays) == 5
    assert delays[1] > delays[0] and delays[2] > delays[1]
    assert delays[3] <= 0.02 and delays[4] > delays[3]
