"""Stages run concurrently across jobs over bounded queues, and a slow stage pushes back.

* Several jobs in flight at once sit in different stages at the same moment (seen in the events
  and in ``stats`` busy counts); per-stage workers follow the pools, which follow the cores.
* With render made the bottleneck (one worker, one slot, its encoder frozen), the queues in front
  of it fill to their capacity and never beyond, jobs wait in the store instead of in memory, and
  the daemon's memory stays flat; thawed, every job completes.
"""

from __future__ import annotations

import contextlib
import json
import time
from pathlib import Path
from typing import Any

import anyio
import psutil
import pytest
from conftest import make_talk_clip
from daemon_harness import JFK, DaemonProcess, daemon_settings, request

from montaged.control.client import ControlClient
from montaged.hostlimits import cpu_limits
from montaged.model import STAGES
from montaged.resources_plan import plan_resources

pytestmark = [pytest.mark.anyio]


def _clips(folder: Path, n: int, seconds: float = 4.0) -> list[Path]:
    """Distinct clips (lengths differ, so do content hashes: every job does real work)."""
    folder.mkdir(exist_ok=True)
    return [make_talk_clip(folder / f"talk{i:02d}.mp4", seconds=seconds + 0.08 * i, size="320x180",
                           speech=JFK) for i in range(n)]


class Sampler:
    """Polls ``stats`` (and the daemon's memory) until stopped; keeps every sample."""

    def __init__(self, daemon: DaemonProcess, every: float) -> None:
        self.daemon = daemon
        self.every = every
        self.samples: list[dict[str, Any]] = []
        self.done = anyio.Event()

    def rss(self) -> dict[str, int]:
        """Resident memory in bytes of the daemon and of each kind of child process."""
        assert self.daemon.proc is not None
        root = psutil.Process(self.daemon.proc.pid)
        out = {"daemon": root.memory_info().rss}
        for proc in root.children(recursive=True):
            with contextlib.suppress(psutil.Error):
                name = proc.name()
                out[name] = out.get(name, 0) + proc.memory_info().rss
        return out

    async def run(self) -> None:
        async with ControlClient(self.daemon.socket) as c:
            while not self.done.is_set():
                stats = await c.request("stats")
                self.samples.append({"t": time.monotonic(), "queues": stats["queues"],
                                     "in_flight": len(stats["in_flight"]), "queued": stats["jobs"]["queued"],
                                     "done": stats["jobs"]["done"], "rss": self.rss()})
                with anyio.move_on_after(self.every):
                    await self.done.wait()


async def _run_jobs(daemon: DaemonProcess, clips: list[Path], sampler: Sampler, timeout: float
                    ) -> list[dict[str, Any]]:
    """Submit every clip at once; return the job events (stage entries and ends) as they came."""
    events: list[dict[str, Any]] = []
    async with anyio.create_task_group() as tg, ControlClient(daemon.socket) as feed:
        await feed.request("subscribe")
        tg.start_soon(sampler.run)
        ids = {(await request(daemon.socket, "submit", path=str(c), options={"max_clips": 1}))["id"]
               for c in clips}
        left = set(ids)
        with anyio.fail_after(timeout):
            async for event in feed.events():
                if event["event"] in ("job.stage", "job.done", "job.failed") and event["job_id"] in ids:
                    events.append({**event, "t": time.monotonic()})
                    if event["event"] != "job.stage":
                        left.discard(event["job_id"])
                        if not left:
                            break
        sampler.done.set()
    return events


def _overlaps(events: list[dict[str, Any]]) -> tuple[int, dict[str, str]]:
    """Most distinct stages occupied at one moment, and that moment's {job: stage}."""
    current: dict[str, str] = {}
    best: tuple[int, dict[str, str]] = (0, {})
    for e in events:
        if e["event"] == "job.stage":
            current[e["job_id"]] = e["data"]["stage"]
        else:
            current.pop(e["job_id"], None)
        distinct = len(set(current.values()))
        if distinct > best[0]:
            best = (distinct, dict(current))
    return best


