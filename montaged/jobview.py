"""One job's state, folded from its events: the one reducer the TUI and montagectl share.

The TUI's job table, ``montagectl watch``'s bars and ``montagectl show``'s stage timings all start
from a job record (``Job.to_dict``) or nothing, and move it on with events, live or stored. Doing
that in one place keeps them agreeing on what each event means.

Events may come late, twice or not at all: a subscriber that falls behind loses events, and a
record fetched from the store can be newer than an event still in flight. So a finished job
ignores the stage and progress events of the run it finished, a claim older than the view's is
ignored, and a stage heard of only through ``job.progress`` still gets its span. Kinds this
reducer does not use (``daemon.stats``, a newer daemon's kinds) leave the view as it was.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from montaged.control.protocol import EventKind
from montaged.model import TERMINAL_STATES, JobEvent, JobState

# How a stage ended when it did not hand over to the next one.
FAILED_HERE = "failed"
CANCELLED_HERE = "cancelled"
STOPPED_HERE = "stopped"


@dataclass(frozen=True)
class StageSpan:
    """One stage of the latest claim, from its ``job.stage`` event to the next event that ended it.

    ``outcome`` is "" when the next stage began or the job finished, else FAILED_HERE,
    CANCELLED_HERE or STOPPED_HERE (a release by a stopping daemon)."""

    stage: str
    started: float
    ended: float | None = None  # None while it runs
    outcome: str = ""

    def seconds(self, now: float) -> float:
        return (now if self.ended is None else self.ended) - self.started


@dataclass(frozen=True)
class JobView:
    """What the events say about one job. ``state`` is a JobState value; the fields named like
    ``Job``'s mean what they mean there (``job_fields`` hands them back in that shape)."""

    job_id: str
    state: str = JobState.QUEUED
    stage: str | None = None
    progress: float = 0.0
    attempts: int = 0
    worker: str | None = None
    updated_at: float = 0.0
    error_stage: str | None = None
    error_class: str | None = None
    error_message: str | None = None
    stopped_at: str | None = None
    result: Mapping[str, Any] = field(default_factory=dict)
    claimed_at: float | None = None  # when the latest claim began, if its event was seen
    clips: tuple[str, ...] = ()  # paths of the rendered clips, once done
    spans: tuple[StageSpan, ...] = ()  # stages of the latest claim, in order

    @classmethod
    def from_job(cls, job: Mapping[str, Any], *, claimed_at: float | None = None) -> JobView:
        """The view of a job record (``Job.to_dict``, as ``list``/``show`` send it)."""
        result = job.get("result") or {}
        return cls(
            job_id=str(job["id"]),
            state=str(job.get("state") or JobState.QUEUED),
            stage=job.get("stage"),
            progress=float(job.get("progress") or 0.0),
            attempts=int(job.get("attempts") or 0),
            worker=job.get("worker"),
            updated_at=float(job.get("updated_at") or 0.0),
            error_stage=job.get("error_stage"),
            error_class=job.get("error_class"),
            error_message=job.get("error_message"),
            stopped_at=job.get("stopped_at"),
            result=result,
            claimed_at=claimed_at,
            clips=_clip_paths(result),
        )

    @property
    def finished(self) -> bool:
        return self.state in TERMINAL_STATES

    @property
    def running_span(self) -> StageSpan | None:
        last = self.spans[-1] if self.spans else None
        return last if last is not None and last.ended is None else None

    def job_fields(self) -> dict[str, Any]:
        """The ``Job.to_dict`` keys this view keeps, to update a job record in place."""
        return {
            "state": self.state, "stage": self.stage, "progress": self.progress, "attempts": self.attempts,
            "worker": self.worker, "updated_at": self.updated_at, "error_stage": self.error_stage,
            "error_class": self.error_class, "error_message": self.error_message,
            "stopped_at": self.stopped_at, "result": dict(self.result),
        }  # fmt: skip


def event_of(message: Mapping[str, Any]) -> JobEvent | None:
    """A pushed event (``{"event": kind, ...}``) or a stored one (``{"kind": kind, ...}``, as
    ``show`` lists them) as a JobEvent; None for a kind this version does not know, or a message
    too malformed to read."""
    kind = EventKind.parse(str(message.get("event") or message.get("kind") or ""))
    data = message.get("data") or {}
    at = message.get("at")
    if kind is None or not isinstance(data, dict) or not isinstance(at, int | float):
        return None
    return JobEvent(job_id=str(message.get("job_id") or ""), kind=kind, at=float(at), data=data)


def fold(view: JobView, events: Iterable[JobEvent]) -> JobView:
    for event in events:
        view = apply(view, event)
    return view


def apply(view: JobView, event: JobEvent) -> JobView:
    """The view after ``event``; the same view when the event is another job's, stale, or of a
    kind that does not change a job."""
    if event.job_id != view.job_id:
        return view
    step = _STEPS.get(event.kind)
    if step is None:
        return view
    return step(view, event, event.data)


def _submitted(view: JobView, event: JobEvent, data: Mapping[str, Any]) -> JobView:
    job = data.get("job")
    if isinstance(job, dict) and view.attempts == 0 and not view.spans and job.get("id") == view.job_id:
        return JobView.from_job(job)
    return view


