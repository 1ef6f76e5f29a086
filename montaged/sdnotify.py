"""systemd's notify protocol (sd_notify(3)), without libsystemd: readiness, status, watchdog.

Under ``Type=notify`` systemd hands the daemon a datagram socket in ``$NOTIFY_SOCKET`` and waits
for ``READY=1`` before it calls the unit started; ``STATUS=`` lines show in ``systemctl status``;
with ``WatchdogSec=`` it expects ``WATCHDOG=1`` at least that often and restarts the unit when
they stop. The pings come from a task in the daemon's event loop, so a loop that is stuck (a
blocking call, a busy loop) is what stops them. Outside systemd every call is a no-op.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Mapping, MutableMapping, Sequence
from typing import Any

import anyio
import structlog

from montaged import metrics

log = structlog.get_logger(__name__)

# How often STATUS= is refreshed when there is no watchdog to set the pace.
STATUS_SECONDS = 5.0
# Health keys that are flags about the daemon itself, not parts that can be degraded.
_NOT_PARTS = frozenset({"ready", "stopping"})


class Notifier:
    """Sends sd_notify messages to one socket; does nothing when there is none.

    Args:
        address: the ``$NOTIFY_SOCKET`` value: a path, or ``@name`` for the abstract namespace;
            ``None`` or empty disables the notifier.
        watchdog_usec: ``$WATCHDOG_USEC``, the unit's ``WatchdogSec=`` in microseconds, or ``None``.
        watchdog_pid: ``$WATCHDOG_PID``, the process the watchdog is meant for (``None``: this one).
        pid: this process id (tests pass their own).
    """

    def __init__(
        self,
        address: str | None,
        *,
        watchdog_usec: str | None = None,
        watchdog_pid: str | None = None,
        pid: int | None = None,
    ) -> None:
        self.address = _parse_address(address)
        self.watchdog_interval = _watchdog_interval(watchdog_usec, watchdog_pid, pid or os.getpid())
        self._sock: socket.socket | None = None
        self._warned = False

    @classmethod
    def from_env(cls, environ: MutableMapping[str, str] | None = None, *, unset: bool = True) -> Notifier:
        """The notifier systemd set up for this process.

        With ``unset`` the variables are removed from ``environ`` (sd_notify's
        ``unset_environment``), so worker processes and ffmpeg do not inherit them and never
        speak for the daemon.
        """
        env = os.environ if environ is None else environ
        names = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")
        values = [env.pop(n, None) if unset else env.get(n) for n in names]
        return cls(values[0], watchdog_usec=values[1], watchdog_pid=values[2])

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def send(self, *assignments: str) -> bool:
        """Sends ``KEY=value`` lines as one datagram; False when disabled or the send failed.

        A failed send is logged once and otherwise ignored: losing a status line must not stop
        the daemon, and a lost watchdog ping is what the watchdog is there to notice.
        """
        if self.address is None or not assignments:
            return False
        message = "\n".join(a.replace("\n", " ") for a in assignments).encode()
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                # Never block the event loop on a full receive queue; the message is dropped.
                self._sock.setblocking(False)
            self._sock.sendto(message, self.address)
        except OSError as e:
            if not self._warned:
                self._warned = True
                log.warning("sd_notify failed; systemd may not see readiness or watchdog pings",
                            socket=_printable(self.address), error=str(e))
            return False
        return True

    def ready(self, status: str | None = None) -> bool:
        """Start-up is complete: the socket answers and jobs can be claimed."""
        return self.send("READY=1", *(["STATUS=" + status] if status else []))

    def status(self, text: str) -> bool:
        return self.send("STATUS=" + text)

    def watchdog(self) -> bool:
        return self.send("WATCHDOG=1")

    def stopping(self, status: str | None = None) -> bool:
        """Shutdown has begun (drain); systemd shows the unit as deactivating."""
        return self.send("STOPPING=1", *(["STATUS=" + status] if status else []))

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def _parse_address(value: str | None) -> str | bytes | None:
    """A path as is; ``@name`` as the abstract-namespace address ``\\0name``; others refused."""
    if not value:
        return None
    if value.startswith("@"):
        return b"\0" + value[1:].encode()
    if value.startswith("/"):
        return value
    log.warning("NOTIFY_SOCKET is neither a path nor @abstract; readiness and watchdog are off",
                value=value)
    return None


def _watchdog_interval(usec: str | None, pid: str | None, own_pid: int) -> float | None:
    """Seconds between pings: half the watchdog timeout (sd_watchdog_enabled(3)); None when off."""
    if not usec:
        return None
    if pid and pid.strip() != str(own_pid):
        return None  # set for another process (we were started by one that had a watchdog)
    try:
        micros = int(usec)
    except ValueError:
        micros = 0
    if micros <= 0:
        log.warning("WATCHDOG_USEC is not a positive integer; watchdog pings are off", value=usec)
        return None
    return micros / 2_000_000


def _printable(address: str | bytes) -> str:
    return "@" + address[1:].decode(errors="replace") if isinstance(address, bytes) else address


def format_status(*, running: int, queued: int, paused: bool = False, stopping: bool = False,
                  degraded: Sequence[str] = (), low_memory: bool = False) -> str:
    """One line for ``systemctl status``: ``running 2, queued 5, paused, degraded: redis``."""
    parts = [f"running {running}", f"queued {queued}"]
    if paused:
        parts.append("paused")
    if low_memory:
        parts.append("claims held: low memory")
    if stopping:
        parts.append("draining")
    if degraded:
        parts.append("degraded: " + " ".join(sorted(degraded)))
    return ", ".join(parts)


def daemon_status(health: Mapping[str, Any], *, paused: bool, low_memory: bool = False) -> str:
    """The status line from the daemon's ``/healthz`` body and the queued-jobs gauge.

    A part is degraded when its health value is ``False`` (``store``, ``redis``; ``None`` means
    not configured) or when it is named under ``degraded`` (supervised tasks and pools that are
    down). Reading the gauge, not the
    store, keeps this call instant, so a slow store can never delay a watchdog ping.
    """
    queued = metrics.REGISTRY.get_sample_value("montage_jobs", {"state": "queued"}) or 0.0
    degraded = [k for k, v in health.items() if v is False and k not in _NOT_PARTS]
    extra = health.get("degraded")  # the supervisor's parts that are down: {name: reason}
    if isinstance(extra, Mapping | list | tuple | set | frozenset):
        degraded += [str(p) for p in extra if str(p) not in degraded]
    return format_status(running=int(health.get("in_flight", 0)), queued=int(queued), paused=paused,
                         stopping=bool(health.get("stopping")), degraded=degraded, low_memory=low_memory)


async def watchdog_loop(notifier: Notifier, status_fn: Callable[[], str]) -> None:
    """Pings ``WATCHDOG=1`` every half timeout and sends ``STATUS=`` whenever the line changes.

    Runs for the daemon's lifetime in its task group; returns at once when not under systemd.
    """
    if not notifier.enabled:
        return
    interval = notifier.watchdog_interval or STATUS_SECONDS
    last: str | None = None
    while True:
        lines = []
        text = status_fn()
        if text != last:
            lines.append("STATUS=" + text)
            last = text
        if notifier.watchdog_interval is not None:
            lines.append("WATCHDOG=1")
        notifier.send(*lines)
        await anyio.sleep(interval)
