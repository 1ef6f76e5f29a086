"""Diarization in its own worker process, beside the Whisper pool, on the already-decoded audio.

The audio stage spools the decoded 16 kHz mono audio as int16 PCM (``media.fanout.spool_pcm``);
the worker maps that file with ``np.memmap`` instead of decoding the media a second time. The
backend loads once per worker process (module-level cache) and stays loaded for later jobs.

:class:`DiarizerPool` is a one-process :class:`~montaged.procpool.ProcPool` started on first use
(a daemon that never diarizes never loads torch). Diarizing one file at a time is enough: it
runs at a few percent of real time. A worker that dies (out of memory, a crash in torch) fails
that file alone, after one retry, with ``worker_died``.
"""

from __future__ import annotations

import os
import time
from typing import Any

import numpy as np
import structlog

from montaged.config import DiarizeConfig
from montaged.diarize import SAMPLE_RATE, Diarizer, create_diarizer
from montaged.errors import MediaError
from montaged.media.fanout import PCM_DTYPE  # the spool's format: little-endian int16
from montaged.model import SpeakerTurn
from montaged.procpool import STOP_TIMEOUT, PooledModel, ProcPool

log = structlog.get_logger(__name__)

_diarizers: dict[tuple[str, tuple[tuple[str, Any], ...]], Diarizer] = {}
_loads = 0


def _get(backend: str, options: dict[str, Any]) -> Diarizer:
    """The process's diarizer for these settings, loaded on first use."""
    global _loads
    key = (backend, tuple(sorted(options.items())))
    if key not in _diarizers:
        _diarizers.clear()  # settings changed: free the old models before loading new ones
        _diarizers[key] = create_diarizer(DiarizeConfig.model_validate({**options, "backend": backend}))
        _loads += 1
    return _diarizers[key]


def diarize_pcm_file(
    pcm_path: str, sample_rate: int, backend: str, speakers: int | None, options: dict[str, Any]
) -> list[dict[str, Any]]:
    """Speaker turns (``SpeakerTurn.to_dict()``) of an int16 PCM spool; runs in a worker process.

    Args:
        pcm_path: spool file (sample ``i`` is at ``i / sample_rate`` seconds of media time).
        sample_rate: must be 16000, the rate every backend takes.
        backend: ``senko`` or ``pyannote``.
        speakers: fixed speaker count, or ``None`` to estimate it.
        options: the other ``[diarize]`` settings (``DiarizeConfig`` fields but ``backend``).
    """
    if sample_rate != SAMPLE_RATE:
        raise ValueError(f"{pcm_path}: diarizer takes {SAMPLE_RATE} Hz PCM (got {sample_rate} Hz)")
    size = os.path.getsize(pcm_path)
    if size % PCM_DTYPE.itemsize:
        raise MediaError(f"{pcm_path}: {size} bytes is not whole int16 samples; the spool is truncated")
    diarizer = _get(backend, options)
    if size == 0:
        return []
    pcm = np.memmap(pcm_path, dtype=PCM_DTYPE, mode="r")
    # One float copy for the models; the map itself stays in the page cache, not the heap.
    samples = np.empty(len(pcm), dtype=np.float32)
    np.multiply(pcm, np.float32(1 / 32767), out=samples, casting="unsafe")
    del pcm
    t0 = time.perf_counter()
    turns = diarizer.diarize(samples, speakers=speakers)
    elapsed = time.perf_counter() - t0
    log.info(
        "diarized",
        backend=backend,
        seconds=round(elapsed, 2),
        audio_seconds=round(len(samples) / SAMPLE_RATE, 1),
        speakers=len({t.speaker for t in turns}),
        turns=len(turns),
    )
    return [t.to_dict() for t in turns]


def worker_stats() -> dict[str, int]:
    """``pid`` and ``loads`` (model loads so far) of the worker that runs this; for tests/metrics."""
    return {"pid": os.getpid(), "loads": _loads}


def worker_options(cfg: DiarizeConfig) -> dict[str, Any]:
    """The ``options`` argument of :func:`diarize_pcm_file` for ``cfg``."""
    return cfg.model_dump(exclude={"backend"})


def _init_worker() -> None:
    from montaged.logging import setup_worker

    setup_worker()


class DiarizerPool(PooledModel):
    """``async with DiarizerPool() as pool: turns = await pool.diarize(pcm, cfg, speakers)``.

    The process starts, and loads the model, on the first file (seconds); later files reuse both.
    Cancelling the awaiting task does not stop a file already being diarized: it finishes in the
    background, its result is dropped, and the process then serves the next file.

    Args:
        threads: torch threads for a ``[diarize]`` config that leaves ``threads`` at 0 (the
            daemon's sizing plan: ``plan.diarize_threads``); 0 sizes them in the worker.
        stop_timeout: seconds a file being diarized gets at close before the process is killed.
    """

    def __init__(self, *, threads: int = 0, stop_timeout: float = STOP_TIMEOUT) -> None:
        self.threads = threads
        self.pool = ProcPool(
            "diarizer", workers=1, initializer=_init_worker, warm=False, stop_timeout=stop_timeout,
            hint="; lower diarize.threads or set diarize.backend = 'none'",
        )  # fmt: skip

    async def diarize(self, pcm_path: str, cfg: DiarizeConfig, speakers: int | None) -> list[SpeakerTurn]:
        """Speaker turns of a PCM spool, diarized in the worker process."""
        if cfg.backend == "none":
            return []
        options = worker_options(cfg)
        options["threads"] = options["threads"] or self.threads
        rows = await self.pool.run(diarize_pcm_file, pcm_path, SAMPLE_RATE, cfg.backend, speakers, options)
        return [SpeakerTurn.from_dict(r) for r in rows]

    async def stats(self) -> dict[str, int]:
        """:func:`worker_stats` of the diarizer process (starts it if needed)."""
        return await self.pool.run(worker_stats)


async def diarize_in_process(
    pcm_path: str, cfg: DiarizeConfig, speakers: int | None, *, pool: DiarizerPool | None = None
) -> list[SpeakerTurn]:
    """Diarize a PCM spool in a worker process without blocking the event loop.

    Args:
        pcm_path: the int16 spool.
        cfg: the ``[diarize]`` settings.
        speakers: fixed speaker count, or ``None`` to estimate it.
        pool: the daemon's :class:`DiarizerPool`; ``None`` starts one for this call (and its
            model load: seconds).
    """
    if cfg.backend == "none":
        return []
    if pool is None:
        async with DiarizerPool() as own:
            return await own.diarize(pcm_path, cfg, speakers)
    return await pool.diarize(pcm_path, cfg, speakers)
