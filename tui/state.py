"""What the TUI knows about the daemon's jobs, kept current from pushed events.

The job records are the daemon's own ``Job.to_dict()`` shapes; events move them through the reducer
montagectl uses too (montaged/jobview.py), so the table moves without asking the daemon again. The
store stays the truth: a resync (``load``) replaces everything.
"""

from __future__ import annotations

import copy
from collections import Counter
from typing import Any

from montaged import jobview
from montaged.control.protocol import EventKind
from montaged.jobview import JobView
from montaged.model import JobEvent

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
        data = {"stage": stage, "progress": progress}
        return self.apply(JobEvent(job_id=job_id, kind=EventKind.JOB_PROGRESS, at=at, data=data))

    def apply(self, event: JobEvent) -> bool:
        """Apply an event through the shared reducer; False when the job is unknown (the caller
        fetches it)."""
        job = self.jobs.get(event.job_id)
        if job is None:
            return False
        view = jobview.apply(JobView.from_job(job, claimed_at=self.claimed_at.get(event.job_id)), event)
        job.update(view.job_fields(), result=copy.deepcopy(dict(view.result)))
        if view.claimed_at is None:
            self.claimed_at.pop(event.job_id, None)
        else:
            self.claimed_at[event.job_id] = view.claimed_at
        return True

    def started(self, job: dict[str, Any]) -> float:
        """When the job's current run began: its claim if we saw it, else its submission."""
        return self.claimed_at.get(job["id"], float(job.get("created_at") or 0.0))
