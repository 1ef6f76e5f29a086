"""The intake gate: one pause switch shared by the claim loop and every intake source.

An operator's ``pause`` closes it: queued jobs wait, running jobs go on, hot-folder drops and Redis
entries stay where they are. Waiters block on an event instead of polling a flag, so ``resume``
takes effect at once everywhere.
"""

from __future__ import annotations

import anyio

from montaged import metrics


class IntakeGate:
    """Open by default; ``pause()`` closes it, ``resume()`` opens it and wakes every waiter."""

    def __init__(self) -> None:
        self._open = anyio.Event()
        self._open.set()

    @property
    def paused(self) -> bool:
        return not self._open.is_set()

    def pause(self) -> bool:
        """Close the gate; False when it was already closed."""
        if self.paused:
            return False
        self._open = anyio.Event()
        metrics.INTAKE_PAUSED.set(1)
        return True

    def resume(self) -> bool:
        """Open the gate; False when it was already open."""
        if not self.paused:
            return False
        self._open.set()
        metrics.INTAKE_PAUSED.set(0)
        return True

    async def wait_open(self) -> None:
        """Return at once while open; otherwise when ``resume()`` is called."""
        await self._open.wait()
