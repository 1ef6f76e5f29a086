"""The job store: one protocol, two backends chosen by URL (SQLite embedded, PostgreSQL)."""

from __future__ import annotations

import builtins
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from montaged.control.protocol import EventKind
from montaged.model import Job, JobEvent, JobSpec, JobState


@dataclass(frozen=True)
class Fence:
    """One claim of one job: ``token`` is the job's attempt number when it was claimed.

    Every write a job's holder makes names its fence; once another worker has claimed the job
    (a lease takeover) the attempt number has moved on and the stale holder's writes are refused.
    """

    job_id: str
    token: int


@dataclass(frozen=True)
class Reservation:
    id: str
    job_id: str
    engine: str
    amount: float
    token: int | None = None  # the claim it was made under; None outside any claim (tools)


@dataclass(frozen=True)
class Caps:
    per_job: float
    per_day: float
    per_month: float


@dataclass(frozen=True)
class SpendSummary:
    """Money per period: settled spend, open reservations, and what is left under the cap."""

    period: str  # "job:<id>" | "day:2026-11-24" | "month:2026-11"
    spent: float
    reserved: float
    cap: float

    @property
    def remaining(self) -> float:
        return max(0.0, self.cap - self.spent - self.reserved)


@dataclass(frozen=True)
class PrunePolicy:
    """What :meth:`JobStore.prune` may delete; ``None`` leaves a rule out.

    Queued and running jobs and their events are never touched, nor a stage result whose media
    (content hash) a queued or running job has.
    """

    jobs_before: float | None = None
    """Finished (done, failed, cancelled) jobs last updated before this Unix time, with their events."""
    events_before: float | None = None
    """Events of finished jobs recorded before this Unix time (the jobs stay)."""
    results_before: float | None = None
    """Stage results and cached transcripts written before this Unix time."""
    max_jobs: int | None = None
    """Keep at most this many finished jobs, the most recently updated."""
    max_results: int | None = None
    """Keep at most this many stage results, the most recently written."""
    max_result_bytes: int | None = None
    """Keep the most recently written stage results up to this many bytes of payload in all."""


@dataclass(frozen=True)
class Pruned:
    """Rows :meth:`JobStore.prune` deleted."""

    jobs: int = 0
    events: int = 0
    results: int = 0

    def to_dict(self) -> dict[str, int]:
        return {"jobs": self.jobs, "events": self.events, "results": self.results}


class ResultStore(Protocol):
    """Where stage results are read and written: the store itself, or a job's fenced view of it."""

    async def put_result(self, stage: str, key: str, payload: dict[str, Any]) -> None: ...
    async def get_result(self, stage: str, key: str) -> dict[str, Any] | None: ...


