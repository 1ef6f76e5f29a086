"""Redis Streams intake: jobs from a stream through a consumer group, outcomes to a results stream.

An entry (``XADD montage:jobs * path /media/talk.mp4 profile square options '{"max_clips":3}'
request_id r-17``) becomes a job through :class:`~montaged.intake.Submitter` and is acknowledged
(XACK) only after ``submit`` returned, i.e. once the job is durably in the store. Entries left
unacknowledged by a daemon that died are taken over (XAUTOCLAIM) after ``claim_idle_seconds``;
before submitting a re-delivered entry the store is asked whether it was stored already, so a
crash between storing and acknowledging makes no second job. An entry delivered more than
``max_deliveries`` times, or one the Submitter refuses, goes to the dead-letter stream with the
reason (and a ``rejected`` result), then is acknowledged.

When a job from the stream ends, its outcome goes to ``results_stream`` exactly once per outcome:
a Lua script sets a marker key and appends in one step, so the live path (job events on the bus)
and the catch-up pass (recent ended jobs in the store, for events missed while Redis was down or
jobs finished by a daemon without Redis intake) never both publish it.

Redis being down never ends the task: every loop waits with back-off (capped at 10 s), sets the
``montage_redis_up`` gauge to 0 and carries on where it was; nothing is acknowledged early, so no
entry is lost.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import anyio.abc
import redis.asyncio as aioredis
import structlog
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from montaged.backoff import Backoff
from montaged.config import RedisIntakeConfig
from montaged.control.protocol import TERMINAL_EVENTS
from montaged.errors import ConfigError, StoreUnavailable
from montaged.events import EventBus
from montaged.gate import IntakeGate
from montaged.intake import SubmitError, Submitter
from montaged.metrics import INTAKE_ERRORS, INTAKE_REFUSED, REDIS_UP
from montaged.model import TERMINAL_STATES, Job, JobSpec, JobState
from montaged.redact import redact_url
from montaged.worker_id import worker_name

log = structlog.get_logger(__name__)

ENTRY_FIELDS = ("path", "profile", "options", "request_id", "output_dir")
"""Fields an entry may have; ``path`` is required."""
FIELD_LIMITS = {"path": 4096, "profile": 128, "options": 64 << 10, "request_id": 256, "output_dir": 4096}
"""Longest value of each field, in characters (paths: Linux PATH_MAX)."""
DEAD_FIELD_CHARS = 1024
"""A dead letter keeps at most this much of each field (the reason says what was wrong)."""
RESULT_MARKER_SECONDS = 7 * 86_400
"""How long the "outcome published" marker of a job is kept (longer than the catch-up window)."""
CATCHUP_SECONDS = 30.0
"""How often ended jobs in the store are checked for an outcome not yet published."""
CATCHUP_WINDOW_SECONDS = 86_400
"""Only jobs that ended within this window are caught up."""
CATCHUP_LIMIT = 200
"""Most recent jobs per ended state looked at by one catch-up pass."""
STORED_LOOKBACK = 2000
"""Recent jobs searched for a re-delivered entry that may have been stored before a crash."""
CONSUMER_FORGET_SECONDS = 3600.0
"""Consumers with nothing pending and idle this long (old host:pid names) are removed."""
DOWN = (RedisConnectionError, RedisTimeoutError, OSError)

# KEYS: marker, results stream. ARGV: marker ttl, maxlen, field, value, ...
# A script is not rolled back when a command in it fails: the marker is only kept when the XADD
# happened, so a refused XADD (wrong key type, out of memory) is tried again later, not lost.
_PUBLISH_ONCE = """
local kind = redis.call('TYPE', KEYS[2])['ok']
if kind ~= 'stream' and kind ~= 'none' then
  return redis.error_reply('WRONGTYPE the results stream key holds a ' .. kind .. ', not a stream')
end
if redis.call('SET', KEYS[1], '1', 'NX', 'EX', ARGV[1]) then
  local added = redis.pcall('XADD', KEYS[2], 'MAXLEN', '~', ARGV[2], '*', unpack(ARGV, 3))
  if type(added) == 'table' and added['err'] then
    redis.call('DEL', KEYS[1])
  end
  return added
