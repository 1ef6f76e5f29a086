"""Schema versions: repeatable, safe under concurrent start-up, refusing a newer schema; and
clear errors when the database is not there."""

from __future__ import annotations

import os
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest

from montaged.errors import SchemaTooNew, StoreError, StoreUnavailable
from montaged.model import JobSpec
from montaged.store import open_store
from montaged.store._common import code_version, load_migrations
from montaged.store.postgres import PostgresStore, split_schema
from montaged.store.sqlite import SqliteStore, sqlite_path

pytestmark = pytest.mark.anyio
ROOT = Path(__file__).resolve().parents[1]

MIGRATE_WORKER = """
import asyncio, sys
from pathlib import Path
from montaged.store import open_store

async def main(go, url):
    store = open_store(url)
    await store.ping()
    print("ready", flush=True)
    while not Path(go).exists():
        await asyncio.sleep(0.002)
    await store.migrate()
    await store.close()

asyncio.run(main(*sys.argv[1:]))
"""


@pytest.fixture(params=["sqlite", "postgres"])
def backend_url(request: pytest.FixtureRequest) -> str:
    return str(request.getfixturevalue("sqlite_url" if request.param == "sqlite" else "pg_url"))


async def versions(url: str) -> list[tuple[int, str, float]]:
    """schema_version rows, read without the store so the check does not trust the code it tests."""
    if url.startswith("sqlite"):
        with sqlite3.connect(sqlite_path(url)) as db:
            rows = db.execute(
                "SELECT version, name, applied_at FROM schema_version ORDER BY version"
            ).fetchall()
        return [(int(v), str(n), float(at)) for v, n, at in rows]
    dsn, schema = split_schema(url)
    pg = await asyncpg.connect(dsn)
    try:
        records = await pg.fetch(
            f"SELECT version, name, applied_at FROM {schema}.schema_version ORDER BY version"
        )
    finally:
        await pg.close()
    return [(int(r[0]), str(r[1]), float(r[2])) for r in records]


async def add_version(url: str, version: int) -> None:
    """What a newer montaged leaves behind: a version row this code has no file for."""
    if url.startswith("sqlite"):
        with sqlite3.connect(sqlite_path(url)) as db:
            db.execute("INSERT INTO schema_version VALUES (?, 'from_the_future', 0)", (version,))
        return
    dsn, schema = split_schema(url)
    pg = await asyncpg.connect(dsn)
    try:
        await pg.execute(f"INSERT INTO {schema}.schema_version VALUES ($1, 'from_the_future', 0)", version)
    finally:
        await pg.close()


def test_migration_files_are_numbered_and_in_step() -> None:
    for backend in ("sqlite", "postgres"):
        migs = load_migrations(backend)
        assert [m.version for m in migs] == list(range(1, len(migs) + 1))
        assert all(m.sql.strip() for m in migs)
    # both backends describe the same schema history, one file per version each
    assert [m.name for m in load_migrations("sqlite")] == [m.name for m in load_migrations("postgres")]


async def test_migrating_twice_is_a_no_op(backend_url: str) -> None:
    backend = "sqlite" if backend_url.startswith("sqlite") else "postgres"
    store = open_store(backend_url)
    await store.migrate()
    first = await versions(backend_url)
    assert [v for v, _, _ in first] == list(range(1, code_version(backend) + 1))
    job = await store.submit(JobSpec(source="/m/a.mp4"))
    await store.migrate()
    await store.close()
    again = open_store(backend_url)
    await again.migrate()
    assert await versions(backend_url) == first  # same rows, same applied_at: nothing re-ran
    assert await again.get(job.id) == job
    await again.close()


