"""One control-socket client: read bounded lines, answer each, push events after ``subscribe``.

Whatever the client sends or does (garbage, a line that never ends, silence, not reading its
replies) ends at most this connection: ``run`` returns instead of raising, with a logged code.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import anyio
import anyio.lowlevel
import structlog
from anyio.abc import SocketAttribute, SocketStream, TaskGroup

from montaged.control import protocol as p
from montaged.control.peers import Peer
from montaged.errors import leaf_errors
from montaged.events import EventBus
from montaged.metrics import CONTROL_DROPPED, CONTROL_REQUESTS

log = structlog.get_logger(__name__)

Handler = Callable[[p.Request], Awaitable[Any]]
READ_CHUNK = 65536


@dataclass(frozen=True)
class Limits:
    """Per-connection bounds (from ``ControlConfig``)."""

    max_line: int = 65_536
    idle_timeout: float = 300.0
    line_timeout: float = 10.0
    send_timeout: float = 30.0


async def send_within(sock: socket.socket, data: bytes, timeout: float) -> bool:
    """Write all of ``data`` within ``timeout`` s, or return False (a reader taking a byte now
    and then cannot hold the connection forever).

    Waits with ``wait_writable`` instead of cancelling a stream's send: anyio's socket streams
    can raise InvalidStateError in a loop callback when a pending send or receive is cancelled
    just as the socket becomes ready.
    """
    view = memoryview(data)
    with anyio.CancelScope(deadline=anyio.current_time() + timeout) as scope:
        while view:
            try:
                view = view[sock.send(view):]
            except BlockingIOError:
                await anyio.wait_writable(sock)
    return not scope.cancelled_caught


class _SlowReader(Exception):
    """The client did not take a reply or event within the send timeout."""


_GONE = (anyio.BrokenResourceError, anyio.ClosedResourceError, anyio.EndOfStream, ConnectionError)


class Connection:
    def __init__(self, stream: SocketStream, handler: Handler, bus: EventBus, limits: Limits,
                 peer: Peer | None = None) -> None:
        self.stream = stream
        self.sock: socket.socket = stream.extra(SocketAttribute.raw_socket)
        self.handler = handler
        self.bus = bus
        self.limits = limits
        self.lock = anyio.Lock()
        self.subscribed = False
        self.job_filter: str | None = None  # subscribe's job_id; a later subscribe replaces it
        self.log = log.bind(peer_pid=peer.pid, peer_uid=peer.uid) if peer else log
        self.reason = "closed"  # why the daemon ended the connection, for logs and metrics

    async def run(self) -> None:
        """Serve the client until it leaves or breaks a limit; never raises (but cancellation)."""
        try:
            async with self.stream, anyio.create_task_group() as tg:
                await self._read(tg)
                tg.cancel_scope.cancel()
        except Exception as e:  # grouped or not: whatever happened, it ends this client only
            self._failed(e)
        if self.reason not in ("closed", "gone"):
            CONTROL_DROPPED.labels(reason=self.reason).inc()

    def _failed(self, e: Exception) -> None:
        leaves = leaf_errors(e)
        if all(isinstance(x, _SlowReader) for x in leaves):
            self._closed("send_timeout")
        elif all(isinstance(x, _GONE) for x in leaves):
            self._closed("gone")  # the client hung up mid-reply: nothing to report
        else:
            self._closed("error")
            self.log.error("control connection failed", code="connection_error",
                           error="; ".join(f"{type(x).__name__}: {x}" for x in leaves), exc_info=e)

    def _closed(self, reason: str) -> None:
        if self.reason == "closed":
            self.reason = reason

    async def send(self, message: dict[str, Any]) -> None:
        await self._send(p.encode(message))

    async def _send(self, data: bytes) -> None:
        async with self.lock:
            sent = await send_within(self.sock, data, self.limits.send_timeout)
        if not sent:
            self.log.warning("control client does not read; disconnecting", code="send_timeout",
                             seconds=self.limits.send_timeout)
            raise _SlowReader

    async def _read(self, tg: TaskGroup) -> None:
        buf = bytearray()
        scanned = 0  # bytes of buf already searched for a newline
        discarding = False  # inside an oversized line: drop bytes until its newline
        line_started: float | None = None  # when the first byte of the unfinished line came
        last_request = time.monotonic()
        while True:
            now = time.monotonic()
            if line_started is not None:
                timeout, code = line_started + self.limits.line_timeout - now, p.LINE_TIMEOUT
            elif not self.subscribed:
                timeout, code = last_request + self.limits.idle_timeout - now, p.IDLE_TIMEOUT
            else:
                timeout, code = float("inf"), ""  # a subscriber listens; silence is its job
            with anyio.move_on_after(max(timeout, 0.0)) as waited:
                await anyio.wait_readable(self.sock)  # safe to cancel, unlike a pending receive
            if waited.cancelled_caught:
                await self._timed_out(code)
                return
            try:
                data = await self.stream.receive(READ_CHUNK)  # readable: returns without waiting
            except anyio.EndOfStream:
                return  # the client hung up
            buf += data
            busy_since = time.monotonic()
            pos = 0  # start of the next line; consumed lines are dropped once, after the loop
            while (nl := buf.find(b"\n", max(pos, scanned))) >= 0:
                line = bytes(buf[pos:nl])
                pos = nl + 1
                if discarding:
                    discarding = False  # the rest of an oversized line, already answered
                elif len(line) > self.limits.max_line:
                    await self._too_long(line[:200])
                elif line.strip():
                    await self._handle(line, tg)
                    last_request = time.monotonic()
                if time.monotonic() - busy_since > 0.005:  # a chunk of many lines must not starve
                    await anyio.lowlevel.checkpoint()  # the daemon's other tasks
                    busy_since = time.monotonic()
            completed = pos > 0
            del buf[:pos]
            scanned = len(buf)
            if not discarding and len(buf) > self.limits.max_line:
                discarding = True
                await self._too_long(bytes(buf[:200]))
            if discarding:  # never hold more than one chunk of an oversized line
                buf.clear()
                scanned = 0
            if not buf and not discarding:
                line_started = None
            elif completed or line_started is None:
                line_started = time.monotonic()

    async def _timed_out(self, code: str) -> None:
        if code == p.LINE_TIMEOUT:
            message = (f"request line not finished within {self.limits.line_timeout:g} s; end each"
                       " request with a newline (control.line_timeout_seconds)")
        else:
            message = (f"no request for {self.limits.idle_timeout:g} s; connect again when needed"
                       " (control.idle_timeout_seconds)")
        self._closed(code)
        self.log.info("control connection closed", code=code)
        await send_within(self.sock, p.encode(p.error(None, code, message)), 1.0)  # best effort

    async def _too_long(self, head: bytes) -> None:
        CONTROL_REQUESTS.labels(op="invalid", outcome="error").inc()
        await self.send(p.error(p.request_id(head), p.LINE_TOO_LONG,
                                f"request line longer than {self.limits.max_line} bytes; send smaller"
                                " requests (control.max_line_bytes)"))

    async def _handle(self, line: bytes, tg: TaskGroup) -> None:
        try:
            request = p.parse_request(line)
        except p.ProtocolError as e:
            CONTROL_REQUESTS.labels(op="invalid", outcome="error").inc()
            await self.send(p.error(e.rid, e.code, e.message))
            return
        started = time.perf_counter()
        try:
            if request.op == "subscribe":
                result: Any = await self._subscribe(request, tg)
            else:
                result = await self.handler(request)
            outcome, reply = "ok", p.encode(p.ok(request.id, result))  # encoding may fail too
        except p.ProtocolError as e:
            outcome, reply = "error", p.encode(p.error(request.id, e.code, e.message))
        except Exception as e:  # one bad request must never take the daemon down
            self.log.exception("control request failed", op=request.op, code=p.INTERNAL)
            outcome = "error"
            reply = p.encode(p.error(request.id, p.INTERNAL, f"{type(e).__name__}: {e}"))
        CONTROL_REQUESTS.labels(op=request.op, outcome=outcome).inc()
        self.log.debug("control request", op=request.op, outcome=outcome,
                       ms=round((time.perf_counter() - started) * 1000, 2))
        await self._send(reply)

    async def _subscribe(self, request: p.Request, tg: TaskGroup) -> dict[str, Any]:
        self.job_filter = request.job_id  # replaces an earlier subscribe's filter: one feed each
        if not self.subscribed:
            self.subscribed = True
            ready = anyio.Event()
            tg.start_soon(self._pump, ready)
            await ready.wait()  # events after the reply are never missed
        return {"subscribed": True, "job_id": request.job_id}

    async def _pump(self, ready: anyio.Event) -> None:
        async with self.bus.subscribe() as events:
            ready.set()
            async for event in events:
                wanted = self.job_filter
                if wanted is not None and event.job_id not in (wanted, ""):
                    continue
                await self.send(p.event_message(event))
