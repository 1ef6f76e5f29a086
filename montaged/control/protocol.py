"""Control-socket messages, shared by the daemon, montagectl and montage-tui.

One JSON object per line (UTF-8, ``\\n``-terminated):

- request: ``{"id": 1, "op": "submit", "path": "/in/talk.mp4", "profile": "vertical"}``
- reply:   ``{"id": 1, "ok": true, "result": {...}}`` or
           ``{"id": 1, "ok": false, "error": {"code": "not_found", "message": "..."}}``
- pushed event (after ``subscribe``): ``{"event": "job.progress", "job_id": "...", "at": 1.0,
  "data": {...}}``; events carry no ``id``.

Requests come from other users' programs, so decoding is bounded: orjson (no recursion, no
arbitrary-precision numbers), then a walk that caps nesting depth and string sizes before pydantic
sees anything. Line length is bounded by the server before a line reaches this module.
"""

from __future__ import annotations

import json
from typing import Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic_core import PydanticCustomError

from montaged.model import JobEvent

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
