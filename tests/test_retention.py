"""Retention: the periodic prune, ``montagectl purge --older-than`` through a real daemon's socket,
and the ages they take. What the store deletes and keeps is the contract suite's part
(``test_store_contract.py``: ``test_prune_*`` on SQLite and PostgreSQL)."""

from __future__ import annotations

import argparse
import json
from functools import partial
from pathlib import Path

import anyio
import pytest
from daemon_harness import http_text, request, running_daemon
from test_ctl import ctl

from montaged import retention
from montaged.config import RetentionConfig
from montaged.control.client import ControlError
from montaged.ctl.purge import age
from montaged.model import JobSpec, JobState
from montaged.store import JobStore, PrunePolicy, open_store

pytestmark = [pytest.mark.timeout(180), pytest.mark.anyio]


async def _finished(store: JobStore, source: str, content_hash: str | None = None) -> str:
    job = await store.submit(JobSpec(source=source), content_hash=content_hash)
    claimed = await store.claim("test", 30, only=[job.id])
    assert claimed is not None
    await store.finish(job.id, {}, token=claimed.attempts)
    return job.id


def test_ages_and_policy() -> None:
    assert [age(t) for t in ("30d", "12h", "90m", "3600s", "2w", "1.5d")] == [
        2_592_000, 43_200, 5_400, 3_600, 1_209_600, 129_600]
    for bad in ("30", "d", "-1d", "0d", "30 days", ""):
        with pytest.raises(argparse.ArgumentTypeError, match=r"30d, 12h, 90m, 3600s or 2w|more than 0"):
            age(bad)
    cfg = RetentionConfig(days=90, events_days=0, results_days=30, max_jobs=1000, max_results_mb=1.5)
    assert retention.policy(cfg, now=100 * retention.DAY) == PrunePolicy(
        jobs_before=10 * retention.DAY, events_before=None, results_before=70 * retention.DAY,
        max_jobs=1000, max_results=None, max_result_bytes=3 << 19)
    assert retention.older_than(60, now=1000) == PrunePolicy(940, 940, 940)


async def test_periodic_prune_runs_on_its_interval(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = open_store(f"sqlite:///{tmp_path / 'm.db'}")
    await store.migrate()
    try:
        done = await _finished(store, "/old.mp4")
        queued = await store.submit(JobSpec(source="/queued.mp4"))
        monkeypatch.setattr(retention, "FIRST_DELAY", 0.0)
        # ages of a fraction of a second, pruning every 60 ms
        cfg = RetentionConfig(days=0.5 / retention.DAY, results_days=0, events_days=0, interval_minutes=0.001)
        async with anyio.create_task_group() as tg:
            tg.start_soon(retention.run_retention, store, cfg)
            with anyio.fail_after(30):
                while True:
                    if await store.get(done) is None:
                        break
                    await anyio.sleep(0.05)
            tg.cancel_scope.cancel()
        job = await store.get(queued.id)
        assert job is not None and job.state is JobState.QUEUED
        # interval 0: the task returns at once (only montagectl purge prunes)
        with anyio.fail_after(5):
            await retention.run_retention(store, RetentionConfig(interval_minutes=0))
    finally:
        await store.close()


async def test_montagectl_purge_through_a_real_daemon(tmp_path: Path) -> None:
    async with running_daemon(tmp_path, MONTAGE_FRAME__ENABLED="false",
                              MONTAGE_RETENTION__INTERVAL_MINUTES="0") as daemon:
        sock = daemon.settings.control.socket()
        store = daemon.store
        assert store is not None and daemon.metrics_port
        await request(sock, "pause")  # the daemon claims nothing; the test plays the worker
        old = await _finished(store, "/old.mp4", "h-old")
        live = await store.submit(JobSpec(source="/again.mp4"), content_hash="h-live")
        await anyio.sleep(1.2)
        before = _pruned_jobs(await http_text(daemon.metrics_port, "/metrics"))
        done = await anyio.to_thread.run_sync(
            partial(ctl, "purge", "--older-than", "1s", "--json", sock=sock))
        assert done.returncode == 0, done
        result = json.loads(done.stdout)
        assert result["older_than_seconds"] == 1 and result["pruned"]["jobs"] == 1
        assert result["pruned"]["events"] >= 3  # submitted, claimed, done
        assert await store.get(old) is None and await store.get(live.id) is not None
        human = await anyio.to_thread.run_sync(partial(ctl, "purge", "--older-than", "30d", sock=sock))
        assert human.returncode == 0 and "purged 0 finished jobs" in human.stdout, human
        bad = await anyio.to_thread.run_sync(partial(ctl, "purge", "--older-than", "30", sock=sock))
        assert bad.returncode == 2 and "give an age like 30d" in bad.stderr
        for wrong in (-1, 0, "30d", True, None):
            with pytest.raises(ControlError, match="older_than_seconds must be a number") as e:
                await request(sock, "purge", options={"older_than_seconds": wrong})
            assert e.value.code == "bad_request"
        assert _pruned_jobs(await http_text(daemon.metrics_port, "/metrics")) == before + 1


def _pruned_jobs(reply: tuple[int, str]) -> float:
    """``montage_pruned_total{kind="jobs"}`` (the registry is the process's: other tests count too)."""
    lines = [ln for ln in reply[1].splitlines() if ln.startswith('montage_pruned_total{kind="jobs"}')]
    return float(lines[0].split()[-1]) if lines else 0.0