end
return false
"""


class EntryError(Exception):
    """An entry that can never become a job as it is; the message says what to send instead."""


def parse_entry(fields: dict[str, str], default_profile: str) -> JobSpec:
    """The job an entry asks for (the Submitter then checks it like any other), or EntryError.

    Fields are bounded before anything is parsed: a binary value (bytes that are not UTF-8 reach
    us as U+FFFD), an over-long one or deeply nested options end this entry, not the daemon.
    """
    unknown = sorted(set(fields) - set(ENTRY_FIELDS))
    if unknown:
        names = [n if n.isprintable() and len(n) <= 40 else _clip(n, 40) for n in unknown[:5]]
        more = f" and {len(unknown) - 5} more" if len(unknown) > 5 else ""
        shown_names = ", ".join(names) + more
        raise EntryError(f"unknown field(s) {shown_names}; an entry may have: {', '.join(ENTRY_FIELDS)}")
    for name, value in fields.items():
        if len(value) > FIELD_LIMITS[name]:
            raise EntryError(f"field {name!r} is {len(value)} characters long, more than"
                             f" {FIELD_LIMITS[name]}; send a shorter value")
        if "\ufffd" in value:
            raise EntryError(f"field {name!r} is not valid UTF-8 text ({_clip(value, 60)});"
                             " send paths and ids as UTF-8")
        if "\0" in value:
            raise EntryError(f"field {name!r} holds a NUL byte ({_clip(value, 60)})")
    path = (fields.get("path") or "").strip()
    if not path:
        raise EntryError("field 'path' is missing or empty; give the absolute path of a media file")
    options: Any = {}
    if raw := fields.get("options"):
        try:
            options = json.loads(raw)
        except json.JSONDecodeError as e:
            raise EntryError(f"field 'options' is not JSON ({e.msg} at character {e.pos});"
                             ' send an object like {"max_clips": 3}') from None
        except (ValueError, RecursionError) as e:  # numbers past the digit limit, nesting past the stack
            raise EntryError(f"field 'options' cannot be read ({str(e)[:120]});"
                             ' send a small flat object like {"max_clips": 3}') from None
        if not isinstance(options, dict):
            raise EntryError("field 'options' must be a JSON object like {\"max_clips\": 3}"
                             f" (got {_clip(raw, 80)})")
    return JobSpec(source=path, profile=fields.get("profile") or default_profile, origin="redis",
                   options=options, output_dir=fields.get("output_dir") or None)


def _clip(text: str, n: int) -> str:
    return repr(text[:n] + ("…" if len(text) > n else ""))


def _bounded(fields: dict[str, str]) -> dict[str, str]:
    """An entry's fields as kept in a dead letter: at most 16, each name and value cut short."""
    out = {}
    for name in list(fields)[:16]:
        value = fields[name]
        out[name[:64]] = value if len(value) <= DEAD_FIELD_CHARS else value[:DEAD_FIELD_CHARS] + "…"
    return out


def result_fields(job: Job) -> dict[str, str]:
    """The results-stream entry of an ended job."""
    info = job.spec.options.get("redis")
    info = info if isinstance(info, dict) else {}
    listed = job.result.get("clips") if isinstance(job.result, dict) else None
    clips = [str(c["path"]) for c in (listed if isinstance(listed, list) else []) if isinstance(c, dict)
             and "path" in c]
    if job.state == JobState.FAILED:
        error = f"{job.error_class}: {job.error_message} (stage {job.error_stage})"
    elif job.state == JobState.CANCELLED:
        error = "cancelled"
    else:
        error = ""
    return {"job_id": job.id, "request_id": str(info.get("request_id", "")),
            "entry_id": str(info.get("entry", "")), "state": str(job.state), "clips": json.dumps(clips),
            "error": error, "error_class": job.error_class or "", "source": job.spec.source}


