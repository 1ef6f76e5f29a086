"""Diarization in its own worker process, beside the Whisper pool, on the already-decoded audio.

The audio stage spools the decoded 16 kHz mono audio as int16 PCM (``media.fanout.spool_pcm``);
the worker maps that file with ``np.memmap`` instead of decoding the media a second time. The
backend loads once per worker process (module-level cache) and stays loaded for later jobs.

The pool is a dedicated single-process ``ProcessPoolExecutor`` started with ``spawn``: fork is
unsafe under a running event loop and threads, and the Whisper pool owns the forkserver's
preload list. Diarizing one file at a time is enough: it runs at a few percent of real time.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any

import numpy as np
import structlog

from montaged.config import DiarizeConfig
from montaged.diarize import SAMPLE_RATE, Diarizer, create_diarizer
from montaged.errors import MediaError, ModelError
from montaged.model import SpeakerTurn

log = structlog.get_logger(__name__)

PCM_DTYPE = np.dtype("<i2")
"""The spool's format (``media.fanout.PCM_DTYPE``): little-endian int16, full scale 32767."""

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


_executor: ProcessPoolExecutor | None = None
_executor_lock = threading.Lock()


def _init_worker() -> None:
    from montaged.logging import setup_worker

    setup_worker()


def _pool() -> ProcessPoolExecutor:
    global _executor
    with _executor_lock:
        if _executor is None:
            _executor = ProcessPoolExecutor(
                max_workers=1, mp_context=multiprocessing.get_context("spawn"), initializer=_init_worker
            )
        return _executor


def _replace(broken: ProcessPoolExecutor) -> None:
    global _executor
    with _executor_lock:
        if _executor is broken:
            broken.shutdown(wait=False, cancel_futures=True)
            _executor = None


def shutdown_pool() -> None:
    """Stop the diarizer process (the daemon calls this at exit; the model is freed with it)."""
    global _executor
    with _executor_lock:
        executor, _executor = _executor, None
    if executor is not None:
        executor.shutdown(wait=True, cancel_futures=True)


async def diarize_in_process(pcm_path: str, cfg: DiarizeConfig, speakers: int | None) -> list[SpeakerTurn]:
    """Diarize a PCM spool in the diarizer process without blocking the event loop.

    The first call starts the process and loads the model (seconds); later calls reuse both.
    A worker that dies (out of memory, a crash in torch) is replaced and the file retried once.
    Cancelling the awaiting task does not stop a file already being diarized: it finishes in the
    background and its result is dropped.
    """
    if cfg.backend == "none":
        return []
    loop = asyncio.get_running_loop()
    options = worker_options(cfg)
    for attempt in (1, 2):
        executor = _pool()
        try:
            rows = await loop.run_in_executor(
                executor, diarize_pcm_file, pcm_path, SAMPLE_RATE, cfg.backend, speakers, options
            )
            break
        except BrokenProcessPool as e:
            _replace(executor)
            if attempt == 2:
                raise ModelError(
                    f"the diarizer process died twice on {pcm_path} (out of memory, or a crash in torch); "
                    "lower diarize.threads or set diarize.backend = 'none'"
                ) from e
            log.warning("diarizer process died; restarting it", pcm=pcm_path)
    return [SpeakerTurn.from_dict(r) for r in rows]


async def pool_stats() -> dict[str, int]:
    """:func:`worker_stats` of the diarizer process (starts it if needed)."""
    return await asyncio.get_running_loop().run_in_executor(_pool(), worker_stats)