async def _at_version_1(url: str) -> None:
    """A store as montaged left it before fencing: schema 1 with a job mid-run and a reservation."""
    v1 = load_migrations("sqlite" if url.startswith("sqlite") else "postgres")[0].sql
    job = (
        "INSERT INTO jobs (id, spec, profile, state, stage, progress, created_at, updated_at, attempts, "
        "result, worker, lease_until) VALUES ('old', '{\"source\": \"/m/a.mp4\"}', 'vertical', 'running', "
        "'frame', 0.5, 1, 1, 2, '{}', 'gone:1', 1)"
    )
    ledger = (
        "INSERT INTO cost_ledger (id, job_id, engine, amount, state, created_at, day, month) "
        "VALUES ('r1', 'old', 'deepgram', 0.5, 'reserved', 1, '2026-11-24', '2026-11')"
    )
    version = (
        "CREATE TABLE schema_version "
        "(version integer PRIMARY KEY, name text NOT NULL, applied_at float8 NOT NULL)"
    )
    if url.startswith("sqlite"):
        with sqlite3.connect(sqlite_path(url)) as db:
            db.executescript(v1)
            db.execute(version.replace("float8", "REAL"))
            db.execute("INSERT INTO schema_version VALUES (1, 'init', 0)")
            db.execute(job)
            db.execute(ledger)
        return
    dsn, schema = split_schema(url)
    pg = await asyncpg.connect(dsn, server_settings={"search_path": str(schema)})
    try:
        await pg.execute(f"CREATE SCHEMA {schema}")
        await pg.execute(v1)
        await pg.execute(version)
        await pg.execute("INSERT INTO schema_version VALUES (1, 'init', 0)")
        await pg.execute(job)
        await pg.execute(ledger)
    finally:
        await pg.close()


async def test_upgrade_to_fencing_keeps_jobs_and_money(backend_url: str) -> None:
    await _at_version_1(backend_url)
    store = open_store(backend_url)
    await store.migrate()
    assert [v for v, _, _ in await versions(backend_url)][:2] == [1, 2]  # then every later one
    old = await store.get("old")
    assert old is not None and old.attempts == 2 and old.stage == "frame"
    assert await store.sweep_reservations() == []  # made outside any claim: never swept
    # its worker died before the upgrade: a first crash at frame, under a limit of one
    poisoned = await store.claim("w", 30, max_attempts=1)
    assert poisoned is not None and poisoned.error_class == "poisoned" and poisoned.error_stage == "frame"
    await store.settle("r1", 0.25)
    await store.close()


def migrate_together(url: str, tmp_path: Path, processes: int = 3) -> None:
    """Start ``processes`` workers, release them at once into migrate(), check they all succeed."""
    go = tmp_path / "go"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    argv = [sys.executable, "-c", MIGRATE_WORKER, str(go), url]
    procs = [
        subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(processes)
    ]
    try:
        for proc in procs:
            assert proc.stdout is not None
            while (line := proc.stdout.readline()) and line.strip() != "ready":
                pass
            assert line, proc.communicate()[1]
        go.touch()
        for proc in procs:
            _, err = proc.communicate(timeout=120)
            assert proc.returncode == 0, err
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


async def test_concurrent_migrations_apply_each_version_once(backend_url: str, tmp_path: Path) -> None:
    """Daemons started together: one migrates, the others wait for it and find nothing to do."""
    backend = "sqlite" if backend_url.startswith("sqlite") else "postgres"
    migrate_together(backend_url, tmp_path)
    assert [v for v, _, _ in await versions(backend_url)] == list(range(1, code_version(backend) + 1))
    store = open_store(backend_url)
    assert (await store.submit(JobSpec(source="/m/a.mp4"))).state == "queued"
    await store.close()


async def test_newer_schema_is_refused(backend_url: str) -> None:
    backend = "sqlite" if backend_url.startswith("sqlite") else "postgres"
    store = open_store(backend_url)
    await store.migrate()
    job = await store.submit(JobSpec(source="/m/a.mp4"))
    await store.close()
    await add_version(backend_url, code_version(backend) + 1)
    newer = open_store(backend_url)
    with pytest.raises(SchemaTooNew, match=r"schema version \d+, newer .* upgrade montaged"):
        await newer.migrate()
    assert await newer.get(job.id) == job  # refusing touched nothing
    await newer.close()


