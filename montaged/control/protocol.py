"""Control-socket messages, shared by the daemon, montagectl and montage-tui.

One JSON object per line (UTF-8, ``\\n``-terminated):

- request: ``{"id": 1, "op": "submit", "path": "/in/talk.mp4", "profile": "vertical"}``
- reply:   ``{"id": 1, "ok": true, "result": {...}}`` or
           ``{"id": 1, "ok": false, "error": {"code": "not_found", "message": "..."}}``
- pushed event (after ``subscribe``): ``{"event": "job.progress", "job_id": "...", "at": 1.0,
  "data": {...}}``; events carry no ``id``. ``event`` is one of :class:`EventKind`; ``data`` is the
  payload named for that kind below. The store records the same ``data`` for the kinds it keeps,
  so ``show``'s event history and the live feed read alike.

Requests come from other users' programs, so decoding is bounded: orjson (no recursion, no
arbitrary-precision numbers), then a walk that caps nesting depth and string sizes before pydantic
sees anything. Line length is bounded by the server before a line reaches this module.
"""

from __future__ import annotations

import enum
import json
from typing import TYPE_CHECKING, Any, Literal, TypedDict

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic_core import PydanticCustomError

if TYPE_CHECKING:  # model.py types JobEvent.kind with EventKind, so this module cannot import it
    from montaged.model import Job, JobEvent

OPS = ("submit", "list", "show", "cancel", "retry", "pause", "resume", "stats", "subscribe", "ping", "export",
       "render", "purge")
Op = Literal["submit", "list", "show", "cancel", "retry", "pause", "resume", "stats", "subscribe", "ping",
             "export", "render", "purge"]

# error codes a client may act on
BAD_JSON = "bad_json"
LINE_TOO_LONG = "line_too_long"
BAD_REQUEST = "bad_request"
NOT_FOUND = "not_found"
INVALID_STATE = "invalid_state"
STORE_UNAVAILABLE = "store_unavailable"
INTERNAL = "internal"
# connection-level errors: sent with ``"id": null`` just before the daemon closes the connection
TOO_MANY_CONNECTIONS = "too_many_connections"
PEER_REFUSED = "peer_refused"
IDLE_TIMEOUT = "idle_timeout"
LINE_TIMEOUT = "line_timeout"

MAX_DEPTH = 32  # objects/arrays inside each other; a request needs 3
MAX_STRING = 16_384  # characters in one string or key; paths are at most 4,096 bytes on Linux
MAX_ID = 256  # characters of a string id


class Request(BaseModel):
    """One request. Fields beyond ``id`` and ``op`` are used by the ops that need them."""

    model_config = ConfigDict(extra="forbid")

    id: int | str
    op: Op
    path: str | None = Field(None, description="submit: absolute path of the media file")
    profile: str | None = Field(None, description="submit: output profile (default: vertical)")
    options: dict[str, Any] | None = Field(None, description="submit: job options, e.g. max_clips")
    output_dir: str | None = Field(None, description="submit: where the clips go (default: paths)")
    job_id: str | None = Field(None, description="show/cancel/retry; subscribe: only this job")
    state: str | None = Field(None, description="list: only jobs in this state")
    limit: int | None = Field(None, ge=1, le=10_000, description="list: at most this many")
    format: str | None = Field(None, description="export: otio, fcpxml or edl")

    @field_validator("id", mode="before")
    @classmethod
    def _short_id(cls, value: Any) -> Any:
        ok = (isinstance(value, int) and not isinstance(value, bool)) or (
            isinstance(value, str) and len(value) <= MAX_ID)
        if not ok:
            raise PydanticCustomError("bad_id", "use an integer (64-bit) or a string of at most {n}"
                                      " characters; the reply echoes it", {"n": MAX_ID})
        return value


class ErrorBody(BaseModel):
    code: str
    message: str


class ProtocolError(Exception):
    """A request the daemon could not accept; becomes an error reply, never a dropped connection."""

    def __init__(self, code: str, message: str, rid: int | str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.rid = rid  # the request's id when it could be read, so the reply can echo it


def parse_request(line: bytes) -> Request:
    """Decode one line into a Request or raise ProtocolError with a message that says what to fix."""
    data = _decode(line)
    if not isinstance(data, dict):
        raise ProtocolError(BAD_REQUEST, "each line must be a JSON object with 'id' and 'op'")
    rid = _usable_id(data.get("id"))
    check_bounds(data, rid)
    try:
        return Request.model_validate(data)
    except ValidationError as e:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'request'}: {err['msg']}" for err in e.errors()
        )
        raise ProtocolError(BAD_REQUEST, f"{problems} (ops: {', '.join(OPS)})", rid) from None


