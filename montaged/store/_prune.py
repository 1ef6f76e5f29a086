"""The SQL of :meth:`JobStore.prune`, shared by both backends (``$n`` parameters; SQLite's
adapter turns them into ``?n``). Window functions keep the count caps portable (SQLite has no
``OFFSET`` without ``LIMIT``)."""

from __future__ import annotations

from typing import Any

from montaged.store import PrunePolicy

FINISHED = "state IN ('done', 'failed', 'cancelled')"
# Media that a queued or running job has: its stage results are kept whatever their age.
LIVE_HASHES = (
    "SELECT content_hash FROM jobs WHERE state IN ('queued', 'running') AND content_hash IS NOT NULL"
)
_RESULT_FREE = f"(content_hash IS NULL OR content_hash NOT IN ({LIVE_HASHES}))"
_OLDEST_JOBS = (
    f"SELECT id FROM (SELECT id, ROW_NUMBER() OVER (ORDER BY updated_at DESC, id DESC) AS n "
    f"FROM jobs WHERE {FINISHED}) AS ranked WHERE n > $1"
)
_OLDEST_RESULTS = (
    "SELECT stage, key FROM (SELECT stage, key, ROW_NUMBER() OVER (ORDER BY created_at DESC, stage, key) "
    f"AS n FROM stage_results WHERE {_RESULT_FREE}) AS ranked WHERE n > $1"
)


def _over_bytes(size: str) -> str:
    """Results past the first ``$1`` bytes of payload, newest first (a running total)."""
    return (f"SELECT stage, key FROM (SELECT stage, key, SUM({size}) OVER (ORDER BY created_at DESC, "
            f"stage, key ROWS UNBOUNDED PRECEDING) AS total FROM stage_results WHERE {_RESULT_FREE}) "
            "AS ranked WHERE total > $1")


def statements(policy: PrunePolicy, payload_bytes: str) -> list[tuple[str, str, tuple[Any, ...]]]:
    """``(counter, sql, args)`` in order: events before their jobs (counted, not left to the
    cascade), then jobs, then results. ``payload_bytes`` is the backend's SQL for the size of a
    result's ``payload``."""
    out: list[tuple[str, str, tuple[Any, ...]]] = []
    if policy.events_before is not None:
        out.append(("events", f"DELETE FROM job_events WHERE at < $1 AND job_id IN (SELECT id FROM jobs "
                              f"WHERE {FINISHED})", (policy.events_before,)))
    if policy.jobs_before is not None:
        old = f"SELECT id FROM jobs WHERE {FINISHED} AND updated_at < $1"
        out.append(("events", f"DELETE FROM job_events WHERE job_id IN ({old})", (policy.jobs_before,)))
        out.append(("jobs", f"DELETE FROM jobs WHERE id IN ({old})", (policy.jobs_before,)))
    if policy.max_jobs is not None:
        out.append(("events", f"DELETE FROM job_events WHERE job_id IN ({_OLDEST_JOBS})", (policy.max_jobs,)))
        out.append(("jobs", f"DELETE FROM jobs WHERE id IN ({_OLDEST_JOBS})", (policy.max_jobs,)))
    if policy.results_before is not None:
        out.append(("results", f"DELETE FROM stage_results WHERE created_at < $1 AND {_RESULT_FREE}",
                    (policy.results_before,)))
    if policy.max_results is not None:
        out.append(("results", f"DELETE FROM stage_results WHERE (stage, key) IN ({_OLDEST_RESULTS})",
                    (policy.max_results,)))
    if policy.max_result_bytes is not None:
        over = _over_bytes(payload_bytes)
        out.append(("results", f"DELETE FROM stage_results WHERE (stage, key) IN ({over})",
                    (policy.max_result_bytes,)))
    return out
