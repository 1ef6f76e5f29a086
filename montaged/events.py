"""In-process fan-out of job events to every subscriber (control socket clients, Redis results).

Each subscriber gets its own small buffer. A subscriber that cannot keep up loses events rather
than slowing the pipeline down: events are notifications, the store holds the truth.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
import structlog
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from montaged.model import JobEvent

log = structlog.get_logger(__name__)


class EventBus:
    """Publish job events to all current subscribers without ever blocking the publisher."""

    def __init__(self, buffer: int = 256) -> None:
        self._buffer = buffer
        self._subscribers: set[MemoryObjectSendStream[JobEvent]] = set()
        self.dropped = 0

    def publish(self, event: JobEvent) -> None:
        for send in list(self._subscribers):
            try:
                send.send_nowait(event)
            except anyio.WouldBlock:
                self.dropped += 1
            except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                self._subscribers.discard(send)

    @asynccontextmanager
    async def subscribe(self) -> AsyncIterator[MemoryObjectReceiveStream[JobEvent]]:
        send, recv = anyio.create_memory_object_stream[JobEvent](self._buffer)
        self._subscribers.add(send)
        try:
            yield recv
        finally:
            self._subscribers.discard(send)
            send.close()
            recv.close()

    @property
    def subscribers(self) -> int:
        return len(self._subscribers)