async def test_closed_port_is_unavailable_with_a_clear_message() -> None:
    store = PostgresStore("postgresql://postgres@127.0.0.1:1/test", connect_timeout=2)
    started = time.monotonic()
    for call in (store.ping, store.migrate):
        with pytest.raises(
            StoreUnavailable, match=r"127\.0\.0\.1:1 .*is PostgreSQL running\? check store\.url"
        ):
            await call()
    # a refused connection fails at once; 2 s is the connect timeout, which it must not need
    assert time.monotonic() - started < 2.0
    await store.close()


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port that accepts TCP connections and then never says a word (a hung server)."""
    with socket.socket() as srv:
        srv.bind(("127.0.0.1", 0))
        srv.listen(8)
        yield srv.getsockname()[1]


async def test_silent_server_times_out_as_unavailable(silent_port: int) -> None:
    store = PostgresStore(f"postgresql://postgres@127.0.0.1:{silent_port}/test", connect_timeout=0.5)
    started = time.monotonic()
    with pytest.raises(StoreUnavailable, match=f"127.0.0.1:{silent_port}"):
        await store.ping()
    # bounded by connect_timeout (0.5 s); 5 s leaves room for a loaded 2-core machine
    assert time.monotonic() - started < 5.0
    await store.close()


async def test_missing_database_is_a_store_error_not_unavailable(pg_url: str) -> None:
    url = pg_url.replace("/test?", "/montage_no_such_db?")
    store = open_store(url)
    with pytest.raises(StoreError, match=r"create the database or fix store\.url") as info:
        await store.ping()
    assert not isinstance(info.value, StoreUnavailable)  # retrying would not help: fail fast
    await store.close()


async def test_sqlite_in_an_unusable_place_is_unavailable(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the store folder should be")
    store = SqliteStore(f"sqlite:///{blocker}/montage.db")
    with pytest.raises(StoreUnavailable, match=r"not-a-dir/montage\.db.*check store\.url"):
        await store.ping()


async def test_sqlite_creates_its_folder(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/deep/er/montage.db"
    store = open_store(url)
    await store.migrate()
    assert (tmp_path / "deep" / "er" / "montage.db").is_file()
    with sqlite3.connect(tmp_path / "deep" / "er" / "montage.db") as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    await store.close()


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("sqlite://relative.db", "absolute file path"),
        ("sqlite:///", "absolute file path"),
        ("postgresql://postgres@127.0.0.1/test?schema=bad-name", "plain identifier"),
        ("postgresql://postgres@127.0.0.1/test?schema=a&schema=b", "plain identifier"),
        ("postgresql://postgres@127.0.0.1:notaport/test", "bad port"),
        ("mysql://x", "unsupported scheme"),
    ],
)
def test_bad_urls_say_what_to_fix(url: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        open_store(url)


def test_schema_param_is_stripped_and_other_params_kept() -> None:
    dsn, schema = split_schema("postgresql://u@h:5433/db?sslmode=disable&schema=montage&application_name=x")
    assert schema == "montage"
    assert dsn == "postgresql://u@h:5433/db?sslmode=disable&application_name=x"
    assert split_schema("postgresql://u@h/db") == ("postgresql://u@h/db", None)


async def test_postgres_store_recovers_after_its_connection_is_killed(pg_url: str) -> None:
    """A restarted or failed-over server drops every connection; the pool must reconnect by itself."""
    store = PostgresStore(pg_url)
    await store.migrate()
    async with store._conn() as conn:  # the pool's one idle connection (min_size=1)
        pid = await conn.fetchval("SELECT pg_backend_pid()")
    dsn, _ = split_schema(pg_url)
    admin = await asyncpg.connect(dsn)
    try:
        assert await admin.fetchval("SELECT pg_terminate_backend($1)", pid)
    finally:
        await admin.close()
    failures = 0
    for _ in range(3):  # the caller's retry loop: at most the one call on the dead connection fails
        try:
            job = await store.submit(JobSpec(source="/m/after.mp4"))
            break
        except StoreUnavailable as e:
            assert "127.0.0.1:5432" in str(e)
            failures += 1
    assert failures <= 1
    assert await store.get(job.id) == job
    await store.close()
