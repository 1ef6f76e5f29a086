"""Job store on PostgreSQL through an asyncpg pool: for several daemons sharing one queue.

Claims use ``FOR UPDATE SKIP LOCKED`` so daemons never wait on each other's rows; budget
reservations serialize on one transaction-scoped advisory lock so sum-then-insert is atomic;
migrations run under a session advisory lock so only one process applies them. Leases are
measured on the database clock, so daemons on hosts with skewed clocks still agree.
"""

from __future__ import annotations

import asyncio
import builtins
import json
import re
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import anyio
import asyncpg
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
Conn = Any  # asyncpg.Connection or the pool proxy that stands in for it
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
_DB_NOW = "extract(epoch FROM clock_timestamp())::float8"
# Errors that mean "the server is not there right now"; callers retry these with backoff.
_UNAVAILABLE = (
    OSError,
    TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.CannotConnectNowError,
    asyncpg.TooManyConnectionsError,
    # the server's disk or memory is full (class 53), or it is a read-only standby after a failover
    asyncpg.InsufficientResourcesError,
    asyncpg.ReadOnlySQLTransactionError,
    asyncpg.AdminShutdownError,
    asyncpg.CrashShutdownError,
    asyncpg.ConnectionDoesNotExistError,
    # a connection the server dropped can fail with asyncpg's own state error on its next use
    asyncpg.exceptions.InternalClientError,
)


