"""Snapshots of montage-tui's main screens at 80×24 (pytest-textual-snapshot).

The screens are fed fixed data in the daemon's own shapes (``Job.to_dict()`` records and a
``daemon.stats`` snapshot, modelled on a real run of the JFK clip) through the same messages the
socket feed posts, with the clock pinned, so every run draws the same pixels. The live path (socket,
events, reconnects) is covered against real daemons in test_tui.py.

Update after an intended change: ``.venv/bin/pytest tests/test_tui_snapshots.py --snapshot-update``.
"""

from __future__ import annotations

import copy
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from textual.pilot import Pilot
from textual.widgets import Static

from tui.app import MontageApp, make_app
from tui.messages import Connected, JobsLoaded, StatsReceived, Unreachable

pytestmark = [pytest.mark.timeout(60)]

NOW = 1_795_544_000.0
SOCKET = "/run/montage/montaged.sock"
SIZE = (80, 24)
Run = Callable[[Pilot[None]], Awaitable[None]]


def _job(job_id: str, source: str, state: str, age: float, **extra: Any) -> dict[str, Any]:
    job: dict[str, Any] = {
        "id": job_id,
        "spec": {"source": source, "profile": "vertical", "origin": "socket", "options": {},
                 "output_dir": None},
        "state": state, "stage": None, "progress": 0.0, "created_at": NOW - age, "updated_at": NOW - age / 2,
        "attempts": 0, "content_hash": None, "error_class": None, "error_message": None, "error_stage": None,
        "stopped_at": None, "result": {}, "worker": None,
    }
    job.update(extra)
    return job


EXCERPT = ("And so my fellow Americans ask not what your country can do for you ask what you can do for"
           " your country.")
DONE_RESULT = {
    "clips": [
        {"index": 0, "path": "/srv/clips/jfk-inaugural-c2d84f0e-01.mp4", "start": 0.0, "end": 10.92,
         "encoder": "libx264", "width": 1080, "height": 1920, "frames": 273, "seconds": 1.99, "score": 0.1414,
         "reason": "brisk, engaged pace", "text": EXCERPT},
    ],
    "media": {"duration": 11.0, "width": 640, "height": 360, "fps": 25.0},
    "stage_seconds": {"probe": 0.018, "transcribe": 0.628, "diarize": 0.001, "select": 0.008, "frame": 1.686,
                      "render": 1.991},
    "cached_stages": [],
    "wall_seconds": 4.333,
    "processing_ratio": 0.3939,
    "transcript": {"engine": "rover", "model": "tiny.en+nova-3", "words": 22, "language": "en",
                   "excerpt": EXCERPT},
    "notes": [],
    "encoder": "libx264",
    "cost": 0.0011,
}
JOBS = [
    _job("a71be04c9d13", "/srv/talks/panel-q-and-a.mkv", "queued", 30),
    _job("3f9c1a7e52b0", "/srv/talks/keynote-2026.mp4", "running", 95, stage="transcribe", progress=0.31,
         attempts=1, worker="talks-1:4121"),
    _job("c2d84f0e6a51", "/srv/talks/jfk-inaugural.mp4", "done", 600, stage="render", progress=1.0,
         attempts=1, worker="talks-1:4121", result=DONE_RESULT),
    _job("e5a0b6c3d7f8", "/srv/talks/notes.mp4", "failed", 1200, stage="probe", progress=0.0, attempts=1,
         worker="talks-1:4121", error_stage="probe", error_class="not_media",
         error_message="/srv/talks/notes.mp4: not an audio or video file FFmpeg recognises; submit a media"
                       " file (mp4, mkv, mov, wav)"),
    _job("0b7d3e9f1c24", "/srv/talks/rehearsal-take2.mov", "cancelled", 2000, stage="frame", progress=0.64,
         attempts=1, worker="talks-1:4121"),
]
STATS: dict[str, Any] = {
    "version": "0.1.0", "worker": "talks-1:4121", "uptime": 5400.0, "paused": False, "draining": False,
    "jobs": {"queued": 1, "running": 1, "done": 1, "failed": 1, "cancelled": 1},
    "in_flight": ["3f9c1a7e52b0"],
    "queues": {stage: {"depth": depth, "capacity": 2, "busy": busy} for stage, depth, busy in (
        ("probe", 0, 0), ("transcribe", 1, 1), ("diarize", 0, 0), ("select", 0, 0), ("frame", 2, 1),
        ("render", 0, 1))},
    "pools": {"whisper": {"workers": 2, "model": "base", "device": "cpu"}},
    "encoder": {"name": "libx264", "hardware": False},
    "cache": {"hits": 3, "misses": 5, "hit_ratio": 0.375},
    "throughput": {"processing_ratio": 0.39, "media_minutes_per_hour": 42.5,
                   "ratio_history": [0.52, 0.49, 0.47, 0.5, 0.44, 0.41, 0.43, 0.4, 0.39, 0.38, 0.41, 0.39],
                   "mmph_history": [12.0, 18.5, 22.0, 25.1, 30.2, 31.0, 35.4, 38.0, 40.2, 41.0, 42.1, 42.5],
                   "jobs_finished": 1},
    "budget": [
        {"period": "day:2026-11-24", "spent": 8.42, "reserved": 0.31, "remaining": 1.27, "cap": 10.0},
        {"period": "month:2026-11", "spent": 61.3, "reserved": 0.31, "remaining": 38.39, "cap": 100.0},
    ],
    "caps": {"job": 1.0, "day": 10.0, "month": 100.0},
    "cloud": {"enabled": True, "blocked": False, "reason": None},
    "health": {"store": True, "redis": True},
    "subscribers": 2,
}