def _decode(line: bytes) -> Any:
    try:
        return orjson.loads(line)
    except orjson.JSONDecodeError as e:
        if "depth limit" in e.msg:
            raise ProtocolError(BAD_REQUEST, f"nesting deeper than {MAX_DEPTH} levels at byte {e.pos};"
                                " send a flatter request (options take plain values)") from None
        if "infinity" in e.msg:
            raise ProtocolError(BAD_REQUEST, f"number too large at byte {e.pos}; numbers must fit in"
                                " 64 bits (use a string id for longer ones)") from None
        raise ProtocolError(BAD_JSON, f"not JSON at byte {e.pos}: {e.msg}; send one JSON object"
                            " per line, UTF-8") from None


def check_bounds(data: Any, rid: int | str | None = None) -> None:
    """Refuse nesting deeper than MAX_DEPTH and strings or keys longer than MAX_STRING, naming
    where. Iterative, so no input can exhaust the stack."""
    stack: list[tuple[Any, int, tuple[str | int, ...]]] = [(data, 1, ())]
    while stack:
        value, depth, path = stack.pop()
        if isinstance(value, dict | list):
            if depth > MAX_DEPTH:
                raise ProtocolError(BAD_REQUEST, f"{_where(path)}: nested deeper than {MAX_DEPTH} levels;"
                                    " send a flatter request (options take plain values)", rid)
            items = value.items() if isinstance(value, dict) else enumerate(value)
            for key, item in items:
                if isinstance(key, str) and len(key) > MAX_STRING:
                    raise ProtocolError(BAD_REQUEST, f"{_where(path)}: a key of {len(key)} characters;"
                                        f" keys and strings may have at most {MAX_STRING}", rid)
                stack.append((item, depth + 1, (*path, key)))
        elif isinstance(value, str) and len(value) > MAX_STRING:
            raise ProtocolError(BAD_REQUEST, f"{_where(path)}: a string of {len(value)} characters;"
                                f" strings may have at most {MAX_STRING}", rid)


def _where(path: tuple[str | int, ...]) -> str:
    shown = ".".join(str(part)[:40] for part in path[:8])
    return (shown + (".…" if len(path) > 8 else "")) or "request"


def _usable_id(value: Any) -> int | str | None:
    if isinstance(value, bool) or not isinstance(value, int | str):
        return None
    return value if not isinstance(value, str) or len(value) <= MAX_ID else None


def request_id(line: bytes) -> int | str | None:
    """Best-effort id of a line that failed validation, so the error reply can echo it."""
    try:
        data = orjson.loads(line)
    except orjson.JSONDecodeError:
        return None
    return _usable_id(data.get("id")) if isinstance(data, dict) else None


def encode(message: dict[str, Any]) -> bytes:
    return json.dumps(message, separators=(",", ":"), default=str).encode() + b"\n"


def ok(rid: int | str | None, result: Any) -> dict[str, Any]:
    return {"id": rid, "ok": True, "result": result}


def error(rid: int | str | None, code: str, message: str) -> dict[str, Any]:
    return {"id": rid, "ok": False, "error": {"code": code, "message": message}}


def event_message(event: JobEvent) -> dict[str, Any]:
    return {"event": event.kind, "job_id": event.job_id, "at": event.at, "data": event.data}


# ---- events ---------------------------------------------------------------------------------


class EventKind(enum.StrEnum):
    """Every event the daemon publishes. A ``StrEnum``: members compare equal to their strings,
    so scripts matching on ``"job.done"`` keep working. ``stored`` kinds are also kept in the job's
    history (``show``); the others are only pushed live."""

    JOB_SUBMITTED = "job.submitted"  # stored; SubmittedPayload
    JOB_CLAIMED = "job.claimed"  # stored; ClaimedPayload
    JOB_STAGE = "job.stage"  # stored; StagePayload
    JOB_PROGRESS = "job.progress"  # live only, a few a second per job at most; ProgressPayload
    JOB_DONE = "job.done"  # stored; DonePayload
    JOB_FAILED = "job.failed"  # stored; FailedPayload
    JOB_RELEASED = "job.released"  # stored; ReleasedPayload
    JOB_CANCELLED = "job.cancelled"  # stored; CancelledPayload
    JOB_RETRIED = "job.retried"  # stored; RetriedPayload
    HOTFOLDER_DUPLICATE = "hotfolder.duplicate"  # stored on the earlier job; DuplicatePayload
    INTAKE_PAUSED = "intake.paused"  # live only, job_id ""; empty payload
    INTAKE_RESUMED = "intake.resumed"  # live only, job_id ""; empty payload
    DAEMON_STATS = "daemon.stats"  # live only, job_id ""; the ``stats`` reply
    JOB_SNAPSHOT = "job.snapshot"  # never sent by the daemon: montagectl ``watch ID --json``'s first line

    @classmethod
    def parse(cls, value: str) -> EventKind | None:
        """The kind named by ``value``, or None for one this version does not know (a newer
        daemon's): readers skip those instead of failing."""
        try:
            return cls(value)
        except ValueError:
            return None


