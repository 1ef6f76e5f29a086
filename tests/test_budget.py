"""Budget: price × duration reservations, hard caps, settlement, summaries, cross-process races."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import anyio
import pytest

from montaged.asr import budget as budget_module
from montaged.asr.budget import Budget, Refusal, Tab, run_sweeper, summary_dicts, sweep_reservations
from montaged.config import BudgetConfig
from montaged.errors import LeaseLost
from montaged.metrics import BUDGET
from montaged.model import Job, JobSpec
from montaged.money import usd
from montaged.store import Fence, JobStore, Reservation, open_store
from montaged.store.sqlite import SqliteStore

pytestmark = pytest.mark.anyio
ROOT = Path(__file__).resolve().parents[1]
NOW = 1_795_000_000.0  # a fixed instant (2026-11-18 UTC), so day/month periods are stable


def cfg(**kw: object) -> BudgetConfig:
    base = {
        "prices_per_minute": {"deepgram/nova-3": 0.006},
        "per_job": 1.0,
        "per_day": 10.0,
        "per_month": 100.0,
    }
    return BudgetConfig.model_validate({**base, **kw})


@pytest.fixture
async def store(sqlite_url: str) -> JobStore:
    s = open_store(sqlite_url)
    await s.migrate()
    return s


def gauge(period: str, kind: str) -> float:
    return float(BUDGET.labels(period=period, kind=kind)._value.get())


async def test_reserve_is_duration_times_price_and_settles_to_usage(store: JobStore) -> None:
    budget = Budget(store, cfg())
    r = await budget.reserve("job-1", "deepgram/nova-3", 150.0)
    assert isinstance(r, Reservation)
    assert r.amount == pytest.approx(150 / 60 * 0.006)
    rows = {s.period.split(":")[0]: s for s in await budget.summary("job-1")}
    assert rows["job"].reserved == pytest.approx(0.015) and rows["job"].spent == 0
    assert gauge("job", "reserved") == pytest.approx(0.015)
    cost = await budget.settle(r, 140.0)  # the stream really sent 140 s
    assert cost == pytest.approx(140 / 60 * 0.006)
    rows = {s.period.split(":")[0]: s for s in await budget.summary("job-1")}
    assert rows["job"].spent == pytest.approx(0.014) and rows["job"].reserved == 0
    assert rows["day"].remaining == pytest.approx(10.0 - 0.014)
    assert gauge("day", "spent") == pytest.approx(0.014) and gauge("month", "cap") == 100.0
    dicts = summary_dicts(await budget.summary("job-1"))
    assert [d["period"].split(":")[0] for d in dicts] == ["job", "day", "month"]
    assert set(dicts[0]) == {"period", "spent", "reserved", "remaining", "cap"}


@pytest.mark.parametrize(
    ("caps", "period"), [({"per_job": 0.01}, "for this job"), ({"per_day": 0.02}, "today")]
)
async def test_caps_refuse_at_once_and_say_which(
    store: JobStore, caps: dict[str, float], period: str
) -> None:
    budget = Budget(store, cfg(**caps))
    first = await budget.reserve("job-1", "deepgram/nova-3", 60.0, now=NOW)  # $0.006
    assert isinstance(first, Reservation)
    refused = await budget.reserve("job-1", "deepgram/nova-3", 150.0, now=NOW)  # $0.015 more
    assert isinstance(refused, Refusal)
    assert refused.reason.startswith("budget: deepgram/nova-3 for 2.5 min would cost $0.015 ")
    assert period in refused.reason and refused.reason.endswith("continuing with Whisper alone")
    spent = {s.period.split(":")[0]: s for s in await budget.summary("job-1", now=NOW)}
    assert spent["job"].reserved == pytest.approx(0.006)  # the refusal reserved nothing


async def test_refusals_show_the_fraction_of_a_cent_that_matters(store: JobStore) -> None:
    budget = Budget(store, cfg(per_job=0.001))
    refused = await budget.reserve("job-1", "deepgram/nova-3", 60.0, now=NOW)  # $0.006 > $0.001
    assert isinstance(refused, Refusal)
    assert "would cost $0.006 but only $0.001 of the $0.001 cap is left for this job" in refused.reason
    assert [usd(x) for x in (0, 0.001, 0.0015, 0.015, 0.25, 1.5, 1234.5, 0.0000012)] == [
        "$0.00", "$0.001", "$0.0015", "$0.015", "$0.25", "$1.50", "$1,234.50", "$0.000001",
    ]  # fmt: skip


async def _claimed(store: JobStore, lease: float = 30.0) -> Job:
    await store.submit(JobSpec(source="/media/talk.mp4"))
    job = await store.claim("w", lease)
    assert job is not None
    return job


async def test_a_resumed_job_gets_its_own_money_back(store: JobStore) -> None:
    """Its first daemon crashed mid-stream: the reservation it left does not refuse the resumed job."""
    budget = Budget(store, cfg(per_job=0.01))
    first = await _claimed(store, lease=0.2)
    held = await budget.for_claim(Fence(first.id, first.attempts)).reserve(first.id, "deepgram/nova-3", 90.0)
    assert isinstance(held, Reservation) and held.token == first.attempts  # $0.009 of the $0.01
    await anyio.sleep(0.4)  # the daemon is gone; its lease lapses; another claims the job
    second = await store.claim("w2", 30)
    assert second is not None and second.id == first.id
    with pytest.raises(LeaseLost):  # the stale holder cannot spend for the job any more
        await budget.for_claim(Fence(first.id, first.attempts)).reserve(first.id, "deepgram/nova-3", 1.0)
    again = await budget.for_claim(Fence(second.id, second.attempts)).reserve(
        second.id, "deepgram/nova-3", 90.0
    )
    assert isinstance(again, Reservation), again
    job = (await budget.summary(first.id))[0]
    assert job.reserved == pytest.approx(0.009) and job.spent == 0  # the old one was released


async def test_sweeper_releases_what_a_dead_claim_left(store: JobStore) -> None:
    budget = Budget(store, cfg(per_day=0.01))
    job = await _claimed(store, lease=0.2)
    r = await budget.for_claim(Fence(job.id, job.attempts)).reserve(job.id, "deepgram/nova-3", 90.0, now=NOW)
    assert isinstance(r, Reservation)
    assert await sweep_reservations(store, budgets=[budget]) == []  # its holder is alive
    await anyio.sleep(0.4)
    assert [x.id for x in await sweep_reservations(store, budgets=[budget])] == [r.id]
    day = (await budget.summary(now=NOW))[0]
    assert day.reserved == 0 and day.remaining == pytest.approx(0.01)


async def test_run_sweeper_keeps_sweeping(store: JobStore) -> None:
    budget = Budget(store, cfg())
    job = await _claimed(store, lease=0.3)
    r = await budget.for_claim(Fence(job.id, job.attempts)).reserve(job.id, "deepgram/nova-3", 60.0)
    assert isinstance(r, Reservation)
    async with anyio.create_task_group() as tg:
        tg.start_soon(partial(run_sweeper, store, budgets=[budget], every_seconds=0.1))
        deadline = time.monotonic() + 10
        while (await budget.summary(job.id))[0].reserved > 0:  # released once the lease lapses
            assert time.monotonic() < deadline, "the sweeper never released it"
            await anyio.sleep(0.1)
        tg.cancel_scope.cancel()


@pytest.fixture
def locker(sqlite_url: str) -> Iterator[sqlite3.Connection]:
    """Another connection to the store's file, to hold its write lock the way another process can."""
    conn = sqlite3.connect(
        sqlite_url.removeprefix("sqlite://"), isolation_level=None, check_same_thread=False
    )
    yield conn
    conn.close()


