"""Several real processes on one store: claims and budget reservations stay atomic.

Each worker is a fresh ``python -c`` process (nothing shared with pytest but the database). All
workers connect first, report "ready", then wait for a start file, so they race for real instead
of running one after another while the next one is still importing.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from montaged.model import JobSpec, JobState
from montaged.store import Caps, open_store

pytestmark = pytest.mark.anyio
ROOT = Path(__file__).resolve().parents[1]

_PRELUDE = """
import asyncio, json, sys
from pathlib import Path
from montaged.store import Caps, open_store

async def ready(go, store):
    await store.ping()  # connect before the start line: start-up cost must not stagger the race
    print("ready", flush=True)
    while not Path(go).exists():
        await asyncio.sleep(0.002)
"""

CLAIM_WORKER = (
    _PRELUDE
    + """
async def main(go, url, worker):
    store = open_store(url)
    await ready(go, store)
    claimed = []
    while (job := await store.claim(worker, 60)) is not None:
        claimed.append(job.id)
        await store.finish(job.id, {"by": worker})
        await asyncio.sleep(0.001)  # a daemon works between claims; lets the others at the lock
    await store.close()
    print("RESULT " + json.dumps(claimed), flush=True)

asyncio.run(main(*sys.argv[1:]))
"""
)

RESERVE_WORKER = (
    _PRELUDE
    + """
async def main(go, url, worker, n, amount, caps, job_id, now):
    store = open_store(url)
    await ready(go, store)
    caps = Caps(*json.loads(caps))
    got = await asyncio.gather(*(
        store.reserve(job_id=job_id or f"{worker}-{i}", engine="deepgram", amount=float(amount),
                      caps=caps, now=float(now))
        for i in range(int(n))
    ))
    await store.close()
    print("RESULT " + json.dumps([r.id for r in got if r is not None]), flush=True)

asyncio.run(main(*sys.argv[1:]))
"""
)


def race(code: str, argvs: list[list[str]], tmp_path: Path, timeout: float = 120.0) -> list[list[str]]:
    """Start one process per argv, release them together, return each one's RESULT list."""
    go = tmp_path / "go"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code, str(go), *argv],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for argv in argvs
    ]
    try:
        for proc in procs:
            assert proc.stdout is not None
            while (line := proc.stdout.readline()) and line.strip() != "ready":
                pass
            if not line:
                pytest.fail(f"worker died before it was ready: {proc.wait()} {proc.stderr.read()}")  # type: ignore[union-attr]
        go.touch()
        results = []
        for proc in procs:
            out, err = proc.communicate(timeout=timeout)
            assert proc.returncode == 0, err
            lines = [ln for ln in out.splitlines() if ln.startswith("RESULT ")]
            assert len(lines) == 1, out + err
            results.append(json.loads(lines[0].removeprefix("RESULT ")))
        return results
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


@pytest.fixture(params=["sqlite", "postgres"])
def backend_url(request: pytest.FixtureRequest) -> str:
    name = "sqlite_url" if request.param == "sqlite" else "pg_url"
    return str(request.getfixturevalue(name))


async def test_each_job_claimed_exactly_once(backend_url: str, tmp_path: Path) -> None:
    url = backend_url
    workers = 2 if url.startswith("sqlite") else 4
    store = open_store(url)
    await store.migrate()
    ids = {(await store.submit(JobSpec(source=f"/media/{i}.mp4"))).id for i in range(200)}

    results = race(CLAIM_WORKER, [[url, f"w{n}"] for n in range(workers)], tmp_path)

    claimed = [job_id for result in results for job_id in result]
    assert len(claimed) == len(ids) == 200
    assert set(claimed) == ids  # all jobs, none twice
    assert (await store.count_by_state())[JobState.DONE] == 200
    owner = {job_id: f"w{n}" for n, result in enumerate(results) for job_id in result}
    for job_id in ids:
        job = await store.get(job_id)
        assert job is not None and job.attempts == 1 and job.result == {"by": owner[job_id]}
        assert [e.kind for e in await store.events(job_id)].count("job.claimed") == 1
    # The workers start within a few ms of each other (2 ms start-file polling) while 200
    # claim+finish round trips take far longer, so more than one worker must have won jobs;
    # a single winner would mean the workers ran one after another and proved nothing.
    assert sum(1 for r in results if r) >= 2, [len(r) for r in results]
    await store.close()


@pytest.mark.parametrize("cap_kind", ["day", "job"])
async def test_concurrent_reservations_never_exceed_the_cap(
    cap_kind: str, backend_url: str, tmp_path: Path
) -> None:
    amount, cap, per_process = 0.07, 1.0, 25
    now = 1_795_000_000.0  # fixed: a UTC midnight inside the test must not split the day
    caps = Caps(per_job=cap, per_day=1e9, per_month=1e9) if cap_kind == "job" else Caps(1e9, cap, 1e9)
    job_id = "shared-job" if cap_kind == "job" else ""  # "" → one job per reservation
    store = open_store(backend_url)
    await store.migrate()

    argv = [str(per_process), str(amount), json.dumps([caps.per_job, caps.per_day, caps.per_month]), job_id]
    results = race(RESERVE_WORKER, [[backend_url, f"p{n}", *argv, str(now)] for n in range(2)], tmp_path)

    accepted = [rid for result in results for rid in result]
    assert len(set(accepted)) == len(accepted)
    # 1.0 / 0.07 = 14.28: exactly 14 fit, whatever the interleaving of 2 x 25 attempts
    assert len(accepted) == math.floor(cap / amount) == 14
    # Nothing is settled or released here, so the committed total only grows: its final value
    # is its maximum, and it is under the cap.
    summaries = {s.period.split(":")[0]: s for s in await store.spend(caps, job_id=job_id or None, now=now)}
    committed = summaries[cap_kind].spent + summaries[cap_kind].reserved
    assert committed == pytest.approx(14 * amount) and committed <= cap
    await store.close()
