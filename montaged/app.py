"""The daemon: wires config → store → resources → pipeline, control socket, intake and metrics.

Shutdown has two steps (uvicorn's ``handle_exit``): the first SIGTERM/SIGINT stops intake and
claims, lets running stages finish for up to ``daemon.shutdown_grace_seconds``, releases every job
with the stage it stopped at and exits 0; a second signal cancels at once (jobs are still released,
under a short shielded timeout).
"""

from __future__ import annotations

import signal
import time
from functools import partial
from typing import Any

import anyio
import anyio.lowlevel
import structlog
from anyio.abc import TaskGroup

from montaged import metrics, sdnotify
from montaged.asr.budget import run_sweeper
from montaged.backoff import Backoff
from montaged.config import Secrets, Settings
from montaged.control.handlers import ControlOps, Stats
from montaged.control.protocol import TERMINAL_EVENTS, EventKind
from montaged.control.server import ControlServer
from montaged.errors import StoreUnavailable
from montaged.events import EventBus
from montaged.gate import IntakeGate
from montaged.health import ServiceHealth, ServiceProbe, serve_http
from montaged.intake import Submitter
from montaged.memory_guard import MemoryGuard
from montaged.model import JobEvent
from montaged.pipeline import Pipeline
from montaged.redact import redact_url
from montaged.retention import run_retention
from montaged.runtime import connect_store, open_resources
from montaged.stages import default_stages
from montaged.stages.context import Resources
from montaged.store import JobStore
from montaged.supervise import Supervisor

log = structlog.get_logger(__name__)


