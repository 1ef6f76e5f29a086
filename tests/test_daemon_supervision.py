"""A side task that crashes does not stop a real daemon: it is restarted, counted, and /healthz
says which part is down while it waits. The fault is injected into the stats loop's snapshot
(the test's only stand-in); everything else is the product's own code path."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from typing import Any

import anyio
import pytest
from conftest import make_talk_clip
from daemon_harness import JFK, http_text, request, running_daemon, wait_state

from montaged.control.handlers import Stats

pytestmark = [pytest.mark.timeout(300), pytest.mark.anyio]


async def test_a_crashing_side_task_is_restarted_and_reported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_snapshot = Stats.snapshot
    crashes = 0
    crashing = True
    three_crashes = anyio.Event()

    async def failing_snapshot(self: Stats) -> dict[str, object]:
        nonlocal crashes
        if crashing:
            crashes += 1
            if crashes >= 3:
                three_crashes.set()
            raise RuntimeError("results key holds a list, not a hash")
        return await real_snapshot(self)

    async with running_daemon(tmp_path, MONTAGE_FRAME__ENABLED="false") as daemon:
        assert daemon.metrics_port
        monkeypatch.setattr(Stats, "snapshot", failing_snapshot)
        health: dict[str, object] = {}
        with anyio.fail_after(60):
            while "stats" not in health.get("degraded", {}):  # type: ignore[operator]
                status, body = await http_text(daemon.metrics_port, "/healthz")
                health = json.loads(body)
                await anyio.sleep(0.05)
        assert status == 503 and health["status"] == "degraded"
        assert "results key holds a list" in health["degraded"]["stats"]  # type: ignore[index]
        # the rest of the daemon serves on while the part is down
        await request(daemon.settings.control.socket(), "ping")

        with anyio.fail_after(60):
            await three_crashes.wait()
        crashing = False
        with anyio.fail_after(90):  # back-off after 3+ crashes is a few seconds at most
            while health["status"] != "ok":
                await anyio.sleep(0.2)
                status, body = await http_text(daemon.metrics_port, "/healthz")
                health = json.loads(body)
        assert status == 200 and health["degraded"] == {}
        _, metrics_text = await http_text(daemon.metrics_port, "/metrics")
        restarts = [line for line in metrics_text.splitlines()
                    if line.startswith('montage_task_restarts_total{task="stats"}')]
        assert restarts and float(restarts[0].split()[-1]) >= 3
        assert daemon.supervisor.restarts()["stats"] >= 3


async def test_health_says_degraded_while_a_dead_pool_worker_is_replaced(tmp_path: Path) -> None:
    async with running_daemon(tmp_path, MONTAGE_FRAME__ENABLED="false") as daemon:
        assert daemon.metrics_port and daemon._res is not None
        pool = daemon._res.whisper.pool
        victim = pool.pids[0]
        os.kill(victim, signal.SIGKILL)
        seen: set[str] = set()
        with anyio.fail_after(60):  # replacing a worker reloads its model: 1-3 s measured
            while True:
                _, body = await http_text(daemon.metrics_port, "/healthz")
                health = json.loads(body)
                seen |= set(health["degraded"])
                if seen and health["status"] == "ok":
                    break
                await anyio.sleep(0.02)
        assert seen == {"pool:whisper"}
        assert victim not in pool.pids and len(pool.pids) == 1


async def test_a_crash_in_the_claim_loop_is_restarted_and_the_job_still_runs(tmp_path: Path) -> None:
    talk = make_talk_clip(tmp_path / "talk.mp4", seconds=4, size="320x180", speech=JFK)
    async with running_daemon(tmp_path, MONTAGE_FRAME__ENABLED="false") as daemon:
        assert daemon.store is not None
        real_claim = daemon.store.claim
        crashed = anyio.Event()

        async def claim_once_broken(*args: Any, **kwargs: Any) -> Any:
            if not crashed.is_set():
                crashed.set()
                raise KeyError("a row without the column the code expected")
            return await real_claim(*args, **kwargs)

        daemon.store.claim = claim_once_broken  # type: ignore[method-assign]
        with anyio.fail_after(30):
            await crashed.wait()
        sock = daemon.settings.control.socket()
        job = await request(sock, "submit", path=str(talk))
        done = await wait_state(sock, job["id"], {"done", "failed"})
        assert done["state"] == "done", done
        assert daemon.supervisor.restarts()["claims"] == 1
