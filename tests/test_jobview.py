"""The one job-view reducer: folded over a real store's history it agrees with the store, and live
sequences with lost, late or unknown events leave a view the store would recognise."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from montaged import jobview
from montaged.control import protocol as p
from montaged.control.protocol import EventKind
from montaged.ctl.render import stage_timings
from montaged.ctl.watch import Board
from montaged.jobview import FAILED_HERE, STOPPED_HERE, JobView, event_of
from montaged.model import Job, JobEvent, JobSpec, JobState
from montaged.store import JobStore, open_store

pytestmark = pytest.mark.anyio

JOB = {"id": "j1", "state": "queued", "stage": None, "progress": 0.0, "attempts": 0, "created_at": 100.0,
       "updated_at": 100.0, "spec": {"source": "/in/talk.mp4"}, "result": {}}  # fmt: skip
RESULT = {"clips": [{"index": 0, "path": "/out/talk-01.mp4"}, {"index": 1, "path": "/out/talk-02.mp4"}]}


def ev(kind: EventKind | str, at: float, data: dict[str, Any] | None = None, job_id: str = "j1") -> JobEvent:
    return JobEvent(job_id, EventKind(kind), at, data or {})


def fold(*events: JobEvent, start: JobView | None = None) -> JobView:
    return jobview.fold(start or JobView.from_job(JOB), events)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[JobStore]:
    store = open_store(f"sqlite:///{tmp_path / 'jobs.db'}")
    await store.migrate()
    yield store
    await store.close()


async def history(store: JobStore, job: Job) -> JobView:
    """The job's stored events as ``show`` sends them, folded from nothing."""
    events = [event_of(e.to_dict()) for e in await store.events(job.id)]
    return jobview.fold(JobView(job.id), [e for e in events if e is not None])


def agrees(view: JobView, job: Job | None) -> None:
    assert job is not None
    got = {k: v for k, v in view.job_fields().items() if k != "updated_at"}
    want = {k: v for k, v in job.to_dict().items() if k in got}
    assert got == want


async def test_folding_the_stored_history_gives_the_stored_job(store: JobStore) -> None:
    job = await store.submit(JobSpec(source="/in/talk.mp4"))
    agrees(await history(store, job), await store.get(job.id))
    await store.claim("host:1", 30)
    await store.set_stage(job.id, "probe", 0.0)
    await store.set_stage(job.id, "transcribe", 0.05)
    await store.release(job.id, stopped_at="transcribe")
    released = await history(store, job)
    agrees(released, await store.get(job.id))
    assert [(s.stage, s.outcome) for s in released.spans] == [("probe", ""), ("transcribe", STOPPED_HERE)]

    await store.claim("host:2", 30)  # the next run: spans start again
    await store.set_stage(job.id, "probe", 0.0)
    await store.fail(job.id, stage="probe", error_class="media_changed", message="the file changed")
    failed = await history(store, job)
    agrees(failed, await store.get(job.id))
    assert [(s.stage, s.outcome) for s in failed.spans] == [("probe", FAILED_HERE)]

    await store.retry(job.id)
    agrees(await history(store, job), await store.get(job.id))
    await store.claim("host:2", 30)
    await store.set_stage(job.id, "render", 0.7)
    await store.finish(job.id, RESULT)
    done = await history(store, job)
    agrees(done, await store.get(job.id))
    assert done.clips == ("/out/talk-01.mp4", "/out/talk-02.mp4") and done.attempts == 3


async def test_a_cancel_is_folded_like_the_store_keeps_it(store: JobStore) -> None:
    job = await store.submit(JobSpec(source="/in/talk.mp4"))
    await store.claim("host:1", 30)
    await store.set_stage(job.id, "select", 0.4)
    await store.cancel(job.id)
    await store.finish(job.id, RESULT)  # a late finish: the store keeps the job cancelled
    view = await history(store, job)
    agrees(view, await store.get(job.id))
    # the pipeline still announces its finish live; the view stays with the store
    late = ev(EventKind.JOB_DONE, 1e10, dict(p.done(RESULT)), job.id)
    assert jobview.apply(view, late).state == "cancelled"


def test_late_events_do_not_undo_an_ending() -> None:
    done = fold(ev("job.claimed", 110, {"attempt": 1, "worker": "w"}),
                ev("job.stage", 111, {"stage": "render"}),
                ev("job.done", 120, dict(p.done(RESULT))))  # fmt: skip
    for late in (ev("job.progress", 119, {"stage": "render", "progress": 0.9}),
                 ev("job.stage", 119, {"stage": "render", "progress": 0.7}),
                 ev("job.released", 121, {"stopped_at": "render"}),
                 ev("job.failed", 121, {"stage": "render", "error_class": "x", "message": "m"}),
                 ev("job.claimed", 121, {"attempt": 1, "worker": "w"})):  # fmt: skip
        assert jobview.apply(done, late) is done, late.kind
    # a newer claim (its retry event lost) does move a finished job on
    again = jobview.apply(done, ev("job.claimed", 130, {"attempt": 2, "worker": "w"}))
    assert (again.state, again.attempts, again.spans) == ("running", 2, ())


