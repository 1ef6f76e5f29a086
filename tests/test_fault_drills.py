"""Fault drills against real processes and real services (issue 7.4).

* SIGKILL the daemon at a random point of every stage, many times over: each job still ends done
  exactly once, and the output folder never shows a duplicate, truncated or partial clip.
* PostgreSQL restarted under a running daemon: it waits with backoff, /healthz says degraded
  while the database is away, and every job completes afterwards.
* Redis stopped for 30 s under a daemon that caches transcripts in it and takes jobs from its
  stream: jobs complete through the store, health reports Redis down then recovered, and the
  outcome of a stream job that ended meanwhile is published once Redis is back.
* The output folder's filesystem full: the job fails with ``disk_full`` naming the folder, leaves
  nothing behind, and the daemon serves the next job.

The service drills stop and start the machine's own PostgreSQL and Redis (as CI runs them), always
restarting them in ``finally``; run them alone, not beside other tests that need those services.
Figures measured with these drills are in docs/operations-faults.md.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import anyio
import psutil
import pytest
from conftest import REDIS_URL, make_talk_clip, unavailable
from daemon_harness import JFK, DaemonProcess, request, wait_state

from montaged.control.client import ControlClient, ControlError

pytestmark = [pytest.mark.anyio]

FPS = 25
# Small outputs keep each render short, so many jobs and kills fit in the time budget.
SMALL = {"MONTAGE_PROFILES__VERTICAL__WIDTH": "180", "MONTAGE_PROFILES__VERTICAL__HEIGHT": "320"}
STAGES = ("probe", "transcribe", "diarize", "select", "frame", "render")
# How long after a job.stage event the kill may land: about the stage's length for these clips.
KILL_WINDOW = {"probe": 0.05, "transcribe": 0.5, "diarize": 0.02, "select": 0.05, "frame": 0.6, "render": 0.8}


# ---- helpers --------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


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
    stream = await anyio.connect_tcp("127.0.0.1", port)
    async with stream:
        await stream.send(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        data = b""
        try:
            while True:
                data += await stream.receive()
        except (anyio.EndOfStream, anyio.BrokenResourceError):
            pass
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body)


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


def _port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1.0):
            return True
    except OSError:
        return False


def _wait_port(port: int, *, open_: bool, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while _port_open(port) != open_:
        if time.monotonic() > deadline:
            raise AssertionError(f"port {port} still {'closed' if open_ else 'open'} after {timeout} s")
        time.sleep(0.1)


def orphan_encoders(root: Path) -> list[psutil.Process]:
    """ffmpeg processes working under ``root`` whose daemon is gone (adopted by PID 1)."""
    found = []
    for proc in psutil.process_iter(["name", "cmdline", "ppid"]):
        with contextlib.suppress(psutil.Error):
            if (proc.info["ppid"] == 1 and (proc.info["name"] or "").startswith("ffmpeg")
                    and str(root) in " ".join(proc.info["cmdline"] or [])):
                found.append(proc)
    return found


def kill_orphans(root: Path) -> int:
    """Safety net for a failed drill: leave no encoder of ours running on the machine."""
    procs = orphan_encoders(root)
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            proc.send_signal(signal.SIGKILL)
    return len(procs)


# ---- 1. SIGKILL at random points of every stage ---------------------------------------------------


@pytest.mark.timeout(420)
async def test_sigkill_in_every_stage_loses_and_duplicates_nothing(tmp_path: Path, pg_url: str) -> None:
    kills = int(os.environ.get("DRILL_KILLS", "20"))
    seed = int(os.environ.get("DRILL_SEED", str(random.SystemRandom().randrange(2**31))))
    rng = random.Random(seed)
    print(f"kill drill: {kills} kills, seed {seed} (DRILL_SEED={seed} replays the plan)")
    plan = [STAGES[i % len(STAGES)] for i in range(kills)]
    rng.shuffle(plan)
    media = tmp_path / "media"
    media.mkdir()
    out = tmp_path / "out"
    env = {**SMALL, "MONTAGE_STORE__URL": pg_url, "MONTAGE_STORE__LEASE_SECONDS": "3",
           "MONTAGE_STORE__HEARTBEAT_SECONDS": "0.5"}
    submitted: list[str] = []
    landed: list[tuple[str, str, float]] = []
    started = time.monotonic()

    async def top_up(sock: Path, want: int = 3) -> None:
        """Keep a few unfinished jobs, fresh ones among them, so every stage does real work."""
        missing = max(1, want - len(await _unfinished(sock)))
        for _ in range(missing):
            clip = await anyio.to_thread.run_sync(_clip, media, len(submitted))
            job = await request(sock, "submit", path=str(clip), options={"max_clips": 1})
            submitted.append(job["id"])

    left_behind: list[tuple[int, int]] = []  # (life, encoders a killed daemon left running)
    for life, stage in enumerate(plan):
        daemon = DaemonProcess(tmp_path, log_name=f"life{life:02d}", **env).start()
        try:
            await daemon.wait_ready(60)
            # the new daemon has cleaned up after the killed one: no stray encoder survives it
            if stray := await anyio.to_thread.run_sync(orphan_encoders, tmp_path):
                left_behind.append((life, len(stray)))
            await top_up(daemon.socket)
            victim = await _wait_stage_event(daemon.socket, stage, timeout=60)
            delay = rng.uniform(0, KILL_WINDOW[stage])
            await anyio.sleep(delay)
            daemon.kill()
            landed.append((stage, victim[:8], round(delay, 3)))
        finally:
            if daemon.proc is not None and daemon.proc.poll() is None:
                daemon.kill()
        # between lives nothing runs: whatever is visible under a final name must be whole
        await anyio.to_thread.run_sync(lambda: check_output_folder(out, finished=False))

    last = DaemonProcess(tmp_path, log_name="last", **env).start()
    try:
        await last.wait_ready(60)
        finals = await _all_done(last.socket, submitted, timeout=180)
        shows = [await request(last.socket, "show", job_id=j) for j in submitted]
    finally:
        last.stop()
        kill_orphans(tmp_path)
    reaped = sum(p.read_text().count("killed ffmpeg encoders a killed daemon left behind")
                 for p in tmp_path.glob("*.log"))
    elapsed = time.monotonic() - started
    print(f"kill drill: {len(landed)} kills {landed}; {len(submitted)} jobs; {elapsed:.1f} s; "
          f"restarts cleaned up after encoders left behind {reaped} times")
    assert [f["state"] for f in finals] == ["done"] * len(submitted), (seed, [
        (f["id"][:8], f["state"], f.get("error_class"), f.get("error_message")) for f in finals])
    assert {s for s, _, _ in landed} == set(STAGES) or kills < len(STAGES)
    restarts = 0
    for shown in shows:
        assert len(_events(shown, "job.done")) == 1, (seed, shown["job"]["id"], _events(shown, "job.done"))
        restarts += len(_events(shown, "job.claimed")) - 1
    expected = sorted(Path(c["path"]).name for f in finals for c in f["result"]["clips"])
    assert len(expected) == len(submitted)
    videos = sorted(p.name for p in out.glob("*.mp4"))
    assert videos == expected, f"seed {seed}: folder {videos}, jobs made {expected}"
    assert check_output_folder(out, finished=True) == len(expected)
    assert left_behind == [], f"encoders of killed daemons still running after a restart: {left_behind}"
    print(f"kill drill: {restarts} resumed claims over {len(submitted)} jobs")


# ---- 2. PostgreSQL restarted mid-run ------------------------------------------------------------


@contextmanager
def postgres_control() -> Iterator[Callable[[str], None]]:
    """``ctl("stop"|"start")`` for the machine's PostgreSQL cluster; always running again after."""
    conf = Path("/etc/postgresql")
    if shutil.which("pg_ctlcluster") is None or not conf.is_dir() or not list(conf.iterdir()):
        unavailable("pg_ctlcluster and a cluster under /etc/postgresql are needed to restart PostgreSQL")
    version = sorted(p.name for p in conf.iterdir())[-1]
    base = ["pg_ctlcluster", "--skip-systemctl-redirect", version, "main"]

    def ctl(action: str) -> None:
        extra = ["-m", "fast"] if action == "stop" else []
        proc = subprocess.run([*base, action, *extra], capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, f"pg_ctlcluster {action}: {proc.stdout}{proc.stderr}"
        _wait_port(5432, open_=action == "start")

    try:
        yield ctl
    finally:
        if subprocess.run([*base, "status"], capture_output=True, timeout=30).returncode != 0:
            ctl("start")
        _wait_port(5432, open_=True)


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
async def test_postgres_restart_midrun(tmp_path: Path, pg_url: str) -> None:
    media = tmp_path / "media"
    media.mkdir()
    clips = [_clip(media, i) for i in range(6)]
    port = _free_port()
    env = {**SMALL, "MONTAGE_STORE__URL": pg_url, "MONTAGE_STORE__LEASE_SECONDS": "3",
           "MONTAGE_STORE__HEARTBEAT_SECONDS": "0.5", "MONTAGE_METRICS__PORT": str(port),
           "MONTAGE_STORE__CONNECT_TIMEOUT_SECONDS": "2"}
    daemon = DaemonProcess(tmp_path, **env).start()
    with postgres_control() as pg:
        try:
            await daemon.wait_ready(60)
            assert (await _health(port))[0] == 200
            ids = [(await request(daemon.socket, "submit", path=str(c), options={"max_clips": 1}))["id"]
                   for c in clips]
            await _wait_event(daemon.socket, {"job.done"}, timeout=60)  # some done, others in flight
            in_flight = (await request(daemon.socket, "stats"))["in_flight"]
            await anyio.to_thread.run_sync(pg, "stop")
            stopped = time.monotonic()
            await anyio.sleep(1.5)  # one probe interval and a little: health must know by now
            down = await _sample_health(port, 3.5)
            refused = await _refusal(daemon.socket, "submit", path=str(clips[0]))
            assert (await request(daemon.socket, "ping"))["pong"] is True  # the socket still answers
            await anyio.to_thread.run_sync(pg, "start")
            outage = time.monotonic() - stopped
            back = await _wait_health(port, 200, timeout=15)
            finals = await _all_done(daemon.socket, ids, timeout=150)
            shows = [await request(daemon.socket, "show", job_id=j) for j in ids]
            assert daemon.proc is not None and daemon.proc.poll() is None, "the daemon died with the database"
        finally:
            daemon.stop()
    print(f"postgres drill: {len(in_flight)} jobs in flight at stop, outage {outage:.1f} s")
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


# ---- 3. Redis stopped for 30 s ------------------------------------------------------------------

REDIS_OUTAGE = float(os.environ.get("DRILL_REDIS_OUTAGE", "30"))


@contextmanager
def redis_control() -> Iterator[tuple[Callable[[], None], Callable[[], None]]]:
    """(stop, start) for the machine's Redis on 6379, started again in ``finally`` if down."""
    if shutil.which("redis-server") is None or shutil.which("redis-cli") is None:
        unavailable("redis-server and redis-cli are needed to stop and start Redis")
    if not _port_open(6379):
        unavailable("Redis is not listening on 127.0.0.1:6379")

    def stop() -> None:
        subprocess.run(["redis-cli", "-h", "127.0.0.1", "-p", "6379", "shutdown", "nosave"],
                       capture_output=True, timeout=30)
        _wait_port(6379, open_=False)

    def start() -> None:
        subprocess.run(
            ["redis-server", "--daemonize", "yes", "--bind", "127.0.0.1", "-::1", "--port", "6379",
             "--save", "", "--appendonly", "no", "--dir", "/var/lib/redis",
             "--logfile", "/var/log/redis/ci.log"],
            check=True, capture_output=True, timeout=30,
        )  # fmt: skip
        _wait_port(6379, open_=True)

    try:
        yield stop, start
    finally:
        if not _port_open(6379):
            start()


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
async def test_redis_down_30s(tmp_path: Path, pg_url: str, redis_prefix: str) -> None:
    """Redis carries the transcript cache and the job stream. While it is away (and after it
    comes back empty: no persistence), socket jobs go on through the store, the stream job that
    was running finishes and its outcome is published once Redis is back, and a new entry works."""
    import redis

    media = tmp_path / "media"
    media.mkdir()
    clips = [_clip(media, i) for i in range(5)]
    port = _free_port()
    jobs_stream, results_stream = f"{redis_prefix}jobs", f"{redis_prefix}results"
    env = {**SMALL, "MONTAGE_STORE__URL": pg_url, "MONTAGE_METRICS__PORT": str(port),
           "MONTAGE_CACHE__REDIS_URL": REDIS_URL, "MONTAGE_CACHE__KEY_PREFIX": redis_prefix,
           "MONTAGE_CACHE__REDIS_TIMEOUT_SECONDS": "1",
           "MONTAGE_REDIS_INTAKE__ENABLED": "true", "MONTAGE_REDIS_INTAKE__STREAM": jobs_stream,
           "MONTAGE_REDIS_INTAKE__RESULTS_STREAM": results_stream,
           "MONTAGE_REDIS_INTAKE__DEAD_LETTER_STREAM": f"{redis_prefix}dead",
           "MONTAGE_REDIS_INTAKE__GROUP": f"{redis_prefix}group"}
    options = json.dumps({"max_clips": 1})
    daemon = DaemonProcess(tmp_path, **env).start()
    client = redis.Redis.from_url(REDIS_URL, decode_responses=True)
    with redis_control() as (stop, start):
        try:
            await daemon.wait_ready(60)
            code, body = await _health(port)
            assert code == 200 and body["redis"] is True, body
            first = await request(daemon.socket, "submit", path=str(clips[0]), options={"max_clips": 1})
            assert (await wait_state(daemon.socket, first["id"], {"done", "failed"}, 60))["state"] == "done"
            cached = list(client.scan_iter(f"{redis_prefix}transcript:*"))

            # a stream job under way when Redis goes
            client.xadd(jobs_stream, {"path": str(clips[1]), "options": options, "request_id": "before"})
            before = await _job_from_entry(daemon.socket, "before")
            await anyio.to_thread.run_sync(stop)
            stopped = time.monotonic()
            during = [(await request(daemon.socket, "submit", path=str(c), options={"max_clips": 1}))["id"]
                      for c in clips[2:4]]
            await anyio.sleep(1.5)
            down = await _sample_health(port, 3.0)
            finals = await _all_done(daemon.socket, [before["id"], *during], timeout=90)
            stats = await request(daemon.socket, "stats")
            await anyio.sleep(max(0.0, REDIS_OUTAGE - (time.monotonic() - stopped)))
            still = await _health(port)
            await anyio.to_thread.run_sync(start)
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
    print(f"redis drill: outage {outage:.1f} s, {len(finals)} jobs done meanwhile, health {down[0]}")
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
async def test_disk_full_output(tmp_path: Path, pg_url: str) -> None:
    media = tmp_path / "media"
    media.mkdir()
    clips = [_clip(media, i) for i in range(2)]
    out = tmp_path / "out"
    with tiny_tmpfs(out, "4m"):
        filler = fill(out, leave=48 * 1024)
        daemon = DaemonProcess(tmp_path, **SMALL, MONTAGE_STORE__URL=pg_url).start()
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
    print(f"disk-full drill: {failed['error_message']!r}")
    assert failed["state"] == "failed" and failed["error_class"] == "disk_full", failed
    assert failed["error_stage"] == "render"
    assert str(out) in failed["error_message"] and "free space" in failed["error_message"]
    assert left == ["filler.bin"], f"partial output left behind: {left}"
    assert done["state"] == "done" and retried["state"] == "done", (done, retried)
    assert final == 2
