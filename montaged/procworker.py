"""The main loop of a pool worker process (``python -m montaged.procworker FD``), see procpool.py.

Kept apart from procpool.py so a worker starts on a small import and nothing of the daemon
(event loop, store, sockets) exists in it. The parent speaks over one socket (fd ``FD``):

- first the worker reads the parent's ``sys.path`` and ``(initializer, initargs)`` (so functions
  resolve as in the parent, as with multiprocessing's spawn) and answers ``("ready", pid, error)``;
- then each ``(function, args)`` gets ``("ok", result)`` or ``("err", exception)``;
- ``None`` or end of file means exit.

A worker whose initializer failed keeps answering every call with that error: the model is
broken, not the process, so restarting it would only fail again.
"""

from __future__ import annotations

import os
import pickle
import signal
import sys
import threading
import time
from multiprocessing.connection import Connection
from typing import Any

PARENT_POLL_SECONDS = 1.0
"""How often a worker checks that its parent is still alive (a killed daemon leaves no orphans)."""


def _exit_with_parent(parent: int) -> None:
    """Exit as soon as the daemon is gone, even in the middle of a task (reparented = orphaned)."""
    while True:
        time.sleep(PARENT_POLL_SECONDS)
        if os.getppid() != parent:
            os._exit(70)


def _portable(e: BaseException) -> BaseException:
    """``e`` if it survives pickling, else a RuntimeError that keeps its type name and message."""
    try:
        pickle.loads(pickle.dumps(e, protocol=pickle.HIGHEST_PROTOCOL))
        return e
    except Exception:
        return RuntimeError(f"{type(e).__name__}: {e}")


def _send(conn: Connection, msg: tuple[Any, ...]) -> None:
    try:
        data = pickle.dumps(msg, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception as e:  # a result that cannot be pickled is the task's error, not the worker's
        data = pickle.dumps(("err", RuntimeError(f"result could not be sent back: {e}")))
    conn.send_bytes(data)


def serve(conn: Connection, parent: int) -> None:
    """Answer the parent's calls until it says stop or goes away."""
    threading.Thread(target=_exit_with_parent, args=(parent,), daemon=True, name="parent-watch").start()
    init_error: BaseException | None = None
    try:
        path, init = pickle.loads(conn.recv_bytes())
        sys.path[:] = path
        initializer, initargs = pickle.loads(init)
        if initializer is not None:
            initializer(*initargs)
    except EOFError:
        return
    except BaseException as e:  # reported to the parent, which turns it into a clear error
        init_error = _portable(e)
    _send(conn, ("ready", os.getpid(), init_error))
    while True:
        try:
            msg = pickle.loads(conn.recv_bytes())
        except (EOFError, OSError):
            return
        if msg is None:
            return
        if init_error is not None:
            _send(conn, ("err", init_error))
            continue
        fn, args = msg
        try:
            reply: tuple[Any, ...] = ("ok", fn(*args))
        except BaseException as e:  # the task's failure goes back to the caller that asked for it
            reply = ("err", _portable(e))
        _send(conn, reply)


def main(argv: list[str]) -> int:
    # The daemon decides when a worker stops: a Ctrl-C in a terminal reaches the whole process
    # group, and a worker that died of it would fail its task instead of letting the job drain.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    fd, parent = int(argv[1]), int(argv[2])
    serve(Connection(fd), parent)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
