"""Control-socket messages, shared by the daemon, montagectl and montage-tui.

One JSON object per line (UTF-8, ``\\n``-terminated):

- request: ``{"id": 1, "op": "submit", "path": "/in/talk.mp4", "profile": "vertical"}``
- reply:   ``{"id": 1, "ok": true, "result": {...}}`` or
           ``{"id": 1, "ok": false, "error": {"code": "not_found", "message": "..."}}``
- pushed event (after ``subscribe``): ``{"event": "job.progress", "job_id": "...", "at": 1.0,
  "data": {...}}``; events carry no ``id``.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from montaged.model import JobEvent

OPS = ("submit", "list", "show", "cancel", "retry", "pause", "resume", "stats", "subscribe", "ping")
Op = Literal["submit", "list", "show", "cancel", "retry", "pause", "resume", "stats", "subscribe", "ping"]

# error codes a client may act on
BAD_JSON = "bad_json"
LINE_TOO_LONG = "line_too_long"
BAD_REQUEST = "bad_request"
NOT_FOUND = "not_found"
INVALID_STATE = "invalid_state"
STORE_UNAVAILABLE = "store_unavailable"
INTERNAL = "internal"


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


class ErrorBody(BaseModel):
    code: str
    message: str


class ProtocolError(Exception):
    """A request the daemon could not accept; becomes an error reply, never a dropped connection."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def parse_request(line: bytes) -> Request:
    """Decode one line into a Request or raise ProtocolError with a message that says what to fix."""
    try:
        data = json.loads(line)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ProtocolError(BAD_JSON, f"not a JSON object: {e}; send one JSON object per line") from None
    if not isinstance(data, dict):
        raise ProtocolError(BAD_REQUEST, "each line must be a JSON object with 'id' and 'op'")
    try:
        return Request.model_validate(data)
    except ValidationError as e:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'request'}: {err['msg']}" for err in e.errors()
        )
        raise ProtocolError(BAD_REQUEST, f"{problems} (ops: {', '.join(OPS)})") from None


def request_id(line: bytes) -> int | str | None:
    """Best-effort id of a line that failed validation, so the error reply can echo it."""
    try:
        data = json.loads(line)
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None
    rid = data.get("id") if isinstance(data, dict) else None
    return rid if isinstance(rid, int | str) else None


def encode(message: dict[str, Any]) -> bytes:
    return json.dumps(message, separators=(",", ":"), default=str).encode() + b"\n"


def ok(rid: int | str | None, result: Any) -> dict[str, Any]:
    return {"id": rid, "ok": True, "result": result}


def error(rid: int | str | None, code: str, message: str) -> dict[str, Any]:
    return {"id": rid, "ok": False, "error": {"code": code, "message": message}}


def event_message(event: JobEvent) -> dict[str, Any]:
    return {"event": event.kind, "job_id": event.job_id, "at": event.at, "data": event.data}
