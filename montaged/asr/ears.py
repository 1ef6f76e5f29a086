"""Two ears for one job: Whisper locally and Deepgram in the cloud, at once, fused by ROVER.

Order of business: each engine's transcript is looked up in the cache first (key =
media content hash + engine + model + options), so the same media submitted again makes no cloud
call; the budget is reserved before a single byte is streamed (refused → Whisper alone, and the
transcript says why); Deepgram streams the fanned-out chunks while Whisper transcribes the same
audio in its process pool; the reservation settles to the audio really sent; two transcripts are
fused, one is passed through with notes explaining the other's absence.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterable, Callable
from typing import Any

import anyio
import structlog

from montaged.asr import deepgram, rover
from montaged.asr.budget import Budget, Refusal, Tab
from montaged.asr.cache import TranscriptCache, cache_key, whisper_key
from montaged.asr.whisper_pool import WhisperPool
from montaged.asr.windows import transcribe_stream
from montaged.config import Secrets, Settings
from montaged.metrics import CLOUD_ASR
from montaged.model import AudioChunk, MediaInfo, Transcript

log = structlog.get_logger(__name__)

Chunks = AsyncIterable[AudioChunk]
SETTLE_SECONDS = 10.0  # a settle may outlive a cancelled job by this much (shielded)


@dataclasses.dataclass(frozen=True)
class Hearing:
    """What one job's ears need.

    Args:
        job_id: for the budget ledger and log lines.
        media: the probed input (content hash for the cache, duration for estimates).
        settings: the job's settings: whisper, deepgram, fuse and budget sections are read.
        pool: the running Whisper process pool.
        cache: transcript cache (Redis and/or store), the job's view.
        budget: prices and caps; Deepgram is reserved for before streaming.
        secrets: where the Deepgram key is read.
        on_progress: share of the media transcribed by Whisper (0..1).
    """

    job_id: str
    media: MediaInfo
    settings: Settings
    pool: WhisperPool
    cache: TranscriptCache
    budget: Budget
    secrets: Secrets
    on_progress: Callable[[float], Any] | None = None


def deepgram_key(media: MediaInfo, settings: Settings) -> str:
    """Cache key of the cloud transcript: the live query options (model, language, formatting…)."""
    d = settings.deepgram
    return cache_key(media.content_hash, deepgram.ENGINE, d.model, deepgram.live_options(d))


async def _discard(chunks: Chunks | None) -> None:
    """Let go of a stream this job does not need, so the fan-out never waits on it."""
    if chunks is None:
        return
    aclose = getattr(chunks, "aclose", None)
    if aclose is not None:
        await aclose()  # a closed sink is skipped by the fan-out; a generator just stops
        return
    async for _ in chunks:
        pass


@dataclasses.dataclass
class _Cloud:
    transcript: Transcript | None = None
    gaps: tuple[tuple[float, float], ...] = ()
    notes: list[str] = dataclasses.field(default_factory=list)


async def _cloud_ear(chunks: Chunks | None, ears: Hearing) -> _Cloud:
    out = _Cloud()
    job_id, media, settings, cache, budget = ears.job_id, ears.media, ears.settings, ears.cache, ears.budget
    cfg = settings.deepgram
    if not cfg.enabled or chunks is None:
        await _discard(chunks)
        return out
    key = deepgram_key(media, settings)
    if (cached := await cache.get(key)) is not None:
        await _discard(chunks)
        CLOUD_ASR.labels(engine=deepgram.ENGINE, outcome="cached").inc()
        out.transcript = cached
        out.notes.append("deepgram: transcript reused from the cache (no new call)")
        return out
    api_key = ears.secrets.get("deepgram_api_key")
    if api_key is None:
        await _discard(chunks)
        CLOUD_ASR.labels(engine=deepgram.ENGINE, outcome="no_key").inc()
        out.notes.append(f"deepgram: no API key (set MONTAGE_DEEPGRAM_API_KEY) — {deepgram.WHISPER_ALONE}")
        return out
    reservation = await budget.reserve(job_id, f"{deepgram.ENGINE}/{cfg.model}", media.duration)
    if isinstance(reservation, Refusal):
        await _discard(chunks)
        CLOUD_ASR.labels(engine=deepgram.ENGINE, outcome="budget").inc()
        out.notes.append(reservation.reason)
        return out
    tab = Tab(budget, reservation, media.duration)
    outcome: deepgram.DeepgramOutcome | None = None
    try:
        outcome = await deepgram.stream(
            chunks, cfg=cfg, api_key=api_key, duration=media.duration, job_id=job_id, allowance=tab
        )
    finally:
        # Cancelled mid-stream we cannot know what was sent: count everything reserved as spent.
        used = outcome.billed_seconds if outcome is not None else tab.seconds
        with anyio.move_on_after(SETTLE_SECONDS, shield=True):
            await tab.settle(used)
    assert outcome is not None  # stream() reports cloud trouble in the outcome, it does not raise
    if outcome.transcript is None:
        out.notes.append(outcome.reason or f"deepgram: no transcript — {deepgram.WHISPER_ALONE}")
        return out
    out.transcript, out.gaps = outcome.transcript, outcome.gaps
    if outcome.gaps:  # an incomplete cloud transcript is used once, never cached
        heard = sum(b - a for a, b in outcome.gaps)
        out.notes.append(f"deepgram: {heard:.1f} s of audio never reached it (live stream fell behind)")
    else:
        await cache.put(key, outcome.transcript)
    return out


async def hear(chunks_for_whisper: Chunks, chunks_for_deepgram: Chunks | None, ears: Hearing) -> Transcript:
    """One job's transcript from both ears (or one, with notes saying why).

    Args:
        chunks_for_whisper: the fan-out's lossless sink (decoded 16 kHz chunks).
        chunks_for_deepgram: its lossy live sink, or None when the cloud ear is off.
        ears: the job, its settings and the pools, cache, budget and secrets it hears with.
    """
    media, settings, cache, on_progress = ears.media, ears.settings, ears.cache, ears.on_progress
    bound = log.bind(job_id=ears.job_id, stage="transcribe")
    local_key = whisper_key(media.content_hash, settings.whisper, ears.pool.model_name)
    results: dict[str, Any] = {}

    async def local_ear() -> None:
        if (cached := await cache.get(local_key)) is not None:
            await _discard(chunks_for_whisper)
            if on_progress is not None:
                on_progress(1.0)
            results["whisper"] = cached
            return
        transcript = await transcribe_stream(
            chunks_for_whisper,
            pool=ears.pool,
            cfg=settings.whisper,
            duration=media.duration,
            on_progress=on_progress,
        )
        await cache.put(local_key, transcript)
        results["whisper"] = transcript

    async def cloud_ear() -> None:
        results["cloud"] = await _cloud_ear(chunks_for_deepgram, ears)

    async with anyio.create_task_group() as tg:
        tg.start_soon(local_ear)
        tg.start_soon(cloud_ear)

    local: Transcript = results["whisper"]
    cloud: _Cloud = results["cloud"]
    notes = tuple(dict.fromkeys((*local.notes, *cloud.notes)))
    if cloud.transcript is None:
        bound.info("transcribed", engine="whisper", words=len(local.words), notes=list(cloud.notes))
        return dataclasses.replace(local, notes=notes)
    fused = rover.fuse([cloud.transcript, local], settings.fuse, gaps={deepgram.ENGINE: cloud.gaps})
    bound.info(
        "transcribed",
        engine="rover",
        words=len(fused.words),
        whisper_words=len(local.words),
        deepgram_words=len(cloud.transcript.words),
    )
    return dataclasses.replace(fused, notes=notes)
