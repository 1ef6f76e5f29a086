"""The memory guard in a real daemon: a pause mark above this machine's available memory (set in
the config) holds claims back while the daemon serves on, the stats, the gauges and the TUI's
status line say so, and lowering the marks lets the queued job run to the end."""

from __future__ import annotations

import json
from pathlib import Path

import anyio
import pytest
from conftest import make_talk_clip
from daemon_harness import JFK, http_text, request, running_daemon, wait_state

from montaged.config import load
from montaged.errors import ConfigError
from montaged.memory_guard import MIB
from tui.widgets.status import status_text

pytestmark = [pytest.mark.timeout(300), pytest.mark.anyio]

TIB_MB = 1 << 20


def _gauge(text: str, name: str) -> float:
    return float(next(line.split()[-1] for line in text.splitlines() if line.startswith(name + " ")))


async def test_low_memory_pauses_claims_and_they_resume(tmp_path: Path) -> None:
    talk = make_talk_clip(tmp_path / "talk.mp4", seconds=4, size="320x180", speech=JFK)
    async with running_daemon(tmp_path, MONTAGE_FRAME__ENABLED="false",
                              MONTAGE_DAEMON__MEMORY_PAUSE_BELOW_MB=str(TIB_MB),
                              MONTAGE_DAEMON__MEMORY_RESUME_ABOVE_MB=str(2 * TIB_MB)) as daemon:
        sock = daemon.settings.control.socket()
        assert daemon.pipeline is not None and daemon.metrics_port
        guard = daemon.pipeline.memory_guard
        assert guard is not None and guard.paused and guard.available is not None
        job = await request(sock, "submit", path=str(talk))
        await anyio.sleep(2.0)  # ten claim polls (0.2 s each): none may take it
        shown = (await request(sock, "show", job_id=job["id"]))["job"]
        assert shown["state"] == "queued"
        stats = await request(sock, "stats")
        assert stats["memory_paused"] is True and stats["paused"] is False
        assert "LOW MEMORY" in status_text(True, "w", stats, {}).plain
        _, text = await http_text(daemon.metrics_port, "/metrics")
        assert _gauge(text, "montage_memory_guard_paused") == 1
        assert 0 < _gauge(text, "montage_memory_available_bytes") < TIB_MB * MIB

        guard.pause_below, guard.resume_above = MIB, 2 * MIB  # memory is back (marks lowered)
        done = await wait_state(sock, job["id"], {"done", "failed"})
        assert done["state"] == "done", json.dumps(done)[:2000]
        stats = await request(sock, "stats")
        assert stats["memory_paused"] is False
        _, text = await http_text(daemon.metrics_port, "/metrics")
        assert _gauge(text, "montage_memory_guard_paused") == 0


def test_resume_mark_below_the_pause_mark_is_a_config_error(tmp_path: Path) -> None:
    env = {"HOME": str(tmp_path), "MONTAGE_DAEMON__MEMORY_PAUSE_BELOW_MB": "4096",
           "MONTAGE_DAEMON__MEMORY_RESUME_ABOVE_MB": "1024"}
    with pytest.raises(ConfigError, match=r"memory_resume_above_mb \(1024\) must be at least"):
        load(None, env=env)
    off = load(None, env={"HOME": str(tmp_path), "MONTAGE_DAEMON__MEMORY_PAUSE_BELOW_MB": "0",
                          "MONTAGE_DAEMON__MEMORY_RESUME_ABOVE_MB": "0"})
    assert off.daemon.memory_pause_below_mb == 0
