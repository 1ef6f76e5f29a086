"""What each control-socket op does, against the store, the submitter and the pipeline."""

from __future__ import annotations

import time
from collections import deque
from functools import partial
from typing import Any

import anyio.to_thread
import structlog

from montaged import metrics, retention
from montaged.asr.budget import Budget, summary_dicts
from montaged.config import Settings
from montaged.control import protocol as p
from montaged.errors import MontageError, StoreUnavailable
from montaged.export import job as export
from montaged.gate import IntakeGate
from montaged.health import ServiceHealth
from montaged.intake import SubmitError, Submitter
from montaged.model import JobSpec, JobState
from montaged.pipeline import Pipeline
from montaged.recut import recut_spec
from montaged.render.sidecar import montage_version
from montaged.stages.context import Resources
from montaged.store import JobStore

log = structlog.get_logger(__name__)

HISTORY = 60  # samples kept for the TUI's sparklines
MAX_AGE = 100 * 365 * 86_400.0  # purge: an age beyond a century is a typo, not a policy


class Stats:
    """Daemon-wide figures for ``stats`` and the periodic ``daemon.stats`` event."""

    def __init__(self, settings: Settings, store: JobStore, pipeline: Pipeline, resources: Resources,
                 gate: IntakeGate, services: ServiceHealth) -> None:
        self.settings = settings
        self.store = store
        self.pipeline = pipeline
        self.res = resources
        self.gate = gate
        self.services = services
        self.budget = Budget(store, settings.budget)
        self.started = time.time()
        self.ratio_history: deque[float] = deque(maxlen=HISTORY)
        self.mmph_history: deque[float] = deque(maxlen=HISTORY)

    def throughput(self) -> tuple[float | None, float]:
        """(processing ratio of recent jobs, media minutes finished per hour over the last hour)."""
        now = time.time()
        recent = [(m, w) for at, m, w in self.pipeline.history if now - at <= 3600]
        ratio = sum(w for _, w in recent) / sum(m for m, _ in recent) if recent and sum(
            m for m, _ in recent) > 0 else None
        window = min(3600.0, max(60.0, now - self.started))
        mmph = sum(m for m, _ in recent) / 60.0 * 3600.0 / window
        return ratio, mmph

    def sample(self) -> None:
        ratio, mmph = self.throughput()
        self.ratio_history.append(round(ratio, 4) if ratio is not None else 0.0)
        self.mmph_history.append(round(mmph, 2))

    async def snapshot(self) -> dict[str, Any]:
        try:
            counts = await self.store.count_by_state()
            budget_rows = summary_dicts(await self.budget.summary())
            job_rows = []  # running jobs' own spend and reservations, under the per-job cap
            for job_id in sorted(self.pipeline.inflight):
                rows = await self.store.spend(self.budget.caps, job_id=job_id)
                job_rows += summary_dicts([r for r in rows if r.period.startswith("job:")])
        except StoreUnavailable as e:
            counts, budget_rows, job_rows = {}, [], []
            self.services.store(False, str(e))
        for state in JobState:
            metrics.JOBS.labels(state=state.value).set(counts.get(state, 0))
        cache = self.res.cache
        ratio, mmph = self.throughput()
        cloud = self.settings.deepgram
        key = self.res.secrets.get("deepgram_api_key") is not None
        exhausted = any(r["remaining"] <= 0 for r in budget_rows)
        blocked_reason = None
        if cloud.enabled and not key:
            blocked_reason = "no Deepgram key"
        elif cloud.enabled and exhausted:
            blocked_reason = "budget cap reached"
        whisper = self.res.whisper
        return {
            "version": montage_version(),
            "worker": self.pipeline.worker,
            "uptime": round(time.time() - self.started, 1),
            "paused": self.gate.paused,
            "memory_paused": self.pipeline.memory_paused,
            "draining": self.pipeline.draining,
            "jobs": {s.value: counts.get(s, 0) for s in JobState},
            "in_flight": sorted(self.pipeline.inflight),
            "queues": self.pipeline.queue_depths(),
            "pools": {"whisper": {"workers": whisper.workers, "model": whisper.model_name,
                                  "device": whisper.device}},
            "encoder": {"name": self.res.encoder.name, "hardware": self.res.encoder.hardware},
            "cache": {"hits": cache.hits, "misses": cache.misses, "hit_ratio": round(cache.hit_ratio, 4)},
            "throughput": {
                "processing_ratio": round(ratio, 4) if ratio is not None else None,
                "media_minutes_per_hour": round(mmph, 2),
                "ratio_history": list(self.ratio_history),
                "mmph_history": list(self.mmph_history),
                "jobs_finished": self.pipeline.finished,
            },
            "budget": budget_rows + job_rows,
            "caps": {"job": self.settings.budget.per_job, "day": self.settings.budget.per_day,
                     "month": self.settings.budget.per_month},
            "cloud": {"enabled": cloud.enabled, "blocked": blocked_reason is not None,
                      "reason": blocked_reason},
            "health": {"store": self.services.store_ok, "redis": self.services.redis_ok},
            "subscribers": self.pipeline.bus.subscribers,
        }