def split_schema(url: str) -> tuple[str, str | None]:
    """Take ``?schema=NAME`` off the URL (libpq does not know it) and check it is a plain name."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    schemas = [v for k, v in query if k == "schema"]
    if len(schemas) > 1 or (schemas and not _IDENT.match(schemas[0])):
        raise ValueError(
            f"store.url: schema must be one plain identifier (letters, digits, _), got {schemas!r}"
        )
    rest = urlencode([(k, v) for k, v in query if k != "schema"])
    return urlunsplit(parts._replace(query=rest)), (schemas[0] if schemas else None)


async def _init_connection(conn: Conn) -> None:
    for name in ("json", "jsonb"):
        await conn.set_type_codec(name, encoder=json.dumps, decoder=json.loads, schema="pg_catalog")


class PostgresStore(c.Transitions):
    """JobStore on PostgreSQL.

    Args:
        url: ``postgresql://user@host:port/db``, optionally ``?schema=NAME`` to keep Montage's
            tables in their own schema (created by migrate()).
        password: the database password (from the ``database_password`` secret, never from the
            config file); None for trust/peer/.pgpass authentication.
        connect_timeout: seconds one connection attempt may take.
        max_connections: upper bound of the pool.
    """

    def __init__(
        self,
        url: str,
        *,
        password: str | None = None,
        connect_timeout: float = 10.0,
        max_connections: int = 8,
    ) -> None:
        self._dsn, self.schema = split_schema(url)
        parts = urlsplit(self._dsn)
        try:
            self.where = f"{parts.hostname or 'localhost'}:{parts.port or 5432}"
        except ValueError as e:
            raise ValueError(f"store.url: bad port in {parts.netloc.rpartition('@')[2]!r}") from e
        self._password = password
        self._connect_timeout = connect_timeout
        self._max_connections = max_connections
        self._pool: asyncpg.Pool | None = None
        self._pool_lock = asyncio.Lock()
        self._migrate_key = c.advisory_key("migrate", self.schema or "")
        self._ledger_key = c.advisory_key("ledger", self.schema or "")

    # ---- plumbing ---------------------------------------------------------------------------

    def _translate(self, e: BaseException) -> StoreError | None:
        if isinstance(e, asyncpg.InvalidAuthorizationSpecificationError):
            return StoreError(
                f"PostgreSQL at {self.where} refused the login ({e}); check the user in store.url and "
                "the database_password secret"
            )
        if isinstance(e, asyncpg.InvalidCatalogNameError):
            return StoreError(f"PostgreSQL at {self.where}: {e}; create the database or fix store.url")
        if isinstance(e, _UNAVAILABLE):
            return StoreUnavailable(
                f"cannot reach PostgreSQL at {self.where} ({type(e).__name__}: {e}); is PostgreSQL "
                "running? check store.url"
            )
        return None

    async def _get_pool(self) -> asyncpg.Pool:
        if self._pool is not None:
            return self._pool
        async with self._pool_lock:
            if self._pool is None:
                settings = {"application_name": "montaged"}
                if self.schema:
                    settings["search_path"] = self.schema
                try:
                    self._pool = await asyncpg.create_pool(
                        self._dsn,
                        password=self._password,
                        min_size=1,
                        max_size=self._max_connections,
                        timeout=self._connect_timeout,
                        server_settings=settings,
                        init=_init_connection,
                    )
                except Exception as e:
                    err = self._translate(e)
                    if err is None:
                        raise
                    raise err from e
            return self._pool

    @asynccontextmanager
    async def _conn(self) -> AsyncIterator[Conn]:
        pool = await self._get_pool()
        try:
            async with pool.acquire() as conn:
                yield conn
        except StoreError:
            raise
        except Exception as e:
            err = self._translate(e)
            if err is None:
                raise
            raise err from e

    @asynccontextmanager
    async def _tx(self) -> AsyncIterator[Conn]:
        async with self._conn() as conn, conn.transaction():
            yield conn

    # ---- lifecycle --------------------------------------------------------------------------

    async def migrate(self, *, wait_seconds: float = 120.0) -> None:
        """Apply missing migrations; with several processes starting at once, one migrates."""
        code = c.code_version("postgres")
        deadline = time.monotonic() + wait_seconds
        async with self._conn() as conn:
            while True:
                if await conn.fetchval("SELECT pg_try_advisory_lock($1)", self._migrate_key):
                    try:
                        await self._apply_migrations(conn, code)
                    finally:
                        await conn.execute("SELECT pg_advisory_unlock($1)", self._migrate_key)
                    return
                current = await self._db_version(conn)  # another process holds the lock
                if current > code:
                    raise c.schema_too_new(current, code, self._name())
                if current == code:
                    return
                if time.monotonic() > deadline:
                    raise StoreError(
                        f"{self._name()}: another process has held the migration lock for "
                        f"{wait_seconds:.0f}s; is a montaged migration stuck? stop it, or look for "
                        "advisory locks in pg_locks"
                    )
                await anyio.sleep(0.1)

    def _name(self) -> str:
        return f"PostgreSQL {self.where} schema {self.schema or 'default'}"

    @staticmethod
    async def _db_version(conn: Conn) -> int:
        if await conn.fetchval("SELECT to_regclass('schema_version')") is None:
            return 0
        return int(await conn.fetchval("SELECT COALESCE(MAX(version), 0) FROM schema_version"))

    async def _apply_migrations(self, conn: Conn, code: int) -> None:
        if self.schema:
            await conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{self.schema}"')
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_version "
            "(version integer PRIMARY KEY, name text NOT NULL, applied_at double precision NOT NULL)"
        )
        current = await self._db_version(conn)
        if current > code:
            raise c.schema_too_new(current, code, self._name())
        for mig in c.load_migrations("postgres"):
            if mig.version <= current:
                continue
            async with conn.transaction():
                await conn.execute(mig.sql)
                await conn.execute(
                    "INSERT INTO schema_version (version, name, applied_at) VALUES ($1, $2, $3)",
                    mig.version,
                    mig.name,
                    time.time(),
                )
            log.info(
                "store.migrated", backend="postgres", schema=self.schema, version=mig.version, name=mig.name
            )

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is None:
            return
        with anyio.move_on_after(10, shield=True) as scope:
            await pool.close()
        if scope.cancelled_caught:  # a connection was never released: do not hang shutdown on it
            pool.terminate()

    async def ping(self) -> None:
        async with self._conn() as conn:
            await conn.fetchval("SELECT 1")

    # ---- jobs -------------------------------------------------------------------------------

    async def _transition(
        self,
        job_id: str,
        from_states: tuple[str, ...],
        sets: dict[str, Any],
        kind: EventKind | None,
        data: Mapping[str, Any] | c.LatePayload | None = None,
        token: int | None = None,
    ) -> Job | None:
        """One statement: the guarded UPDATE and, when ``kind`` is given, its event. A late payload
        takes a transaction instead: lock the row, read its state, update, then record."""
        if callable(data):
            return await self._late_transition(job_id, from_states, sets, kind, data, token)
        cols = ", ".join(f"{col} = ${n}" for n, col in enumerate(sets, start=7))
        sql = (
            f"WITH u AS (UPDATE jobs SET {cols}, updated_at = $2 WHERE id = $1 AND state = ANY($3::text[]) "
            f"AND ($6::int IS NULL OR attempts = $6::int) RETURNING {c.JOB_COLUMNS}), "
            "e AS (INSERT INTO job_events (job_id, kind, at, data) "
            "SELECT id, $4::text, $2, $5::jsonb FROM u WHERE $4::text IS NOT NULL) SELECT * FROM u"
        )
        kind_text = None if kind is None else str(kind)
        args = (job_id, time.time(), list(from_states), kind_text, dict(data or {}), token, *sets.values())
        async with self._conn() as conn:
            row = await conn.fetchrow(sql, *args)
            if row is None and token is not None:
                holder = await conn.fetchrow(c.SQL_HOLDER, job_id)
                c.check_holder(holder, Fence(job_id, token), kind or "progress")
        if row is None:
            log.debug("store.transition_skipped", job_id=job_id, wanted=from_states, kind=kind)
            return None
        return job_from_row(row)

    async def _late_transition(
        self,
        job_id: str,
        from_states: tuple[str, ...],
        sets: dict[str, Any],
        kind: EventKind | None,
        data: c.LatePayload,
        token: int | None,
    ) -> Job | None:
        cols = ", ".join(f"{col} = ${n}" for n, col in enumerate(sets, start=5))
        sql = (
            f"UPDATE jobs SET {cols}, updated_at = $2 WHERE id = $1 AND state = ANY($3::text[]) "
            f"AND ($4::int IS NULL OR attempts = $4::int) RETURNING {c.JOB_COLUMNS}"
        )
        now = time.time()
        async with self._tx() as conn:
            before = await conn.fetchrow(f"{c.SQL_HOLDER} FOR UPDATE", job_id)
            row = await conn.fetchrow(sql, job_id, now, list(from_states), token, *sets.values())
            if row is None:
                if token is not None:
                    c.check_holder(before, Fence(job_id, token), kind or "progress")
                log.debug("store.transition_skipped", job_id=job_id, wanted=from_states, kind=kind)
                return None
            job = job_from_row(row)
            if kind is not None:
                await self._event(conn, job_id, kind, now, data(before["state"], job))
        return job

    async def _event(
        self, conn: Conn, job_id: str, kind: EventKind, at: float, data: Mapping[str, Any]
    ) -> None:
        try:
            await conn.execute(c.SQL_ADD_EVENT, job_id, str(kind), at, dict(data))
        except asyncpg.ForeignKeyViolationError as e:
            raise StoreError(f"cannot record event {kind!r}: no job {job_id!r} in the store") from e

    async def _fetch(self, sql: str, *args: Any) -> builtins.list[Any]:
        async with self._conn() as conn:
            return builtins.list(await conn.fetch(sql, *args))

    async def _count(self, sql: str, *args: Any) -> int:
        """Rows an UPDATE touched, from asyncpg's status string ("UPDATE 1")."""
        async with self._conn() as conn:
            status = await conn.execute(sql, *args)
        return int(status.rsplit(" ", 1)[-1])

    async def submit(self, spec: JobSpec, *, content_hash: str | None = None) -> Job:
        now, job_id = time.time(), c.new_job_id()
        async with self._tx() as conn:
            row = await conn.fetchrow(c.SQL_SUBMIT, job_id, spec.to_dict(), spec.profile, now, content_hash)
            job = job_from_row(row)
            await self._event(conn, job_id, EventKind.JOB_SUBMITTED, now, p.submitted(job))
        return job

    async def get(self, job_id: str) -> Job | None:
        rows = await self._fetch(c.SQL_GET, job_id)
        return job_from_row(rows[0]) if rows else None

    async def list(self, state: JobState | None = None, limit: int = 200) -> builtins.list[Job]:
        rows = await self._fetch(c.SQL_LIST, None if state is None else str(state), limit)
        return [job_from_row(r) for r in rows]

    async def count_by_state(self) -> dict[JobState, int]:
        counts = dict.fromkeys(JobState, 0)
        counts.update({JobState(r["state"]): int(r["n"]) for r in await self._fetch(c.SQL_COUNT)})
        return counts

    async def claim(
        self,
        worker: str,
        lease_seconds: float,
        *,
        only: Sequence[str] | None = None,
        max_attempts: int | None = None,
    ) -> Job | None:
        now = time.time()
        among = " AND id = ANY($1::text[])" if only is not None else ""
        args = (list(only),) if only is not None else ()
        async with self._tx() as conn:
            # SKIP LOCKED: a row another daemon is claiming right now is passed over, not waited on
            old = await conn.fetchrow(
                f"SELECT {c.SQL_CANDIDATE_COLUMNS} FROM jobs WHERE (state = 'queued' "
                f"OR (state = 'running' AND lease_until < {_DB_NOW})){among} "
                "ORDER BY created_at, id LIMIT 1 FOR UPDATE SKIP LOCKED",
                *args,
            )
            if old is None:
                return None
            count, peak = c.strikes(old)
            if max_attempts is not None and count >= max_attempts:
                sets, data = c.poison(old, count, max_attempts)
                cols = ", ".join(f"{col} = ${n}" for n, col in enumerate(sets, start=3))
                row = await conn.fetchrow(
                    f"UPDATE jobs SET {cols}, updated_at = $2 WHERE id = $1 RETURNING {c.JOB_COLUMNS}",
                    old["id"], now, *sets.values(),
                )  # fmt: skip
                await self._event(conn, old["id"], EventKind.JOB_FAILED, now, data)
                return job_from_row(row)
            row = await conn.fetchrow(
                f"UPDATE jobs SET state = 'running', worker = $2, lease_until = {_DB_NOW} + $3::float8, "
                "attempts = attempts + 1, strikes = $5, peak = $6, updated_at = $4 WHERE id = $1 "
                f"RETURNING {c.JOB_COLUMNS}",
                old["id"], worker, lease_seconds, now, count, peak,
            )  # fmt: skip
            claim = c.claim_event(old, worker, row["attempts"])
            await self._event(conn, old["id"], EventKind.JOB_CLAIMED, now, claim)
        return job_from_row(row)

    async def heartbeat(
        self, job_id: str, worker: str, lease_seconds: float, *, token: int | None = None
    ) -> bool:
        sql = (
            f"UPDATE jobs SET lease_until = {_DB_NOW} + $3::float8 "
            "WHERE id = $1 AND worker = $2 AND state = 'running' AND ($4::int IS NULL OR attempts = $4::int)"
        )
        return await self._count(sql, job_id, worker, lease_seconds, token) == 1

    async def set_content_hash(self, job_id: str, content_hash: str, *, token: int | None = None) -> None:
        async with self._tx() as conn:
            status = await conn.execute(c.SQL_SET_HASH, job_id, content_hash, time.time(), token)
            if status == "UPDATE 0" and token is not None:
                c.check_holder(
                    await conn.fetchrow(c.SQL_HOLDER, job_id), Fence(job_id, token), "content hash"
                )

    async def find_by_hash(self, content_hash: str, profile: str) -> Job | None:
        rows = await self._fetch(c.SQL_FIND_BY_HASH, content_hash, profile)
        return job_from_row(rows[0]) if rows else None

    # ---- stage results and events -----------------------------------------------------------

    async def put_result(
        self, stage: str, key: str, payload: dict[str, Any], *, fence: Fence | None = None
    ) -> None:
        if fence is None:
            await self._count(c.SQL_PUT_RESULT, stage, key, payload, time.time(), None)
            return
        async with self._tx() as conn:
            # FOR SHARE: a claim of this job waits until the write has committed, so a write checked
            # against the current claim can never land after the job moved on.
            holder = await conn.fetchrow(f"{c.SQL_HOLDER} FOR SHARE", fence.job_id)
            c.check_holder(holder, fence, f"{stage} result")
            await conn.execute(c.SQL_PUT_RESULT, stage, key, payload, time.time(), fence.job_id)

    async def get_result(self, stage: str, key: str) -> dict[str, Any] | None:
        rows = await self._fetch(c.SQL_GET_RESULT, stage, key)
        return decode_payload(rows[0][0]) if rows else None

    async def prune(self, policy: PrunePolicy) -> Pruned:
        counts = {"jobs": 0, "events": 0, "results": 0}
        async with self._tx() as conn:
            for counter, sql, args in prune_statements(policy, "octet_length(payload::text)"):
                status = await conn.execute(sql, *args)
                counts[counter] += int(status.rsplit(" ", 1)[-1])
        return Pruned(**counts)

    async def add_event(
        self, job_id: str, kind: EventKind, data: Mapping[str, Any] | None = None
    ) -> JobEvent:
        now, payload = time.time(), dict(data or {})
        async with self._conn() as conn:
            await self._event(conn, job_id, kind, now, payload)
        return JobEvent(job_id=job_id, kind=kind, at=now, data=payload)

    async def events(self, job_id: str, limit: int = 500) -> builtins.list[JobEvent]:
        """The job's latest ``limit`` events, oldest first."""
        rows = await self._fetch(c.SQL_EVENTS, job_id, limit)
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
        async with self._tx() as conn:
            if token is not None:
                holder = await conn.fetchrow(f"{c.SQL_HOLDER} FOR SHARE", job_id)
                c.check_holder(holder, Fence(job_id, token), "budget reservation")
            # One lock for the whole ledger, released with the transaction: every process sees the
            # sum and the insert after it as one step. The SUM runs after the lock is held, so its
            # snapshot (READ COMMITTED takes one per statement) includes every earlier reservation.
            await conn.execute("SELECT pg_advisory_xact_lock($1)", self._ledger_key)
            if token is not None:
                earlier = await conn.fetch(c.SQL_RELEASE_EARLIER, time.time(), job_id, token)
                c.log_released([c.reservation_from_row(r) for r in earlier], c.EARLIER_CLAIM)
            totals = await conn.fetchrow(c.SQL_LEDGER_TOTALS, job_id, day, month)
            why = c.refusal(caps, amount, job_total=totals[0], day_total=totals[1], month_total=totals[2])
            if why is not None:
                log.info("budget.refused", job_id=job_id, engine=engine, amount=amount, reason=why)
                return None
            rid = c.new_reservation_id()
            await conn.execute(c.SQL_RESERVE, rid, job_id, engine, amount, ts, day, month, token)
        return Reservation(id=rid, job_id=job_id, engine=engine, amount=amount, token=token)

    async def settle(self, reservation_id: str, actual: float) -> None:
        """Record what the call really cost; the reservation's amount stops counting."""
        check_amount(actual, "actual cost")
        if await self._count(c.SQL_SETTLE, reservation_id, actual, time.time()) != 1:
            raise StoreError(f"cannot settle reservation {reservation_id!r}: unknown or already released")

    async def release_reservation(self, reservation_id: str) -> bool:
        """Give back an unspent reservation (the call never happened); False when not open."""
        return await self._count(c.SQL_RELEASE_RESERVATION, reservation_id, time.time()) == 1

    async def sweep_reservations(self, *, now: float | None = None) -> builtins.list[Reservation]:
        """Leases are compared on the database clock, like claim(); ``now`` stands in for it in tests."""
        db_now = "$2::float8" if now is not None else _DB_NOW
        args = (time.time(), now) if now is not None else (time.time(),)
        async with self._tx() as conn:
            await conn.execute("SELECT pg_advisory_xact_lock($1)", self._ledger_key)
            rows = await conn.fetch(c.sql_sweep(db_now), *args)
        released = [c.reservation_from_row(r) for r in rows]
        c.log_released(released, "its claim is gone")
        return released

    async def spend(
        self, caps: Caps, *, job_id: str | None = None, now: float | None = None
    ) -> builtins.list[SpendSummary]:
        ts = now_or(now)
        v = [float(x) for x in (await self._fetch(c.SQL_SPEND, job_id, utc_day(ts), utc_month(ts)))[0]]
        return c.summaries(caps, ts, job_id, (v[0], v[1]), (v[2], v[3]), (v[4], v[5]))
