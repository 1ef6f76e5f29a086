"""Embedded job store on one SQLite file: the zero-setup default for a laptop.

The stdlib driver blocks, so every call runs in a worker thread (one at a time per store: a
sqlite3 connection must not be used by two threads at once). Several processes may share the
file: WAL lets readers run beside a writer, and every read-modify-write takes ``BEGIN IMMEDIATE``
so two daemons never claim the same job or overspend the same budget.
"""

from __future__ import annotations

import builtins
import re
import shutil
import sqlite3
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import anyio
import anyio.to_thread
import structlog

from montaged.control import protocol as p
from montaged.control.protocol import EventKind
from montaged.errors import StoreError, StoreUnavailable
from montaged.model import Job, JobEvent, JobSpec, JobState
from montaged.store import Caps, Fence, Pruned, PrunePolicy, Reservation, SpendSummary
from montaged.store import _common as c
from montaged.store._common import check_amount, decode_payload, job_from_row, now_or, utc_day, utc_month
from montaged.store._prune import statements as prune_statements

log = structlog.get_logger(__name__)
T = TypeVar("T")
_PARAM = re.compile(r"\$(\d+)")
# Result codes that mean "the file cannot be written right now", not "this call is wrong": busy or
# locked by another connection, disk (or quota) full, I/O errors, the file gone or unopenable.
# Callers back off and retry these, as they do when PostgreSQL is down.
_UNAVAILABLE_CODES = frozenset({
    sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED, sqlite3.SQLITE_FULL, sqlite3.SQLITE_IOERR,
    sqlite3.SQLITE_CANTOPEN, sqlite3.SQLITE_PROTOCOL, sqlite3.SQLITE_NOMEM, sqlite3.SQLITE_READONLY,
})  # fmt: skip
PROBE_BUSY_MS = 500
MIN_FREE_BYTES = 256 * 1024  # below this a write transaction (WAL frames, index pages) may not fit
_UNAVAILABLE_WORDS = ("locked", "busy", "disk I/O", "unable to open", "disk is full", "readonly")


def sqlite_path(url: str) -> Path:
    """``sqlite:///abs/path.db`` (or ``sqlite:////abs/path.db``) → the absolute file path."""
    rest = url.removeprefix("sqlite://")
    if rest == url or not rest.startswith("/") or rest.strip("/") == "":
        raise ValueError(
            "store.url: SQLite needs an absolute file path like sqlite:///var/lib/montage/montage.db "
            f"(got {url!r})"
        )
    return Path("/" + rest.lstrip("/").split("?", 1)[0])


def split_statements(sql: str) -> Iterator[str]:
    """One SQL statement at a time: executescript() would COMMIT our migration transaction."""
    buf = ""
    for line in sql.splitlines(keepends=True):
        buf += line
        if sqlite3.complete_statement(buf):
            yield buf.strip()
            buf = ""
    rest = "\n".join(ln for ln in buf.splitlines() if ln.strip() and not ln.strip().startswith("--"))
    if rest:
        raise RuntimeError(f"migration SQL ends with an unterminated statement: {rest[:80]!r}")


def _q(conn: sqlite3.Connection, sql: str, *args: Any) -> sqlite3.Cursor:
    """Execute a shared statement: ``$n`` becomes ``?n`` and dicts become JSON text."""
    params = [c.dumps(a) if isinstance(a, dict) else a for a in args]
    return conn.execute(_PARAM.sub(r"?\1", sql), params)


def _one(cur: sqlite3.Cursor) -> Any:
    """First row of a RETURNING statement, read to the end so COMMIT finds it finished."""
    rows = cur.fetchall()
    return rows[0] if rows else None


def _rows_or_count(cur: sqlite3.Cursor, rows: bool) -> Any:
    return cur.fetchall() if rows else cur.rowcount


def unavailable(e: sqlite3.Error) -> bool:
    """Whether ``e`` is the file being unwritable for now (retry later) rather than a bug."""
    code = getattr(e, "sqlite_errorcode", None)
    if code is not None and code & 0xFF in _UNAVAILABLE_CODES:  # extended codes keep the primary low
        return True
    return isinstance(e, sqlite3.OperationalError) and any(w in str(e) for w in _UNAVAILABLE_WORDS)