def test_lost_events_are_bridged() -> None:
    # no job.claimed, no job.stage for transcribe: progress alone says it runs, and where
    view = fold(ev("job.stage", 110, {"stage": "probe", "progress": 0.0}),
                ev("job.progress", 115, {"stage": "transcribe", "stage_progress": 0.5, "progress": 0.2}))
    assert (view.state, view.stage, view.progress) == ("running", "transcribe", 0.2)
    spans = [(s.stage, s.started, s.ended) for s in view.spans]
    assert spans == [("probe", 110, 115), ("transcribe", 115, None)]
    # done with no clips list falls back to the result's clips
    done = jobview.apply(view, ev("job.done", 130, {"result": RESULT}))
    assert done.clips == ("/out/talk-01.mp4", "/out/talk-02.mp4") and done.running_span is None


def test_unknown_kinds_other_jobs_and_bad_messages_leave_the_view() -> None:
    view = JobView.from_job(JOB)
    assert event_of({"event": "job.from_the_future", "job_id": "j1", "at": 1.0, "data": {}}) is None
    assert event_of({"event": "job.done", "job_id": "j1", "data": {}}) is None  # no time
    assert event_of({"kind": "job.done", "job_id": "j1", "at": 1, "data": [1]}) is None  # data not an object
    assert jobview.apply(view, ev("daemon.stats", 1.0, {"paused": True}, job_id="")) is view
    assert jobview.apply(view, ev("job.done", 1.0, job_id="other")) is view
    pushed = event_of({"event": "job.stage", "job_id": "j1", "at": 2, "data": {"stage": "probe"}})
    stored = event_of({"kind": "job.stage", "job_id": "j1", "at": 2, "data": {"stage": "probe"}})
    assert pushed == stored and pushed is not None and pushed.kind is EventKind.JOB_STAGE


def test_retry_starts_the_view_over_from_the_job_it_carries() -> None:
    failed = fold(ev("job.claimed", 110, {"attempt": 1}),
                  ev("job.failed", 111, {"stage": "probe", "error_class": "x", "message": "m"}))
    queued = {**JOB, "attempts": 1, "updated_at": 112.0}
    view = jobview.apply(failed, ev("job.retried", 112, {"job": queued}))
    assert (view.state, view.error_class, view.attempts, view.spans) == ("queued", None, 1, ())


def test_show_times_the_latest_claims_stages() -> None:
    events = [{"job_id": "j1", "kind": kind, "at": at, "data": data} for kind, at, data in (
        ("job.submitted", 100.0, {}), ("job.claimed", 101.0, {"attempt": 1}),
        ("job.stage", 102.0, {"stage": "probe"}), ("job.released", 103.0, {"stopped_at": "probe"}),
        ("job.claimed", 110.0, {"attempt": 2}), ("job.stage", 111.0, {"stage": "probe"}),
        ("job.stage", 112.5, {"stage": "transcribe"}), ("hotfolder.duplicate", 113.0, {}),
        ("job.failed", 120.0, {"stage": "transcribe", "error_class": "x", "message": "m"}),
    )]  # fmt: skip
    job = {**JOB, "state": "failed"}
    assert stage_timings(job, events) == [("probe", 1.5, ""), ("transcribe", 7.5, "failed here")]


def test_watch_board_draws_what_the_view_says() -> None:
    out = io.StringIO()
    board = Board(Console(file=out, width=120, color_system=None), follow_all=False)
    board.add(JOB)
    pushed = [("job.claimed", 110, {"attempt": 1, "worker": "w"}), ("job.stage", 111, {"stage": "probe"}),
              ("job.stage", 112.5, {"stage": "render"}),
              ("job.progress", 113, {"stage": "render", "progress": 0.9}),
              ("job.done", 115, dict(p.done(RESULT))), ("job.progress", 116, {"progress": 0.2})]  # fmt: skip
    for kind, at, data in pushed:
        board.apply({"event": kind, "job_id": "j1", "at": at, "data": data})
    lines = [line.strip() for line in out.getvalue().splitlines()]
    assert lines == ["✓ talk.mp4: probe 1.5 s", "✓ talk.mp4: render 2.5 s", "✓ talk.mp4: done, 2 clips"]
    assert board.views["j1"].state == JobState.DONE and board.views["j1"].progress == 1.0
