"""The one back-off every retry loop in Montage uses: exponential, capped, with a little jitter.

Jitter keeps several daemons (or several loops of one daemon) that lost the same service at the
same moment from hammering it again in lock-step when it comes back.
"""

from __future__ import annotations

import random

import anyio


class Backoff:
    """Delays of ``first``, ``2·first``, ``4·first`` … capped at ``cap`` seconds.

    Args:
        first: the first delay, in seconds.
        cap: the longest delay, in seconds.
        jitter: each delay is scaled by a random factor in ``[1 - jitter, 1]``; 0 = exact.
    """

    def __init__(self, first: float = 0.5, cap: float = 10.0, *, jitter: float = 0.0) -> None:
        if first <= 0 or cap < first:
            raise ValueError(f"back-off needs 0 < first <= cap (got first={first}, cap={cap})")
        self.first = first
        self.cap = cap
        self.jitter = jitter
        self._next = first

    def next(self) -> float:
        """The delay to wait now; the one after it doubles (up to the cap)."""
        delay = self._next
        self._next = min(self.cap, self._next * 2)
        if self.jitter:
            delay *= 1.0 - random.uniform(0.0, self.jitter)
        return delay

    def reset(self) -> None:
        """The service answered: the next failure starts again from ``first``."""
        self._next = self.first

    async def sleep(self) -> float:
        """Wait the next delay; returns how long that was (for the log line)."""
        delay = self.next()
        await anyio.sleep(delay)
        return delay