@pytest.mark.timeout(180)
async def test_jobs_overlap_across_stages_and_workers_follow_the_pools(tmp_path: Path) -> None:
    clips = _clips(tmp_path / "media", 5)
    env = {"MONTAGE_DAEMON__STAGE_WORKERS": json.dumps({"select": 3}),
           "MONTAGE_PROFILES__VERTICAL__WIDTH": "180", "MONTAGE_PROFILES__VERTICAL__HEIGHT": "320"}
    daemon = DaemonProcess(tmp_path, **env)
    for pool in ("MONTAGE_WHISPER__WORKERS", "MONTAGE_FRAME__WORKERS"):  # sized to this machine
        daemon.env.pop(pool)
    daemon.start()
    try:
        await daemon.wait_ready(60)
        stats = await request(daemon.socket, "stats")
        sampler = Sampler(daemon, every=0.05)
        events = await _run_jobs(daemon, clips, sampler, timeout=150)
    finally:
        daemon.stop()
    assert [e for e in events if e["event"] == "job.failed"] == []

    distinct, moment = _overlaps(events)
    busy_stages = max(sum(1 for q in s["queues"].values() if q["busy"]) for s in sampler.samples)
    print(f"overlap: {distinct} stages at once {moment}; stats saw {busy_stages} busy stages at once")
    assert distinct >= 2, f"jobs never overlapped across stages: {events}"
    assert busy_stages >= 2, "stats never showed two stages working at once"

    # workers: the configured count wins; pooled stages take one job per pool slot; pools from the
    # sizing plan (the cores this process may use)
    settings = daemon_settings(tmp_path, **env)
    settings.whisper.workers = settings.frame.workers = 0
    workers = {stage: q["workers"] for stage, q in stats["queues"].items()}
    whisper = stats["pools"]["whisper"]
    cpu = cpu_limits()
    plan = plan_resources(settings, cpu, device=whisper["device"])
    assert whisper["workers"] == plan.whisper_workers
    if whisper["device"] == "cpu":
        assert whisper["workers"] == max(1, cpu.usable // min(2, cpu.usable))
    assert workers == {"probe": 2, "transcribe": whisper["workers"], "diarize": 2, "select": 3,
                       "frame": plan.vision_workers, "render": plan.render_slots}
    assert plan.vision_workers == max(1, min(4, cpu.usable))  # one per usable core, at most 4


def _encoders(daemon: DaemonProcess) -> list[psutil.Process]:
    assert daemon.proc is not None
    found = []
    for proc in psutil.Process(daemon.proc.pid).children(recursive=True):
        with contextlib.suppress(psutil.Error):
            if proc.name().startswith("ffmpeg") and any(".part.mp4" in a for a in proc.cmdline()):
                found.append(proc)
    return found


@pytest.mark.timeout(240)
async def test_stalled_render_pushes_back_to_the_store(tmp_path: Path) -> None:
    """Render gets one worker and one slot, and its encoder is frozen (SIGSTOP: a stuck disk or
    encoder, the slowest a stage can be). Every queue fills to its capacity and no further, the
    pipeline holds exactly what its workers and queues can, the rest waits in the store, memory is
    flat; thawed, every job completes."""
    jobs = 18
    clips = _clips(tmp_path / "media", jobs)
    env = {
        "MONTAGE_DAEMON__STAGE_WORKERS": json.dumps(dict.fromkeys(STAGES, 1)),
        "MONTAGE_DAEMON__STAGE_QUEUE_SIZE": "1",
        "MONTAGE_DAEMON__CONCURRENT_JOBS": "50",  # only the queues may hold jobs back
        "MONTAGE_RENDER__WORKERS": "1",
        "MONTAGE_FRAME__ENABLED": "false",
        "MONTAGE_PROFILES__VERTICAL__WIDTH": "180", "MONTAGE_PROFILES__VERTICAL__HEIGHT": "320",
    }
    daemon = DaemonProcess(tmp_path, **env).start()
    frozen: list[psutil.Process] = []
    try:
        await daemon.wait_ready(60)
        sampler = Sampler(daemon, every=0.1)
        async with anyio.create_task_group() as tg:
            tg.start_soon(sampler.run)
            ids = [(await request(daemon.socket, "submit", path=str(c), options={"max_clips": 1}))["id"]
                   for c in clips]
            with anyio.fail_after(60):
                while not frozen:
                    for proc in _encoders(daemon):
                        proc.suspend()
                        frozen.append(proc)
                    await anyio.sleep(0.02)
            queues = (await request(daemon.socket, "stats"))["queues"]
            bound = sum(q["workers"] + q["capacity"] for q in queues.values()) + 1  # +1: claim loop
            with anyio.fail_after(90):  # everything upstream of the frozen encoder fills up
                while not sampler.samples or sampler.samples[-1]["in_flight"] < bound:  # noqa: ASYNC110
                    await anyio.sleep(0.1)
            filled_at = len(sampler.samples)
            await anyio.sleep(3.0)  # held full: nothing more may come in
            held = sampler.samples[filled_at:]
            for proc in frozen:
                proc.resume()
            frozen.clear()
            with anyio.fail_after(120):
                while sampler.samples[-1]["done"] < jobs:  # noqa: ASYNC110 (polled figures)
                    await anyio.sleep(0.2)
            sampler.done.set()
        finals = [(await request(daemon.socket, "show", job_id=j))["job"]["state"] for j in ids]
    finally:
        for proc in frozen:
            with contextlib.suppress(psutil.Error):
                proc.resume()
        daemon.stop()
    samples = sampler.samples
    assert finals == ["done"] * jobs

    over = [(s["t"], st, q) for s in samples for st, q in s["queues"].items() if q["depth"] > q["capacity"]]
    assert over == [], "a queue held more than its capacity"
    assert bound == 2 * len(STAGES) + 1
    assert max(s["in_flight"] for s in samples) == bound
    assert len(held) >= 10
    for s in held:  # while render is stuck: every queue full, the pipeline full, the rest in the store
        assert {st: q["depth"] for st, q in s["queues"].items()} == dict.fromkeys(STAGES, 1), s["queues"]
        assert s["in_flight"] == bound and s["queued"] == jobs - bound, s
        assert s["queues"]["render"]["busy"] == 1

    # memory: the daemon itself holds the jobs in flight; its workers and encoders come and go
    mb = 1024 * 1024
    held_rss = [s["rss"]["daemon"] for s in held]
    after = [s["rss"]["daemon"] for s in samples[filled_at + len(held):]]
    tree = max(sum(s["rss"].values()) for s in samples)
    print(f"push-back: held {bound} jobs in flight ({jobs - bound} waiting in the store) for "
          f"{held[-1]['t'] - held[0]['t']:.1f} s; daemon RSS {min(held_rss) / mb:.0f}-"
          f"{max(held_rss) / mb:.0f} MiB while full, {max(after) / mb:.0f} MiB at most until all {jobs} "
          f"were done; whole process tree peaked at {tree / mb:.0f} MiB")
    assert max(held_rss) - min(held_rss) < 16 * mb, "memory moved while nothing could move"
    assert max(after) <= max(held_rss) + 48 * mb, "memory grew with the jobs done"