class JobStore(Protocol):
    """Durable state of every job. All methods are safe to call from several processes."""

    async def migrate(self) -> None: ...
    async def close(self) -> None: ...
    async def ping(self) -> None:
        """Raise StoreUnavailable when the database cannot be reached."""
        ...

    # jobs
    async def submit(self, spec: JobSpec, *, content_hash: str | None = None) -> Job: ...
    async def get(self, job_id: str) -> Job | None: ...
    async def list(self, state: JobState | None = None, limit: int = 200) -> builtins.list[Job]: ...
    async def count_by_state(self) -> dict[JobState, int]: ...
    async def claim(
        self,
        worker: str,
        lease_seconds: float,
        *,
        only: Sequence[str] | None = None,
        max_attempts: int | None = None,
    ) -> Job | None:
        """Atomically move the oldest queued job (or one whose lease expired) to running.

        The claimed job's ``attempts`` is its fencing token: pass it as ``token=`` to every later
        transition. ``only`` restricts the claim to these job ids (the one-shot ``process``
        command). With ``max_attempts``, a job whose last ``max_attempts`` claims all ended without
        a finish, failure or release (its worker crashed each time) is failed as ``poisoned`` in
        the same step instead, and returned in state failed so the caller can announce it.
        """
        ...

    async def heartbeat(
        self, job_id: str, worker: str, lease_seconds: float, *, token: int | None = None
    ) -> bool:
        """Extend the lease; False when the job is no longer ours (cancelled, taken over)."""
        ...

    # Transitions of a running job. With ``token`` (the pipeline always passes it) they apply only
    # to that claim: a claim the job has moved past raises LeaseLost, a job no longer running
    # (cancelled, released) is left as it is. Without a token they act on any active job.
    async def set_stage(
        self, job_id: str, stage: str, progress: float = 0.0, *, token: int | None = None
    ) -> None: ...
    async def set_progress(self, job_id: str, progress: float, *, token: int | None = None) -> None: ...
    async def set_content_hash(self, job_id: str, content_hash: str, *, token: int | None = None) -> None: ...
    async def finish(self, job_id: str, result: dict[str, Any], *, token: int | None = None) -> None: ...
    async def fail(
        self, job_id: str, *, stage: str, error_class: str, message: str, token: int | None = None
    ) -> None: ...
    async def release(self, job_id: str, *, stopped_at: str, token: int | None = None) -> None:
        """Graceful shutdown: back to queued, remembering the stage it stopped in."""
        ...

    async def cancel(self, job_id: str) -> Job | None: ...
    async def retry(self, job_id: str) -> Job | None: ...
    async def find_by_hash(self, content_hash: str, profile: str) -> Job | None: ...

    # per-stage results, keyed by media content hash + a hash of the parameters
    async def put_result(
        self, stage: str, key: str, payload: dict[str, Any], *, fence: Fence | None = None
    ) -> None:
        """Store a stage result; with ``fence``, only while that claim still holds its job
        (LeaseLost otherwise)."""
        ...

    async def get_result(self, stage: str, key: str) -> dict[str, Any] | None: ...

    # retention
    async def prune(self, policy: PrunePolicy) -> Pruned:
        """Delete old finished jobs, events and stage results as ``policy`` says, in one
        transaction; see :class:`PrunePolicy` for what is always kept."""
        ...

    # events
    async def add_event(
        self, job_id: str, kind: EventKind, data: Mapping[str, Any] | None = None
    ) -> JobEvent: ...
    async def events(self, job_id: str, limit: int = 500) -> builtins.list[JobEvent]: ...

    # cost ledger (budget)
    async def reserve(
        self,
        *,
        job_id: str,
        engine: str,
        amount: float,
        caps: Caps,
        now: float | None = None,
        token: int | None = None,
    ) -> Reservation | None:
        """Atomically reserve ``amount`` unless a job/day/month cap would be exceeded (then None).

        With ``token`` the reservation belongs to that claim of the job: the claim must still hold
        the job (LeaseLost otherwise), and open reservations of the job's earlier claims (their
        holders are gone: a crash, a takeover) are released first, so a resumed job is never
        refused its own money.
        """
        ...

    async def settle(self, reservation_id: str, actual: float) -> None:
        """Record what the call cost. Also accepted after a sweep released the reservation: the
        money was spent all the same."""
        ...

    async def release_reservation(self, reservation_id: str) -> bool:
        """Drop an unsettled reservation (the stream never started); False if already gone."""
        ...

    async def sweep_reservations(self, *, now: float | None = None) -> builtins.list[Reservation]:
        """Release open reservations whose claim is gone (job not running under that token, or
        its lease expired); returns what was released."""
        ...

    async def spend(
        self, caps: Caps, *, job_id: str | None = None, now: float | None = None
    ) -> builtins.list[SpendSummary]: ...


def open_store(url: str, *, password: str | None = None, connect_timeout: float = 10.0) -> JobStore:
    """Pick the backend from the URL scheme; imports are lazy so SQLite users need no asyncpg."""
    if url.startswith("sqlite://"):
        from montaged.store.sqlite import SqliteStore

        return SqliteStore(url)
    if url.startswith(("postgres://", "postgresql://")):
        from montaged.store.postgres import PostgresStore

        return PostgresStore(url, password=password, connect_timeout=connect_timeout)
    raise ValueError(f"store.url: unsupported scheme (got {url!r}); use sqlite:// or postgresql://")