class RedisIntake:
    """Consumes ``cfg.stream`` in ``cfg.group`` and publishes outcomes (see the module docstring).

    Args:
        cfg: the ``[redis_intake]`` settings.
        redis_url: ``redis://host:port/db`` (``redis_intake.url`` or ``cache.redis_url``).
        submitter: the daemon's front door; its store answers "was this entry stored already?".
        bus: job events; ended jobs from the stream get their outcome published.
        gate: the intake gate: while paused, no new entries are read or taken over.
        password: the ``redis_password`` secret, when the server needs one.
    """

    def __init__(self, cfg: RedisIntakeConfig, redis_url: str, submitter: Submitter, bus: EventBus, *,
                 gate: IntakeGate, password: str | None = None) -> None:
        if not redis_url:
            raise ConfigError("redis_intake.enabled: no Redis to read from;"
                              " set redis_intake.url or cache.redis_url")
        self.cfg = cfg
        self.submitter = submitter
        self.store = submitter.store
        self.bus = bus
        self.gate = gate
        self.consumer = cfg.consumer or worker_name()
        try:
            self.redis = aioredis.Redis.from_url(
                redis_url, password=password, decode_responses=True, encoding_errors="replace",
                socket_connect_timeout=5, socket_timeout=cfg.block_ms / 1000 + 5, health_check_interval=30)
        except ValueError as e:
            raise ConfigError(f"redis_intake.url: {e} (got {redact_url(redis_url)!r})") from None
        self._publish_once = self.redis.register_script(_PUBLISH_ONCE)
        self._handling: set[str] = set()
        self._sent: dict[str, float] = {}  # outcome markers known to be published
        self._unsent: set[str] = set()  # job ids whose outcome could not be published yet
        self._forgot_at = 0.0

    # ---- lifecycle ---------------------------------------------------------------------------

    async def run(self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        try:
            with anyio.move_on_after(5):  # Redis down at start-up: come up anyway, loops retry
                try:
                    await self._ensure_group()
                except RedisError as e:
                    REDIS_UP.set(0)
                    log.warning("redis unavailable at start-up; intake will retry", error=str(e))
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._forever, "consume", self._consume)
                tg.start_soon(self._forever, "reclaim", self._reclaim_loop)
                await tg.start(self._results)
                tg.start_soon(self._forever, "catch-up", self._catch_up_loop)
                log.info("redis intake started", stream=self.cfg.stream, group=self.cfg.group,
                         consumer=self.consumer)
                task_status.started()
        finally:
            with anyio.CancelScope(shield=True), anyio.move_on_after(2):
                await self.redis.aclose()

    async def _forever(self, name: str, loop: Callable[[], Awaitable[None]]) -> None:
        """Run ``loop``; when Redis fails, wait (exponential back-off) and run it again."""
        backoff = Backoff()
        while True:
            began = time.monotonic()
            try:
                await loop()
            except DOWN as e:
                REDIS_UP.set(0)
                if time.monotonic() - began > backoff.cap:
                    backoff.reset()
                delay = backoff.next()
                log.warning("redis unavailable; retrying", loop=name, retry_in=delay, error=str(e))
                await anyio.sleep(delay)
            except RedisError as e:  # e.g. NOGROUP after Redis restarted empty, WRONGTYPE
                delay = backoff.next()
                log.error("redis refused a command; retrying", loop=name, retry_in=delay, error=str(e))
                await anyio.sleep(delay)

    async def _retrying(self, what: str, call: Callable[[], Awaitable[Any]]) -> Any:
        """One command that must happen (an ack): retried until Redis answers."""
        backoff = Backoff()
        while True:
            try:
                return await call()
            except DOWN as e:
                REDIS_UP.set(0)
                delay = backoff.next()
                log.warning("redis unavailable; retrying", what=what, retry_in=delay, error=str(e))
                await anyio.sleep(delay)

    async def _ensure_group(self) -> None:
        try:
            # from "0": entries pushed before the first daemon started are jobs too
            await self.redis.xgroup_create(self.cfg.stream, self.cfg.group, id="0", mkstream=True)
            log.info("consumer group created", stream=self.cfg.stream, group=self.cfg.group)
        except ResponseError as e:
            if "BUSYGROUP" not in str(e):
                raise
        REDIS_UP.set(1)

    # ---- reading -----------------------------------------------------------------------------

    async def _read(self, start: str, block: int | None) -> list[tuple[str, dict[str, str] | None]]:
        resp: Any = await self.redis.xreadgroup(self.cfg.group, self.consumer, {self.cfg.stream: start},
                                           count=self.cfg.batch, block=block)
        REDIS_UP.set(1)
        return [(eid, fields) for _stream, entries in resp or [] for eid, fields in entries]

    async def _consume(self) -> None:
        await self._ensure_group()
        # our own unacknowledged entries first (a restart under a fixed consumer name)
        cursor = "0"
        while entries := await self._read(cursor, None):
            for eid, fields in entries:
                await self._handle(eid, fields, await self._deliveries(eid))
            cursor = entries[-1][0]
        while True:
            await self.gate.wait_open()
            for eid, fields in await self._read(">", self.cfg.block_ms):
                await self._handle(eid, fields, 1)

    async def _deliveries(self, eid: str) -> int:
        info = await self.redis.xpending_range(self.cfg.stream, self.cfg.group, min=eid, max=eid, count=1)
        return int(info[0]["times_delivered"]) if info else 1

    async def _reclaim_loop(self) -> None:
        await self._ensure_group()
        idle_ms = int(self.cfg.claim_idle_seconds * 1000)
        while True:
            await anyio.sleep(min(self.cfg.claim_idle_seconds / 2, 30.0))
            await self.gate.wait_open()
            start = "0-0"
            while True:
                resp: Any = await self.redis.xautoclaim(
                    self.cfg.stream, self.cfg.group, self.consumer, min_idle_time=idle_ms, start_id=start,
                    count=self.cfg.batch)
                start, entries = resp[0], resp[1]
                if len(resp) > 2 and resp[2]:
                    log.warning("pending entries were deleted from the stream before being handled",
                                entries=resp[2])
                for eid, fields in entries:
                    if eid in self._handling:
                        continue  # ours, still being handled (kept claimed by _keep_claimed)
                    n = await self._deliveries(eid)
                    log.info("took over an entry left unacknowledged", entry=eid, deliveries=n)
                    await self._handle(eid, fields, n)
                if start == "0-0":
                    break
            await self._forget_idle_consumers()

    async def _forget_idle_consumers(self) -> None:
        now = time.monotonic()
        if now - self._forgot_at < CONSUMER_FORGET_SECONDS / 6:
            return
        self._forgot_at = now
        for c in await self.redis.xinfo_consumers(self.cfg.stream, self.cfg.group):
            forgotten = c["pending"] == 0 and c["idle"] > CONSUMER_FORGET_SECONDS * 1000
            if forgotten and c["name"] != self.consumer:
                await self.redis.xgroup_delconsumer(self.cfg.stream, self.cfg.group, c["name"])
                log.info("removed an idle consumer", consumer=c["name"])

    # ---- one entry ---------------------------------------------------------------------------

    async def _handle(self, eid: str, fields: dict[str, str] | None, deliveries: int) -> None:
        if eid in self._handling:
            return
        self._handling.add(eid)
        down: Exception | None = None
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._keep_claimed, eid)
                try:
                    await self._handle_owned(eid, fields, deliveries)
                except DOWN as e:  # raised below, unwrapped, so the loop's back-off sees it
                    down = e
                except RedisError as e:  # refused (OOM, read-only replica, a key of the wrong type)
                    INTAKE_ERRORS.labels(task="redis_intake", code="redis_refused").inc()
                    log.error("redis refused a command for an entry; it stays pending and is taken over"
                              " later", code="redis_refused", entry=eid, error=str(e)[:300])
                tg.cancel_scope.cancel()
        finally:
            self._handling.discard(eid)
        if down is not None:
            raise down  # Redis went away: the consume loop waits and reads again, the entry stays pending

    async def _keep_claimed(self, eid: str) -> None:
        """While the store is slow or down, keep the entry ours so no other daemon takes it over."""
        while True:
            await anyio.sleep(self.cfg.claim_idle_seconds / 3)
            try:
                info = await self.redis.xpending_range(self.cfg.stream, self.cfg.group, min=eid, max=eid,
                                                       count=1)
                if not info or info[0]["consumer"] != self.consumer:
                    log.warning("entry was taken over by another consumer meanwhile", entry=eid)
                    return
                await self.redis.xclaim(self.cfg.stream, self.cfg.group, self.consumer, min_idle_time=0,
                                        message_ids=[eid], justid=True)
            except RedisError as e:
                log.debug("could not refresh the claim on an entry", entry=eid, error=str(e))

    async def _handle_owned(self, eid: str, fields: dict[str, str] | None, deliveries: int) -> None:
        bound = log.bind(entry=eid, deliveries=deliveries)
        if not fields:
            await self._ack(eid)  # deleted from the stream meanwhile: nothing to do
            return
        if deliveries > self.cfg.max_deliveries:
            await self._dead_letter(eid, fields, "too_many_deliveries", deliveries,
                                    f"delivered {deliveries} times without being acknowledged"
                                    f" (max_deliveries {self.cfg.max_deliveries}); the daemons handling it"
                                    " stopped each time: look for crashes in their logs")
            return
        try:
            spec = parse_entry(fields, self.cfg.profile)
        except EntryError as e:
            await self._dead_letter(eid, fields, "bad_entry", deliveries, str(e))
            return
        info = {"stream": self.cfg.stream, "entry": eid, "request_id": fields.get("request_id", ""),
                "consumer": self.consumer, "deliveries": deliveries}
        spec = dataclasses.replace(spec, options={**spec.options, "redis": info})
        backoff = Backoff()
        while True:
            try:
                job = await self._stored_job(eid) if deliveries > 1 else None
                if job is not None:
                    bound.info("entry was stored before it could be acknowledged", job_id=job.id)
                else:
                    job = await self.submitter.submit(spec)
                break
            except SubmitError as e:
                await self._dead_letter(eid, fields, e.code, deliveries, str(e))
                return
            except StoreUnavailable as e:
                delay = backoff.next()
                bound.warning("store unavailable; the entry stays pending", retry_in=delay, error=str(e))
                await anyio.sleep(delay)
            except Exception as e:  # a fault on this entry alone: it is dead-lettered, the rest go on
                bound.error("entry could not be submitted", code="internal",
                            error=f"{type(e).__name__}: {str(e)[:300]}")
                await self._dead_letter(eid, fields, "internal", deliveries,
                                        f"could not be submitted ({type(e).__name__}: {str(e)[:300]});"
                                        " the daemon's log has the details")
                return
        await self._ack(eid)
        bound.info("redis entry submitted", job_id=job.id, request_id=info["request_id"])

    async def _stored_job(self, eid: str) -> Job | None:
        """The job of a re-delivered entry, if it was stored before the ack was lost."""
        for job in await self.store.list(limit=STORED_LOOKBACK):
            info = job.spec.options.get("redis") or {}
            if info.get("entry") == eid and info.get("stream") == self.cfg.stream:
                return job
        return None

    async def _ack(self, eid: str) -> None:
        await self._retrying("xack", lambda: self.redis.xack(self.cfg.stream, self.cfg.group, eid))

    async def _dead_letter(self, eid: str, fields: dict[str, str], error_class: str, deliveries: int,
                           reason: str) -> None:
        """Dead-letter entry and ``rejected`` result, then ack: all or nothing (MULTI)."""
        reason = reason[:2000]
        log.warning("redis entry dead-lettered", entry=eid, error_class=error_class, reason=reason)
        INTAKE_REFUSED.labels(source="redis", code=error_class).inc()
        kept = _bounded(fields)
        request_id = kept.get("request_id", "")
        dead: dict[Any, Any] = {
            "entry_id": eid, "stream": self.cfg.stream, "request_id": request_id, "error_class": error_class,
            "reason": reason, "deliveries": str(deliveries), "consumer": self.consumer,
            "at": f"{time.time():.3f}", "fields": json.dumps(kept)}
        result: dict[Any, Any] = {
            "job_id": "", "request_id": request_id, "entry_id": eid, "state": "rejected", "clips": "[]",
            "error": reason, "error_class": error_class, "source": kept.get("path", "")}

        async def move() -> None:
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.xadd(self.cfg.dead_letter_stream, dead, maxlen=self.cfg.results_maxlen, approximate=True)
                pipe.xadd(self.cfg.results_stream, result, maxlen=self.cfg.results_maxlen, approximate=True)
                pipe.xack(self.cfg.stream, self.cfg.group, eid)
                await pipe.execute()

        await self._retrying("dead-letter", move)

    # ---- results -----------------------------------------------------------------------------

    async def _results(self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        async with self.bus.subscribe() as events:
            task_status.started()
            async for event in events:
                if event.kind in TERMINAL_EVENTS:
                    await self._publish_id(event.job_id)

    async def _publish_id(self, job_id: str) -> None:
        try:
            job = await self.store.get(job_id)
        except StoreUnavailable:
            self._unsent.add(job_id)
            return
        except Exception as e:  # a store fault on this job: the catch-up pass looks at it again
            self._count_unpublished(job_id, e)
            return
        if job is None:
            return
        try:
            await self._publish(job)
        except DOWN as e:
            REDIS_UP.set(0)
            self._unsent.add(job_id)
            log.warning("outcome not published yet: redis unavailable", job_id=job_id, error=str(e))
        except Exception as e:  # refused (wrong key type, OOM, read-only): the catch-up pass retries
            self._count_unpublished(job_id, e)

    @staticmethod
    def _count_unpublished(job_id: str, e: Exception) -> None:
        code = "redis_refused" if isinstance(e, RedisError) else "internal"
        INTAKE_ERRORS.labels(task="redis_results", code=code).inc()
        log.error("job outcome not published; retried by the next catch-up pass", code=code, job_id=job_id,
                  error=f"{type(e).__name__}: {str(e)[:300]}")

    async def _publish(self, job: Job) -> None:
        info = job.spec.options.get("redis") or {}
        if job.spec.origin != "redis" or info.get("stream") != self.cfg.stream:
            return
        if job.state not in TERMINAL_STATES:
            return
        marker = f"{self.cfg.results_stream}:sent:{job.id}:{job.state}:{job.attempts}"
        if marker in self._sent:
            return
        args: list[str | int] = [RESULT_MARKER_SECONDS, self.cfg.results_maxlen]
        for k, v in result_fields(job).items():
            args += [k, v]
        added = await self._publish_once(keys=[marker, self.cfg.results_stream], args=args)
        self._sent[marker] = time.time()
        if len(self._sent) > 20_000:
            for key in sorted(self._sent, key=self._sent.__getitem__)[:10_000]:
                del self._sent[key]
        if added:
            log.info("job outcome published", job_id=job.id, state=str(job.state),
                     request_id=info.get("request_id", ""))

    async def _catch_up_loop(self) -> None:
        while True:
            await self._catch_up(full=True)
            next_full = time.monotonic() + CATCHUP_SECONDS
            while time.monotonic() < next_full:
                await anyio.sleep(1.0)
                if self._unsent:  # Redis came back: publish what waited without a full pass
                    await self._catch_up(full=False)

    async def _catch_up(self, *, full: bool) -> None:
        """Publish outcomes the live path missed (events dropped, Redis down, another daemon)."""
        pending, self._unsent = self._unsent, set()
        horizon = time.time() - CATCHUP_WINDOW_SECONDS
        try:
            jobs: dict[str, Job] = {}
            for state in TERMINAL_STATES if full else ():
                for j in await self.store.list(state, limit=CATCHUP_LIMIT):
                    if j.spec.origin == "redis" and j.updated_at >= horizon:
                        jobs[j.id] = j
            for job_id in pending - set(jobs):
                if (job := await self.store.get(job_id)) is not None:
                    jobs[job_id] = job
        except Exception as e:  # store away (or refusing): the same jobs are looked at next time
            self._unsent |= pending
            log.warning("outcome catch-up skipped: store unavailable", code="store_unavailable",
                        error=f"{type(e).__name__}: {str(e)[:300]}")
            return
        for n, job in enumerate(jobs.values()):
            try:
                await self._publish(job)
            except DOWN:
                self._unsent |= {j.id for j in list(jobs.values())[n:]}
                raise
            except Exception as e:  # this job's outcome waits for the next full pass; the others go on
                self._count_unpublished(job.id, e)


async def run_redis_intake(
    cfg: RedisIntakeConfig,
    redis_url: str,
    submitter: Submitter,
    bus: EventBus,
    *,
    gate: IntakeGate,
    password: str | None = None,
    task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Consume the job stream until cancelled; ``task_status.started()`` once consuming."""
    intake = RedisIntake(cfg, redis_url, submitter, bus, gate=gate, password=password)
    await intake.run(task_status=task_status)
