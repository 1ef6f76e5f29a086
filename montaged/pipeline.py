"""The pipeline: claims jobs and moves them through the stages over bounded streams.

    claim ─▶ [probe] ─▶ [transcribe] ─▶ [diarize] ─▶ [select] ─▶ [frame] ─▶ [render] ─▶ done

The stages are :class:`~montaged.stages.contract.Stage` objects handed to the constructor (the
daemon's are :func:`montaged.stages.default_stages`). Each arrow is an anyio memory stream of
``daemon.stage_queue_size`` items; each stage has its own workers (``daemon.stage_workers``), so
different jobs are in different stages at once and a slow stage makes the ones before it wait
instead of piling work up in memory. The claim loop only takes a job from the store when it can
hand it to the first stage.

Shutdown (``drain``): no new claims; a job that finishes its current stage is released to the
store with the stage it stopped before, and a job still running when the grace period ends is
released with the stage it was in. A restarted daemon runs each job from the first stage again;
every stage that finds its stored result (see :mod:`montaged.stages`) takes it instead of
computing it, so the work resumes at the first stage without one.

Fencing: each claim is a :class:`~montaged.store.lease.JobLease` carrying the claim's token; the
pipeline and the stages write only through it. When the lease lapsed and another worker claimed
the job, this copy's writes are refused (LeaseLost) or its heartbeat says so, and the copy stops
without touching the job again. A job whose claims keep ending in a crash (``daemon.max_attempts``
in a row) is failed as ``poisoned`` by the claim itself.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from functools import partial
from typing import Any, Generic

import anyio
import structlog
from anyio.abc import TaskGroup, TaskStatus
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from montaged import metrics
from montaged.backoff import Backoff
from montaged.config import Settings
from montaged.control import protocol as events
from montaged.control.protocol import EventKind
from montaged.errors import DiskFullError, LeaseLost, MontageError, StoreUnavailable, first_leaf
from montaged.events import EventBus
from montaged.gate import IntakeGate
from montaged.health import ServiceHealth
from montaged.memory_guard import MemoryGuard
from montaged.model import Job, JobEvent, JobState
from montaged.options import DRY_RUN_STAGE  # options.stop_after: the one stage a job may stop after
from montaged.stages.background import SideTasks
from montaged.stages.context import JobContext
from montaged.stages.contract import R, Stage, check_stages
from montaged.store import JobStore
from montaged.store.lease import JobLease
from montaged.supervise import Supervisor
from montaged.worker_id import worker_name

log = structlog.get_logger(__name__)

PROGRESS_EVENT_SECONDS = 0.25  # at most this often per job on the socket
PROGRESS_STORE_SECONDS = 2.0  # the store keeps the latest progress, not every tick


def stage_workers(settings: Settings, stages: Sequence[Stage[R]], resources: R) -> dict[str, int]:
    """Jobs each stage works on at once: ``daemon.stage_workers``, else the stage's own default
    (see :func:`montaged.stages.default_stages`)."""
    configured = settings.daemon.stage_workers
    return {s.name: max(1, int(configured.get(s.name, s.workers(resources)))) for s in stages}


def concurrent_jobs(settings: Settings, workers: dict[str, int]) -> int:
    """Jobs held at once: ``daemon.concurrent_jobs``, else enough for every stage worker (and at
    least one per stage plus two). Queues beyond that stay in the store, not in memory."""
    if settings.daemon.concurrent_jobs:
        return settings.daemon.concurrent_jobs
    return max(len(workers) + 2, sum(workers.values()))


def overall_progress(stages: Sequence[Stage[R]], stage: str, fraction: float) -> float:
    """A job's progress over every stage, from its progress (0..1) in ``stage``."""
    index = [s.name for s in stages].index(stage)
    done = sum(s.weight for s in stages[:index])
    return min(1.0, done + stages[index].weight * max(0.0, min(1.0, fraction)))