class Daemon:
    """``await Daemon(settings, secrets).run()`` serves until a signal (or ``stop()``) ends it.

    Build it inside the event loop (it owns anyio events and cancel scopes).

    Args:
        settings: the validated configuration.
        secrets: where credentials are read (``Secrets(config=settings.secrets)``: the environment,
            $CREDENTIALS_DIRECTORY, files or AWS); handed to everything that needs a credential.
        handle_signals: install SIGTERM/SIGINT handlers (off when embedded in tests).
    """

    def __init__(self, settings: Settings, secrets: Secrets, *, handle_signals: bool = True) -> None:
        self.settings = settings
        self.secrets = secrets
        self.handle_signals = handle_signals
        self.bus = EventBus()
        self.gate = IntakeGate()  # operator pause: shared by the claim loop and every source
        self.services = ServiceHealth()  # the one record of store/Redis health
        self.ready = anyio.Event()
        self.stopped = anyio.Event()
        self.metrics_port: int | None = None
        self.store: JobStore | None = None
        self.pipeline: Pipeline | None = None
        self.stats: Stats | None = None
        self.submitter: Submitter | None = None
        self._stopping = 0
        self._tg: TaskGroup | None = None
        self._intake_scope = anyio.CancelScope()
        self._pipeline_scope = anyio.CancelScope()
        self.supervisor = Supervisor()
        self._res: Resources | None = None
        self.notifier = sdnotify.Notifier.from_env()  # no-op outside systemd's Type=notify

    # ---- health ------------------------------------------------------------------------------

    def health(self) -> dict[str, Any]:
        store_ok, redis_ok = self.services.store_ok, self.services.redis_ok
        ready = self.ready.is_set()
        down = self.supervisor.degraded()
        if self._res is not None:
            down |= {f"pool:{p.name}": f"replacing a dead worker ({p.ready} of {p.workers} ready)"
                     for p in self._res.pool_health() if not p.healthy and not self._stopping}
        healthy = ready and store_ok and redis_ok is not False and not down and not self._stopping
        return {"status": "ok" if healthy else "degraded", "ready": ready, "store": store_ok,
                "redis": redis_ok, "stopping": bool(self._stopping), "degraded": down,
                "in_flight": len(self.pipeline.inflight) if self.pipeline else 0}

    # ---- lifecycle ---------------------------------------------------------------------------

    def stop(self) -> None:
        """First call: graceful drain. Second call: force."""
        self._stopping += 1
        if self._stopping == 1:
            log.info("shutting down: intake stopped, running stages may finish",
                     grace_seconds=self.settings.daemon.shutdown_grace_seconds)
            self._intake_scope.cancel()
            self.notifier.stopping(self._sd_status())
            if self.pipeline is not None:
                self.pipeline.drain()
            if self._tg is not None:
                self._tg.start_soon(self._grace_timer)
            else:
                self._pipeline_scope.cancel()
        else:
            log.warning("second signal: stopping now")
            self._pipeline_scope.cancel()

    async def _grace_timer(self) -> None:
        await anyio.sleep(self.settings.daemon.shutdown_grace_seconds)
        if self.pipeline is not None and self.pipeline.inflight:
            log.warning("grace period over; interrupting running stages", jobs=sorted(self.pipeline.inflight))
        self._pipeline_scope.cancel()

    async def _signals(self) -> None:
        with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async for signum in signals:
                log.info("signal received", signal=signal.Signals(signum).name)
                self.stop()

    async def run(self) -> None:
        s = self.settings
        async with anyio.create_task_group() as outer:
            self._tg = outer
            # not supervised: if the loop itself is stuck, the pings must stop and systemd restart us
            outer.start_soon(sdnotify.watchdog_loop, self.notifier, self._sd_status)
            if self.handle_signals:
                outer.start_soon(self._signals)
            if s.metrics.enabled:
                self.metrics_port = await self.supervisor.start(
                    outer, "metrics", partial(serve_http, s.metrics.host, s.metrics.port, self.health))
            with self._pipeline_scope:
                self.store = await connect_store(s, self.secrets, wait=True)
                self.services.store(True)
                try:
                    async with open_resources(s, self.store, self.secrets) as res:
                        await self._serve(res)
                finally:
                    with anyio.CancelScope(shield=True):
                        await self.store.close()
            outer.cancel_scope.cancel()
        self.stopped.set()
        log.info("montaged stopped")

    async def _serve(self, res: Resources) -> None:
        s = self.settings
        assert self.store is not None
        self._res = res
        guard = MemoryGuard.from_config(s.daemon)
        guard.check()  # before the first claim
        self.pipeline = Pipeline(s, self.store, self.bus, res, default_stages(), worker=s.daemon.worker_name,
                                 supervisor=self.supervisor, memory_guard=guard, gate=self.gate,
                                 services=self.services)
        self.submitter = Submitter(self.store, self.bus, input_roots=s.paths.input_roots, profiles=s.profiles,
                                   output_roots=[s.paths.outputs()], on_submitted=self.pipeline.poke)
        self.stats = Stats(s, self.store, self.pipeline, res, self.gate, self.services)
        ops = ControlOps(s, self.store, self.submitter, self.pipeline, self.stats, self.gate)
        server = ControlServer(s.control.socket(), ops, self.bus, config=s.control)
        probe = ServiceProbe(self.store, self.services, self._redis_urls(),
                             redis_password=self._redis_password())
        sup = self.supervisor
        async with anyio.create_task_group() as tg:
            await sup.start(tg, "control", server.serve)
            tg.start_soon(sup.run, "health_probe", partial(probe.run, s.daemon.stats_seconds))
            tg.start_soon(sup.run, "stats", self._stats_loop)
            tg.start_soon(sup.run, "memory_guard", partial(guard.run, s.daemon.poll_seconds))
            tg.start_soon(sup.run, "retention", partial(run_retention, self.store, s.retention))
            tg.start_soon(sup.run, "secrets_refresh", self.secrets.refresh_loop)
            tg.start_soon(sup.run, "budget_sweeper", partial(run_sweeper, self.store, budgets=(res.budget,)))
            await self._start_intake(tg)
            if self._stopping:
                self.pipeline.drain()
            await tg.start(self.pipeline.run)
            self.ready.set()
            self.notifier.ready(self._sd_status())
            log.info("montaged ready", socket=str(s.control.socket()), store=redact_url(s.store_url()),
                     worker=self.pipeline.worker, encoder=res.encoder.name, whisper=res.whisper.model_name,
                     stage_workers=self.pipeline.workers)
            await self._wait_pipeline_done()
            tg.cancel_scope.cancel()

    def _sd_status(self) -> str:
        pipeline = self.pipeline
        return sdnotify.daemon_status(self.health(), paused=self.gate.paused,
                                      low_memory=bool(pipeline and pipeline.memory_paused))

    def _redis_urls(self) -> list[str]:
        s = self.settings
        urls = [s.cache.redis_url] if s.cache.redis_url else []
        if s.redis_intake.enabled:
            urls.append(s.redis_intake.url or s.cache.redis_url or "")
        return [u for u in urls if u]

    def _redis_password(self) -> str | None:
        value = self.secrets.get("redis_password")
        return value.get_secret_value() if value is not None else None

    async def _wait_pipeline_done(self) -> None:
        assert self.pipeline is not None
        await self.pipeline.done.wait()

    async def _start_intake(self, tg: TaskGroup) -> None:
        s = self.settings
        assert self.submitter is not None and self.pipeline is not None
        submitter, sup, gate = self.submitter, self.supervisor, self.gate

        async def run_sources(*, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
            with self._intake_scope:
                async with anyio.create_task_group() as sources:
                    if s.hotfolder.paths:
                        from montaged.sources.hotfolder import run_hotfolder

                        await sup.start(sources, "hotfolder", partial(
                            run_hotfolder, s.hotfolder, submitter, gate=gate))
                        sources.start_soon(sup.run, "hotfolder_results", self._hotfolder_results)
                    if s.redis_intake.enabled:
                        from montaged.sources.redis_stream import run_redis_intake

                        url = s.redis_intake.url or s.cache.redis_url or ""
                        await sup.start(sources, "redis_intake", partial(
                            run_redis_intake, s.redis_intake, url, submitter, self.bus, gate=gate,
                            password=self._redis_password()))
                    task_status.started()
                    await anyio.sleep_forever()

        await tg.start(run_sources)

    async def _hotfolder_results(self) -> None:
        """Move hot-folder originals to done/failed folders when their jobs end (if configured)."""
        from montaged.sources.folders import on_job_finished

        assert self.store is not None
        store = self.store
        async with self.bus.subscribe() as events:
            async for event in events:
                if event.kind not in TERMINAL_EVENTS:
                    continue
                backoff = Backoff(0.5, 30.0)
                while True:  # the store may be away for a while: the original is moved once it answers
                    try:
                        job = await store.get(event.job_id)
                        break
                    except StoreUnavailable as e:
                        delay = await backoff.sleep()
                        log.warning("hot folder: store unavailable; will move the original later",
                                    job_id=event.job_id, error=str(e), waited=round(delay, 2))
                if job is not None and job.spec.origin == "hotfolder":
                    await on_job_finished(self.settings.hotfolder, job)

    async def _stats_loop(self) -> None:
        assert self.stats is not None
        while True:
            self.stats.sample()
            if self.bus.subscribers:
                snapshot = await self.stats.snapshot()
                event = JobEvent(job_id="", kind=EventKind.DAEMON_STATS, at=time.time(), data=snapshot)
                self.bus.publish(event)
            else:
                await self.stats.snapshot()  # keeps gauges and health fresh for /metrics
            metrics.QUEUE_DEPTH.clear()
            assert self.pipeline is not None
            for stage, q in self.pipeline.queue_depths().items():
                metrics.QUEUE_DEPTH.labels(stage=stage).set(q["depth"])
            await anyio.sleep(self.settings.daemon.stats_seconds)
