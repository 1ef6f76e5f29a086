"""transcribe: decode the audio once and hear it with every ear at the same time.

One decode (PyAV → 16 kHz mono chunks) is fanned out to: the Whisper process pool (and Deepgram
live when enabled; ROVER fuses the two), the audio feature track selection reads, and a PCM spool
that the diarizer process maps without decoding again.

With diarization on, the decode runs at full speed into the features, the diarizer's int16 spool
and a float32 spool that Whisper (with Deepgram) *follows* at its own pace: diarization needs all
the audio before it starts, so a decode held back by Whisper would start it only as Whisper
finished, and the two would run one after the other. This way it starts within seconds and runs
beside Whisper; the backlog waits on disk (96 kB per second of audio, deleted with the job), not
in memory, and Whisper hears exactly the samples it would have read from the decode. Without
diarization Whisper reads the decode directly.
"""

from __future__ import annotations

import shutil
import time
from functools import partial
from pathlib import Path
from typing import Any

import anyio
import numpy as np
import structlog
from anyio.abc import TaskStatus
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from montaged.asr.ears import hear
from montaged.config import Settings
from montaged.diarize import check_speakers
from montaged.diarize.worker import diarize_in_process
from montaged.media.audio import stream_audio
from montaged.media.fanout import FLOAT_DTYPE, PCM_DTYPE, PcmSpool, fan_out
from montaged.media.source_file import opened_for_stage
from montaged.model import AudioChunk, SpeakerTurn, Transcript
from montaged.select.features import AudioFeatureTrack
from montaged.stages.context import JobContext, Resources, param_key

log = structlog.get_logger(__name__)


def job_settings(ctx: JobContext, settings: Settings) -> Settings:
    """The settings this job hears with: its own spoken language (``options.language``) for both
    ears, so the transcript, its cache keys and this stage's key all follow it."""
    language = ctx.option("language")
    if language is None:
        return settings
    return settings.model_copy(update={
        "whisper": settings.whisper.model_copy(update={"language": str(language).split("-")[0]}),
        "deepgram": settings.deepgram.model_copy(update={"language": str(language)}),
    })


def transcribe_key(ctx: JobContext, res: Resources) -> str:
    s = job_settings(ctx, res.settings)
    deepgram = s.deepgram.model_dump(exclude={"timeout_seconds", "max_retries", "keepalive_seconds"})
    return param_key(
        ctx.need_media().content_hash, res.whisper.model_name, s.whisper.model_dump(exclude={"workers"}),
        deepgram if s.deepgram.enabled else None, s.fuse.model_dump(), s.select.feature_hop_seconds,
        s.diarize.model_dump(exclude={"threads", "device"}), ctx.option("speakers"),
    )


async def _features(recv: Any, hop: float) -> AudioFeatureTrack:
    track = AudioFeatureTrack(hop)
    async with recv:
        async for chunk in recv:
            await anyio.to_thread.run_sync(track.add, chunk)
    return track.finish()


async def _spool(
    path: Path, recv: MemoryObjectReceiveStream[AudioChunk], dtype: np.dtype, *,
    task_status: TaskStatus[PcmSpool],
) -> None:
    """Create the spool, hand it to the caller (readers may follow it at once), then write it."""
    async with await PcmSpool.create(path, dtype) as spool:
        task_status.started(spool)
        await spool.write_from(recv)