class ControlOps:
    """The daemon side of every op except ``subscribe`` (handled by the server itself)."""

    def __init__(self, settings: Settings, store: JobStore, submitter: Submitter, pipeline: Pipeline,
                 stats: Stats, gate: IntakeGate) -> None:
        self.settings = settings
        self.store = store
        self.submitter = submitter
        self.pipeline = pipeline
        self.stats = stats
        self.gate = gate

    async def __call__(self, request: p.Request) -> Any:
        try:
            return await getattr(self, f"op_{request.op}")(request)
        except StoreUnavailable as e:
            raise p.ProtocolError(p.STORE_UNAVAILABLE, f"{e}; the daemon retries, try again shortly") from e
        except SubmitError as e:
            raise p.ProtocolError(e.code, str(e)) from e
        except MontageError as e:
            raise p.ProtocolError(e.code, str(e)) from e

    def _need(self, request: p.Request, field: str) -> Any:
        value = getattr(request, field)
        if value is None:
            raise p.ProtocolError(p.BAD_REQUEST, f"{request.op}: '{field}' is required")
        return value

    async def _job(self, job_id: str) -> Any:
        job = await self.store.get(job_id)
        if job is None:
            raise p.ProtocolError(p.NOT_FOUND, f"no job {job_id!r}; `montagectl list` shows the jobs")
        return job

    async def op_ping(self, request: p.Request) -> Any:
        return {"pong": True, "version": montage_version(), "worker": self.pipeline.worker}

    async def op_submit(self, request: p.Request) -> Any:
        spec = JobSpec(
            source=self._need(request, "path"),
            profile=request.profile or "vertical",
            origin="socket",
            options=request.options or {},
            output_dir=request.output_dir,
        )
        job = await self.submitter.submit(spec)
        return job.to_dict()

    async def op_list(self, request: p.Request) -> Any:
        state = None
        if request.state is not None:
            try:
                state = JobState(request.state)
            except ValueError:
                known = ", ".join(s.value for s in JobState)
                raise p.ProtocolError(p.BAD_REQUEST, f"state {request.state!r}: use one of {known}") from None
        jobs = await self.store.list(state, limit=request.limit or 200)
        return {"jobs": [j.to_dict() for j in jobs]}

    async def op_show(self, request: p.Request) -> Any:
        job = await self._job(self._need(request, "job_id"))
        events = await self.store.events(job.id)
        return {"job": job.to_dict(), "events": [e.to_dict() for e in events]}

    async def op_cancel(self, request: p.Request) -> Any:
        job_id = self._need(request, "job_id")
        current = await self._job(job_id)
        job = await self.store.cancel(job_id)
        if job is None:
            raise p.ProtocolError(p.INVALID_STATE, f"job {job_id} is {current.state}; only queued or"
                                                   " running jobs can be cancelled")
        self.pipeline.cancel_job(job_id)
        self.submitter.announce(job_id, p.EventKind.JOB_CANCELLED, p.cancelled(current.state))
        return job.to_dict()

    async def op_retry(self, request: p.Request) -> Any:
        job_id = self._need(request, "job_id")
        current = await self._job(job_id)
        job = await self.store.retry(job_id)
        if job is None:
            raise p.ProtocolError(p.INVALID_STATE, f"job {job_id} is {current.state}; only failed or"
                                                   " cancelled jobs can be retried")
        self.submitter.announce(job_id, p.EventKind.JOB_RETRIED, p.retried(job))
        self.pipeline.poke()
        return job.to_dict()

    async def op_pause(self, request: p.Request) -> Any:
        if self.gate.pause():
            self.submitter.announce("", p.EventKind.INTAKE_PAUSED, {})
            log.info("intake paused")
        return {"paused": True}

    async def op_resume(self, request: p.Request) -> Any:
        if self.gate.resume():
            self.submitter.announce("", p.EventKind.INTAKE_RESUMED, {})
            log.info("intake resumed")
        return {"paused": False}

    async def op_stats(self, request: p.Request) -> Any:
        return await self.stats.snapshot()

    async def op_render(self, request: p.Request) -> Any:
        """Re-cut one range of a finished job (its clip, candidate or times) as a new job."""
        job = await self._job(self._need(request, "job_id"))
        new = await self.submitter.submit(recut_spec(job, request.options or {}, profile=request.profile))
        return new.to_dict()

    async def op_export(self, request: p.Request) -> Any:
        """A finished job's clips as an editor timeline (text; the client saves it)."""
        job = await self._job(self._need(request, "job_id"))
        fmt = export.parse_format(request.format or "otio")
        drop = (request.options or {}).get("drop_frame")
        if drop is not None and not isinstance(drop, bool):
            raise p.ProtocolError(p.BAD_REQUEST, f"options.drop_frame: true or false (got {drop!r})")
        return await anyio.to_thread.run_sync(
            partial(export.export_job, job.to_dict(), fmt, drop_frame=drop))

    async def op_purge(self, request: p.Request) -> Any:
        """Delete finished jobs, events and stage results older than ``options.older_than_seconds``
        (queued and running jobs, and results their media needs, stay)."""
        seconds = (request.options or {}).get("older_than_seconds")
        if isinstance(seconds, bool) or not isinstance(seconds, int | float) or not 0 < seconds <= MAX_AGE:
            raise p.ProtocolError(p.BAD_REQUEST, "purge: options.older_than_seconds must be a number of "
                                  f"seconds above 0 and at most {MAX_AGE:.0f} (got {seconds!r})")
        pruned = await retention.prune(self.store, retention.older_than(float(seconds)), why="purge")
        return {"older_than_seconds": seconds, "pruned": pruned.to_dict()}
