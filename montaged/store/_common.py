"""Pieces both store backends share: migrations on disk, row mapping, ledger arithmetic.

Keeping these here means the SQLite and PostgreSQL backends differ only in SQL and locking,
so the contract tests exercise one set of rules twice.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import resources
from typing import Any

import structlog

from montaged.control import protocol as p
from montaged.control.protocol import EventKind
from montaged.errors import LeaseLost, SchemaTooNew
from montaged.model import STAGES, Job, JobEvent, JobSpec, JobState
from montaged.money import usd
from montaged.store import Caps, Fence, Reservation, SpendSummary

log = structlog.get_logger("montaged.store")

# Money is a float of dollars. Sums of float reservations drift by ~1e-16 per add; a nano-dollar
# tolerance keeps "exactly at the cap" accepted without ever letting a real cent through.
MONEY_EPSILON = 1e-9

_MIGRATION_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")

# Columns of the jobs table in the order the backends select them.
JOB_COLUMNS = (
    "id, spec, state, stage, progress, created_at, updated_at, attempts, content_hash, "
    "error_class, error_message, error_stage, stopped_at, result, worker"
)


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str


def load_migrations(backend: str) -> list[Migration]:
    """Numbered ``NNNN_name.sql`` files of one backend, checked to run 1, 2, 3... with no gaps."""
    folder = resources.files("montaged.store.migrations").joinpath(backend)
    found: list[Migration] = []
    for entry in folder.iterdir():
        if not entry.name.endswith(".sql"):
            continue
        m = _MIGRATION_NAME.match(entry.name)
        if m is None:
            raise RuntimeError(f"migration file {backend}/{entry.name}: name must look like 0002_what.sql")
        found.append(Migration(int(m.group(1)), m.group(2), entry.read_text(encoding="utf-8")))
    found.sort(key=lambda mig: mig.version)
    for expected, mig in enumerate(found, start=1):
        if mig.version != expected:
            raise RuntimeError(
                f"migrations/{backend}: expected version {expected:04d}, found {mig.version:04d}"
            )
    return found


def code_version(backend: str) -> int:
    migrations = load_migrations(backend)
    return migrations[-1].version if migrations else 0


def schema_too_new(db_version: int, code: int, where: str) -> SchemaTooNew:
    return SchemaTooNew(
        f"job store {where} has schema version {db_version}, newer than this montaged knows "
        f"({code}): another, newer montaged migrated it; upgrade montaged before running it here"
    )


def new_job_id() -> str:
    """12 hex digits: short enough to type in montagectl, 48 random bits against collisions."""
    return uuid.uuid4().hex[:12]


def new_reservation_id() -> str:
    return uuid.uuid4().hex


def now_or(now: float | None) -> float:
    return time.time() if now is None else now


def utc_day(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d")


def utc_month(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m")


def advisory_key(*parts: str) -> int:
    """A stable signed 64-bit key for pg advisory locks (Python's hash() differs per process)."""
    digest = hashlib.blake2b("\x1f".join(("montage", *parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), sort_keys=True)


def _json(value: Any) -> Any:
    """SQLite hands JSON back as text, asyncpg (with our codec) as objects: accept both."""
    return json.loads(value) if isinstance(value, str | bytes) else value


def job_from_row(row: Any) -> Job:
    """A Job from a sqlite3.Row or asyncpg.Record holding JOB_COLUMNS."""
    return Job(
        id=row["id"],
        spec=JobSpec.from_dict(_json(row["spec"])),
        state=JobState(row["state"]),
        stage=row["stage"],
        progress=float(row["progress"]),
        created_at=float(row["created_at"]),
        updated_at=float(row["updated_at"]),
        attempts=int(row["attempts"]),
        content_hash=row["content_hash"],
        error_class=row["error_class"],
        error_message=row["error_message"],
        error_stage=row["error_stage"],
        stopped_at=row["stopped_at"],
        result=_json(row["result"]) or {},
        worker=row["worker"],
    )


def decode_payload(value: Any) -> dict[str, Any]:
    decoded = _json(value)
    return dict(decoded) if decoded else {}


def event_from_row(row: Any) -> JobEvent | None:
    """A stored event (job_id, kind, at, data), or None for a kind this version does not know:
    a newer montaged sharing the store wrote it, and the history reads on without it."""
    kind = EventKind.parse(row["kind"])
    if kind is None:
        log.debug("store.unknown_event_kind", job_id=row["job_id"], kind=row["kind"])
        return None
    return JobEvent(row["job_id"], kind, float(row["at"]), decode_payload(row["data"]))


def check_amount(amount: float, what: str = "amount") -> None:
    if not amount >= 0:  # also rejects NaN
        raise ValueError(f"budget {what} must be a non-negative number of dollars (got {amount!r})")


def refusal(
    caps: Caps, amount: float, *, job_total: float, day_total: float, month_total: float
) -> str | None:
    """Why ``amount`` more would break a cap, or None when it fits under all three."""
    for name, total, cap in (
        ("job", job_total, caps.per_job),
        ("day", day_total, caps.per_day),
        ("month", month_total, caps.per_month),
    ):
        if total + amount > cap + MONEY_EPSILON:
            return f"{name} cap {usd(cap)} would be exceeded ({usd(total)} committed + {usd(amount)})"
    return None


def summaries(
    caps: Caps,
    now: float,
    job_id: str | None,
    job: tuple[float, float],
    day: tuple[float, float],
    month: tuple[float, float],
) -> list[SpendSummary]:
    """SpendSummary rows from (spent, reserved) pairs, the job's first when one was asked for."""
    out: list[SpendSummary] = []
    if job_id is not None:
        out.append(SpendSummary(f"job:{job_id}", job[0], job[1], caps.per_job))
    out.append(SpendSummary(f"day:{utc_day(now)}", day[0], day[1], caps.per_day))
    out.append(SpendSummary(f"month:{utc_month(now)}", month[0], month[1], caps.per_month))
    return out


# What each period has committed: settled money at its actual cost, open reservations at their
# amount, released ones not at all. Both backends accept this expression as is.
COMMITTED = (
    "CASE WHEN state = 'settled' THEN COALESCE(actual, 0) WHEN state = 'reserved' THEN amount ELSE 0 END"
)
SPENT = "CASE WHEN state = 'settled' THEN COALESCE(actual, 0) ELSE 0 END"
RESERVED = "CASE WHEN state = 'reserved' THEN amount ELSE 0 END"


def ledger_sums(*exprs: str) -> str:
    """SELECT of ``expr`` summed over the job ($1), the UTC day ($2) and month ($3), per expr."""
    cols = ", ".join(
        f"COALESCE(SUM({expr}) FILTER (WHERE {col} = ${n}), 0)"
        for col, n in (("job_id", 1), ("day", 2), ("month", 3))
        for expr in exprs
    )
    return f"SELECT {cols} FROM cost_ledger WHERE job_id = $1 OR month = $3"


# Statements both backends run as they are; SQLite gets ``$n`` rewritten to ``?n``.
SQL_GET = f"SELECT {JOB_COLUMNS} FROM jobs WHERE id = $1"
SQL_LIST = (
    f"SELECT {JOB_COLUMNS} FROM jobs WHERE CAST($1 AS TEXT) IS NULL OR state = $1 "
    "ORDER BY created_at DESC, id DESC LIMIT $2"
)
SQL_COUNT = "SELECT state, COUNT(*) AS n FROM jobs GROUP BY state"
SQL_SUBMIT = (
    "INSERT INTO jobs (id, spec, profile, state, progress, created_at, updated_at, attempts, content_hash) "
    f"VALUES ($1, $2, $3, 'queued', 0, $4, $4, 0, $5) RETURNING {JOB_COLUMNS}"
)
SQL_SET_HASH = (
    "UPDATE jobs SET content_hash = $2, updated_at = $3 WHERE id = $1 "
    "AND (CAST($4 AS INTEGER) IS NULL OR attempts = CAST($4 AS INTEGER))"
)
# Prefer a finished job (its outputs exist), else the newest one still on its way.
SQL_FIND_BY_HASH = (
    f"SELECT {JOB_COLUMNS} FROM jobs WHERE content_hash = $1 AND profile = $2 "
    "AND state NOT IN ('failed', 'cancelled') ORDER BY state = 'done' DESC, created_at DESC LIMIT 1"
)
SQL_PUT_RESULT = (  # $5: the writing job (NULL outside a claim); its media hash guards the row from pruning
    "INSERT INTO stage_results (stage, key, payload, created_at, content_hash) "
    "VALUES ($1, $2, $3, $4, (SELECT content_hash FROM jobs WHERE id = $5)) "
    "ON CONFLICT (stage, key) DO UPDATE SET payload = EXCLUDED.payload, created_at = EXCLUDED.created_at, "
    "content_hash = COALESCE(EXCLUDED.content_hash, stage_results.content_hash)"
)
SQL_GET_RESULT = "SELECT payload FROM stage_results WHERE stage = $1 AND key = $2"
SQL_ADD_EVENT = "INSERT INTO job_events (job_id, kind, at, data) VALUES ($1, $2, $3, $4)"
SQL_EVENTS = (  # the latest $2 events, handed back oldest first
    "SELECT job_id, kind, at, data FROM (SELECT id, job_id, kind, at, data FROM job_events "
    "WHERE job_id = $1 ORDER BY id DESC LIMIT $2) AS latest ORDER BY id"
)
SQL_LEDGER_TOTALS = ledger_sums(COMMITTED)
SQL_SPEND = ledger_sums(SPENT, RESERVED)
SQL_RESERVE = (
    "INSERT INTO cost_ledger (id, job_id, engine, amount, state, created_at, day, month, token) "
    "VALUES ($1, $2, $3, $4, 'reserved', $5, $6, $7, $8)"
)
# A swept reservation still takes its settle: its holder was only presumed gone, and money it
# really spent must count against the caps.
SQL_SETTLE = (
    "UPDATE cost_ledger SET actual = $2, state = 'settled', settled_at = $3 "
    "WHERE id = $1 AND (state IN ('reserved', 'settled') OR (state = 'released' AND swept_at IS NOT NULL))"
)
_SWEPT = (
    "SET state = 'released', settled_at = $1, swept_at = $1 WHERE state = 'reserved' AND token IS NOT NULL"
)
_RESERVATION_COLUMNS = "id, job_id, engine, amount, token"
# Open reservations of a job's earlier claims ($2 = job, $3 = the current claim's token).
SQL_RELEASE_EARLIER = (
    f"UPDATE cost_ledger {_SWEPT} AND job_id = $2 AND token < $3 RETURNING {_RESERVATION_COLUMNS}"
)


def sql_sweep(db_now: str) -> str:
    """Release open reservations whose claim is gone: the job is not running under that token,
    or its lease has expired (``db_now``: the clock leases are measured on)."""
    return (
        f"UPDATE cost_ledger {_SWEPT} AND NOT EXISTS (SELECT 1 FROM jobs WHERE jobs.id = cost_ledger.job_id "
        f"AND jobs.state = 'running' AND jobs.attempts = cost_ledger.token AND jobs.lease_until >= {db_now}) "
        f"RETURNING {_RESERVATION_COLUMNS}"
    )


def reservation_from_row(row: Any) -> Reservation:
    token = row["token"]
    return Reservation(
        id=row["id"], job_id=row["job_id"], engine=row["engine"], amount=float(row["amount"]),
        token=None if token is None else int(token),
    )  # fmt: skip


EARLIER_CLAIM = "an earlier claim of its job"


def log_released(rows: list[Reservation], why: str) -> None:
    for r in rows:
        log.warning(
            "budget.reservation_released",
            reservation=r.id,
            job_id=r.job_id,
            engine=r.engine,
            amount=round(r.amount, 6),
            claim=r.token,
            why=why,
        )


SQL_RELEASE_RESERVATION = (
    "UPDATE cost_ledger SET state = 'released', settled_at = $2 WHERE id = $1 AND state = 'reserved'"
)
POISONED = "poisoned"
# What claim() reads of its candidate before deciding to claim or poison it.
SQL_CANDIDATE_COLUMNS = "id, state, worker, stage, attempts, strikes, peak"
SQL_HOLDER = "SELECT attempts, state FROM jobs WHERE id = $1"


def lease_lost(job_id: str, token: int, current: int | None, what: str) -> LeaseLost:
    """The refusal a stale holder gets; logged here so every refused write leaves a trace."""
    log.warning("store.fenced", job_id=job_id, claim=token, current_claim=current, refused=what)
    now = "the job no longer exists" if current is None else f"it is now on claim {current}"
    return LeaseLost(
        f"job {job_id}: {what} refused: claim {token} no longer holds the job ({now}); another "
        "worker took it over after this one's lease lapsed, so this worker stops its copy"
    )


def check_holder(row: Any, fence: Fence, what: str) -> None:
    """Raise LeaseLost unless ``row`` (attempts, state of the job) is still the fence's claim."""
    current = None if row is None else int(row["attempts"])
    if current != fence.token:
        raise lease_lost(fence.job_id, fence.token, current, what)


def strikes(old: Any) -> tuple[int, int]:
    """(strikes, peak) of a claim candidate once its last claim is accounted for.

    A running candidate's lease expired: its last claim ended in a crash. Crashes count in a row
    only while they get no further: a claim that reached a later stage than every crash before it
    starts the count again, so a job that keeps making progress through restarts is never
    poisoned, while one that dies at the same point every time is. ``old``: SQL_CANDIDATE_COLUMNS.
    """
    count, peak = int(old["strikes"]), int(old["peak"])
    if old["state"] != "running":
        return count, peak
    reached = STAGES.index(old["stage"]) if old["stage"] in STAGES else -1
    if reached > peak:
        return 1, reached
    return count + 1, peak


def poison(old: Any, count: int, max_attempts: int) -> tuple[dict[str, Any], p.FailedPayload]:
    """The transition (columns to set, event data) failing a job whose claims keep ending in a
    crash (``count`` of them in a row). ``old`` is its candidate row (SQL_CANDIDATE_COLUMNS)."""
    stage = old["stage"] or "claim"
    message = (
        f"poisoned: its worker stopped {count} times in a row without finishing it (last in "
        f"stage {stage}; daemon.max_attempts = {max_attempts}), so the input may crash montaged; check "
        f"the input, then `montagectl retry {old['id']}` to run it again"
    )
    sets = {"state": "failed", "error_stage": stage, "error_class": POISONED, "error_message": message,
            "lease_until": None, "strikes": count}  # fmt: skip
    data = p.failed(stage, POISONED, message, attempts=int(old["attempts"]))
    log.error("store.poisoned", job_id=old["id"], stage=stage, attempts=old["attempts"], strikes=count)
    return sets, data


def claim_event(old: Any, worker: str, attempts: int) -> p.ClaimedPayload:
    """Data of a job.claimed event; names the crashed worker when the claim took over a lease.

    ``old`` is the job's row before the claim (id, state, worker)."""
    if old["state"] != "running":
        return p.claimed(worker, attempts)
    log.warning("store.lease_expired", job_id=old["id"], old_worker=old["worker"], worker=worker)
    return p.claimed(worker, attempts, took_over_from=old["worker"])


# An event payload known only once the transition ran: built from the job's state before it and
# the job after it (a cancel records what it cancelled, a retry the job it queued again).
LatePayload = Callable[[str, Job], Mapping[str, Any]]


class Transitions:
    """The job state machine, written once: backends supply ``_transition`` (one atomic UPDATE
    guarded by the allowed starting states and, given a token, by the claim; plus its event in
    the same transaction). A fenced transition only moves a running job. Each event records the
    payload control/protocol.py defines for its kind, the one the pipeline publishes."""

    async def _transition(
        self,
        job_id: str,
        from_states: tuple[str, ...],
        sets: dict[str, Any],
        kind: EventKind | None,
        data: Mapping[str, Any] | LatePayload | None = None,
        token: int | None = None,
    ) -> Job | None:
        raise NotImplementedError

    async def set_stage(
        self, job_id: str, stage: str, progress: float = 0.0, *, token: int | None = None
    ) -> None:
        sets = {"stage": stage, "progress": progress}
        data = p.stage_started(stage, progress)
        await self._transition(job_id, _held(token), sets, EventKind.JOB_STAGE, data, token)

    async def set_progress(self, job_id: str, progress: float, *, token: int | None = None) -> None:
        """No event: progress is pushed live over the socket, the store only keeps the latest."""
        await self._transition(job_id, _held(token), {"progress": progress}, None, None, token)

    async def finish(self, job_id: str, result: dict[str, Any], *, token: int | None = None) -> None:
        """A job cancelled meanwhile stays cancelled: only queued/running jobs become done."""
        sets = {"state": "done", "progress": 1.0, "result": result, "lease_until": None}
        await self._transition(job_id, _held(token), sets, EventKind.JOB_DONE, p.done(result), token)

    async def fail(
        self, job_id: str, *, stage: str, error_class: str, message: str, token: int | None = None
    ) -> None:
        sets = {
            "state": "failed", "error_stage": stage, "error_class": error_class, "error_message": message,
            "lease_until": None,
        }  # fmt: skip
        data = p.failed(stage, error_class, message)
        await self._transition(job_id, _held(token), sets, EventKind.JOB_FAILED, data, token)

    async def release(self, job_id: str, *, stopped_at: str, token: int | None = None) -> None:
        """Back to queued by a holder that stopped cleanly: its claim is no strike against the job."""
        sets = {
            "state": "queued", "stopped_at": stopped_at, "worker": None, "lease_until": None, "strikes": 0,
        }  # fmt: skip
        data = p.released(stopped_at)
        await self._transition(job_id, ("running",), sets, EventKind.JOB_RELEASED, data, token)

    async def cancel(self, job_id: str) -> Job | None:
        sets = {"state": "cancelled", "lease_until": None}
        return await self._transition(job_id, ACTIVE, sets, EventKind.JOB_CANCELLED, _cancelled)

    async def retry(self, job_id: str) -> Job | None:
        """Back to the queue with a clean slate (poison count included); stored stage results
        still spare finished work. The attempt number goes on growing: it is the fencing token."""
        sets = {
            "state": "queued", "stage": None, "progress": 0.0, "error_class": None, "error_message": None,
            "error_stage": None, "stopped_at": None, "worker": None, "lease_until": None, "strikes": 0,
            "peak": -1,
        }  # fmt: skip
        return await self._transition(job_id, ("failed", "cancelled"), sets, EventKind.JOB_RETRIED, _retried)


def _cancelled(was: str, job: Job) -> p.CancelledPayload:
    return p.cancelled(was)


def _retried(was: str, job: Job) -> p.RetriedPayload:
    return p.retried(job)


def _held(token: int | None) -> tuple[str, ...]:
    """States a transition may start from: a claim's own writes need the job still running."""
    return ("running",) if token is not None else ACTIVE


ACTIVE = ("queued", "running")