async def transcribe_stage(ctx: JobContext, res: Resources) -> None:
    s = job_settings(ctx, res.settings)
    media = ctx.need_media()
    key = ctx.keys["transcribe"] = transcribe_key(ctx, res)
    if (hit := await res.store.get_result("transcribe", key)) is not None:
        ctx.transcript = Transcript.from_dict(hit["transcript"])
        ctx.features = AudioFeatureTrack.from_dict(hit["features"])
        ctx.turns = [SpeakerTurn.from_dict(t) for t in hit["turns"]]
        ctx.notes.extend(ctx.transcript.notes)
        ctx.cached.add("transcribe")
        res.cache.count(hit=True)
        res.progress(ctx, "transcribe", 1.0)
        return
    speakers = check_speakers(ctx.option("speakers"))
    diarize = s.diarize.backend != "none"
    cloud = s.deepgram.enabled
    q = s.audio.queue_chunks
    job_dir = res.work_dir / ctx.id
    job_dir.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {"turns": []}
    t0 = time.perf_counter()
    timeline: dict[str, float] = {}  # seconds from the stage start: shows what overlapped

    def mark(name: str) -> None:
        timeline[name] = round(time.perf_counter() - t0, 3)

    decoded_send, decoded_recv = anyio.create_memory_object_stream[AudioChunk](q)
    whisper_send, whisper_recv = anyio.create_memory_object_stream[AudioChunk](q)
    feat_send, feat_recv = anyio.create_memory_object_stream[AudioChunk](q)
    # ears: Whisper, and the live cloud stream beside it (lossy: a live socket that falls
    # behind must not stall the local ear); they read the decode, or follow the spool.
    ears: list[MemoryObjectSendStream[AudioChunk]] = [whisper_send]
    ears_lossy = [False]
    cloud_recv = None
    if cloud:
        cloud_send, cloud_recv = anyio.create_memory_object_stream[AudioChunk](q * 4)
        ears.append(cloud_send)
        ears_lossy.append(True)
    sinks: list[MemoryObjectSendStream[AudioChunk]] = [feat_send]
    lossy = [False]
    spool_recv = tail_recv = None
    follow_send = follow_recv = None
    if diarize:
        spool_send, spool_recv = anyio.create_memory_object_stream[AudioChunk](q)
        tail_send, tail_recv = anyio.create_memory_object_stream[AudioChunk](q)
        follow_send, follow_recv = anyio.create_memory_object_stream[AudioChunk](q)
        sinks += [spool_send, tail_send]
        lossy += [False, False]
    else:
        sinks += ears
        lossy += ears_lossy

    def progress(fraction: float) -> None:
        res.progress(ctx, "transcribe", fraction)

    async def decode() -> None:
        with opened_for_stage(ctx.job.spec, s.paths.input_roots) as source:  # the file as submitted
            await stream_audio(source, s.audio.chunk_seconds, decoded_send)
        mark("decoded")

    async def ear() -> None:
        results["transcript"] = await hear(
            whisper_recv, cloud_recv, job_id=ctx.id, media=media, settings=s, store=res.store,
            pool=res.whisper, cache=res.cache.for_job(ctx.lease), on_progress=progress,
            budget=res.budget.for_claim(ctx.lease.fence), secrets=res.secrets,
        )
        mark("heard")

    async def feats() -> None:
        results["features"] = await _features(feat_recv, s.select.feature_hop_seconds)

    async def diarizer(spool: PcmSpool) -> None:
        pcm = await spool.complete()
        mark("diarize_started")
        results["turns"] = await diarize_in_process(str(pcm), s.diarize, speakers, pool=res.diarizer)
        mark("diarized")

    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(decode)
            tg.start_soon(partial(fan_out, decoded_recv, sinks, lossy=lossy))
            tg.start_soon(ear)
            tg.start_soon(feats)
            if diarize:
                assert spool_recv and tail_recv and follow_send and follow_recv
                spool = await tg.start(_spool, job_dir / "audio.pcm", spool_recv, PCM_DTYPE)
                tail = await tg.start(_spool, job_dir / "audio.f32", tail_recv, FLOAT_DTYPE)
                tg.start_soon(tail.follow, follow_send, s.audio.chunk_seconds)
                tg.start_soon(partial(fan_out, follow_recv, ears, lossy=ears_lossy))
                tg.start_soon(diarizer, spool)
    finally:
        shutil.rmtree(job_dir, ignore_errors=True)
    transcript: Transcript = results["transcript"]
    ctx.transcript = transcript
    ctx.features = results["features"]
    ctx.turns = list(results["turns"])
    ctx.notes.extend(transcript.notes)
    ctx.timeline["transcribe"] = timeline
    await ctx.lease.put_result("transcribe", key, {
        "transcript": transcript.to_dict(),
        "features": ctx.features.to_dict() if ctx.features is not None else None,
        "turns": [t.to_dict() for t in ctx.turns],
    })
    log.info("heard", job_id=ctx.id, stage="transcribe", words=len(transcript.words),
             engine=transcript.engine, speakers=len({t.speaker for t in ctx.turns}))
    res.progress(ctx, "transcribe", 1.0)
