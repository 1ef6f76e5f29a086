"""Work a stage starts for a later stage of the same job, and the handle the later stage awaits.

transcribe starts diarization on the spool as soon as the decode is complete, so it runs beside
Whisper; the job then moves on to the diarize stage, which awaits the turns and stores them.
The work runs in the pipeline's task group, not the stage's, so the transcribe worker is free for
the next job as soon as the words are heard. A job that leaves the pipeline (finished, failed,
released, cancelled) cancels what it left running.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

import anyio
from anyio.abc import TaskGroup

T = TypeVar("T")


class Abandoned(Exception):
    """The work was cancelled before it finished (its job left the pipeline)."""


class Pending(Generic[T]):
    """The outcome of work started earlier: :meth:`wait` returns its value or raises its error."""

    def __init__(self) -> None:
        self._done = anyio.Event()
        self._value: tuple[T] | None = None  # a 1-tuple: the value itself may be None
        self._error: BaseException | None = None

    @property
    def done(self) -> bool:
        return self._done.is_set()

    def set(self, value: T) -> None:
        self._value = (value,)
        self._done.set()

    def fail(self, error: BaseException) -> None:
        self._error = error
        self._done.set()

    async def wait(self) -> T:
        await self._done.wait()
        if self._value is None:
            assert self._error is not None
            raise self._error
        return self._value[0]


class SideTasks:
    """One job's work that outlives the stage that started it.

    Args:
        tg: the pipeline's task group; the work's errors never reach it (they are kept for
            :meth:`Pending.wait`), so one job's failure cannot stop the pipeline.
    """

    def __init__(self, tg: TaskGroup) -> None:
        self._tg = tg
        self._scopes: set[anyio.CancelScope] = set()

    def start(self, work: Callable[[], Awaitable[T]]) -> Pending[T]:
        """Run ``work`` now, beside whatever the job does next; await the handle for its outcome."""
        pending: Pending[T] = Pending()
        scope = anyio.CancelScope()
        self._scopes.add(scope)

        async def run() -> None:
            try:
                with scope:
                    try:
                        pending.set(await work())
                    except Exception as e:  # the stage that awaits it decides what it means
                        pending.fail(e)
            finally:
                self._scopes.discard(scope)
                if not pending.done:
                    pending.fail(Abandoned("cancelled before it finished"))

        self._tg.start_soon(run)
        return pending

    def cancel(self) -> None:
        """Stop everything still running for this job (it left the pipeline)."""
        for scope in list(self._scopes):
            scope.cancel()
