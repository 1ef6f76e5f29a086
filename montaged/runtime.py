"""Start-up shared by the daemon and the one-shot ``process`` command: store and resources."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

import anyio
import structlog

from montaged import metrics
from montaged.asr.budget import Budget
from montaged.asr.cache import TranscriptCache
from montaged.asr.whisper_pool import WhisperPool
from montaged.config import Secrets, Settings
from montaged.diarize.worker import shutdown_pool
from montaged.frame.worker import FrameWorkers, default_workers
from montaged.media.encoders import select_encoder
from montaged.stages.context import JobContext, Resources
from montaged.store import JobStore, open_store

log = structlog.get_logger(__name__)


def _secret(secrets: Secrets, name: str) -> str | None:
    value = secrets.get(name)
    return value.get_secret_value() if value is not None else None


async def connect_store(settings: Settings, secrets: Secrets, *, wait: bool) -> JobStore:
    """Open and migrate the store; with ``wait``, retry with backoff while the database is down."""
    from montaged.errors import StoreUnavailable

    settings.paths.state_dir.mkdir(parents=True, exist_ok=True)
    delay = 1.0
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
            log.warning("store unavailable at start; retrying", error=str(e), retry_in=delay)
            await anyio.sleep(delay)
            delay = min(delay * 2, 30.0)


def reap_orphan_encoders() -> int:
    """Kill the ffmpeg encoders a killed daemon left behind; returns how many.

    Encoders run in their own session (so a Ctrl-C reaches the daemon first), which also means a
    SIGKILLed daemon's process-group kill misses them. One still waiting to open its frame FIFO
    would wait forever. They are recognised by their input, a ``montage-fifo-*`` FIFO in the temp
    folder (render/encode.py), and by having lost their parent (adopted by PID 1): a live daemon's
    encoders, or another process's, are never touched.
    """
    import psutil

    tmp = Path(tempfile.gettempdir())
    reaped = 0
    for proc in psutil.process_iter(["name", "cmdline", "ppid"]):
        try:
            if proc.info["ppid"] != 1 or not (proc.info["name"] or "").startswith("ffmpeg"):
                continue
            fifos = [Path(a) for a in proc.info["cmdline"] or [] if a.startswith(str(tmp))]
            ours = [f for f in fifos if f.parent.name.startswith("montage-fifo-") and f.parent.parent == tmp]
            if not ours:
                continue
            proc.kill()
        except psutil.Error:
            continue
        for fifo in ours:
            shutil.rmtree(fifo.parent, ignore_errors=True)
        reaped += 1
    if reaped:
        log.warning("killed ffmpeg encoders a killed daemon left behind", count=reaped)
    return reaped


def _noop_progress(ctx: JobContext, stage: str, fraction: float) -> None:
    return None


def render_slots(settings: Settings) -> int:
    return settings.render.workers or max(1, (os.cpu_count() or 2) // 2)


@asynccontextmanager
async def open_resources(settings: Settings, store: JobStore, secrets: Secrets) -> AsyncIterator[Resources]:
    """Pools (models loaded once), cache, budget and the encoder probed once, for every job."""
    work_dir = settings.paths.state_dir / "work"
    reap_orphan_encoders()
    shutil.rmtree(work_dir, ignore_errors=True)  # scratch of a previous run (PCM spools)
    work_dir.mkdir(parents=True, exist_ok=True)
    encoder = await anyio.to_thread.run_sync(
        lambda: select_encoder(settings.render.encoder, settings.render.ffmpeg,
                               x264_preset=settings.render.preset)
    )
    async with AsyncExitStack() as stack:
        whisper = await stack.enter_async_context(WhisperPool(settings.whisper, settings.paths.models()))
        cache = await stack.enter_async_context(
            TranscriptCache(store, settings.cache, redis_password=_secret(secrets, "redis_password"))
        )
        frame_workers = None
        if settings.frame.enabled:
            frame_workers = await stack.enter_async_context(FrameWorkers(default_workers(settings.frame)))
        stack.callback(shutdown_pool)  # the diarizer process, started on first use
        yield Resources(
            settings=settings, store=store, whisper=whisper, cache=cache,
            budget=Budget(store, settings.budget), frame_workers=frame_workers, encoder=encoder,
            secrets=secrets, render_slots=anyio.CapacityLimiter(render_slots(settings)),
            progress=_noop_progress, work_dir=work_dir,
        )