def _rollback(conn: sqlite3.Connection) -> None:
    """Roll back if a transaction is still open: SQLite already ends it on a full disk or I/O
    error, and a ROLLBACK then would raise over the error that matters."""
    if conn.in_transaction:
        try:
            conn.execute("ROLLBACK")
        except sqlite3.Error as e:
            log.warning("store.rollback_failed", error=str(e))


@contextmanager
def _immediate(conn: sqlite3.Connection) -> Iterator[None]:
    """A write transaction that takes the file's write lock up front (waits busy_timeout for it)."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        _rollback(conn)
        raise
    try:
        conn.execute("COMMIT")
    except BaseException:
        _rollback(conn)
        raise


class SqliteStore(c.Transitions):
    """JobStore on a SQLite file.

    Args:
        url: ``sqlite:///absolute/path/montage.db``; the folder is created when missing.
        busy_timeout: seconds a writer waits for another process's write lock before the call
            fails with StoreUnavailable.
    """

    def __init__(self, url: str, *, busy_timeout: float = 30.0) -> None:
        self.path = sqlite_path(url)
        self._busy_timeout = busy_timeout
        self._conn: sqlite3.Connection | None = None
        self._limiter: anyio.CapacityLimiter | None = None
        self._failing: str | None = None  # why the last call could not use the file, until a ping writes

    # ---- plumbing ---------------------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        if self._conn is not None:
            return self._conn
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(
                self.path, timeout=self._busy_timeout, isolation_level=None, check_same_thread=False
            )
            conn.row_factory = sqlite3.Row
            conn.execute(f"PRAGMA busy_timeout = {int(self._busy_timeout * 1000)}")
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = NORMAL")  # WAL + NORMAL: crash-safe, fsync per checkpoint
            conn.execute("PRAGMA foreign_keys = ON")
        except (OSError, sqlite3.Error) as e:
            raise StoreUnavailable(
                f"cannot open the SQLite job store {self.path}: {e}; check store.url and that the folder "
                "is writable"
            ) from e
        self._conn = conn
        return conn

    def _call(self, fn: Callable[..., T], *args: Any) -> T:
        conn = self._connect()
        try:
            return fn(conn, *args)
        except sqlite3.Error as e:
            text = str(e)
            if unavailable(e):
                self._failing = text
                raise StoreUnavailable(
                    f"SQLite job store {self.path}: {text}; retrying later (free disk space, or stop "
                    "whatever holds the file locked)"
                ) from e
            if "no such table" in text:
                raise StoreError(f"SQLite job store {self.path}: {text}; run migrate() first") from e
            raise

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        if self._limiter is None:
            self._limiter = anyio.CapacityLimiter(1)
        return await anyio.to_thread.run_sync(self._call, fn, *args, limiter=self._limiter)

    # ---- lifecycle --------------------------------------------------------------------------

    async def migrate(self) -> None:
        await self._run(self._migrate)

    def _migrate(self, conn: sqlite3.Connection) -> None:
        migrations = c.load_migrations("sqlite")
        code = c.code_version("sqlite")
        with _immediate(conn):
            conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_version "
                "(version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at REAL NOT NULL)"
            )
            current = conn.execute("SELECT COALESCE(MAX(version), 0) FROM schema_version").fetchone()[0]
            if current > code:
                raise c.schema_too_new(current, code, str(self.path))
            for mig in migrations:
                if mig.version <= current:
                    continue
                for statement in split_statements(mig.sql):
                    conn.execute(statement)
                conn.execute(
                    "INSERT INTO schema_version (version, name, applied_at) VALUES (?, ?, ?)",
                    (mig.version, mig.name, time.time()),
                )
                log.info("store.migrated", backend="sqlite", version=mig.version, name=mig.name)

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            await anyio.to_thread.run_sync(conn.close, limiter=self._limiter)

    async def ping(self) -> None:
        """A read, and room on the disk: reads go on working on a full disk while every write
        fails. Once a call found the file unusable (disk full, locked), also a small write, so
        health stays degraded until writes go through again."""
        await self._run(self._ping)
        if self._failing is not None:
            log.info("store.writable_again", path=str(self.path), was=self._failing)
            self._failing = None

    def _ping(self, conn: sqlite3.Connection) -> None:
        free = shutil.disk_usage(self.path.parent).free
        if free < MIN_FREE_BYTES:
            self._failing = "disk full"
            raise StoreUnavailable(
                f"SQLite job store {self.path}: only {free} bytes free on its disk, writes fail; "
                f"free space in {self.path.parent}"
            )
        if self._failing is None:
            conn.execute("SELECT 1").fetchone()
        else:
            self._write_probe(conn)

    def _write_probe(self, conn: sqlite3.Connection) -> None:
        conn.execute(f"PRAGMA busy_timeout = {PROBE_BUSY_MS}")  # a ping must not wait out a long lock
        try:
            with _immediate(conn):  # rewrites one row as it is: a real page write, nothing changed
                conn.execute(
                    "UPDATE schema_version SET applied_at = applied_at "
                    "WHERE version = (SELECT MAX(version) FROM schema_version)"
                )
        finally:
            conn.execute(f"PRAGMA busy_timeout = {int(self._busy_timeout * 1000)}")

    async def _exec(self, sql: str, *args: Any, rows: bool = False) -> Any:
        """Run one shared statement; returns its rows (rows=True) or its row count."""
        return await self._run(lambda conn: _rows_or_count(_q(conn, sql, *args), rows))

    # ---- jobs -------------------------------------------------------------------------------

    @staticmethod
    def _get(conn: sqlite3.Connection, job_id: str) -> Job | None:
        row = _q(conn, c.SQL_GET, job_id).fetchone()
        return job_from_row(row) if row is not None else None

    @staticmethod
    def _event(
        conn: sqlite3.Connection, job_id: str, kind: EventKind, at: float, data: Mapping[str, Any]
    ) -> None:
        try:
            _q(conn, c.SQL_ADD_EVENT, job_id, str(kind), at, dict(data))
        except sqlite3.IntegrityError as e:
            raise StoreError(f"cannot record event {kind!r}: no job {job_id!r} in the store") from e

    async def _transition(
        self,
        job_id: str,
        from_states: tuple[str, ...],
        sets: dict[str, Any],
        kind: EventKind | None,
        data: Mapping[str, Any] | c.LatePayload | None = None,
        token: int | None = None,
    ) -> Job | None:
        cols = ", ".join(f"{col} = ?" for col in sets)
        values = [c.dumps(v) if isinstance(v, dict) else v for v in sets.values()]
        marks = ", ".join("?" for _ in from_states)
        fenced = " AND attempts = ?" if token is not None else ""
        sql = (
            f"UPDATE jobs SET {cols}, updated_at = ? WHERE id = ? AND state IN ({marks}){fenced} "
            f"RETURNING {c.JOB_COLUMNS}"
        )
        fence_args = (token,) if token is not None else ()

        def run(conn: sqlite3.Connection) -> Job | None:
            now = time.time()
            with _immediate(conn):  # the write lock: the state read before is the one updated
                was = _q(conn, c.SQL_HOLDER, job_id).fetchone() if callable(data) else None
                row = _one(conn.execute(sql, (*values, now, job_id, *from_states, *fence_args)))
                if row is None:
                    if token is not None:
                        c.check_holder(
                            _q(conn, c.SQL_HOLDER, job_id).fetchone(),
                            Fence(job_id, token),
                            kind or "progress",
                        )
                    log.debug("store.transition_skipped", job_id=job_id, wanted=from_states, kind=kind)
                    return None
                job = job_from_row(row)
                if kind is not None:
                    payload = data(str(was and was["state"]), job) if callable(data) else data or {}
                    self._event(conn, job_id, kind, now, payload)
                return job

        return await self._run(run)

    async def submit(self, spec: JobSpec, *, content_hash: str | None = None) -> Job:
        def run(conn: sqlite3.Connection) -> Job:
            now, job_id = time.time(), c.new_job_id()
            with _immediate(conn):
                row = _one(_q(conn, c.SQL_SUBMIT, job_id, spec.to_dict(), spec.profile, now, content_hash))
                job = job_from_row(row)
                self._event(conn, job_id, EventKind.JOB_SUBMITTED, now, p.submitted(job))
            return job

        return await self._run(run)

    async def get(self, job_id: str) -> Job | None:
        return await self._run(self._get, job_id)

    async def list(self, state: JobState | None = None, limit: int = 200) -> builtins.list[Job]:
        rows = await self._exec(c.SQL_LIST, None if state is None else str(state), limit, rows=True)
        return [job_from_row(r) for r in rows]

    async def count_by_state(self) -> dict[JobState, int]:
        counts = dict.fromkeys(JobState, 0)
        counts.update({JobState(r["state"]): r["n"] for r in await self._exec(c.SQL_COUNT, rows=True)})
        return counts

    async def claim(
        self,
        worker: str,
        lease_seconds: float,
        *,
        only: Sequence[str] | None = None,
        max_attempts: int | None = None,
    ) -> Job | None:
        ids = list(only) if only is not None else None

        def run(conn: sqlite3.Connection) -> Job | None:
            now = time.time()
            among = f" AND id IN ({','.join('?' * len(ids))})" if ids is not None else ""
            with _immediate(conn):  # the file's write lock: no other process claims meanwhile
                old = conn.execute(
                    f"SELECT {c.SQL_CANDIDATE_COLUMNS} FROM jobs WHERE (state = 'queued' "
                    f"OR (state = 'running' AND lease_until < ?)){among} ORDER BY created_at, id LIMIT 1",
                    (now, *(ids or ())),
                ).fetchone()
                if old is None:
                    return None
                count, peak = c.strikes(old)
                if max_attempts is not None and count >= max_attempts:
                    sets, data = c.poison(old, count, max_attempts)
                    cols = ", ".join(f"{col} = ?" for col in sets)
                    row = _one(conn.execute(
                        f"UPDATE jobs SET {cols}, updated_at = ? WHERE id = ? RETURNING {c.JOB_COLUMNS}",
                        (*sets.values(), now, old["id"]),
                    ))  # fmt: skip
                    self._event(conn, old["id"], EventKind.JOB_FAILED, now, data)
                    return job_from_row(row)
                row = _one(
                    conn.execute(
                        "UPDATE jobs SET state = 'running', worker = ?, lease_until = ?, "
                        "attempts = attempts + 1, strikes = ?, peak = ?, updated_at = ? WHERE id = ? "
                        f"RETURNING {c.JOB_COLUMNS}",
                        (worker, now + lease_seconds, count, peak, now, old["id"]),
                    )
                )
                claim = c.claim_event(old, worker, row["attempts"])
                self._event(conn, old["id"], EventKind.JOB_CLAIMED, now, claim)
                return job_from_row(row)

        return await self._run(run)

    async def heartbeat(
        self, job_id: str, worker: str, lease_seconds: float, *, token: int | None = None
    ) -> bool:
        sql = (
            "UPDATE jobs SET lease_until = $3 WHERE id = $1 AND worker = $2 AND state = 'running' "
            "AND ($4 IS NULL OR attempts = $4)"
        )
        return bool(await self._exec(sql, job_id, worker, time.time() + lease_seconds, token) == 1)

    async def set_content_hash(self, job_id: str, content_hash: str, *, token: int | None = None) -> None:
        def run(conn: sqlite3.Connection) -> None:
            with _immediate(conn):
                changed = _q(conn, c.SQL_SET_HASH, job_id, content_hash, time.time(), token).rowcount
                if changed == 0 and token is not None:
                    holder = _q(conn, c.SQL_HOLDER, job_id).fetchone()
                    c.check_holder(holder, Fence(job_id, token), "content hash")

        await self._run(run)

    async def find_by_hash(self, content_hash: str, profile: str) -> Job | None:
        rows = await self._exec(c.SQL_FIND_BY_HASH, content_hash, profile, rows=True)
        return job_from_row(rows[0]) if rows else None

    # ---- stage results and events -----------------------------------------------------------

    async def put_result(
        self, stage: str, key: str, payload: dict[str, Any], *, fence: Fence | None = None
    ) -> None:
        if fence is None:
            await self._exec(c.SQL_PUT_RESULT, stage, key, payload, time.time(), None)
            return

        def run(conn: sqlite3.Connection) -> None:
            with _immediate(conn):  # checked and written under the write lock: no claim in between
                c.check_holder(_q(conn, c.SQL_HOLDER, fence.job_id).fetchone(), fence, f"{stage} result")
                _q(conn, c.SQL_PUT_RESULT, stage, key, payload, time.time(), fence.job_id)

        await self._run(run)

    async def get_result(self, stage: str, key: str) -> dict[str, Any] | None:
        rows = await self._exec(c.SQL_GET_RESULT, stage, key, rows=True)
        return decode_payload(rows[0][0]) if rows else None

    async def prune(self, policy: PrunePolicy) -> Pruned:
        def run(conn: sqlite3.Connection) -> Pruned:
            counts = {"jobs": 0, "events": 0, "results": 0}
            with _immediate(conn):
                for counter, sql, args in prune_statements(policy, "length(CAST(payload AS BLOB))"):
                    counts[counter] += _q(conn, sql, *args).rowcount
            return Pruned(**counts)

        return await self._run(run)

    async def add_event(
        self, job_id: str, kind: EventKind, data: Mapping[str, Any] | None = None
    ) -> JobEvent:
        now, payload = time.time(), dict(data or {})
        await self._run(lambda conn: self._event(conn, job_id, kind, now, payload))
        return JobEvent(job_id=job_id, kind=kind, at=now, data=payload)

    async def events(self, job_id: str, limit: int = 500) -> builtins.list[JobEvent]:
        """The job's latest ``limit`` events, oldest first."""
        rows = await self._exec(c.SQL_EVENTS, job_id, limit, rows=True)
        return [e for e in map(c.event_from_row, rows) if e is not None]

    # ---- cost ledger ------------------------------------------------------------------------

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
        check_amount(amount)
        ts = now_or(now)
        day, month = utc_day(ts), utc_month(ts)

        def run(conn: sqlite3.Connection) -> Reservation | None:
            with _immediate(conn):  # the write lock makes sum-then-insert atomic across processes
                if token is not None:
                    fence = Fence(job_id, token)
                    c.check_holder(_q(conn, c.SQL_HOLDER, job_id).fetchone(), fence, "budget reservation")
                    earlier = _q(conn, c.SQL_RELEASE_EARLIER, time.time(), job_id, token).fetchall()
                    c.log_released([c.reservation_from_row(r) for r in earlier], c.EARLIER_CLAIM)
                job_total, day_total, month_total = _q(
                    conn, c.SQL_LEDGER_TOTALS, job_id, day, month
                ).fetchone()
                why = c.refusal(
                    caps, amount, job_total=job_total, day_total=day_total, month_total=month_total
                )
                if why is not None:
                    log.info("budget.refused", job_id=job_id, engine=engine, amount=amount, reason=why)
                    return None
                rid = c.new_reservation_id()
                _q(conn, c.SQL_RESERVE, rid, job_id, engine, amount, ts, day, month, token)
                return Reservation(id=rid, job_id=job_id, engine=engine, amount=amount, token=token)

        return await self._run(run)

    async def settle(self, reservation_id: str, actual: float) -> None:
        """Record what the call really cost; the reservation's amount stops counting."""
        check_amount(actual, "actual cost")
        if await self._exec(c.SQL_SETTLE, reservation_id, actual, time.time()) != 1:
            raise StoreError(f"cannot settle reservation {reservation_id!r}: unknown or already released")

    async def release_reservation(self, reservation_id: str) -> bool:
        """Give back an unspent reservation (the call never happened); False when not open."""
        return bool(await self._exec(c.SQL_RELEASE_RESERVATION, reservation_id, time.time()) == 1)

    async def sweep_reservations(self, *, now: float | None = None) -> builtins.list[Reservation]:
        ts = now_or(now)
        sql = c.sql_sweep("$2")

        def run(conn: sqlite3.Connection) -> builtins.list[Reservation]:
            with _immediate(conn):
                return [c.reservation_from_row(r) for r in _q(conn, sql, time.time(), ts).fetchall()]

        released = await self._run(run)
        c.log_released(released, "its claim is gone")
        return released

    async def spend(
        self, caps: Caps, *, job_id: str | None = None, now: float | None = None
    ) -> builtins.list[SpendSummary]:
        ts = now_or(now)
        v = [
            float(x)
            for x in (await self._exec(c.SQL_SPEND, job_id, utc_day(ts), utc_month(ts), rows=True))[0]
        ]
        return c.summaries(caps, ts, job_id, (v[0], v[1]), (v[2], v[3]), (v[4], v[5]))
