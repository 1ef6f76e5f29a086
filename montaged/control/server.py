"""Unix-socket server for the control protocol (one JSON object per line, both ways).

The listener admits a bounded number of connections from allowed peers; each one is served by
:class:`~montaged.control.connection.Connection`, which contains whatever its client does. The
accept loop itself survives running out of file descriptors by backing off, so nothing a client
sends or does can stop the daemon.
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
from pathlib import Path

import anyio
import structlog
from anyio.abc import SocketAttribute, SocketListener, SocketStream, TaskGroup

from montaged.backoff import Backoff
from montaged.config import ControlConfig
from montaged.control import protocol as p
from montaged.control.connection import Connection, Handler, Limits, send_within
from montaged.control.peers import Peer, PeerPolicy, SocketFolderUnsafe, peer_of, prepare_folder
from montaged.events import EventBus
from montaged.metrics import CONTROL_ACCEPT_ERRORS, CONTROL_CONNECTIONS, CONTROL_DROPPED

log = structlog.get_logger(__name__)

__all__ = ["ControlServer", "Handler", "SocketFolderUnsafe", "SocketInUse"]

# accept() errors that pass: out of descriptors or memory, or a client gone before we took it
_TRANSIENT = {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM, errno.ECONNABORTED,
              errno.EPROTO, errno.EPERM, errno.EINTR}
BACKOFF_FIRST, BACKOFF_MAX = 0.05, 2.0


class SocketInUse(Exception):
    """Another daemon already answers on the control socket."""


def _prepare_path(path: Path) -> None:
    """Check the socket's folder; remove a stale socket left by a crash; refuse if a live daemon
    still answers on it."""
    prepare_folder(path.parent)
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


class ControlServer:
    """Listens on ``path`` and answers each request with ``handler``; events come from ``bus``.

    Args:
        path: the Unix socket; its folder is created (0750) and must belong to the daemon's user.
        handler: answers every op but ``subscribe`` (``ControlOps``).
        bus: the event bus ``subscribe`` feeds from.
        mode: permissions of the socket, set after binding; default ``config.socket_mode``.
        max_line: longest request line; default ``config.max_line_bytes``.
        config: connection cap, timeouts and allowed peers; default ``ControlConfig()``.
    """

    def __init__(self, path: Path, handler: Handler, bus: EventBus, *, mode: int | None = None,
                 max_line: int | None = None, config: ControlConfig | None = None) -> None:
        cfg = config or ControlConfig()
        self.path = path
        self.handler = handler
        self.bus = bus
        self.mode = cfg.socket_mode if mode is None else mode
        self.max_connections = cfg.max_connections
        self.limits = Limits(max_line=cfg.max_line_bytes if max_line is None else max_line,
                             idle_timeout=cfg.idle_timeout_seconds, line_timeout=cfg.line_timeout_seconds,
                             send_timeout=cfg.send_timeout_seconds)
        self.policy = PeerPolicy(cfg.allowed_uids, cfg.allowed_gids)
        self.active = 0

    async def serve(self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        _prepare_path(self.path)
        listener = await anyio.create_unix_listener(self.path)
        os.chmod(self.path, self.mode)  # after bind: the umask must not decide who may connect
        log.info("control socket listening", path=str(self.path), mode=oct(self.mode),
                 max_connections=self.max_connections)
        task_status.started()
        try:
            async with listener, anyio.create_task_group() as tg:
                await self._accept_loop(listener, tg)
        finally:
            with contextlib.suppress(OSError):
                self.path.unlink(missing_ok=True)

    async def _accept_loop(self, listener: SocketListener, tg: TaskGroup) -> None:
        backoff, failures = Backoff(BACKOFF_FIRST, BACKOFF_MAX), 0
        while True:
            try:
                stream = await listener.accept()
            except anyio.BrokenResourceError as e:
                code = e.__cause__.errno if isinstance(e.__cause__, OSError) else None
                if code not in _TRANSIENT:
                    raise
                name = errno.errorcode.get(code, str(code)) if code is not None else "?"
                CONTROL_ACCEPT_ERRORS.labels(errno=name).inc()
                delay = backoff.next()
                if failures == 0:  # one line per episode, not one per retry
                    log.warning("control socket cannot accept; backing off", code="accept_failed",
                                errno=name, error=os.strerror(code) if code else "", retry_seconds=delay)
                failures += 1
                await anyio.sleep(delay)
                continue
            if failures:
                log.info("control socket accepts again", failures=failures)
                backoff.reset()
                failures = 0
            await self._admit(stream, tg)

    async def _admit(self, stream: SocketStream, tg: TaskGroup) -> None:
        """Refuse a peer that may not control the daemon, or one over the cap; serve the rest."""
        raw = stream.extra(SocketAttribute.raw_socket)
        try:
            peer: Peer | None = peer_of(raw)
        except OSError as e:
            peer = None
            log.warning("control peer credentials unavailable", error=str(e))
        if peer is not None and not self.policy.allows(peer, raw):
            log.warning("control peer refused", code=p.PEER_REFUSED, peer_uid=peer.uid,
                        peer_gid=peer.gid, peer_pid=peer.pid)
            await self._refuse(stream, "peer", p.PEER_REFUSED,
                               f"uid {peer.uid} may not control montaged; run as the daemon's user or"
                               " a member of its group, or add the uid to control.allowed_uids")
            return
        if self.active >= self.max_connections:
            log.warning("control connection refused", code=p.TOO_MANY_CONNECTIONS,
                        connections=self.active, peer_pid=peer.pid if peer else None)
            await self._refuse(stream, "over_cap", p.TOO_MANY_CONNECTIONS,
                               f"montaged already serves {self.max_connections} control connections;"
                               " close idle clients and retry, or raise control.max_connections")
            return
        self.active += 1
        CONTROL_CONNECTIONS.set(self.active)
        tg.start_soon(self._client, stream, peer)

    async def _refuse(self, stream: SocketStream, reason: str, code: str, message: str) -> None:
        raw = stream.extra(SocketAttribute.raw_socket)
        CONTROL_DROPPED.labels(reason=reason).inc()
        with contextlib.suppress(OSError):  # a goodbye, best effort
            await send_within(raw, p.encode(p.error(None, code, message)), 1.0)
        with contextlib.suppress(Exception), anyio.move_on_after(1, shield=True):
            await stream.aclose()

    async def _client(self, stream: SocketStream, peer: Peer | None) -> None:
        try:
            await Connection(stream, self.handler, self.bus, self.limits, peer).run()
        except Exception:  # Connection.run contains its own; this is the last line of defence
            log.exception("control connection failed", code="connection_error")
        finally:
            self.active -= 1
            CONTROL_CONNECTIONS.set(self.active)