def _blocked_stats() -> dict[str, Any]:
    stats = copy.deepcopy(STATS)
    stats["budget"][0].update(spent=10.0, reserved=0.0, remaining=0.0)
    stats["cloud"] = {"enabled": True, "blocked": True, "reason": "budget cap reached"}
    stats["paused"] = True
    return stats


def app() -> MontageApp:
    return make_app(socket=SOCKET, clock=lambda: NOW, connect=False)


def fed(stats: dict[str, Any] = STATS, *keys: str) -> Run:
    """Post what the feed would after connecting, then press ``keys``."""

    async def run_before(pilot: Pilot[None]) -> None:
        pilot.app.post_message(Connected(SOCKET, "0.1.0", "talks-1:4121"))
        pilot.app.post_message(JobsLoaded(copy.deepcopy(JOBS)))
        pilot.app.post_message(StatsReceived(copy.deepcopy(stats)))
        await pilot.pause()
        if keys:
            await pilot.press(*keys)
        await pilot.pause()

    return run_before


def test_unreachable(snap_compare: Any) -> None:
    async def run_before(pilot: Pilot[None]) -> None:
        reason = f"montaged is not running (no socket at {SOCKET}); start it with `montaged run`"
        pilot.app.post_message(Unreachable(SOCKET, reason, attempt=3))
        await pilot.pause()

    assert snap_compare(app(), terminal_size=SIZE, run_before=run_before)


def test_jobs(snap_compare: Any) -> None:
    assert snap_compare(app(), terminal_size=SIZE, run_before=fed())


def test_jobs_paused_filtered_to_failed(snap_compare: Any) -> None:
    assert snap_compare(app(), terminal_size=SIZE, run_before=fed(_blocked_stats(), "f", "f", "f", "f"))


def test_detail_done(snap_compare: Any) -> None:
    assert snap_compare(app(), terminal_size=SIZE, run_before=fed(STATS, "down", "down", "enter"))


def test_detail_failed(snap_compare: Any) -> None:
    assert snap_compare(app(), terminal_size=SIZE, run_before=fed(STATS, "down", "down", "down", "enter"))


def test_budget_near_cap(snap_compare: Any) -> None:
    assert snap_compare(app(), terminal_size=SIZE, run_before=fed(STATS, "down", "down", "2"))


def test_budget_blocked(snap_compare: Any) -> None:
    assert snap_compare(app(), terminal_size=SIZE, run_before=fed(_blocked_stats(), "2"))


def test_throughput(snap_compare: Any) -> None:
    assert snap_compare(app(), terminal_size=SIZE, run_before=fed(STATS, "3"))


def test_cancel_question(snap_compare: Any) -> None:
    assert snap_compare(app(), terminal_size=SIZE, run_before=fed(STATS, "down", "c"))


def test_submit_refused(snap_compare: Any) -> None:
    async def run_before(pilot: Pilot[None]) -> None:
        await fed()(pilot)
        await pilot.press("s", "ctrl+u")  # the dialog starts in the working directory: clear it
        await pilot.press(*[{"/": "slash", ".": "full_stop", "-": "minus"}.get(c, c)
                            for c in "/nonexistent-montage/talk.mp4"])
        await pilot.press("enter")
        for _ in range(100):  # the refusal comes from a worker; wait until it is drawn
            error = pilot.app.screen.query_one("#submit-error", Static)
            if str(error.render()):
                break
            await pilot.pause(0.05)

    assert snap_compare(app(), terminal_size=SIZE, run_before=run_before)
