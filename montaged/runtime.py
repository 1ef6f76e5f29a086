"""Start-up shared by the daemon and the one-shot ``process`` command: store and resources."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

import anyio
import structlog

from montaged import debris, metrics
from montaged.asr.budget import Budget
from montaged.asr.cache import TranscriptCache
from montaged.asr.whisper_pool import WhisperPool
from montaged.backoff import Backoff
from montaged.config import Secrets, Settings
from montaged.diarize.worker import DiarizerPool
from montaged.frame.worker import FrameWorkers
from montaged.media.encoders import select_encoder
from montaged.resources_plan import probe_plan
from montaged.stages.context import Resources
from montaged.store import JobStore, open_store

log = structlog.get_logger(__name__)


def _secret(secrets: Secrets, name: str) -> str | None:
    value = secrets.get(name)
    return value.get_secret_value() if value is not None else None


async def connect_store(settings: Settings, secrets: Secrets, *, wait: bool) -> JobStore:
    """Open and migrate the store; with ``wait``, retry with backoff while the database is down.

    Refuses first (:class:`~montaged.debris.StateDirLocked`) when another daemon holds the state dir.
    """
    from montaged.errors import StoreUnavailable

    debris.check_state_dir_free(settings.paths.state_dir)
    # secrets from AWS are read here, off the event loop; a wrong id or permission stops the start
    await anyio.to_thread.run_sync(secrets.prefetch)
    backoff = Backoff(1.0, 30.0, jitter=0.2)
    while True:
        store = open_store(settings.store_url(), password=_secret(secrets, "database_password"),
                           connect_timeout=settings.store.connect_timeout_seconds)
        try:
            await store.migrate()
            metrics.STORE_UP.set(1)
            return store
        except StoreUnavailable as e:
            await store.close()
            metrics.STORE_UP.set(0)
            if not wait:
                raise
            delay = backoff.next()
            log.warning("store unavailable at start; retrying", error=str(e), retry_in=round(delay, 2))
            await anyio.sleep(delay)


@asynccontextmanager
async def open_resources(settings: Settings, store: JobStore, secrets: Secrets) -> AsyncIterator[Resources]:
    """Pools (models loaded once), cache, budget and the encoder probed once, for every job.

    Pools are sized once by :func:`montaged.resources_plan.probe_plan` (cores this process may
    use, cgroup quota, GPU memory; config overrides win), and the plan is logged.
    Holds the state dir for its whole life (:func:`montaged.debris.own_state_dir`) and first
    clears what an earlier instance on it left: workers, encoders, FIFO folders, scratch.
    """
    work_dir = settings.paths.state_dir / "work"
    with debris.own_state_dir(settings.paths.state_dir) as owner:
        await anyio.to_thread.run_sync(debris.sweep, owner, work_dir)
        work_dir.mkdir(parents=True, exist_ok=True)
        encoder = await anyio.to_thread.run_sync(
            lambda: select_encoder(settings.render.encoder, settings.render.ffmpeg,
                                   x264_preset=settings.render.preset)
        )
        plan = await anyio.to_thread.run_sync(probe_plan, settings)
        log.info("resource plan", plan=plan.lines())
        async with AsyncExitStack() as stack:
            whisper = await stack.enter_async_context(WhisperPool(
                settings.whisper, settings.paths.models(), workers=plan.whisper_workers,
                threads=plan.whisper_threads))
            cache = await stack.enter_async_context(
                TranscriptCache(store, settings.cache, redis_password=_secret(secrets, "redis_password"))
            )
            frame_workers = None
            if settings.frame.enabled:
                frame_workers = await stack.enter_async_context(
                    FrameWorkers(plan.vision_workers, plan.vision_threads))
            # its process starts on first use
            diarizer = await stack.enter_async_context(DiarizerPool(threads=plan.diarize_threads))
            yield Resources(
                settings=settings, store=store, whisper=whisper, cache=cache,
                budget=Budget(store, settings.budget), frame_workers=frame_workers, encoder=encoder,
                secrets=secrets, render_slots=anyio.CapacityLimiter(plan.render_slots),
                work_dir=work_dir, diarizer=diarizer,
            )
