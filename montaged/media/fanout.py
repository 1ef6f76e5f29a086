"""One decoded audio stream, many consumers: Whisper windows, the live cloud stream, the spool.

File consumers push back (a full sink makes the decoder wait, nothing is dropped); a live
consumer is *lossy*: when its buffer is full the chunk is dropped for it alone, because a cloud
socket that fell behind cannot be allowed to stall the local transcription (STYLE.md: only live
inputs may drop). The PCM spool writes int16 samples to a file so a diarizer process can
``np.memmap`` the audio instead of decoding the media a second time.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import anyio
import anyio.to_thread
import numpy as np
import structlog
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from montaged.errors import DiskFullError
from montaged.model import AudioChunk

log = structlog.get_logger(__name__)

PCM_DTYPE = np.dtype("<i2")
"""Spool sample format: little-endian int16, 16 kHz mono (sample ``i`` is at ``i / 16000`` s)."""


@dataclass(frozen=True)
class FanOutResult:
    """How many chunks went out, and how many each sink missed (lossy drops or a closed sink)."""

    chunks: int
    dropped: tuple[int, ...]


async def fan_out(
    source: MemoryObjectReceiveStream[AudioChunk],
    sinks: Sequence[MemoryObjectSendStream[AudioChunk]],
    *,
    lossy: Sequence[bool] | None = None,
) -> FanOutResult:
    """Send every chunk of ``source`` to every sink, then close all sinks.

    Args:
        source: decoded chunks (e.g. the receive side of :func:`~montaged.media.audio.stream_audio`).
        sinks: one send stream per consumer; all are closed when ``source`` ends or this fails.
        lossy: per sink, ``True`` to drop chunks while that sink is full (live streams) instead
            of waiting. Default: no sink is lossy.

    A sink whose receiver has closed is skipped from then on (its consumer finished or failed on
    its own); the others still get everything.
    """
    flags = list(lossy) if lossy is not None else [False] * len(sinks)
    if len(flags) != len(sinks):
        raise ValueError(f"lossy has {len(flags)} flags for {len(sinks)} sinks")
    open_ = [True] * len(sinks)
    dropped = [0] * len(sinks)
    chunks = 0
    try:
        async with source:
            async for chunk in source:
                chunks += 1
                for i, sink in enumerate(sinks):
                    if not open_[i]:
                        dropped[i] += 1
                        continue
                    try:
                        if flags[i]:
                            sink.send_nowait(chunk)
                        else:
                            await sink.send(chunk)
                    except anyio.WouldBlock:
                        dropped[i] += 1
                        if dropped[i] == 1 or dropped[i] % 100 == 0:
                            log.warning("live audio consumer behind; dropping", sink=i, dropped=dropped[i])
                    except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                        open_[i] = False
                        dropped[i] += 1
                        log.info("audio consumer closed early", sink=i, at=round(chunk.start, 3))
    finally:
        for sink in sinks:
            sink.close()
    return FanOutResult(chunks=chunks, dropped=tuple(dropped))


def _to_pcm16(samples: np.ndarray) -> bytes:
    return (np.clip(samples, -1.0, 1.0) * 32767.0).round().astype(PCM_DTYPE).tobytes()


async def spool_pcm(recv: MemoryObjectReceiveStream[AudioChunk], path: Path) -> Path:
    """Write every chunk to ``path`` as int16 PCM (16 kHz mono); return ``path`` when complete.

    The file is written as ``path.part`` and renamed at the end, so a reader never maps half a
    spool. Gaps between chunks are filled with silence so sample ``i`` is always at
    ``i / 16000`` seconds of media time. Writes run in a worker thread, off the event loop.
    """
    part = path.with_name(path.name + ".part")
    written = 0  # samples in the file
    f = await anyio.to_thread.run_sync(part.open, "wb")
    try:
        async with recv:
            async for chunk in recv:
                at = round(chunk.start * AudioChunk.SAMPLE_RATE)
                pad = max(0, at - written)
                data = _to_pcm16(np.asarray(chunk.samples, dtype=np.float32))
                if pad:
                    data = bytes(pad * PCM_DTYPE.itemsize) + data
                await anyio.to_thread.run_sync(f.write, data)
                written += pad + len(chunk.samples)
        await anyio.to_thread.run_sync(f.close)
        os.replace(part, path)
    except OSError as e:
        if e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
            raise DiskFullError(
                f"{path}: disk full while spooling audio ({e.strerror}); free space under {path.parent}"
            ) from e
        raise
    finally:
        f.close()
        if part.exists():
            part.unlink()
    log.debug("pcm spooled", path=str(path), seconds=written / AudioChunk.SAMPLE_RATE)
    return path


def open_pcm(path: Path) -> np.ndarray:
    """Map a spool written by :func:`spool_pcm` (read-only, no copy); int16 samples at 16 kHz."""
    return np.memmap(path, dtype=PCM_DTYPE, mode="r")
