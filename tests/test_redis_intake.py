"""Redis Streams intake against a real Redis, real stores, a real Submitter and EventBus.

Stream names carry the test's ``redis_prefix``; the multi-daemon test runs real processes on one
PostgreSQL store. Every wait has a timeout, and each test ends its intake tasks by cancelling.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import pytest
import redis.asyncio as aioredis
from conftest import REDIS_URL, ROOT, make_talk_clip

from montaged.config import RedisIntakeConfig
from montaged.events import EventBus
from montaged.gate import IntakeGate
from montaged.intake import Submitter
from montaged.metrics import REGISTRY
from montaged.model import Job, JobEvent, JobSpec, JobState
from montaged.sources.redis_stream import parse_entry, run_redis_intake
from montaged.store import JobStore, open_store
from montaged.store.sqlite import SqliteStore

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(120)]


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory, ffmpeg: str) -> Path:
    return make_talk_clip(tmp_path_factory.mktemp("media") / "talk.mp4", seconds=2.0)


def intake_cfg(prefix: str, **kw: Any) -> RedisIntakeConfig:
    base: dict[str, Any] = {"enabled": True, "stream": f"{prefix}jobs", "group": "montaged",
                            "results_stream": f"{prefix}results", "dead_letter_stream": f"{prefix}dead",
                            "block_ms": 200, "claim_idle_seconds": 0.6}
    return RedisIntakeConfig(**{**base, **kw})


class Rig:
    def __init__(self, store: JobStore, media_root: Path, prefix: str) -> None:
        self.store = store
        self.bus = EventBus()
        self.submitter = Submitter(store, self.bus, input_roots=[media_root], profiles=["vertical", "square"])
        self.redis = aioredis.Redis.from_url(REDIS_URL, decode_responses=True)
        self.prefix = prefix

    @asynccontextmanager
    async def intake(self, cfg: RedisIntakeConfig, url: str = REDIS_URL) -> AsyncIterator[None]:
        async with anyio.create_task_group() as tg:
            await tg.start(lambda task_status: run_redis_intake(
                cfg, url, self.submitter, self.bus, gate=IntakeGate(), task_status=task_status))
            yield
            tg.cancel_scope.cancel()

    async def wait_for(self, cond: Callable[[], Any], timeout: float = 15.0) -> Any:
        with anyio.fail_after(timeout):
            while not (found := await cond()):  # noqa: ASYNC110 (polls Redis and the store)
                await anyio.sleep(0.05)
        return found

    async def group(self, cfg: RedisIntakeConfig) -> dict[str, Any]:
        groups = await self.redis.xinfo_groups(cfg.stream)
        return next(g for g in groups if g["name"] == cfg.group)

    async def all_acked(self, cfg: RedisIntakeConfig) -> bool:
        g = await self.group(cfg)
        return bool(g["pending"] == 0 and g["lag"] == 0)

    async def entries(self, stream: str) -> list[dict[str, str]]:
        found: Any = await self.redis.xrange(stream)
        return [fields for _id, fields in found]


@asynccontextmanager
async def rig(store_url: str, media_root: Path, prefix: str) -> AsyncIterator[Rig]:
    store = open_store(store_url)
    await store.migrate()
    r = Rig(store, media_root, prefix)
    try:
        yield r
    finally:
        await r.redis.aclose()
        await store.close()


def redis_info(job: Job) -> dict[str, Any]:
    return dict(job.spec.options["redis"])


def test_parse_entry_names_the_problem() -> None:
    spec = parse_entry({"path": "/m/a.mp4", "options": '{"max_clips": 2}', "request_id": "r1"}, "vertical")
    assert (spec.source, spec.profile, spec.origin, spec.options) == ("/m/a.mp4", "vertical", "redis",
                                                                      {"max_clips": 2})
    for fields, words in [({}, "'path' is missing"), ({"path": "/a", "options": "{nope"}, "not JSON"),
                          ({"path": "/a", "options": "[1]"}, "must be a JSON object"),
                          ({"path": "/a", "proflie": "square"}, "unknown field(s) proflie")]:
        with pytest.raises(Exception, match=words.replace("(", r"\(").replace(")", r"\)")):
            parse_entry(fields, "vertical")


async def test_entries_become_jobs_and_refusals_are_dead_lettered(
    tmp_path: Path, sqlite_url: str, redis_prefix: str, clip: Path
) -> None:
    cfg = intake_cfg(redis_prefix)
    async with rig(sqlite_url, clip.parent, redis_prefix) as r:
        good = await r.redis.xadd(cfg.stream, {"path": str(clip), "profile": "square", "request_id": "req-1",
                                               "options": json.dumps({"max_clips": 2})})
        await r.redis.xadd(cfg.stream, {"path": str(clip), "options": "{broken", "request_id": "req-2"})
        await r.redis.xadd(cfg.stream, {"path": str(clip.parent / "missing.mp4"), "request_id": "req-3"})
        await r.redis.xadd(cfg.stream, {"path": str(clip), "profile": "cinema", "request_id": "req-4"})
        async with r.intake(cfg):
            await r.wait_for(lambda: r.all_acked(cfg))
        jobs = await r.store.list()
        assert len(jobs) == 1
        job = jobs[0]
        assert (job.spec.origin, job.spec.profile, job.spec.options["max_clips"]) == ("redis", "square", 2)
        assert redis_info(job) | {"consumer": ""} == {
            "stream": cfg.stream, "entry": good, "request_id": "req-1", "consumer": "", "deliveries": 1}
        dead = {d["request_id"]: d for d in await r.entries(cfg.dead_letter_stream)}
        assert sorted(dead) == ["req-2", "req-3", "req-4"]
        assert dead["req-2"]["error_class"] == "bad_entry" and "not JSON" in dead["req-2"]["reason"]
        assert dead["req-3"]["error_class"] == "bad_submission" and "no such file" in dead["req-3"]["reason"]
        assert "'cinema' is not configured" in dead["req-4"]["reason"]
        assert json.loads(dead["req-3"]["fields"])["path"].endswith("missing.mp4")
        results = await r.entries(cfg.results_stream)
        assert sorted((x["request_id"], x["state"]) for x in results) == [
            ("req-2", "rejected"), ("req-3", "rejected"), ("req-4", "rejected")]


async def test_ack_only_after_the_job_is_stored(tmp_path: Path, redis_prefix: str, clip: Path) -> None:
    """The store refuses writes for 3 s (another process holds SQLite's write lock): the entry stays
    pending, no other consumer takes it over meanwhile, and it is acknowledged once stored."""
    db = tmp_path / "montage.db"
    cfg = intake_cfg(redis_prefix)
    async with rig(f"sqlite:///{db}", clip.parent, redis_prefix) as r:
        r.store = SqliteStore(f"sqlite:///{db}", busy_timeout=0.2)
        r.submitter.store = r.store
        other = Rig(r.store, clip.parent, redis_prefix)
        other.bus = r.bus
        other.submitter = r.submitter
        lock = sqlite3.connect(db, isolation_level=None)
        lock.execute("BEGIN IMMEDIATE")
        try:
            async with r.intake(cfg.model_copy(update={"consumer": "a"})), \
                    other.intake(cfg.model_copy(update={"consumer": "b"})):
                eid = await r.redis.xadd(cfg.stream, {"path": str(clip), "request_id": "slow"})
                await anyio.sleep(3.0)  # five times claim_idle_seconds
                pending = await r.redis.xpending_range(cfg.stream, cfg.group, min="-", max="+", count=10)
                assert [(p["message_id"], p["times_delivered"]) for p in pending] == [(eid, 1)]
                assert await r.store.list() == []
                lock.execute("ROLLBACK")
                await r.wait_for(lambda: r.all_acked(cfg))
                jobs = await r.store.list()
                assert [redis_info(j)["entry"] for j in jobs] == [eid]
                await anyio.sleep(1.5)  # nothing else happens afterwards
                assert len(await r.store.list()) == 1
        finally:
            lock.close()
        await r.store.close()


async def test_dead_consumers_entries_are_taken_over_once(
    tmp_path: Path, sqlite_url: str, redis_prefix: str, clip: Path
) -> None:
    cfg = intake_cfg(redis_prefix)
    async with rig(sqlite_url, clip.parent, redis_prefix) as r:
        await r.redis.xgroup_create(cfg.stream, cfg.group, id="0", mkstream=True)
        lost = await r.redis.xadd(cfg.stream, {"path": str(clip), "request_id": "lost"})
        stored = await r.redis.xadd(cfg.stream, {"path": str(clip), "request_id": "stored"})
        # a daemon read both and died; it had stored the second job but not acknowledged it
        read: Any = await r.redis.xreadgroup(cfg.group, "dead:1", {cfg.stream: ">"}, count=10)
        assert len(read[0][1]) == 2
        before = await r.submitter.submit(JobSpec(
            source=str(clip), origin="redis",
            options={"redis": {"stream": cfg.stream, "entry": stored, "request_id": "stored",
                               "consumer": "dead:1"}}))
        async with r.intake(cfg.model_copy(update={"consumer": "alive"})):
            await r.wait_for(lambda: r.all_acked(cfg))
        listed = await r.store.list()
        assert sorted(redis_info(j)["request_id"] for j in listed) == ["lost", "stored"]
        jobs = {redis_info(j)["request_id"]: j for j in listed}
        assert jobs["stored"].id == before.id  # not submitted a second time
        assert redis_info(jobs["lost"]) == {"stream": cfg.stream, "entry": lost, "request_id": "lost",
                                            "consumer": "alive", "deliveries": 2}
        assert await r.entries(cfg.dead_letter_stream) == []


async def test_too_many_deliveries_go_to_dead_letter(
    tmp_path: Path, sqlite_url: str, redis_prefix: str, clip: Path
) -> None:
    cfg = intake_cfg(redis_prefix, max_deliveries=2)
    async with rig(sqlite_url, clip.parent, redis_prefix) as r:
        await r.redis.xgroup_create(cfg.stream, cfg.group, id="0", mkstream=True)
        eid = await r.redis.xadd(cfg.stream, {"path": str(clip), "request_id": "poison"})
        await r.redis.xreadgroup(cfg.group, "dead:1", {cfg.stream: ">"}, count=1)  # delivery 1
        await r.redis.xclaim(cfg.stream, cfg.group, "dead:2", min_idle_time=0, message_ids=[eid])  # 2
        async with r.intake(cfg):
            await r.wait_for(lambda: r.all_acked(cfg))
        assert await r.store.list() == []
        [dead] = await r.entries(cfg.dead_letter_stream)
        assert (dead["entry_id"], dead["request_id"], dead["error_class"], dead["deliveries"]) == (
            eid, "poison", "too_many_deliveries", "3")
        assert "delivered 3 times" in dead["reason"]
        [result] = await r.entries(cfg.results_stream)
        assert (result["request_id"], result["state"]) == ("poison", "rejected")


async def _finish(store: JobStore, bus: EventBus | None, job_id: str, *, clips: list[str] | None,
                  error: str | None = None) -> None:
    """What the pipeline does when a job ends: record it, then (live) announce it."""
    assert await store.claim("test-worker", 30, only=[job_id]) is not None
    if error is None:
        await store.finish(job_id, {"clips": [{"path": p, "index": i} for i, p in enumerate(clips or [])]})
        kind = "job.done"
    else:
        await store.fail(job_id, stage="render", error_class="disk_full", message=error)
        kind = "job.failed"
    if bus is not None:
        bus.publish(JobEvent(job_id=job_id, kind=kind, at=time.time()))


async def test_outcomes_are_published_once(tmp_path: Path, sqlite_url: str, redis_prefix: str,
                                           clip: Path) -> None:
    cfg = intake_cfg(redis_prefix)
    async with rig(sqlite_url, clip.parent, redis_prefix) as r:
        for rid in ("ok", "bad", "offline"):
            await r.redis.xadd(cfg.stream, {"path": str(clip), "request_id": rid})
        async with r.intake(cfg):
            await r.wait_for(lambda: r.all_acked(cfg))
            jobs = {redis_info(j)["request_id"]: j for j in await r.store.list()}
            await _finish(r.store, r.bus, jobs["ok"].id, clips=["/out/ok-0.mp4", "/out/ok-1.mp4"])
            await _finish(r.store, r.bus, jobs["bad"].id, clips=None, error="no space left on /out")
            await r.wait_for(lambda: _count(r, cfg.results_stream, 2))
        # a job that ended while no daemon with Redis intake ran: published by the next start
        await _finish(r.store, None, jobs["offline"].id, clips=["/out/offline-0.mp4"])
        async with r.intake(cfg):
            await r.wait_for(lambda: _count(r, cfg.results_stream, 3))
            await anyio.sleep(1.0)
        results = {x["request_id"]: x for x in await r.entries(cfg.results_stream)}
        assert len(await r.entries(cfg.results_stream)) == 3  # the restart re-published nothing
        assert results["ok"]["state"] == "done" and results["ok"]["job_id"] == jobs["ok"].id
        assert json.loads(results["ok"]["clips"]) == ["/out/ok-0.mp4", "/out/ok-1.mp4"]
        assert results["bad"]["state"] == "failed" and "disk_full: no space left" in results["bad"]["error"]
        assert json.loads(results["offline"]["clips"]) == ["/out/offline-0.mp4"]
        assert results["ok"]["entry_id"] == redis_info(jobs["ok"])["entry"]


async def _count(r: Rig, stream: str, n: int) -> bool:
    return bool(await r.redis.xlen(stream) >= n)


class Proxy:
    """A TCP relay to the real Redis that the test can cut and restore (a Redis outage)."""

    def __init__(self) -> None:
        self.port = 0
        self._scope: anyio.CancelScope | None = None

    async def serve(self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=self.port)
        self.port = listener.extra(anyio.abc.SocketAttribute.local_port)
        with anyio.CancelScope() as self._scope:
            async with listener:
                task_status.started()
                await listener.serve(self._relay)

    def cut(self) -> None:
        assert self._scope is not None
        self._scope.cancel()

    async def _relay(self, client: anyio.abc.SocketStream) -> None:
        server = await anyio.connect_tcp("127.0.0.1", 6379)
        async with client, server, anyio.create_task_group() as tg:
            async def pump(a: anyio.abc.SocketStream, b: anyio.abc.SocketStream) -> None:
                async for chunk in a:
                    await b.send(chunk)
                tg.cancel_scope.cancel()

            tg.start_soon(pump, client, server)
            tg.start_soon(pump, server, client)


def _redis_up() -> float | None:
    return REGISTRY.get_sample_value("montage_redis_up")


async def test_redis_outage_waits_and_loses_nothing(tmp_path: Path, sqlite_url: str, redis_prefix: str,
                                                    clip: Path) -> None:
    cfg = intake_cfg(redis_prefix)
    proxy = Proxy()
    async with rig(sqlite_url, clip.parent, redis_prefix) as r, anyio.create_task_group() as tg:
        await tg.start(proxy.serve)
        async with r.intake(cfg, url=f"redis://127.0.0.1:{proxy.port}/0"):
            await r.redis.xadd(cfg.stream, {"path": str(clip), "request_id": "before"})
            await r.wait_for(lambda: r.all_acked(cfg))
            job_before = (await r.store.list())[0]
            proxy.cut()
            for rid in ("during-1", "during-2"):
                await r.redis.xadd(cfg.stream, {"path": str(clip), "request_id": rid})
            # a job ends while Redis is unreachable: its outcome waits
            await _finish(r.store, r.bus, job_before.id, clips=["/out/before-0.mp4"])
            await r.wait_for(lambda: _async(_redis_up() == 0))
            await anyio.sleep(2.0)
            assert len(await r.store.list()) == 1  # nothing could be read, nothing crashed
            await tg.start(proxy.serve)  # Redis is back on the same port
            await r.wait_for(lambda: r.all_acked(cfg), timeout=30)
            await r.wait_for(lambda: _count(r, cfg.results_stream, 1), timeout=30)
            assert _redis_up() == 1
        requests = sorted(redis_info(j)["request_id"] for j in await r.store.list())
        assert requests == ["before", "during-1", "during-2"]
        [result] = await r.entries(cfg.results_stream)
        assert (result["request_id"], result["state"]) == ("before", "done")
        tg.cancel_scope.cancel()


async def _async(value: bool) -> bool:
    return value


WORKER = """
import sys
from pathlib import Path
import anyio
from montaged.config import RedisIntakeConfig
from montaged.events import EventBus
from montaged.gate import IntakeGate
from montaged.intake import Submitter
from montaged.sources.redis_stream import run_redis_intake
from montaged.store import open_store

async def main() -> None:
    cfg = RedisIntakeConfig.model_validate_json(sys.argv[1])
    store = open_store(sys.argv[3])
    bus = EventBus()
    submitter = Submitter(store, bus, input_roots=[Path(sys.argv[4])], profiles=["vertical"])
    await run_redis_intake(cfg, sys.argv[2], submitter, bus, gate=IntakeGate())

anyio.run(main)
"""


def _spawn(cfg: RedisIntakeConfig, pg_url: str, root: Path, name: str, log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-c", WORKER, cfg.model_copy(update={"consumer": name}).model_dump_json(),
             REDIS_URL, pg_url, str(root)], stdout=out, stderr=subprocess.STDOUT, env=env, cwd=ROOT)


async def test_two_daemons_share_one_group_without_duplicates(
    tmp_path: Path, pg_url: str, redis_prefix: str, clip: Path
) -> None:
    """Two real processes on one PostgreSQL store; one freezes (SIGSTOP) with an entry delivered
    to it, then is SIGKILLed. Every entry becomes exactly one job; the survivor takes over what the
    dead one left unacknowledged."""
    cfg = intake_cfg(redis_prefix, claim_idle_seconds=1.0, batch=1)
    async with rig(pg_url, clip.parent, redis_prefix) as r:
        await r.redis.xgroup_create(cfg.stream, cfg.group, id="0", mkstream=True)
        procs = {n: _spawn(cfg, pg_url, clip.parent, n, tmp_path / f"{n}.log") for n in ("d1", "d2")}
        try:
            async def both_reading() -> bool:
                names = {c["name"] for c in await r.redis.xinfo_consumers(cfg.stream, cfg.group)}
                return names >= {"d1", "d2"}

            await r.wait_for(both_reading, timeout=30)
            ids = []
            for i in range(40):
                ids.append(await r.redis.xadd(cfg.stream, {"path": str(clip), "request_id": f"r{i}"}))
                await anyio.sleep(0.02)
                if i == 20:
                    procs["d1"].send_signal(signal.SIGSTOP)  # its blocked read still gets an entry
                if i == 30:
                    procs["d1"].send_signal(signal.SIGKILL)
            await r.wait_for(lambda: r.all_acked(cfg), timeout=40)
            jobs = await r.store.list(limit=1000)
        finally:
            for p in procs.values():
                if p.poll() is None:
                    p.terminate()
                p.wait(timeout=10)
        entries = [redis_info(j)["entry"] for j in jobs]
        assert sorted(entries) == sorted(ids), (tmp_path / "d2.log").read_text()[-3000:]
        assert len(set(entries)) == len(entries) == 40
        by = {n: sum(redis_info(j)["consumer"] == n for j in jobs) for n in ("d1", "d2")}
        assert by["d1"] > 0 and by["d2"] > 0, by
        taken_over = [j for j in jobs if redis_info(j)["deliveries"] > 1]
        assert taken_over and all(redis_info(j)["consumer"] == "d2" for j in taken_over)
        assert all(j.state == JobState.QUEUED for j in jobs)