class Pipeline(Generic[R]):
    """Runs jobs from ``store`` through ``stages`` with ``resources``; events go to ``bus``.

    Args:
        settings: daemon (queue size, workers, concurrency), store (lease) sections are read here.
        store: the job store; jobs are claimed atomically, so several pipelines may share it.
        bus: live events for the control socket and the Redis results stream.
        resources: pools, caches and the encoder shared by every job, handed to every stage.
        stages: the stages in order (the daemon's: :func:`montaged.stages.default_stages`).
        only: claim only these job ids (the one-shot ``process`` command); None = any job.
        worker: name recorded as the job's worker (default host:pid).
        supervisor: restarts the claim loop, heartbeats and progress flush if they crash (the
            daemon passes its own, so /healthz reports them; default: a private one).
        memory_guard: claims wait while it says memory is short (running jobs go on); None: no guard.
    """

    def __init__(
        self,
        settings: Settings,
        store: JobStore,
        bus: EventBus,
        resources: R,
        stages: Sequence[Stage[R]],
        *,
        only: Sequence[str] | None = None,
        worker: str | None = None,
        supervisor: Supervisor | None = None,
        memory_guard: MemoryGuard | None = None,
        gate: IntakeGate | None = None,
        services: ServiceHealth | None = None,
    ) -> None:
        self.settings = settings
        self.memory_guard = memory_guard
        self.gate = gate or IntakeGate()
        self.services = services or ServiceHealth()
        self.supervisor = supervisor or Supervisor()
        self.store = store
        self.bus = bus
        self.res = resources
        check_stages(stages)
        self.stages = list(stages)
        self.only = list(only) if only is not None else None
        self.worker = worker or worker_name()
        self.inflight: dict[str, JobContext] = {}
        self.draining = False  # shutting down: jobs leave at their next stage boundary
        self.claiming = True  # taking new jobs from the store
        self.finished = 0
        self.wake = anyio.Event()
        self.left = anyio.Event()  # set whenever a job leaves the pipeline
        self.done = anyio.Event()  # set when run() has drained and every job has left
        self.workers = stage_workers(settings, self.stages, resources)
        self._capacity = anyio.Semaphore(concurrent_jobs(settings, self.workers))
        self._last_event: dict[str, float] = {}
        self._queues: dict[str, MemoryObjectSendStream[JobContext]] = {}
        self._busy: dict[str, int] = {s.name: 0 for s in self.stages}
        self._side: TaskGroup | None = None  # where work a stage starts for a later one runs
        self.history: list[tuple[float, float, float]] = []  # (finished_at, media s, wall s)

    # ---- control -----------------------------------------------------------------------------

    def poke(self) -> None:
        self.wake.set()

    def drain(self) -> None:
        """Stop claiming; jobs leave at their next stage boundary (see module docstring)."""
        if not self.draining:
            log.info("draining", in_flight=len(self.inflight))
        self.draining = True
        self.claiming = False
        self.wake.set()

    def cancel_job(self, job_id: str) -> bool:
        """Stop a job this process is running (the store already marked it cancelled)."""
        ctx = self.inflight.get(job_id)
        if ctx is None:
            return False
        ctx.cancelled = True
        if ctx.scope is not None:
            ctx.scope.cancel()
        if ctx.side is not None:
            ctx.side.cancel()
        return True

    def queue_depths(self) -> dict[str, dict[str, int]]:
        out = {}
        for stage, send in self._queues.items():
            st = send.statistics()
            out[stage] = {"depth": st.current_buffer_used, "capacity": int(st.max_buffer_size),
                          "busy": self._busy[stage], "workers": self.workers[stage]}
        return out

    # ---- running -----------------------------------------------------------------------------

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Claim and process jobs until cancelled, or until drained and every job has left."""
        size = self.settings.daemon.stage_queue_size
        workers = self.workers
        names = [s.name for s in self.stages]
        streams = [anyio.create_memory_object_stream[JobContext](size) for _ in names]
        self._queues = {stage: streams[i][0] for i, stage in enumerate(names)}
        sup = self.supervisor
        async with anyio.create_task_group() as tg:
            self._side = tg
            tg.start_soon(sup.run, "heartbeats", self._heartbeats)
            tg.start_soon(sup.run, "progress_flush", self._flush_progress)
            for i, stage in enumerate(names):
                inbox = streams[i][1]
                outbox = streams[i + 1][0] if i + 1 < len(names) else None
                for _ in range(workers[stage]):
                    tg.start_soon(self._stage_worker, i, inbox.clone(), outbox.clone() if outbox else None)
                inbox.close()
                if outbox is not None:
                    outbox.close()
            task_status.started()
            async with streams[0][0] as first:
                await sup.run("claims", partial(self._claim_loop, first))
            # drained: the claim loop closed the first stream; stages finish and close in turn.
            await self._wait_idle()
            tg.cancel_scope.cancel()
        self.done.set()

    async def _wait_idle(self) -> None:
        while self.inflight:
            await self.left.wait()
            self.left = anyio.Event()

    async def _claim_loop(self, first: MemoryObjectSendStream[JobContext]) -> None:
        """Take jobs while there is room for them; returns once claiming stops (drain, one-shot).

        A crash here is restarted by the supervisor: a capacity slot is never left taken by a job
        that was not handed to the first stage.
        """
        backoff = Backoff(0.5, 15.0)
        while self.claiming:
            await self._capacity.acquire()
            try:
                ctx = await self._claim_one(backoff)
            except BaseException:
                self._capacity.release()
                raise
            if ctx is None:
                self._capacity.release()
                continue
            await first.send(ctx)  # waits while the first stage is full: backpressure

    @property
    def memory_paused(self) -> bool:
        """Claims wait because memory is short (the memory guard), not because an operator paused."""
        return self.memory_guard is not None and self.memory_guard.paused

    async def _claim_one(self, backoff: Backoff) -> JobContext | None:
        """Wait for a claimable job; its context (now in flight), or None when there is nothing
        to hand on (claiming stopped, a poisoned job, a job already running here)."""
        job: Job | None = None
        while job is None and self.claiming:
            if self.gate.paused:
                await self._wait_gate()
                continue
            if self.memory_paused:
                await self._nap()
                continue
            try:
                job = await self.store.claim(
                    self.worker, self.settings.store.lease_seconds, only=self.only,
                    max_attempts=self.settings.daemon.max_attempts,
                )  # fmt: skip
                self.services.store(True)
                backoff.reset()
            except StoreUnavailable as e:
                self.services.store(False, str(e))
                delay = backoff.next()
                log.warning("store unavailable; retrying", error=str(e), retry_in=delay)
                await anyio.sleep(delay)
                continue
            if job is None:
                if self.only is not None and not await self._any_left():
                    self.claiming = False  # one-shot: ours are all taken; finish them
                    return None
                await self._nap()
        if job is None:
            return None
        if job.state is JobState.FAILED:  # poisoned by the claim: its worker kept dying
            self._poisoned(job)
            return None
        if job.id in self.inflight:
            # Our own job, still running here: its lease lapsed while the store was away and the
            # claim renewed it. A second copy would render the same clips twice; the running copy
            # goes on under the new claim.
            log.info("claimed a job already running here; keeping the running copy", job_id=job.id)
            self.inflight[job.id].lease.renew(job.attempts)
            return None
        assert self._side is not None, "claims run inside run()"
        lease = JobLease(self.store, job.id, job.attempts, self.worker)
        ctx = JobContext(job, lease, side=SideTasks(self._side))
        self.inflight[job.id] = ctx
        metrics.IN_FLIGHT.labels(stage="pipeline").set(len(self.inflight))
        if job.attempts == 1:
            metrics.QUEUE_WAIT.observe(max(0.0, time.time() - job.created_at))
        log.info("job claimed", job_id=job.id, source=job.spec.source, attempt=job.attempts,
                 resume_from=job.stopped_at)
        self._announce(job.id, EventKind.JOB_CLAIMED, await self._claimed_payload(job))
        return ctx

    async def _claimed_payload(self, job: Job) -> Mapping[str, Any]:
        """What the store recorded for this claim (it names the worker whose lease was taken
        over), so the live feed says the same; built here when the store cannot say."""
        with contextlib.suppress(StoreUnavailable):
            for recorded in await self.store.events(job.id, limit=1):
                if recorded.kind is EventKind.JOB_CLAIMED and recorded.data.get("attempt") == job.attempts:
                    return recorded.data
        return events.claimed(self.worker, job.attempts)

    async def _wait_gate(self) -> None:
        """Until an operator resumes intake, or the pipeline is woken (a drain must not wait)."""
        async with anyio.create_task_group() as tg:
            async def first(wait: Callable[[], Awaitable[Any]]) -> None:
                await wait()
                tg.cancel_scope.cancel()

            tg.start_soon(first, self.gate.wait_open)
            tg.start_soon(first, self.wake.wait)
        self.wake = anyio.Event()

    async def _nap(self) -> None:
        """Sleep until poked or ``daemon.poll_seconds`` pass (another process may store jobs)."""
        with anyio.move_on_after(self.settings.daemon.poll_seconds):
            await self.wake.wait()
        self.wake = anyio.Event()

    async def _any_left(self) -> bool:
        """For ``only``: is any of our jobs still queued or running elsewhere?"""
        assert self.only is not None
        for job_id in self.only:
            job = await self.store.get(job_id)
            if job is not None and job.state in (JobState.QUEUED, JobState.RUNNING) and (
                job_id not in self.inflight
            ):
                return True
        return False

    async def _stage_worker(
        self,
        index: int,
        inbox: MemoryObjectReceiveStream[JobContext],
        outbox: MemoryObjectSendStream[JobContext] | None,
    ) -> None:
        stage = self.stages[index]
        async with inbox:
            try:
                async for ctx in inbox:
                    metrics.QUEUE_DEPTH.labels(stage=stage.name).set(inbox.statistics().current_buffer_used)
                    if ctx.cancelled:
                        self._leave(ctx)
                        continue
                    if self.draining:
                        await self._release(ctx, stopped_at=stage.name)
                        continue
                    if not await self._run_stage(ctx, stage):
                        self._leave(ctx)
                        continue
                    if outbox is None or (stage.name == DRY_RUN_STAGE and is_dry_run(ctx)):
                        await self._finish(ctx)
                        continue
                    if self.draining:
                        await self._release(ctx, stopped_at=self.stages[index + 1].name)
                        continue
                    await outbox.send(ctx)  # blocks while the next stage is full
            finally:
                if outbox is not None:
                    outbox.close()

    async def _run_stage(self, ctx: JobContext, step: Stage[R]) -> bool:
        """Run one stage; False when the job ended here (failed or cancelled)."""
        stage = step.name
        bound = log.bind(job_id=ctx.id, stage=stage)
        self._busy[stage] += 1
        metrics.IN_FLIGHT.labels(stage=stage).inc()
        started = time.perf_counter()
        try:
            with anyio.CancelScope() as scope:
                ctx.scope = scope
                start = overall_progress(self.stages, stage, 0.0)
                await ctx.lease.set_stage(stage, start)
                self._announce(ctx.id, EventKind.JOB_STAGE, events.stage_started(stage, start))
                await self._call_stage(ctx, step)
            ctx.scope = None
            if scope.cancelled_caught or ctx.cancelled:
                bound.info("job cancelled")
                metrics.STAGE_ITEMS.labels(stage=stage, outcome="cancelled").inc()
                return False
        except LeaseLost as e:
            bound.warning("job taken over by another worker; stopping this copy", error=str(e))
            metrics.STAGE_ITEMS.labels(stage=stage, outcome="lease_lost").inc()
            return False
        except MontageError as e:
            if isinstance(e, StoreUnavailable):
                # the job is still ours in the store; its lease lapses and it is claimed again
                bound.warning("store unavailable mid-stage; job left to its lease", error=str(e))
                metrics.STAGE_ITEMS.labels(stage=stage, outcome="store_down").inc()
                return False
            await self._fail(ctx, stage, e.code, str(e))
            metrics.STAGE_ITEMS.labels(stage=stage, outcome="failed").inc()
            return False
        except anyio.get_cancelled_exc_class():
            with anyio.move_on_after(5, shield=True):
                await self._release(ctx, stopped_at=stage)
            raise
        except Exception as e:  # a bug on one input must not take every other job down with it
            bound.exception("stage crashed")
            await self._fail(ctx, stage, "internal", f"{type(e).__name__}: {e} (a bug; please report it)")
            metrics.STAGE_ITEMS.labels(stage=stage, outcome="failed").inc()
            return False
        finally:
            self._busy[stage] -= 1
            metrics.IN_FLIGHT.labels(stage=stage).dec()
        seconds = time.perf_counter() - started
        self._progress(ctx, stage, 1.0)
        ctx.stage_seconds[stage] = round(seconds, 3)
        metrics.STAGE_SECONDS.labels(stage=stage).observe(seconds)
        metrics.STAGE_ITEMS.labels(stage=stage, outcome="ok").inc()
        bound.info("stage done", seconds=round(seconds, 3), cached=stage in ctx.cached)
        return True

    async def _call_stage(self, ctx: JobContext, stage: Stage[R]) -> None:
        try:
            await stage.run(ctx, self.res, partial(self._progress, ctx, stage.name))
        except BaseExceptionGroup as eg:
            # Stages run their parts in task groups. Inside the group a disk-full render or a
            # store outage would read as a crash (job failed "internal"); the error decides.
            found = decisive_error(eg)
            if found is None:
                raise
            raise found from None

    # ---- endings -----------------------------------------------------------------------------

    def _leave(self, ctx: JobContext) -> None:
        if ctx.side is not None:
            ctx.side.cancel()  # what a stage started for a later one is no use now
        if self.inflight.pop(ctx.id, None) is not None:
            self._capacity.release()
            self.left.set()
        self._last_event.pop(ctx.id, None)
        metrics.IN_FLIGHT.labels(stage="pipeline").set(len(self.inflight))

    async def _fail(self, ctx: JobContext, stage: str, error_class: str, message: str) -> None:
        log.warning("job failed", job_id=ctx.id, stage=stage, error_class=error_class, error=message)
        try:
            with anyio.CancelScope(shield=True):
                await ctx.lease.fail(stage=stage, error_class=error_class, message=message)
        except LeaseLost:
            log.warning("failure not recorded: another worker holds the job now", job_id=ctx.id)
            return
        except StoreUnavailable as e:
            # not recorded: the job stays ours until its lease lapses, then runs (and fails) again
            log.warning("could not record the failure; its lease will lapse", job_id=ctx.id, error=str(e))
            return
        metrics.JOBS_FINISHED.labels(outcome="failed").inc()
        self._announce(ctx.id, EventKind.JOB_FAILED, events.failed(stage, error_class, message))

    async def _release(self, ctx: JobContext, *, stopped_at: str) -> None:
        try:
            await ctx.lease.release(stopped_at=stopped_at)
            log.info("job released", job_id=ctx.id, stopped_at=stopped_at)
            self._announce(ctx.id, EventKind.JOB_RELEASED, events.released(stopped_at))
        except LeaseLost:
            log.info("not released: another worker holds the job now", job_id=ctx.id)
        except StoreUnavailable as e:
            log.warning("could not release job; its lease will lapse", job_id=ctx.id, error=str(e))
        finally:
            self._leave(ctx)

    async def _finish(self, ctx: JobContext) -> None:
        media = ctx.need_media()
        wall = time.time() - ctx.started_at
        with contextlib.suppress(StoreUnavailable):  # else the record says 0; the ledger has it
            ctx.cost = await self.res.job_cost(ctx.id)
        result = job_result(ctx, wall)
        try:
            await ctx.lease.finish(result)
        except LeaseLost:
            log.warning("finish not recorded: another worker holds the job now", job_id=ctx.id)
            self._leave(ctx)
            return
        except StoreUnavailable as e:
            # the clips are complete on disk; the next attempt finds them and finishes the job
            log.warning("could not record the finish; its lease will lapse", job_id=ctx.id, error=str(e))
            self._leave(ctx)
            return
        self.finished += 1
        self.history.append((time.time(), media.duration, wall))
        del self.history[:-500]
        metrics.JOBS_FINISHED.labels(outcome="done").inc()
        metrics.MEDIA_SECONDS.inc(media.duration)
        if media.duration > 0:
            metrics.PROCESSING_RATIO.set(wall / media.duration)
        rendered = ctx.rendered()
        log.info("job done", job_id=ctx.id, clips=len(rendered), seconds=round(wall, 2),
                 ratio=round(wall / max(media.duration, 1e-9), 3))
        self._announce(ctx.id, EventKind.JOB_DONE, events.done(result))
        self._leave(ctx)

    def _poisoned(self, job: Job) -> None:
        log.error("job poisoned", job_id=job.id, stage=job.error_stage, attempts=job.attempts)
        metrics.JOBS_FINISHED.labels(outcome="failed").inc()
        failed = events.failed(job.error_stage or "", job.error_class or "", job.error_message or "",
                               attempts=job.attempts)
        self._announce(job.id, EventKind.JOB_FAILED, failed)

    # ---- progress and leases -----------------------------------------------------------------

    def _announce(self, job_id: str, kind: EventKind, data: Mapping[str, Any]) -> None:
        self.bus.publish(JobEvent(job_id=job_id, kind=kind, at=time.time(), data=dict(data)))

    def _progress(self, ctx: JobContext, stage: str, fraction: float) -> None:
        """A stage's progress; bound to the job and stage, it is the ``progress`` a stage gets."""
        total = overall_progress(self.stages, stage, fraction)
        if fraction >= 1.0 and ctx.job.stage == stage and ctx.job.progress == total:
            return  # the stage said so already; the pipeline's own 1.0 after it adds nothing
        ctx.job = dataclasses.replace(ctx.job, progress=total, stage=stage)
        now = time.monotonic()
        if fraction < 1.0 and now - self._last_event.get(ctx.id, 0.0) < PROGRESS_EVENT_SECONDS:
            return
        self._last_event[ctx.id] = now
        self._announce(ctx.id, EventKind.JOB_PROGRESS, events.progressed(stage, fraction, total))

    async def _flush_progress(self) -> None:
        written: dict[str, float] = {}
        while True:
            await anyio.sleep(PROGRESS_STORE_SECONDS)
            for job_id, ctx in list(self.inflight.items()):
                if written.get(job_id) != ctx.job.progress:
                    try:
                        await ctx.lease.set_progress(ctx.job.progress)
                        written[job_id] = ctx.job.progress
                    except LeaseLost:
                        self.cancel_job(job_id)  # another worker holds it: stop this copy
                    except StoreUnavailable:
                        break
            for job_id in set(written) - set(self.inflight):
                written.pop(job_id)

    async def _heartbeats(self) -> None:
        """Keep our leases alive; a job we no longer own (cancelled, taken over) is stopped."""
        cfg = self.settings.store
        while True:
            await anyio.sleep(cfg.heartbeat_seconds)
            for job_id, ctx in list(self.inflight.items()):
                try:
                    ours = await ctx.lease.heartbeat(cfg.lease_seconds)
                    self.services.store(True)
                except StoreUnavailable as e:
                    self.services.store(False, str(e))
                    log.warning("heartbeat failed: store unavailable", error=str(e))
                    break
                if not ours and job_id in self.inflight:
                    log.info("job no longer ours; stopping it", job_id=job_id)
                    self.cancel_job(job_id)


