"""Retention: old finished jobs, their events, stage results and cached transcripts leave the
store, so it does not grow without bound.

The daemon prunes every ``retention.interval_minutes`` under its supervisor; ``montagectl purge
--older-than`` does the same at once with one age for everything. What is deleted and what is
always kept (queued and running jobs, results for their media) is the store's
:meth:`~montaged.store.JobStore.prune`; this module turns ages into cut-off times and runs it.
"""

from __future__ import annotations

import time

import anyio
import structlog

from montaged import metrics
from montaged.config import RetentionConfig
from montaged.errors import StoreUnavailable
from montaged.store import JobStore, Pruned, PrunePolicy

log = structlog.get_logger(__name__)

DAY = 86_400.0
FIRST_DELAY = 60.0
"""Seconds after start before the first periodic prune: start-up is busy enough."""


def policy(cfg: RetentionConfig, *, now: float | None = None) -> PrunePolicy:
    """The configured rules as cut-off times (0 in the config leaves a rule out)."""
    now = time.time() if now is None else now

    def before(days: float) -> float | None:
        return now - days * DAY if days > 0 else None

    return PrunePolicy(jobs_before=before(cfg.days), events_before=before(cfg.events_days),
                       results_before=before(cfg.results_days), max_jobs=cfg.max_jobs or None,
                       max_results=cfg.max_results or None,
                       max_result_bytes=int(cfg.max_results_mb * (1 << 20)) or None)


def older_than(seconds: float, *, now: float | None = None) -> PrunePolicy:
    """Everything finished, recorded or written more than ``seconds`` ago (``montagectl purge``)."""
    cut = (time.time() if now is None else now) - seconds
    return PrunePolicy(jobs_before=cut, events_before=cut, results_before=cut)


async def prune(store: JobStore, rules: PrunePolicy, *, why: str) -> Pruned:
    """Run one prune, count it in ``montage_pruned_total`` and log what went."""
    started = time.perf_counter()
    pruned = await store.prune(rules)
    for kind, n in pruned.to_dict().items():
        metrics.PRUNED.labels(kind=kind).inc(n)
    log.info("store pruned", why=why, seconds=round(time.perf_counter() - started, 3), **pruned.to_dict())
    return pruned


async def run_retention(store: JobStore, cfg: RetentionConfig) -> None:
    """Prune every ``cfg.interval_minutes`` for the daemon's life; returns at once when it is 0.
    A store that is away skips a round (the next one catches up)."""
    if cfg.interval_minutes <= 0:
        return
    await anyio.sleep(FIRST_DELAY)
    while True:
        try:
            await prune(store, policy(cfg), why="periodic")
        except StoreUnavailable as e:
            log.warning("store unavailable; retention skips this round", error=str(e))
        await anyio.sleep(cfg.interval_minutes * 60)
