"""The name this process goes by where several may share work: a job's worker, a stream consumer."""

from __future__ import annotations

import os
import socket


def worker_name() -> str:
    """``host:pid``: unique among live processes, and says where to look for one."""
    return f"{socket.gethostname()}:{os.getpid()}"
