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
FLOAT_DTYPE = np.dtype("<f4")
"""A spool that keeps the decoder's float32 samples exactly (for Whisper: the same input as
reading the decode directly, so following a spool changes no transcript)."""


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
    pcm: np.ndarray = (np.clip(samples, -1.0, 1.0) * 32767.0).round().astype(PCM_DTYPE)
    return pcm.tobytes()


class PcmSpool:
    """An int16 PCM spool (16 kHz mono) that readers can follow while it is being written.

    Why: the diarizer needs the whole audio before it starts, while Whisper reads at its own
    pace. Fed from one bounded stream, the decoder could run only as fast as Whisper read, so
    the spool was complete (and diarization began) just before Whisper finished: the two ran one
    after the other. Spooling at decode speed and letting Whisper *follow* the file keeps the
    single decode and bounded memory (the backlog waits on disk) and
    lets diarization run beside Whisper from the first seconds (the backlog on disk is 32 kB per
    second of audio in int16, 64 kB in float32).

    ``async with await PcmSpool.create(path) as spool``: run :meth:`write_from` and any number
    of :meth:`follow` readers in one task group; :meth:`complete` waits for the finished file.
    ``dtype`` is :data:`PCM_DTYPE` (int16, what the diarizer maps) or :data:`FLOAT_DTYPE`.
    """

    def __init__(self, path: Path, write_fd: int, dtype: np.dtype = PCM_DTYPE) -> None:
        _check_dtype(dtype)
        self.path = path
        self.dtype = dtype
        self.part = path.with_name(path.name + ".part")
        self._fd: int | None = write_fd
        self.written = 0  # samples in the file (gaps filled with silence)
        self.done = False
        self._changed = anyio.Event()
        self._complete = anyio.Event()

    @classmethod
    async def create(cls, path: Path, dtype: np.dtype = PCM_DTYPE) -> PcmSpool:
        _check_dtype(dtype)  # before the file exists: a refused spool leaves nothing behind
        part = path.with_name(path.name + ".part")
        fd = await anyio.to_thread.run_sync(
            lambda: os.open(part, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        )
        return cls(path, fd, dtype)

    async def __aenter__(self) -> PcmSpool:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._close()
        if not self.done:
            self.part.unlink(missing_ok=True)

    def _close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def _signal(self) -> None:
        self._changed.set()
        self._changed = anyio.Event()

    async def write_from(self, recv: MemoryObjectReceiveStream[AudioChunk]) -> Path:
        """Write every chunk of ``recv``; rename ``path.part`` to ``path`` when complete."""
        assert self._fd is not None, "spool already written"
        fd = self._fd
        try:
            async with recv:
                async for chunk in recv:
                    at = round(chunk.start * AudioChunk.SAMPLE_RATE)
                    pad = max(0, at - self.written)
                    samples = np.asarray(chunk.samples, dtype=np.float32)
                    if self.dtype == PCM_DTYPE:
                        data = _to_pcm16(samples)
                    else:
                        data = samples.astype(FLOAT_DTYPE).tobytes()
                    if pad:
                        data = bytes(pad * self.dtype.itemsize) + data
                    await anyio.to_thread.run_sync(_write_all, fd, data)
                    self.written += pad + len(chunk.samples)
                    self._signal()
            self._close()
            os.replace(self.part, self.path)
        except OSError as e:
            if e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
                raise DiskFullError(
                    f"{self.path}: disk full while spooling audio ({e.strerror}); free space under "
                    f"{self.path.parent}"
                ) from e
            raise
        self.done = True
        self._signal()
        self._complete.set()
        log.debug("pcm spooled", path=str(self.path), seconds=self.written / AudioChunk.SAMPLE_RATE)
        return self.path

    async def complete(self) -> Path:
        """The finished spool's path, once every sample is written."""
        await self._complete.wait()
        return self.path

    async def follow(self, send: MemoryObjectSendStream[AudioChunk], chunk_seconds: float) -> None:
        """Send the spool's samples as float32 chunks of ``chunk_seconds`` as they are written.

        Reads at the receiver's pace (a full ``send`` waits), so only the stream's buffer is held
        in memory however far the writer is ahead. Closes ``send`` at the end of the spool.
        """
        size = max(1, round(chunk_seconds * AudioChunk.SAMPLE_RATE))
        # Opened on the .part name now: it is renamed (same file) when the writer completes.
        fd = await anyio.to_thread.run_sync(
            lambda: os.open(self.path if self.done else self.part, os.O_RDONLY | os.O_CLOEXEC)
        )
        pos = 0
        try:
            async with send:
                while True:
                    changed = self._changed
                    avail = self.written - pos
                    if avail >= size or (self.done and avail > 0):
                        n = min(avail, size)
                        raw = await anyio.to_thread.run_sync(
                            os.pread, fd, n * self.dtype.itemsize, pos * self.dtype.itemsize
                        )
                        samples = np.frombuffer(raw, self.dtype).astype(np.float32)
                        if self.dtype == PCM_DTYPE:
                            samples *= np.float32(1 / 32767)
                        await send.send(AudioChunk(start=pos / AudioChunk.SAMPLE_RATE, samples=samples))
                        pos += n
                    elif self.done:
                        return
                    else:
                        await changed.wait()
        finally:
            os.close(fd)


def _check_dtype(dtype: np.dtype) -> None:
    if dtype not in (PCM_DTYPE, FLOAT_DTYPE):
        raise ValueError(f"spool dtype must be int16 or float32 little-endian (got {dtype})")


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


async def spool_pcm(recv: MemoryObjectReceiveStream[AudioChunk], path: Path) -> Path:
    """Write every chunk to ``path`` as int16 PCM (16 kHz mono); return ``path`` when complete.

    The file is written as ``path.part`` and renamed at the end, so a reader never maps half a
    spool. Gaps between chunks are filled with silence so sample ``i`` is always at
    ``i / 16000`` seconds of media time. Writes run in a worker thread, off the event loop.
    (:class:`PcmSpool` when readers must follow the spool while it is written.)
    """
    async with await PcmSpool.create(path) as spool:
        return await spool.write_from(recv)


def open_pcm(path: Path) -> np.ndarray:
    """Map a spool written by :func:`spool_pcm` (read-only, no copy); int16 samples at 16 kHz."""
    return np.memmap(path, dtype=PCM_DTYPE, mode="r")