def _claimed(view: JobView, event: JobEvent, data: Mapping[str, Any]) -> JobView:
    attempt = _int(data.get("attempt"), view.attempts + 1)
    if attempt < view.attempts or (view.finished and attempt <= view.attempts):
        return view  # an earlier claim than the one the view has already seen end or begin
    return dataclasses.replace(
        view, state=JobState.RUNNING, attempts=attempt, worker=_text(data.get("worker")) or view.worker,
        claimed_at=event.at, updated_at=event.at, error_stage=None, error_class=None, error_message=None,
        spans=(),
    )  # fmt: skip


def _stage(view: JobView, event: JobEvent, data: Mapping[str, Any]) -> JobView:
    stage = _text(data.get("stage"))
    if view.finished or stage is None:
        return view
    return dataclasses.replace(
        view, state=JobState.RUNNING, stage=stage, progress=_float(data.get("progress"), view.progress),
        updated_at=event.at, spans=(*_closed(view.spans, event.at), StageSpan(stage, event.at)),
    )  # fmt: skip


def _progress(view: JobView, event: JobEvent, data: Mapping[str, Any]) -> JobView:
    if view.finished:
        return view
    stage = _text(data.get("stage")) or view.stage
    spans = view.spans
    running = view.running_span
    if stage is not None and (running is None or running.stage != stage):
        # its job.stage event was lost: the stage began no later than this
        spans = (*_closed(spans, event.at), StageSpan(stage, event.at))
    return dataclasses.replace(
        view, state=JobState.RUNNING, stage=stage, progress=_float(data.get("progress"), view.progress),
        updated_at=event.at, spans=spans,
    )  # fmt: skip


def _done(view: JobView, event: JobEvent, data: Mapping[str, Any]) -> JobView:
    if view.state in (JobState.FAILED, JobState.CANCELLED):
        return view  # the store keeps a job cancelled meanwhile cancelled; a late finish is not recorded
    result = data.get("result")
    result = result if isinstance(result, dict) else view.result
    clips = data.get("clips")
    paths = tuple(str(c) for c in clips) if isinstance(clips, list) else _clip_paths(result)
    return dataclasses.replace(
        view, state=JobState.DONE, progress=1.0, result=result, clips=paths, updated_at=event.at,
        spans=_closed(view.spans, event.at),
    )  # fmt: skip


def _failed(view: JobView, event: JobEvent, data: Mapping[str, Any]) -> JobView:
    if view.state in (JobState.DONE, JobState.CANCELLED):
        return view
    return dataclasses.replace(
        view, state=JobState.FAILED, error_stage=_text(data.get("stage")),
        error_class=_text(data.get("error_class")), error_message=_text(data.get("message")),
        updated_at=event.at, spans=_closed(view.spans, event.at, FAILED_HERE),
    )  # fmt: skip


def _cancelled(view: JobView, event: JobEvent, data: Mapping[str, Any]) -> JobView:
    if view.state in (JobState.DONE, JobState.FAILED):
        return view  # only a queued or running job can be cancelled: this one ended otherwise first
    return dataclasses.replace(
        view, state=JobState.CANCELLED, updated_at=event.at,
        spans=_closed(view.spans, event.at, CANCELLED_HERE),
    )  # fmt: skip


def _released(view: JobView, event: JobEvent, data: Mapping[str, Any]) -> JobView:
    if view.finished:
        return view
    return dataclasses.replace(
        view, state=JobState.QUEUED, stopped_at=_text(data.get("stopped_at")), worker=None,
        claimed_at=None, updated_at=event.at, spans=_closed(view.spans, event.at, STOPPED_HERE),
    )  # fmt: skip


def _retried(view: JobView, event: JobEvent, data: Mapping[str, Any]) -> JobView:
    job = data.get("job")
    if isinstance(job, dict) and job.get("id") == view.job_id:
        return JobView.from_job(job)
    return dataclasses.replace(
        view, state=JobState.QUEUED, stage=None, progress=0.0, worker=None, error_stage=None,
        error_class=None, error_message=None, stopped_at=None, claimed_at=None, updated_at=event.at,
        spans=(),
    )  # fmt: skip


_STEPS = {
    EventKind.JOB_SUBMITTED: _submitted,
    EventKind.JOB_CLAIMED: _claimed,
    EventKind.JOB_STAGE: _stage,
    EventKind.JOB_PROGRESS: _progress,
    EventKind.JOB_DONE: _done,
    EventKind.JOB_FAILED: _failed,
    EventKind.JOB_CANCELLED: _cancelled,
    EventKind.JOB_RELEASED: _released,
    EventKind.JOB_RETRIED: _retried,
}


def _closed(spans: tuple[StageSpan, ...], at: float, outcome: str = "") -> tuple[StageSpan, ...]:
    """``spans`` with the running one (if any) ended at ``at``."""
    if not spans or spans[-1].ended is not None:
        return spans
    return (*spans[:-1], dataclasses.replace(spans[-1], ended=max(at, spans[-1].started), outcome=outcome))


def _clip_paths(result: Mapping[str, Any]) -> tuple[str, ...]:
    clips = result.get("clips")
    if not isinstance(clips, list):
        return ()
    return tuple(str(c.get("path")) for c in clips if isinstance(c, dict))


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


def _int(value: Any, default: int) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else default


def _float(value: Any, default: float) -> float:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else default
