"""The audio graph of one job: decode the audio once and hear it with every ear at the same time.

    decode ─▶ fan-out ─┬─▶ features (the track selection reads)
                       ├─▶ Whisper, and Deepgram live beside it (ROVER fuses the two)   [no diarization]
                       ├─▶ int16 spool ─▶ handed over for diarization                    [diarization]
                       └─▶ float32 spool ─▶ followed by Whisper (and Deepgram)           [diarization]

With diarization on, the decode runs at full speed into the features, the diarizer's int16 spool
and a float32 spool that Whisper (with Deepgram) *follows* at its own pace: diarization needs all
the audio before it starts, so a decode held back by Whisper would start it only as Whisper
finished, and the two would run one after the other. This way it starts within seconds and runs
beside Whisper; the backlog waits on disk (96 kB per second of audio, deleted with the job), not
in memory, and Whisper hears exactly the samples it would have read from the decode. Without
diarization Whisper reads the decode directly.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import anyio
import numpy as np
from anyio.abc import TaskStatus
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from montaged.asr.ears import Hearing, hear
from montaged.config import Settings
from montaged.media.audio import stream_audio
from montaged.media.fanout import FLOAT_DTYPE, PCM_DTYPE, PcmSpool, fan_out, spool_pcm
from montaged.media.source_file import opened_for_stage
from montaged.model import AudioChunk, JobSpec, Transcript
from montaged.select.features import AudioFeatureTrack

PCM_NAME = "audio.pcm"  # the int16 spool diarization maps
FOLLOW_NAME = "audio.f32"  # the float32 spool Whisper follows


def remove_spool(path: Path) -> None:
    """Delete a spool (finished or not) and its folder once nothing else is left in it."""
    path.unlink(missing_ok=True)
    path.with_name(path.name + ".part").unlink(missing_ok=True)
    with contextlib.suppress(OSError):  # not empty: the other spool still lives there
        path.parent.rmdir()


async def _features(recv: MemoryObjectReceiveStream[AudioChunk], hop: float) -> AudioFeatureTrack:
    track = AudioFeatureTrack(hop)
    async with recv:
        async for chunk in recv:
            await anyio.to_thread.run_sync(track.add, chunk)
    return track.finish()


async def _spool(
    path: Path, recv: MemoryObjectReceiveStream[AudioChunk], dtype: np.dtype[Any], *,
    task_status: TaskStatus[PcmSpool],
) -> None:
    """Create the spool, hand it to the caller (readers may follow it at once), then write it."""
    async with await PcmSpool.create(path, dtype) as spool:
        task_status.started(spool)
        await spool.write_from(recv)


async def hear_source(
    spec: JobSpec,
    ears: Hearing,
    *,
    work_dir: Path,
    on_pcm: Callable[[Path], None] | None,
    mark: Callable[[str], None],
) -> tuple[Transcript, AudioFeatureTrack]:
    """The job's transcript and feature track, from one decode of the file as submitted.

    Args:
        spec: the job (its source is opened as submitted, checked against the input roots).
        ears: what hearing needs; ``ears.settings`` also gives the audio and select sections.
        work_dir: this job's scratch folder for the spools (created; emptied by the end).
        on_pcm: with diarization, called with the int16 spool's path as soon as it is complete
            (the decode is done; Whisper may still be hearing); the callee owns the file from
            then on and removes it with :func:`remove_spool`. None: no diarization spool.
        mark: records a milestone (``decoded``, ``heard``) on the job's timeline.
    """
    s = ears.settings
    q = s.audio.queue_chunks
    results: dict[str, Any] = {}
    decoded_send, decoded_recv = anyio.create_memory_object_stream[AudioChunk](q)
    whisper_send, whisper_recv = anyio.create_memory_object_stream[AudioChunk](q)
    feat_send, feat_recv = anyio.create_memory_object_stream[AudioChunk](q)
    # ears: Whisper, and the live cloud stream beside it (lossy: a live socket that falls
    # behind must not stall the local ear); they read the decode, or follow the spool.
    ear_sinks: list[MemoryObjectSendStream[AudioChunk]] = [whisper_send]
    ears_lossy = [False]
    cloud_recv = None
    if s.deepgram.enabled:
        cloud_send, cloud_recv = anyio.create_memory_object_stream[AudioChunk](q * 4)
        ear_sinks.append(cloud_send)
        ears_lossy.append(True)
    sinks: list[MemoryObjectSendStream[AudioChunk]] = [feat_send]
    lossy = [False]
    if on_pcm is not None:
        spool_send, spool_recv = anyio.create_memory_object_stream[AudioChunk](q)
        tail_send, tail_recv = anyio.create_memory_object_stream[AudioChunk](q)
        follow_send, follow_recv = anyio.create_memory_object_stream[AudioChunk](q)
        sinks += [spool_send, tail_send]
        lossy += [False, False]
    else:
        sinks += ear_sinks
        lossy += ears_lossy
    handed_over = False

    async def decode() -> None:
        with opened_for_stage(spec, s.paths.input_roots) as source:  # the file as submitted
            await stream_audio(source, s.audio.chunk_seconds, decoded_send)
        mark("decoded")

    async def ear() -> None:
        results["transcript"] = await hear(whisper_recv, cloud_recv, ears)
        mark("heard")

    async def feats() -> None:
        results["features"] = await _features(feat_recv, s.select.feature_hop_seconds)

    async def hand_over(spool: PcmSpool, to: Callable[[Path], None]) -> None:
        nonlocal handed_over
        pcm = await spool.complete()
        handed_over = True
        to(pcm)

    work_dir.mkdir(parents=True, exist_ok=True)
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(decode)
            tg.start_soon(partial(fan_out, decoded_recv, sinks, lossy=lossy))
            tg.start_soon(ear)
            tg.start_soon(feats)
            if on_pcm is not None:
                spool = await tg.start(_spool, work_dir / PCM_NAME, spool_recv, PCM_DTYPE)
                tail = await tg.start(_spool, work_dir / FOLLOW_NAME, tail_recv, FLOAT_DTYPE)
                tg.start_soon(tail.follow, follow_send, s.audio.chunk_seconds)
                tg.start_soon(partial(fan_out, follow_recv, ear_sinks, lossy=ears_lossy))
                tg.start_soon(hand_over, spool, on_pcm)
    finally:
        remove_spool(work_dir / FOLLOW_NAME)
        if not handed_over:
            remove_spool(work_dir / PCM_NAME)
        with contextlib.suppress(OSError):
            work_dir.rmdir()
    return results["transcript"], results["features"]


async def decode_to_pcm(spec: JobSpec, settings: Settings, path: Path) -> Path:
    """Decode the file as submitted into an int16 spool at ``path`` (for a diarization that was
    not started beside Whisper: a resumed job whose words are stored but whose turns are not)."""
    send, recv = anyio.create_memory_object_stream[AudioChunk](settings.audio.queue_chunks)

    async def decode() -> None:
        with opened_for_stage(spec, settings.paths.input_roots) as source:  # the file as submitted
            await stream_audio(source, settings.audio.chunk_seconds, send)

    path.parent.mkdir(parents=True, exist_ok=True)
    async with anyio.create_task_group() as tg:
        tg.start_soon(decode)
        pcm = await spool_pcm(recv, path)
    return pcm
