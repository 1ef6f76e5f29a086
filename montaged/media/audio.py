"""Decode a file's audio once into 16 kHz mono float32 chunks (the one format every ear takes).

Memory stays flat whatever the length: PyAV decodes frame by frame, each resampled frame is
copied into one preallocated chunk buffer, and a chunk leaves before the next one fills. The
async wrapper pushes chunks into a bounded stream from the decoder thread and *waits* when the
stream is full, so a slow consumer slows the decoder instead of queueing audio in memory.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import anyio
import anyio.from_thread
import anyio.to_thread
import av
import av.audio.resampler
import av.error
import numpy as np
import structlog
from anyio.streams.memory import MemoryObjectSendStream

from montaged.media.probe import CorruptMediaError, NoAudioStreamError
from montaged.model import AudioChunk

log = structlog.get_logger(__name__)

RATE = AudioChunk.SAMPLE_RATE


def iter_audio_chunks(path: Path, chunk_seconds: float) -> Iterator[AudioChunk]:
    """Yield consecutive :class:`AudioChunk` of ``chunk_seconds`` (the last one may be shorter).

    Samples are not clipped: a loud stereo passage mixed to mono (each channel at -3 dB, as
    ``ffmpeg -ac 1`` does) may exceed 1.0 slightly. ``chunk.start`` is media time: seconds from
    the container's start, the same clock the render stage seeks on, so transcript word times
    line up with video frames.
    """
    if chunk_seconds <= 0:
        raise ValueError(f"chunk_seconds must be positive (got {chunk_seconds})")
    size = max(1, round(chunk_seconds * RATE))
    try:
        container = av.open(str(path), metadata_errors="ignore")
    except av.error.FFmpegError as e:
        raise CorruptMediaError(f"{path}: cannot be opened for audio ({e}); re-copy or re-export it") from e
    with container:
        if not container.streams.audio:
            raise NoAudioStreamError(f"{path}: has no audio stream; submit a file with sound")
        stream = container.streams.audio[0]
        stream.codec_context.thread_type = "AUTO"
        origin = container.start_time / av.time_base if container.start_time is not None else 0.0
        resampler = av.audio.resampler.AudioResampler(format="flt", layout="mono", rate=RATE)
        buf = np.empty(size, dtype=np.float32)
        fill = 0
        emitted = 0  # samples already yielded
        first: float | None = None

        def frames() -> Iterator[av.AudioFrame]:
            try:
                for frame in container.decode(stream):
                    yield from resampler.resample(frame)
            except av.error.FFmpegError as e:
                raise CorruptMediaError(
                    f"{path}: audio stops decoding ({e}); the file is damaged: re-copy or re-export it"
                ) from e
            yield from resampler.resample(None)  # flush the resampler's tail

        for out in frames():
            if first is None:
                first = max(0.0, (out.time or 0.0) - origin) if out.time is not None else 0.0
            data = out.to_ndarray().reshape(-1)
            pos = 0
            while pos < len(data):
                take = min(size - fill, len(data) - pos)
                buf[fill : fill + take] = data[pos : pos + take]
                fill += take
                pos += take
                if fill == size:
                    yield AudioChunk(start=first + emitted / RATE, samples=buf.copy())
                    emitted += size
                    fill = 0
        if fill:
            yield AudioChunk(start=(first or 0.0) + emitted / RATE, samples=buf[:fill].copy())


async def stream_audio(path: Path, chunk_seconds: float, send: MemoryObjectSendStream[AudioChunk]) -> float:
    """Decode ``path`` in a worker thread into ``send``; return the seconds of audio decoded.

    Closes ``send`` when done (or failed), so the consumers' ``async for`` ends. If every
    receiver has gone away, decoding stops early instead of running to the end for nobody.
    """
    decoded = 0

    def work() -> None:
        nonlocal decoded
        for chunk in iter_audio_chunks(path, chunk_seconds):
            try:
                # Blocks this thread while the stream is full: that is the backpressure.
                anyio.from_thread.run(send.send, chunk)
            except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                log.info("audio consumers gone; decoding stopped", path=str(path), seconds=decoded / RATE)
                return
            decoded += len(chunk.samples)

    async with send:
        await anyio.to_thread.run_sync(work)
    return decoded / RATE
