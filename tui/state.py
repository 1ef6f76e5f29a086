"""What the TUI knows about the daemon's jobs, kept current from pushed events.

The job records are the daemon's own ``Job.to_dict()`` shapes; events are applied to them the way
the pipeline applies them to the store, so the table moves without asking the daemon again. The
store stays the truth: a resync (``load``) replaces everything.
"""

from __future__ import annotations

import copy
from collections import Counter
from typing import Any

STATES = ("queued", "running", "done", "failed", "cancelled")
FILTERS: tuple[str | None, ...] = (None, *STATES)


class JobBook:
    """Job records by id, newest first, plus when each running job was claimed (for its ETA)."""

    def __init__(self) -> None:
        self.jobs: dict[str, dict[str, Any]] = {}
        self.claimed_at: dict[str, float] = {}

    def load(self, jobs: list[dict[str, Any]]) -> None:
        self.jobs = {j["id"]: j for j in jobs}
        self.claimed_at = {k: v for k, v in self.claimed_at.items() if k in self.jobs}

    def put(self, job: dict[str, Any]) -> None:
        self.jobs[job["id"]] = job

    def get(self, job_id: str) -> dict[str, Any] | None:
        return self.jobs.get(job_id)

    def ordered(self, state: str | None = None) -> list[dict[str, Any]]:
        """Newest first; only ``state`` when given."""
        rows = [j for j in self.jobs.values() if state is None or j.get("state") == state]
        return sorted(rows, key=lambda j: (-float(j.get("created_at") or 0.0), j["id"]))

    def counts(self) -> dict[str, int]:
        found = Counter(str(j.get("state")) for j in self.jobs.values())
        return {s: found.get(s, 0) for s in STATES}

    def progress(self, job_id: str, stage: str, progress: float, at: float) -> bool:
        """Apply a progress tick; False when the job is unknown (the caller fetches it)."""
        job = self.jobs.get(job_id)
        if job is None:
            return False
        if job.get("state") in ("queued", "running"):
            job.update(state="running", stage=stage or job.get("stage"), progress=progress, updated_at=at)
        return True

    def apply(self, kind: str, job_id: str, at: float, data: dict[str, Any]) -> bool:
        """Apply a lifecycle event; False when the job is unknown (the caller fetches it)."""
        job = self.jobs.get(job_id)
        if job is None:
            return False
        job["updated_at"] = at
        if kind == "job.claimed":
            job.update(state="running", attempts=int(data.get("attempt") or job.get("attempts") or 0),
                       worker=data.get("worker", job.get("worker")), error_class=None, error_message=None,
                       error_stage=None)
            self.claimed_at[job_id] = at
        elif kind == "job.stage":
            job.update(state="running", stage=data.get("stage"),
                       progress=float(data.get("progress") or job.get("progress") or 0.0))
        elif kind == "job.done":
            job.update(state="done", progress=1.0, result=copy.deepcopy(data.get("result") or {}))
        elif kind == "job.failed":
            job.update(state="failed", error_stage=data.get("stage"), error_class=data.get("error_class"),
                       error_message=data.get("message"))
        elif kind == "job.cancelled":
            job.update(state="cancelled")
        elif kind == "job.released":
            job.update(state="queued", stopped_at=data.get("stopped_at"))
            self.claimed_at.pop(job_id, None)
        return True

    def started(self, job: dict[str, Any]) -> float:
        """When the job's current run began: its claim if we saw it, else its submission."""
        return self.claimed_at.get(job["id"], float(job.get("created_at") or 0.0))