TERMINAL_EVENTS = frozenset({EventKind.JOB_DONE, EventKind.JOB_FAILED, EventKind.JOB_CANCELLED})


class SubmittedPayload(TypedDict):
    source: str  # the input file, resolved
    profile: str
    origin: str  # socket | hotfolder | redis | cli
    job: dict[str, Any]  # the stored job (``Job.to_dict``) as it was queued


# Optional keys sit in a ``total=False`` subclass: NotRequired[...] is not seen through this
# module's postponed (string) annotations, and PAYLOADS' key sets must be right at run time.
class _Claim(TypedDict):
    worker: str  # host:pid of the claiming daemon
    attempt: int  # the job's attempt number, counting this claim; also its fencing token


class ClaimedPayload(_Claim, total=False):
    took_over_from: str  # the worker whose lease lapsed (it is presumed dead)


class StagePayload(TypedDict):
    stage: str  # one of model.STAGES, starting now
    progress: float  # the whole job's progress (0..1) at the start of the stage


class ProgressPayload(TypedDict):
    stage: str
    stage_progress: float  # 0..1 of this stage
    progress: float  # 0..1 of the whole job


class DonePayload(TypedDict):
    clips: list[str]  # paths of the rendered clips, in order (empty for a preview)
    result: dict[str, Any]  # what ``show`` has under job.result: clips, timings, notes, cost


class _Failure(TypedDict):
    stage: str  # where it failed ("claim" for a job poisoned before any stage)
    error_class: str  # a MontageError code, "internal" for a bug, "poisoned" after repeated crashes
    message: str  # what happened and what to do


class FailedPayload(_Failure, total=False):
    attempts: int  # poisoned jobs: the claims it had


class ReleasedPayload(TypedDict):
    stopped_at: str  # the stage it was in, or about to enter, when montaged stopped


class CancelledPayload(TypedDict):
    was: str  # the job's state before: queued or running


class RetriedPayload(TypedDict):
    job: dict[str, Any]  # the job (``Job.to_dict``) queued again


class DuplicatePayload(TypedDict):
    path: str  # the dropped file that was not submitted again
    content_hash: str  # the content it shares with this job's input


def submitted(job: Job) -> SubmittedPayload:
    spec = job.spec
    return {"source": spec.source, "profile": spec.profile, "origin": spec.origin, "job": job.to_dict()}


def claimed(worker: str, attempt: int, took_over_from: str | None = None) -> ClaimedPayload:
    data: ClaimedPayload = {"worker": worker, "attempt": attempt}
    if took_over_from is not None:
        data["took_over_from"] = took_over_from
    return data


def stage_started(stage: str, progress: float) -> StagePayload:
    return {"stage": stage, "progress": progress}


def progressed(stage: str, stage_progress: float, progress: float) -> ProgressPayload:
    return {"stage": stage, "stage_progress": round(stage_progress, 4), "progress": round(progress, 4)}


def done(result: dict[str, Any]) -> DonePayload:
    """From the job's stored result alone, so the store and the pipeline build the same payload."""
    clips = [str(c.get("path")) for c in result.get("clips") or () if isinstance(c, dict)]
    return {"clips": clips, "result": result}


def failed(stage: str, error_class: str, message: str, attempts: int | None = None) -> FailedPayload:
    data: FailedPayload = {"stage": stage, "error_class": error_class, "message": message}
    if attempts is not None:
        data["attempts"] = attempts
    return data


def released(stopped_at: str) -> ReleasedPayload:
    return {"stopped_at": stopped_at}


def cancelled(was: str) -> CancelledPayload:
    return {"was": str(was)}


def retried(job: Job) -> RetriedPayload:
    return {"job": job.to_dict()}


def duplicate(path: str, content_hash: str) -> DuplicatePayload:
    return {"path": path, "content_hash": content_hash}


# The payload of each kind, for readers that check what they got (tests, docs).
PAYLOADS: dict[EventKind, type] = {
    EventKind.JOB_SUBMITTED: SubmittedPayload,
    EventKind.JOB_CLAIMED: ClaimedPayload,
    EventKind.JOB_STAGE: StagePayload,
    EventKind.JOB_PROGRESS: ProgressPayload,
    EventKind.JOB_DONE: DonePayload,
    EventKind.JOB_FAILED: FailedPayload,
    EventKind.JOB_RELEASED: ReleasedPayload,
    EventKind.JOB_CANCELLED: CancelledPayload,
    EventKind.JOB_RETRIED: RetriedPayload,
    EventKind.HOTFOLDER_DUPLICATE: DuplicatePayload,
}
