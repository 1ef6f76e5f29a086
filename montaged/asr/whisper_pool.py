"""A pool of Whisper worker processes, each holding the model for its whole life.

Processes rather than threads: the GIL-bound parts of faster-whisper (feature extraction,
word alignment) then run in parallel too, and a crashing decoder takes one worker down, not the
daemon. The processes are a :class:`~montaged.procpool.ProcPool`: a worker that dies fails (after
one retry) only its window, with ``worker_died``, and is replaced.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Self

import numpy as np
import structlog

from montaged.asr import whisper_worker
from montaged.asr.models import resolve
from montaged.asr.whisper_worker import DecodeOptions, LoadOptions
from montaged.config import WhisperConfig
from montaged.metrics import WORKERS_BUSY
from montaged.model import Word
from montaged.procpool import PoolHealth, ProcPool
from montaged.resources_plan import usable_cores, whisper_size

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class WindowWords:
    words: list[Word]
    language: str


@dataclass
class PoolStats:
    """What the workers reported, for logs, metrics and tests (``loads`` per pid must stay 1)."""

    loads: dict[int, int] = field(default_factory=dict)
    windows: int = 0
    busy_seconds: float = 0.0
    restarts: int = 0


class WhisperPool:
    """``async with WhisperPool(cfg, model_cache) as pool: words = await pool.transcribe(x, t0)``.

    Args:
        cfg: the ``[whisper]`` settings (model, device, compute type, workers, threads, beam).
        model_cache: where registry models are assembled (``settings.paths.models()``).
        model: overrides ``cfg.model`` (CLI ``--model``).
        warm: start every worker and load the model before ``__aenter__`` returns, so a broken
            model fails here with a clear error rather than in the middle of a job.
        workers, threads: worker processes and threads each, from the daemon's sizing plan
            (:func:`montaged.resources_plan.probe_plan`); ``None`` sizes them the same way from
            ``cfg`` and the cores this process may use.
    """

    def __init__(
        self, cfg: WhisperConfig, model_cache: Path, *, model: str | None = None, warm: bool = True,
        workers: int | None = None, threads: int | None = None,
    ) -> None:
        self.cfg = cfg
        self.model_name = model or cfg.model
        self._model_cache = model_cache
        self._warm = warm
        self.device = whisper_worker.resolve_device(cfg.device)
        self.compute_type = whisper_worker.resolve_compute_type(cfg.compute_type, self.device)
        if not (workers and threads):
            auto_workers, auto_threads = whisper_size(cfg, self.device, usable_cores())
            workers, threads = workers or auto_workers, threads or auto_threads
        self.workers, self.threads = workers, threads
        self.decode = DecodeOptions(beam_size=cfg.beam_size, language=cfg.language)
        self.stats = PoolStats()
        self._pool: ProcPool | None = None
        self._busy = 0

    async def __aenter__(self) -> Self:
        path = await asyncio.to_thread(resolve, self.model_name, self._model_cache)
        load = LoadOptions(path, self.device, self.compute_type, self.threads)
        log.info(
            "whisper pool starting",
            model=self.model_name,
            path=path,
            device=self.device,
            compute_type=self.compute_type,
            workers=self.workers,
            threads=self.threads,
        )
        started = time.perf_counter()
        self._pool = ProcPool(
            "whisper", workers=self.workers, initializer=whisper_worker.init_worker, initargs=(load,),
            warm=self._warm, hint="; lower whisper.workers or use a smaller whisper.model",
        )  # fmt: skip
        await self._pool.__aenter__()
        if self._warm:
            try:  # one ping per worker: each call holds its worker, so they land on different ones
                pings = (self._pool.run(whisper_worker.ping) for _ in range(self.workers))
                pongs = await asyncio.gather(*pings)
            except BaseException:
                await self._pool.aclose()
                raise
            for p in pongs:
                self.stats.loads[p["pid"]] = p["loads"]
            log.info("whisper pool ready", seconds=round(time.perf_counter() - started, 2))
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._pool is not None:
            await self._pool.aclose()

    @property
    def pool(self) -> ProcPool:
        """The worker processes (health, restarts, pids)."""
        if self._pool is None:
            raise RuntimeError("WhisperPool used outside `async with`")
        return self._pool

    def health(self) -> PoolHealth:
        return self.pool.health()

    async def transcribe_window(self, samples: np.ndarray, offset: float,
                                language: str | None = None) -> WindowWords:
        """Words of one window (media times), with the language the worker decoded in.

        ``language``: a job's own spoken language (``options.language``); None = the pool's.

        A worker that dies on the window is replaced and the window retried once; a second death
        raises :class:`~montaged.procpool.WorkerDied`.
        """
        pool = self.pool
        self._busy += 1
        WORKERS_BUSY.labels(pool="whisper").set(min(self._busy, self.workers))
        try:
            decode = self.decode
            if language is not None and language != decode.language:
                decode = dataclasses.replace(decode, language=language)
            result = await pool.run(whisper_worker.transcribe_window, samples, offset, decode)
        finally:
            self._busy -= 1
            WORKERS_BUSY.labels(pool="whisper").set(min(self._busy, self.workers))
        self.stats.restarts = pool.restarts
        self.stats.loads[result["pid"]] = result["loads"]
        self.stats.windows += 1
        self.stats.busy_seconds += result["seconds"]
        words = [
            Word(
                text=w["text"], start=w["start"], end=w["end"], confidence=w["probability"], source="whisper"
            )
            for w in result["words"]
        ]
        return WindowWords(words, result["language"])

    async def transcribe(self, samples: np.ndarray, offset: float) -> list[Word]:
        """Words of one window of 16 kHz mono float32 samples starting at ``offset`` seconds."""
        return (await self.transcribe_window(samples, offset)).words