def is_dry_run(ctx: JobContext) -> bool:
    """A preview: the job ends after selection with its ranked candidates, rendering nothing."""
    return bool(ctx.option("stop_after") == DRY_RUN_STAGE)


def decisive_error(group: BaseExceptionGroup[BaseException]) -> MontageError | None:
    """The error that decides a job's outcome among a group's: the job taken over (this copy
    stops), the store being away (the job waits for its lease), then disk full, then any other
    user-facing error; None = a bug."""
    return first_leaf(group, LeaseLost, StoreUnavailable, DiskFullError, MontageError)


def job_result(ctx: JobContext, wall: float) -> dict[str, Any]:
    """What the store keeps about a finished job (shown by ``montagectl show`` and the TUI)."""
    media = ctx.need_media()
    transcript = ctx.need_transcript()
    selection = ctx.need_selection()
    rendered = ctx.rendered()
    clips = []
    for clip in rendered:
        plan = next((c for c in selection.clips if c.index == clip.index), None)
        clips.append({
            **clip.to_dict(),
            "score": plan.score if plan else None,
            "reason": plan.reason if plan else "",
            "features": plan.features if plan else {},
            "text": plan.text if plan else "",
            "speakers": list(plan.speakers) if plan else [],
        })
    excerpt = " ".join(w.text for w in transcript.words[:80])
    return {
        "clips": clips,
        "media": {"duration": media.duration, "width": media.width, "height": media.height,
                  "fps": media.fps, "content_hash": media.content_hash},
        "stage_seconds": ctx.stage_seconds,
        "timeline": ctx.timeline,
        "cached_stages": sorted(ctx.cached),
        "wall_seconds": round(wall, 3),
        "processing_ratio": round(wall / media.duration, 4) if media.duration else None,
        "transcript": {"engine": transcript.engine, "model": transcript.model, "words": len(transcript.words),
                       "language": transcript.language, "excerpt": excerpt},
        "speakers": sorted({t.speaker for t in ctx.need_turns().turns}),
        "notes": list(dict.fromkeys(ctx.notes)),
        "encoder": rendered[0].encoder if rendered else None,
        "cost": round(ctx.cost, 6),
        "candidates": list(selection.candidates),  # every ranked moment, picked or not (montagectl show)
        "dry_run": is_dry_run(ctx),
    }
