"""One supervisor for the daemon's long-running side tasks.

The claim loop, heartbeats, intake sources, result writers, stats and the metrics server live as
long as the daemon. A bug or an unexpected error in one of them must not end the daemon (under
systemd a crash that repeats on restart leaves the service down for good); it must be logged,
counted, backed off and restarted, and /healthz must say which part is down meanwhile.

What still ends the daemon: cancellation (shutdown), the exceptions named ``fatal`` (a store that
stays unreachable past its retries), and errors a task raises *before* it reports itself started:
a socket that cannot be bound at start-up is a configuration problem to report, not to retry.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import anyio
import structlog
from anyio.abc import TaskGroup, TaskStatus

from montaged import metrics
from montaged.backoff import Backoff

log = structlog.get_logger(__name__)

REASON_CHARS = 300  # a reason is a health line, not a traceback


@dataclass
class PartHealth:
    """What /healthz says about one supervised task."""

    up: bool = True
    restarts: int = 0
    reason: str | None = None


class _StartOnce:
    """Hands ``started()`` to the first run only; remembers whether it was called."""

    def __init__(self, outer: TaskStatus[Any]) -> None:
        self._outer: TaskStatus[Any] | None = outer
        self.started_once = False

    def started(self, value: Any = None) -> None:
        if self._outer is not None:
            self._outer.started(value)
            self._outer = None
        self.started_once = True


class Supervisor:
    """Runs tasks forever: a crash is logged, counted, backed off and the task restarted.

    Args:
        first_delay: seconds before the first restart of a crashed task.
        max_delay: longest wait between restarts of a task that keeps crashing.
        stable_seconds: a task that ran this long before crashing starts its back-off afresh.
        fatal: exception types that end the daemon instead of a restart.
    """

    def __init__(
        self,
        *,
        first_delay: float = 0.5,
        max_delay: float = 30.0,
        stable_seconds: float = 60.0,
        fatal: tuple[type[BaseException], ...] = (),
    ) -> None:
        self.first_delay = first_delay
        self.max_delay = max_delay
        self.stable_seconds = stable_seconds
        self.fatal = fatal
        self.parts: dict[str, PartHealth] = {}

    def degraded(self) -> dict[str, str]:
        """Parts that are down now, with the reason (empty when all is well)."""
        return {name: part.reason or "down" for name, part in self.parts.items() if not part.up}

    def restarts(self) -> dict[str, int]:
        return {name: part.restarts for name, part in self.parts.items()}

    async def start(self, tg: TaskGroup, name: str, fn: Callable[..., Awaitable[Any]]) -> Any:
        """Start ``fn(task_status=...)`` in ``tg`` like ``tg.start`` (its start-up errors propagate),
        then supervise it: later crashes restart it, without a task status."""

        async def supervised(*, task_status: TaskStatus[Any] = anyio.TASK_STATUS_IGNORED) -> None:
            once = _StartOnce(task_status)

            async def attempt() -> None:
                if not once.started_once:
                    await fn(task_status=once)
                else:
                    await fn()

            await self._loop(name, attempt, lambda: once.started_once)

        return await tg.start(supervised)

    async def run(self, name: str, fn: Callable[[], Awaitable[Any]]) -> None:
        """Run ``fn()`` until it returns, restarting it after each crash (for ``tg.start_soon``)."""
        await self._loop(name, fn, lambda: True)

    async def _loop(
        self, name: str, fn: Callable[[], Awaitable[Any]], may_restart: Callable[[], bool]
    ) -> None:
        part = self.parts.setdefault(name, PartHealth())
        backoff = Backoff(self.first_delay, self.max_delay, jitter=0.2)
        while True:
            began = time.monotonic()
            self._set(name, part, up=True)
            try:
                await fn()
            except anyio.get_cancelled_exc_class():
                raise
            except Exception as e:
                if isinstance(e, self.fatal) or not may_restart():
                    raise
                if time.monotonic() - began >= self.stable_seconds:
                    backoff.reset()
                delay = backoff.next()
                part.restarts += 1
                metrics.TASK_RESTARTS.labels(task=name).inc()
                self._set(name, part, up=False, reason=f"{type(e).__name__}: {e}"[:REASON_CHARS])
                log.error("task crashed; restarting it", task=name, error_code="task_crashed",
                          error=part.reason, restarts=part.restarts, retry_in=round(delay, 2),
                          exc_info=e)
                await anyio.sleep(delay)
                continue
            log.info("task ended", task=name)
            self.parts.pop(name, None)
            with contextlib.suppress(KeyError):  # never labelled when it ended at once
                metrics.TASK_UP.remove(name)
            return

    @staticmethod
    def _set(name: str, part: PartHealth, *, up: bool, reason: str | None = None) -> None:
        part.up, part.reason = up, reason
        metrics.TASK_UP.labels(task=name).set(int(up))
