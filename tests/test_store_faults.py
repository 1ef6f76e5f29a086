"""SQLite faults take the store-unavailable path, like a PostgreSQL outage: a full disk and a file
locked by another connection raise StoreUnavailable (callers back off), health reads degraded,
and nothing stored before is lost. The full disk is a real one: a tiny tmpfs (needs root)."""

from __future__ import annotations

import contextlib
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

import anyio
import pytest
from conftest import make_talk_clip
from daemon_harness import JFK, request, running_daemon, wait_state
from test_fault_drills import fill, tiny_tmpfs

from montaged.errors import StoreUnavailable
from montaged.model import JobSpec, JobState
from montaged.store.sqlite import SqliteStore

pytestmark = pytest.mark.anyio


async def _until(condition: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition never held"
        await anyio.sleep(0.2)


async def test_full_disk_is_unavailable_and_loses_nothing(tmp_path: Path) -> None:
    with tiny_tmpfs(tmp_path / "db", "2m") as where:
        store = SqliteStore(f"sqlite:///{where}/montage.db")
        await store.migrate()
        kept = [(await store.submit(JobSpec(source=f"/m/{i}.mp4"))).id for i in range(3)]
        filler = fill(where, leave=0)
        refused = 0
        for i in range(50):  # the WAL has some room left: writes go on until it is used up
            try:
                kept.append((await store.submit(JobSpec(source=f"/m/more-{i}.mp4" + "x" * 2000))).id)
            except StoreUnavailable as e:
                assert "full" in str(e) and "free disk space" in str(e)
                refused += 1
        assert refused > 0
        with pytest.raises(StoreUnavailable, match="bytes free on its disk"):
            await store.ping()  # health says degraded, though reads still work
        assert {j.id for j in await store.list()} == set(kept)
        with contextlib.suppress(StoreUnavailable):  # the claim loop's call: never a raw sqlite3 error
            await store.claim("w", 30, max_attempts=3)
        filler.unlink()
        await store.ping()
        while (job := await store.claim("w", 30, max_attempts=3)) is not None:
            await store.finish(job.id, {}, token=job.attempts)
        assert {j.id for j in await store.list(JobState.DONE)} == set(kept)  # nothing was lost
        await store.close()


async def test_locked_file_is_unavailable_until_the_lock_goes(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'montage.db'}"
    store = SqliteStore(url, busy_timeout=0.2)
    await store.migrate()
    job = await store.submit(JobSpec(source="/m/talk.mp4"))
    other = sqlite3.connect(tmp_path / "montage.db", isolation_level=None)
    other.execute("BEGIN EXCLUSIVE")  # another process holding the write lock
    try:
        t0 = time.monotonic()
        with pytest.raises(StoreUnavailable, match="database is locked"):
            await store.claim("w", 30)
        assert time.monotonic() - t0 < 5  # it waited busy_timeout, not forever
        with pytest.raises(StoreUnavailable):
            await store.ping()  # after a failed write, a ping writes too: degraded while locked
        assert (await store.get(job.id)).state is JobState.QUEUED  # type: ignore[union-attr]
    finally:
        other.execute("COMMIT")
        other.close()
    await store.ping()
    claimed = await store.claim("w", 30)
    assert claimed is not None and claimed.id == job.id
    await store.close()


@pytest.mark.timeout(240)
async def test_daemon_waits_out_a_full_disk_and_then_runs_the_job(tmp_path: Path, ffmpeg: str) -> None:
    """Before, ``database or disk is full`` escaped the claim loop and stopped the daemon."""
    clip = make_talk_clip(tmp_path / "talk.mp4", seconds=5.0, speech=JFK)
    with tiny_tmpfs(tmp_path / "db", "3m") as where:
        url = f"sqlite:///{where}/montage.db"
        async with running_daemon(tmp_path, MONTAGE_STORE__URL=url) as daemon:
            sock = daemon.settings.control.socket()
            await request(sock, "pause")
            job_id = (await request(sock, "submit", path=str(clip), options={"max_clips": 1}))["id"]
            filler = fill(where, leave=0)
            await request(sock, "resume")
            await _until(lambda: not daemon.health()["store"], 30)
            await anyio.sleep(2.0)  # several claim attempts run into the full disk
            assert daemon.health()["status"] == "degraded"
            assert (await request(sock, "show", job_id=job_id))["job"]["state"] == "queued"
            filler.unlink()
            job = await wait_state(sock, job_id, {"done", "failed"}, timeout=150)
            assert job["state"] == "done", job
            await _until(lambda: bool(daemon.health()["store"]), 30)
