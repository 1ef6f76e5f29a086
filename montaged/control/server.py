"""Unix-socket server for the control protocol (one JSON object per line, both ways).

Every connection is independent: a malformed, oversized or failing request gets an error reply
and the connection stays open; nothing a client sends can stop the daemon.
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
import structlog
from anyio.abc import SocketStream, TaskGroup

from montaged.control import protocol as p
from montaged.events import EventBus
from montaged.metrics import CONTROL_REQUESTS

log = structlog.get_logger(__name__)

Handler = Callable[[p.Request], Awaitable[Any]]


class SocketInUse(Exception):
    """Another daemon already answers on the control socket."""


def _prepare_path(path: Path) -> None:
    """Remove a stale socket left by a crash; refuse if a live daemon still answers on it."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o750)
    if not path.exists() and not path.is_symlink():
        return
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.settimeout(1.0)
        probe.connect(str(path))
    except OSError as e:
        if e.errno in (errno.ECONNREFUSED, errno.ENOENT, errno.ENOTSOCK):
            path.unlink(missing_ok=True)
            return
        raise
    finally:
        probe.close()
    raise SocketInUse(
        f"control.socket_path: another montaged is already listening on {path};"
        " stop it first or give this one its own socket path"
    )


class _Connection:
    def __init__(self, stream: SocketStream, handler: Handler, bus: EventBus, max_line: int) -> None:
        self.stream = stream
        self.handler = handler
        self.bus = bus
        self.max_line = max_line
        self.lock = anyio.Lock()
        self.subscribed = False

    async def send(self, message: dict[str, Any]) -> None:
        async with self.lock:
            await self.stream.send(p.encode(message))

    async def serve(self, tg: TaskGroup) -> None:
        buf = bytearray()
        discarding = False  # inside an oversized line: drop bytes until its newline
        while True:
            try:
                data = await self.stream.receive(65536)
            except (anyio.EndOfStream, anyio.BrokenResourceError, OSError):
                return
            buf += data
            while True:
                nl = buf.find(b"\n")
                if nl < 0:
                    if not discarding and len(buf) > self.max_line:
                        discarding = True
                        await self._too_long(bytes(buf[:200]))
                    if discarding:
                        buf.clear()
                    break
                line = bytes(buf[:nl])
                del buf[: nl + 1]
                if discarding:
                    discarding = False
                    continue
                if len(line) > self.max_line:
                    await self._too_long(line[:200])
                    continue
                if line.strip():
                    await self._handle(line, tg)

    async def _too_long(self, head: bytes) -> None:
        CONTROL_REQUESTS.labels(op="invalid", outcome="error").inc()
        await self.send(p.error(p.request_id(head), p.LINE_TOO_LONG,
                                f"request line longer than {self.max_line} bytes; send smaller requests"))

    async def _handle(self, line: bytes, tg: TaskGroup) -> None:
        try:
            request = p.parse_request(line)
        except p.ProtocolError as e:
            CONTROL_REQUESTS.labels(op="invalid", outcome="error").inc()
            await self.send(p.error(p.request_id(line), e.code, e.message))
            return
        started = time.perf_counter()
        try:
            if request.op == "subscribe":
                result: Any = await self._subscribe(request, tg)
            else:
                result = await self.handler(request)
        except p.ProtocolError as e:
            outcome, reply = "error", p.error(request.id, e.code, e.message)
        except Exception as e:  # one bad request must never take the daemon down
            log.exception("control request failed", op=request.op)
            outcome, reply = "error", p.error(request.id, p.INTERNAL, f"{type(e).__name__}: {e}")
        else:
            outcome, reply = "ok", p.ok(request.id, result)
        CONTROL_REQUESTS.labels(op=request.op, outcome=outcome).inc()
        log.debug("control request", op=request.op, outcome=outcome,
                  ms=round((time.perf_counter() - started) * 1000, 2))
        await self.send(reply)

    async def _subscribe(self, request: p.Request, tg: TaskGroup) -> dict[str, Any]:
        if self.subscribed:
            return {"subscribed": True, "job_id": request.job_id}
        self.subscribed = True
        ready = anyio.Event()
        tg.start_soon(self._pump, request.job_id, ready)
        await ready.wait()  # events after the reply are never missed
        return {"subscribed": True, "job_id": request.job_id}

    async def _pump(self, job_id: str | None, ready: anyio.Event) -> None:
        async with self.bus.subscribe() as events:
            ready.set()
            async for event in events:
                if job_id is not None and event.job_id not in (job_id, ""):
                    continue
                try:
                    await self.send(p.event_message(event))
                except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
                    return


class ControlServer:
    """Listens on ``path`` and answers each request with ``handler``; events come from ``bus``."""

    def __init__(self, path: Path, handler: Handler, bus: EventBus, *, mode: int = 0o660,
                 max_line: int = 1_048_576) -> None:
        self.path = path
        self.handler = handler
        self.bus = bus
        self.mode = mode
        self.max_line = max_line

    async def serve(self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        _prepare_path(self.path)
        listener = await anyio.create_unix_listener(self.path)
        os.chmod(self.path, self.mode)  # after bind: the umask must not decide who may connect
        log.info("control socket listening", path=str(self.path), mode=oct(self.mode))
        task_status.started()
        try:
            async with listener, anyio.create_task_group() as tg:
                while True:
                    stream = await listener.accept()
                    tg.start_soon(self._client, stream)
        finally:
            with contextlib.suppress(OSError):
                self.path.unlink(missing_ok=True)

    async def _client(self, stream: SocketStream) -> None:
        conn = _Connection(stream, self.handler, self.bus, self.max_line)
        async with stream, anyio.create_task_group() as tg:
            await conn.serve(tg)
            tg.cancel_scope.cancel()