async def test_settle_during_an_outage_is_retried(
    sqlite_url: str, locker: sqlite3.Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = SqliteStore(sqlite_url, busy_timeout=0.1)
    await store.migrate()
    budget = Budget(store, cfg())
    job = await _claimed(store)
    mine = budget.for_claim(Fence(job.id, job.attempts))
    short = await mine.reserve(job.id, "deepgram/nova-3", 60.0)
    long = await mine.reserve(job.id, "deepgram/nova-3", 60.0)
    assert isinstance(short, Reservation) and isinstance(long, Reservation)

    # a short outage (the file locked for 0.5 s): the settle waits it out
    locker.execute("BEGIN EXCLUSIVE")

    async def unlock_later() -> None:
        await anyio.sleep(0.5)
        locker.execute("COMMIT")

    async with anyio.create_task_group() as tg:
        tg.start_soon(unlock_later)
        assert await mine.settle(short, 30.0) == pytest.approx(0.003)
    assert budget.owed == []

    # a long one: the settle gives up waiting, keeps what it owes, and the sweeper settles it later
    monkeypatch.setattr(budget_module, "SETTLE_RETRY_SECONDS", 0.3)
    locker.execute("BEGIN EXCLUSIVE")
    assert await mine.settle(long, 45.0) == pytest.approx(0.0045)
    assert [r.id for r in budget.owed] == [long.id]  # shared by the per-claim view and the budget
    locker.execute("COMMIT")
    await sweep_reservations(store, budgets=[budget])
    assert budget.owed == []
    job_row = (await budget.summary(job.id))[0]
    assert (job_row.spent, job_row.reserved) == pytest.approx((0.0075, 0.0))
    await store.close()


async def test_a_settle_the_store_refuses_does_not_fail_the_job(store: JobStore) -> None:
    budget = Budget(store, cfg())
    r = await budget.reserve("job-1", "deepgram/nova-3", 60.0)
    assert isinstance(r, Reservation)
    assert await store.release_reservation(r.id)  # not open any more: the store refuses a settle
    assert await budget.settle(r, 30.0) == pytest.approx(0.003)  # logged, not raised
    assert budget.owed == []  # and not retried forever by the sweeper


async def test_unknown_price_is_refused(store: JobStore) -> None:
    refused = await Budget(store, cfg()).reserve("j", "deepgram/nova-2", 10.0, now=NOW)
    assert isinstance(refused, Refusal) and "no price for deepgram/nova-2" in refused.reason


async def test_tab_tops_up_under_the_same_caps(store: JobStore) -> None:
    """A resend after a drop needs more audio than reserved: a top-up, refused at the job cap."""
    budget = Budget(store, cfg(per_job=0.0125, top_up_share=0.1))
    first = await budget.reserve("job-1", "deepgram/nova-3", 100.0)  # $0.0100
    assert isinstance(first, Reservation)
    tab = Tab(budget, first, 100.0)
    assert tab.seconds == pytest.approx(100.0)
    assert await tab.extend(5.0) is None  # 10 s (10 % of 100 s) more: $0.0010, fits
    assert tab.seconds == pytest.approx(110.0)
    refused = await tab.extend(30.0)  # $0.0030 would pass the $0.0125 job cap
    assert refused is not None and "for this job" in refused
    assert await tab.settle(107.0) == pytest.approx(107 / 60 * 0.006)
    job = (await budget.summary("job-1"))[0]
    assert job.spent == pytest.approx(107 / 60 * 0.006) and job.reserved == 0


RACER = """
import asyncio, json, sys
from pathlib import Path
from montaged.asr.budget import Budget, Refusal
from montaged.config import BudgetConfig
from montaged.store import open_store

async def main(go, url, name, n, cfg, now):
    budget = Budget(open_store(url), BudgetConfig.model_validate(json.loads(cfg)))
    await budget.store.ping()
    print("ready", flush=True)
    while not Path(go).exists():
        await asyncio.sleep(0.002)
    got = await asyncio.gather(*(
        budget.reserve(f"{name}-{i}", "deepgram/nova-3", 60.0, now=float(now)) for i in range(int(n))
    ))
    await budget.store.close()
    print("RESULT " + json.dumps([r.id for r in got if not isinstance(r, Refusal)]), flush=True)

asyncio.run(main(*sys.argv[1:]))
"""


def race(argvs: list[list[str]], tmp_path: Path) -> list[list[str]]:
    """One ``python -c`` daemon stand-in per argv; all connect, then start together on a file."""
    go = tmp_path / "go"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", RACER, str(go), *argv],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            text=True,
        )
        for argv in argvs
    ]
    try:
        for proc in procs:
            assert proc.stdout is not None
            while (line := proc.stdout.readline()) and line.strip() != "ready":
                pass
            assert line, f"racer died before it was ready (rc={proc.wait()})"
        go.touch()
        results = []
        for proc in procs:
            out, _ = proc.communicate(timeout=120)
            assert proc.returncode == 0
            results.append(json.loads(next(ln for ln in out.splitlines() if ln.startswith("RESULT "))[7:]))
        return results
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


async def test_fifty_concurrent_reservations_from_two_daemons_never_pass_the_cap(
    pg_url: str, tmp_path: Path
) -> None:
    store = open_store(pg_url)
    await store.migrate()
    # Each reservation is 1 min × $0.006; the day cap holds 20 of them (0.1205, not 0.12, so float
    # sums at exactly 20 cannot refuse the 20th). 2 × 25 = 50 race for it; 30 must be refused.
    config = cfg(per_job=1.0, per_day=0.1205, per_month=100.0)
    results = race([[pg_url, f"d{n}", "25", config.model_dump_json(), str(NOW)] for n in range(2)], tmp_path)
    won = [rid for r in results for rid in r]
    print(f"reservations granted per daemon: {[len(r) for r in results]} of 25 each")
    assert len(won) == 20, [len(r) for r in results]
    budget = Budget(store, config)
    day = next(s for s in await budget.summary(now=NOW) if s.period.startswith("day:"))
    assert day.reserved == pytest.approx(20 * 0.006) and day.reserved <= config.per_day
    await store.close()
