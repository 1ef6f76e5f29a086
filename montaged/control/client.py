"""Async client for the control socket, used by montagectl and montage-tui.

Replies and pushed events share one connection: a reader task routes replies to the waiting
request by ``id`` and queues events for ``events()``.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
from collections.abc import AsyncIterator
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import anyio
from anyio.abc import SocketStream, TaskGroup
from anyio.streams.buffered import BufferedByteReceiveStream
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from montaged.control.protocol import encode

MAX_LINE = 64 * 1024 * 1024


class DaemonUnreachable(Exception):
    """No daemon answers on the socket; the message says why and what to do."""


class ControlError(Exception):
    """The daemon refused a request; ``code`` and ``message`` come from its reply."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{message} [{code}]")
        self.code = code
        self.message = message


def unreachable_reason(path: Path, e: OSError) -> str:
    if isinstance(e, FileNotFoundError):
        return f"montaged is not running (no socket at {path}); start it with `montaged run`"
    if isinstance(e, PermissionError):
        return (f"cannot open {path}: permission denied; add your user to the daemon's group"
                " or run as the daemon's user")
    if isinstance(e, ConnectionRefusedError):
        return f"montaged is not running (stale socket at {path}); start it with `montaged run`"
    return f"cannot reach montaged at {path}: {e.strerror or e}"


class ControlClient:
    """``async with ControlClient(path) as c: await c.request("list")``."""

    def __init__(self, path: Path | str, *, timeout: float = 30.0) -> None:
        self.path = Path(path)
        self.timeout = timeout
        self._ids = itertools.count(1)
        self._waiting: dict[int, MemoryObjectSendStream[dict[str, Any]]] = {}
        self._events_send, self._events_recv = anyio.create_memory_object_stream[dict[str, Any]](1024)
        self._stream: SocketStream | None = None
        self._tg: TaskGroup | None = None
        self.closed = anyio.Event()
        self.goodbye: str | None = None  # why the daemon closed the connection, when it said so

    async def __aenter__(self) -> Self:
        if not os.path.exists(self.path):
            raise DaemonUnreachable(unreachable_reason(self.path, FileNotFoundError()))
        try:
            self._stream = await anyio.connect_unix(self.path)
        except OSError as e:
            raise DaemonUnreachable(unreachable_reason(self.path, e)) from None
        self._tg = anyio.create_task_group()
        await self._tg.__aenter__()
        self._tg.start_soon(self._read)
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> bool | None:
        if self._tg is not None:
            self._tg.cancel_scope.cancel()
            await self._tg.__aexit__(None, None, None)  # the body's exception propagates as itself
        if self._stream is not None:
            await self._stream.aclose()
        self._events_send.close()
        return None

    async def _read(self) -> None:
        assert self._stream is not None
        buffered = BufferedByteReceiveStream(self._stream)
        try:
            while True:
                line = await buffered.receive_until(b"\n", MAX_LINE)
                msg = json.loads(line)
                if "event" in msg:
                    # a slow reader misses progress ticks; the store has the truth
                    with contextlib.suppress(anyio.WouldBlock):
                        self._events_send.send_nowait(msg)
                    continue
                if msg.get("id") is None and msg.get("ok") is False:  # e.g. too_many_connections
                    err = msg.get("error") or {}
                    self.goodbye = f"{err.get('message', 'refused')} [{err.get('code', 'error')}]"
                send = self._waiting.pop(msg.get("id"), None)
                if send is not None:
                    send.send_nowait(msg)
        except (anyio.EndOfStream, anyio.IncompleteRead, anyio.BrokenResourceError, OSError):
            pass
        finally:
            self.closed.set()
            for send in self._waiting.values():
                send.close()
            self._waiting.clear()
            self._events_send.close()

    async def request(self, op: str, **fields: Any) -> Any:
        """Send one request and return its result, or raise ControlError / DaemonUnreachable."""
        if self._stream is None or self.closed.is_set():
            raise DaemonUnreachable(f"connection to montaged at {self.path} is closed")
        rid = next(self._ids)
        send: MemoryObjectSendStream[dict[str, Any]]
        recv: MemoryObjectReceiveStream[dict[str, Any]]
        send, recv = anyio.create_memory_object_stream[dict[str, Any]](1)
        self._waiting[rid] = send
        body = {"id": rid, "op": op, **{k: v for k, v in fields.items() if v is not None}}
        try:
            await self._stream.send(encode(body))
        except (anyio.BrokenResourceError, OSError) as e:
            with anyio.move_on_after(1):  # the daemon may have said why it hung up: read that first
                await self.closed.wait()
            why = self.goodbye or str(e) or type(e).__name__
            raise DaemonUnreachable(f"lost the connection to montaged at {self.path}: {why}") from None
        with recv, anyio.fail_after(self.timeout):
            try:
                reply = await recv.receive()
            except anyio.EndOfStream:
                why = f": {self.goodbye}" if self.goodbye else ""
                raise DaemonUnreachable(f"montaged at {self.path} closed the connection{why}") from None
        if not reply.get("ok"):
            err = reply.get("error") or {}
            raise ControlError(str(err.get("code", "error")), str(err.get("message", "unknown error")))
        return reply.get("result")

    async def events(self) -> AsyncIterator[dict[str, Any]]:
        """Pushed events, after a ``subscribe`` request; ends when the daemon goes away."""
        async for msg in self._events_recv:
            yield msg
