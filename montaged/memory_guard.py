"""Memory guard: stop claiming new jobs while memory runs short, start again once it is back.

A new job loads media, a transcript and framing state beside the ones running; claiming it when
the host or the cgroup is nearly full invites the OOM killer, which takes the whole daemon (and
in a pod, every job on it). Running jobs are left alone: they finish and free their memory.
Hysteresis (resume above a higher mark) keeps the claim loop from flapping.
"""

from __future__ import annotations

from collections.abc import Callable

import anyio
import structlog

from montaged import metrics
from montaged.config import DaemonConfig
from montaged.hostlimits import MemoryLimits, memory_limits

log = structlog.get_logger(__name__)

MIB = 1 << 20


def _publish(paused: bool, available: int) -> None:
    metrics.MEMORY_AVAILABLE.set(available)
    metrics.MEMORY_GUARD_PAUSED.set(int(paused))


class MemoryGuard:
    """Samples available memory (cgroup limit aware) and says whether claims should wait.

    Args:
        pause_below_mb: pause claims when available memory falls under this; 0 turns the guard off.
        resume_above_mb: resume once available memory is back above this (at least
            ``pause_below_mb``).
        probe: what reads the limits (default: this process's host and cgroup).
        on_change: called with ``(paused, available_bytes)`` after every sample, e.g. to set
            gauges; the guard itself never touches the pipeline.
    """

    def __init__(self, pause_below_mb: int, resume_above_mb: int, *,
                 probe: Callable[[], MemoryLimits] = memory_limits,
                 on_change: Callable[[bool, int], None] | None = None) -> None:
        if pause_below_mb < 0 or resume_above_mb < pause_below_mb:
            raise ValueError(f"memory guard: need 0 <= pause_below_mb <= resume_above_mb "
                             f"(got {pause_below_mb} and {resume_above_mb})")
        self.pause_below = pause_below_mb * MIB
        self.resume_above = resume_above_mb * MIB
        self.probe = probe
        self.on_change = on_change
        self.paused = False
        self.available: int | None = None

    @classmethod
    def from_config(cls, cfg: DaemonConfig) -> MemoryGuard:
        """The daemon's guard: ``daemon.memory_pause_below_mb`` / ``memory_resume_above_mb``, with
        every sample published as ``montage_memory_available_bytes`` and
        ``montage_memory_guard_paused``."""
        return cls(cfg.memory_pause_below_mb, cfg.memory_resume_above_mb, on_change=_publish)

    @property
    def enabled(self) -> bool:
        return self.pause_below > 0

    def check(self) -> bool:
        """Take one sample; returns whether claims should wait now."""
        if not self.enabled:
            return False
        limits = self.probe()
        self.available = limits.available
        if not self.paused and self.available < self.pause_below:
            self.paused = True
            log.warning("memory low: claims paused until it recovers", available_mib=self.available // MIB,
                        pause_below_mib=self.pause_below // MIB, resume_above_mib=self.resume_above // MIB,
                        cgroup_limit_mib=limits.cgroup_limit // MIB if limits.cgroup_limit else None)
        elif self.paused and self.available > self.resume_above:
            self.paused = False
            log.info("memory recovered: claims resumed", available_mib=self.available // MIB)
        if self.on_change is not None:
            self.on_change(self.paused, self.available)
        return self.paused

    async def run(self, interval: float) -> None:
        """Sample every ``interval`` seconds for the daemon's lifetime (reading /proc and
        /sys/fs/cgroup takes microseconds, so it runs in the event loop)."""
        if not self.enabled:
            return
        while True:
            self.check()
            await anyio.sleep(interval)
