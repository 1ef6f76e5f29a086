"""Find the control socket and open it, or explain in one line why montaged cannot be reached."""

from __future__ import annotations

import math
import os
import stat
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio

from montaged.config import load
from montaged.control.client import ControlClient, DaemonUnreachable, unreachable_reason
from montaged.ctl import exits
from montaged.errors import ConfigError


def socket_path(explicit: Path | None, config: Path | None) -> Path:
    """``--socket``, else the configured ``control.socket_path`` (TOML or MONTAGE_CONTROL__SOCKET_PATH).

    The configuration is read only when no ``--socket`` is given, so a client on a machine with an
    unrelated or broken config can still reach a daemon whose socket it knows.
    """
    if explicit is not None:
        return explicit.expanduser()
    try:
        return load(config).control.socket()
    except ConfigError as e:
        lines = str(e).strip().splitlines()
        more = f" (and {len(lines) - 1} more; `montaged --check-config` lists them)" if len(lines) > 1 else ""
        raise exits.CtlExit(exits.USAGE, f"configuration error: {lines[0]}{more}; or give --socket PATH"
                            ) from None


def preflight(path: Path) -> None:
    """Say precisely what is wrong with ``path`` before connecting.

    The client alone cannot tell "no such file" from "a folder on the way is not ours to enter"
    (``os.path.exists`` is False for both), and connecting to a regular file reads as a stale
    socket; an operator needs to know which one it is.
    """
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise exits.CtlExit(exits.UNREACHABLE, unreachable_reason(path, FileNotFoundError())) from None
    except PermissionError as e:
        raise exits.CtlExit(exits.UNREACHABLE, unreachable_reason(path, e)) from None
    except NotADirectoryError:
        raise exits.CtlExit(exits.UNREACHABLE, f"{path}: a part of this path is not a folder; "
                            "check --socket or control.socket_path") from None
    except OSError as e:
        reason = e.strerror or str(e)
        raise exits.CtlExit(exits.UNREACHABLE, f"cannot reach montaged at {path}: {reason}") from None
    if not stat.S_ISSOCK(st.st_mode):
        kind = "a folder" if stat.S_ISDIR(st.st_mode) else "a regular file" if stat.S_ISREG(
            st.st_mode) else "not a socket"
        raise exits.CtlExit(exits.UNREACHABLE, f"{path} is {kind}, not montaged's socket; check --socket or"
                            " control.socket_path (`montaged check` prints the configured one)")


@asynccontextmanager
async def open_client(path: Path, timeout: float) -> AsyncIterator[ControlClient]:
    """A connected client; connecting and every reply must each take less than ``timeout`` seconds."""
    preflight(path)
    # the deadline covers only the connect: it is lifted as soon as the client is in
    with anyio.CancelScope(deadline=anyio.current_time() + timeout) as scope:
        try:
            async with ControlClient(path, timeout=timeout) as client:
                scope.deadline = math.inf
                yield client
        except DaemonUnreachable as e:
            raise exits.CtlExit(exits.UNREACHABLE, str(e)) from None
    if scope.cancelled_caught:
        raise exits.CtlExit(exits.UNREACHABLE, no_answer(path, timeout))


def no_answer(path: Path, timeout: float) -> str:
    return (f"montaged at {path} did not answer within {timeout:g} s; it may be overloaded or stuck"
            " (see its log), or raise --timeout")
