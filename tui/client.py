"""The TUI's side of the control socket: one long-lived event feed, one short connection per action.

The feed subscribes *before* it asks for the job list, so nothing that happens between the snapshot
and the first pushed event is lost; events that repeat what the snapshot already shows are harmless.
Actions (submit, cancel, …) open their own connection, so they never wait behind the feed and a
dead feed cannot swallow their replies.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import structlog
from textual.message import Message

from montaged.control.client import ControlClient, ControlError, DaemonUnreachable
from montaged.control.protocol import EventKind
from montaged.jobview import event_of
from tui.messages import (
    Connected,
    IntakeChanged,
    JobChanged,
    JobEventReceived,
    JobProgress,
    JobsLoaded,
    StatsReceived,
    Unreachable,
)

log = structlog.get_logger(__name__)

RETRY_SECONDS = 1.0
LIST_LIMIT = 500
REQUEST_TIMEOUT = 10.0
# what a daemon that stops, crashes or restarts under us can raise; all mean "not there now"
LOST = (
    DaemonUnreachable,
    OSError,
    TimeoutError,
    anyio.BrokenResourceError,
    anyio.ClosedResourceError,
    anyio.EndOfStream,
    anyio.IncompleteRead,
)

Post = Callable[[Message], Any]

__all__ = ["LIST_LIMIT", "ControlError", "DaemonUnreachable", "call", "call_for_dialog", "run_feed",
           "translate"]


async def call(socket: Path, op: str, *, timeout: float = REQUEST_TIMEOUT, **fields: Any) -> Any:
    """One request on its own connection; raises ControlError (the daemon said no) or
    DaemonUnreachable (no daemon, or it went away mid-request)."""
    failure: ControlError | DaemonUnreachable
    try:
        async with ControlClient(socket, timeout=timeout) as client:
            # caught inside the block: ControlClient's task group would wrap it in an ExceptionGroup
            try:
                return await client.request(op, **fields)
            except ControlError as e:
                failure = e
            except LOST as e:
                failure = _unreachable(socket, op, e)
    except LOST as e:
        failure = _unreachable(socket, op, e)
    raise failure


async def call_for_dialog(socket: Path, op: str, **fields: Any) -> tuple[Any, str | None]:
    """``(result, None)``, or ``(None, message)`` for a dialog to show and stay open: the daemon's
    refusal in its own words, or that it is away."""
    try:
        return await call(socket, op, **fields), None
    except ControlError as e:
        return None, f"montaged refused: {e.message} [{e.code}]"
    except DaemonUnreachable as e:
        return None, f"montaged is unreachable: {e}"


def _unreachable(socket: Path, op: str, e: BaseException) -> DaemonUnreachable:
    if isinstance(e, DaemonUnreachable):
        return e
    return DaemonUnreachable(f"lost montaged at {socket} during {op!r}: {e or type(e).__name__}")


def translate(message: dict[str, Any]) -> Message | None:
    """One pushed event as a TUI message; kinds this TUI does not know are skipped."""
    event = event_of(message)
    if event is None:
        return None
    kind, data = event.kind, event.data
    if kind is EventKind.DAEMON_STATS:
        return StatsReceived(data)
    if kind in (EventKind.INTAKE_PAUSED, EventKind.INTAKE_RESUMED):
        return IntakeChanged(kind is EventKind.INTAKE_PAUSED)
    if kind in (EventKind.JOB_SUBMITTED, EventKind.JOB_RETRIED) and isinstance(data.get("job"), dict):
        return JobChanged(data["job"])
    if kind is EventKind.JOB_PROGRESS:
        return JobProgress(event.job_id, str(data.get("stage") or ""),
                           float(data.get("stage_progress") or 0.0), float(data.get("progress") or 0.0),
                           event.at)
    if event.job_id:
        return JobEventReceived(event)
    return None


async def _session(client: ControlClient, socket: Path, post: Post) -> str:
    """Snapshot, then every pushed event until the daemon goes away; returns why it ended."""
    try:
        await client.request("subscribe")
        hello = await client.request("ping")
        jobs = await client.request("list", limit=LIST_LIMIT)
        stats = await client.request("stats")
        log.info("connected", socket=str(socket), version=hello.get("version"))
        post(Connected(str(socket), str(hello.get("version", "?")), str(hello.get("worker", "?"))))
        post(JobsLoaded(list(jobs.get("jobs", []))))
        post(StatsReceived(stats))
        async for event in client.events():
            message = translate(event)
            if message is not None:
                post(message)
    except ControlError as e:  # e.g. store_unavailable while listing: the daemon is up but not well
        return f"montaged at {socket} refused the snapshot: {e.message} [{e.code}]"
    except LOST as e:
        return str(e) or f"lost montaged at {socket}: {type(e).__name__}"
    return f"montaged at {socket} closed the connection (stopped or restarting)"


async def run_feed(socket: Path, post: Post, *, retry_seconds: float = RETRY_SECONDS) -> None:
    """Forever: connect, subscribe, post a snapshot and then every event; when the daemon is not
    there (or goes away), post ``Unreachable`` and try again after ``retry_seconds``."""
    attempt = 0
    was_connected = False
    while True:
        connected = False
        try:
            async with ControlClient(socket, timeout=REQUEST_TIMEOUT) as client:
                connected = True
                reason = await _session(client, socket, post)
        except LOST as e:
            reason = str(e) or f"cannot reach montaged at {socket}: {type(e).__name__}"
        if connected:
            attempt, was_connected = 0, True
        attempt += 1
        if attempt == 1:
            log.info("daemon unreachable", socket=str(socket), reason=reason)
        post(Unreachable(str(socket), reason, attempt, was_connected))
        await anyio.sleep(retry_seconds)
