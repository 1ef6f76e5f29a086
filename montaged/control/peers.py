"""Who may use the control socket: a safe folder around it, and the credentials of each peer.

File permissions alone are not enough: the socket's folder could be swapped by whoever can write
to it, and a mode mistake (``socket_mode = 0o666``) would open the daemon to every local user.
So the folder must belong to the daemon's user and not be world-writable, and every connection's
kernel-reported credentials (SO_PEERCRED) are checked against an allow-list.
"""

from __future__ import annotations

import os
import socket
import stat
import struct
from dataclasses import dataclass
from pathlib import Path

from montaged.errors import MontageError

SO_PEERGROUPS = getattr(socket, "SO_PEERGROUPS", 59)  # Linux ≥ 4.13; Python does not name it
_UCRED = struct.Struct("3i")  # struct ucred: pid, uid, gid


class SocketFolderUnsafe(MontageError):
    """The folder of the control socket could let another user replace or hijack the socket."""

    code = "unsafe_socket_folder"


def prepare_folder(folder: Path) -> None:
    """Create ``folder`` (0750) if missing, then refuse one that another user owns or anyone may
    write to, with what to do about it."""
    try:
        folder.mkdir(parents=True, exist_ok=True, mode=0o750)
        st = os.stat(folder)
    except OSError as e:
        raise SocketFolderUnsafe(f"control.socket_path: cannot create the socket's folder {folder}:"
                                 f" {e.strerror or e}; choose a folder the daemon's user may write") from None
    uid = os.geteuid()
    if not stat.S_ISDIR(st.st_mode):
        raise SocketFolderUnsafe(f"control.socket_path: {folder} is not a folder; point the socket"
                                 " into a folder of the daemon's own")
    if st.st_uid != uid:
        raise SocketFolderUnsafe(
            f"control.socket_path: the socket's folder {folder} belongs to uid {st.st_uid}, not to the"
            f" daemon's user (uid {uid}); use a folder of its own (the default is"
            " $RUNTIME_DIRECTORY/montaged.sock) or chown this one")
    if st.st_mode & stat.S_IWOTH:
        raise SocketFolderUnsafe(
            f"control.socket_path: the socket's folder {folder} is writable by everyone"
            f" (mode {stat.S_IMODE(st.st_mode):o}), so anyone could replace the socket; use a folder"
            " only the daemon's user may write (e.g. mode 750)")


@dataclass(frozen=True)
class Peer:
    """The process at the other end of a connection, as the kernel saw it at connect()."""

    pid: int
    uid: int
    gid: int


def peer_of(sock: socket.socket) -> Peer:
    """SO_PEERCRED of a connected Unix socket (raises OSError where the platform has none)."""
    if not hasattr(socket, "SO_PEERCRED"):
        raise OSError("SO_PEERCRED is not available on this platform")
    pid, uid, gid = _UCRED.unpack(sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size))
    return Peer(pid, uid, gid)


def peer_groups(sock: socket.socket) -> set[int]:
    """Supplementary groups of the peer (SO_PEERGROUPS); empty where the kernel cannot say."""
    for size in (4 * 64, 4 * 65536):
        try:
            raw = sock.getsockopt(socket.SOL_SOCKET, SO_PEERGROUPS, size)
        except OSError:
            continue  # ERANGE: more groups than fit, try the largest buffer; other errors: unknown
        return set(struct.unpack(f"{len(raw) // 4}I", raw[: len(raw) // 4 * 4]))
    return set()


class PeerPolicy:
    """Root, the daemon's own user and group, and the configured users and groups may connect."""

    def __init__(self, allowed_uids: list[int] | None = None, allowed_gids: list[int] | None = None) -> None:
        self.uids = {0, os.geteuid(), *(allowed_uids or [])}
        self.gids = {os.getegid(), *(allowed_gids or [])}

    def allows(self, peer: Peer, sock: socket.socket) -> bool:
        if peer.uid in self.uids or peer.gid in self.gids:
            return True
        return bool(self.gids & peer_groups(sock))  # only asked when the cheap checks said no
