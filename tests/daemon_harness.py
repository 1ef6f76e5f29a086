"""A real montaged for tests: in-process (``running_daemon``) or as its own process (``DaemonProcess``).

Both use a temporary state dir and socket, the tiny.en Whisper model and metrics on a free port,
so tests are fast and isolated; everything else is the product's own code path.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
from conftest import REDIS_URL
from media import MEDIA

from montaged.app import Daemon
from montaged.config import Secrets, Settings, load
from montaged.control.client import ControlClient

TEST_MODEL = "tiny.en"
JFK = MEDIA / "audio" / "jfk.flac"
"""Real speech (11 s) for talk clips; a test that uses it is marked ``media`` (tests/markers.py)."""


def daemon_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """MONTAGE_* variables for an isolated daemon under ``tmp_path`` (strings, as in systemd)."""
    env = {
        "MONTAGE_PATHS__STATE_DIR": str(tmp_path / "state"),
        "MONTAGE_PATHS__OUTPUT_DIR": str(tmp_path / "out"),
        "MONTAGE_PATHS__INPUT_ROOTS": json.dumps([str(tmp_path)]),
        "MONTAGE_PATHS__MODEL_CACHE": str(Path.home() / ".local" / "state" / "montage" / "models"),
        "MONTAGE_CONTROL__SOCKET_PATH": str(tmp_path / "run" / "montaged.sock"),
        "MONTAGE_METRICS__PORT": "0",
        "MONTAGE_WHISPER__MODEL": TEST_MODEL,
        "MONTAGE_WHISPER__WORKERS": "1",
        "MONTAGE_DIARIZE__BACKEND": "none",
        "MONTAGE_FRAME__WORKERS": "1",
        "MONTAGE_RENDER__PRESET": "ultrafast",
        "MONTAGE_DAEMON__POLL_SECONDS": "0.2",
        "MONTAGE_DAEMON__STATS_SECONDS": "0.5",
        "MONTAGE_DAEMON__SHUTDOWN_GRACE_SECONDS": "20",
        "MONTAGE_STORE__LEASE_SECONDS": "4",
        "MONTAGE_STORE__HEARTBEAT_SECONDS": "1",
        "MONTAGE_LOG__FORMAT": "json",
    }
    env.update(extra)
    return env


def intake_env(hot: Path, prefix: str, *, settle_seconds: float = 0.3, **extra: str) -> dict[str, str]:
    """MONTAGE_* variables for a daemon fed through the hot folder ``hot`` (originals moved, rescanned
    every second) and the Redis job stream, its consumer group, results and dead-letter streams,
    all named under ``prefix`` (the ``redis_prefix`` fixture's, so they are deleted afterwards)."""
    return {
        "MONTAGE_HOTFOLDER__PATHS": json.dumps([str(hot)]),
        "MONTAGE_HOTFOLDER__SETTLE_SECONDS": str(settle_seconds),
        "MONTAGE_HOTFOLDER__AFTER": "move",
        "MONTAGE_HOTFOLDER__RESCAN_SECONDS": "1",
        "MONTAGE_REDIS_INTAKE__ENABLED": "true",
        "MONTAGE_REDIS_INTAKE__URL": REDIS_URL,
        "MONTAGE_REDIS_INTAKE__STREAM": f"{prefix}jobs",
        "MONTAGE_REDIS_INTAKE__GROUP": f"{prefix}group",
        "MONTAGE_REDIS_INTAKE__RESULTS_STREAM": f"{prefix}results",
        "MONTAGE_REDIS_INTAKE__DEAD_LETTER_STREAM": f"{prefix}dead",
        "MONTAGE_REDIS_INTAKE__BLOCK_MS": "200",
        **extra,
    }


def daemon_settings(tmp_path: Path, **extra: str) -> Settings:
    return load(None, env={**os.environ, **daemon_env(tmp_path, **extra)})


@asynccontextmanager
async def running_daemon(
    tmp_path: Path, *, ready_timeout: float = 120.0, **extra: str
) -> AsyncIterator[Daemon]:
    """A real daemon in this event loop; stopped gracefully (then forced) on exit."""
    settings = daemon_settings(tmp_path, **extra)
    daemon = Daemon(settings, Secrets(config=settings.secrets), handle_signals=False)
    async with anyio.create_task_group() as tg:
        tg.start_soon(daemon.run)
        with anyio.fail_after(ready_timeout):
            await daemon.ready.wait()
        try:
            yield daemon
        finally:
            daemon.stop()
            with anyio.move_on_after(30):
                await daemon.stopped.wait()
            if not daemon.stopped.is_set():
                daemon.stop()  # second stop forces
            with anyio.fail_after(30):
                await daemon.stopped.wait()


class DaemonProcess:
    """``montaged run`` as a separate process (signals, crashes and restarts are real)."""

    def __init__(self, tmp_path: Path, *, log_name: str = "daemon", **extra: str) -> None:
        self.tmp_path = tmp_path
        self.env = {**os.environ, **daemon_env(tmp_path, **extra)}
        self.socket = Path(self.env["MONTAGE_CONTROL__SOCKET_PATH"])
        self.log_path = tmp_path / f"{log_name}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> DaemonProcess:
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "montaged", "run"],
            env=self.env,
            stdout=log,
            stderr=log,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        return self

    async def wait_ready(self, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"montaged exited with {self.proc.returncode}:\n{self.log()}")
            if self.socket.exists():
                try:
                    async with ControlClient(self.socket, timeout=5) as c:
                        await c.request("ping")
                        if "montaged ready" in self.log():
                            return
                except Exception:
                    pass
            await anyio.sleep(0.2)
        raise AssertionError(f"montaged not ready after {timeout} s:\n{self.log()}")

    def signal(self, sig: int = signal.SIGTERM) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def kill(self) -> None:
        """SIGKILL the whole process group (the daemon and its worker processes)."""
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def wait(self, timeout: float = 60.0) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.kill()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


async def request(socket: Path, op: str, **fields: Any) -> Any:
    async with ControlClient(socket) as c:
        return await c.request(op, **fields)


async def http_get(port: int, path: str) -> tuple[int, bytes]:
    """(status, body) of ``GET path`` from the daemon's metrics server on 127.0.0.1."""
    stream = await anyio.connect_tcp("127.0.0.1", port)
    async with stream:
        await stream.send(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        data = b""
        try:
            while True:
                data += await stream.receive()
        except (anyio.EndOfStream, anyio.BrokenResourceError):
            pass
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


async def http_text(port: int, path: str) -> tuple[int, str]:
    """(status, body as text) of ``GET path`` from the daemon's metrics server."""
    status, body = await http_get(port, path)
    return status, body.decode()


async def wait_state(socket: Path, job_id: str, states: set[str], timeout: float = 180.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        job: dict[str, Any] = (await request(socket, "show", job_id=job_id))["job"]
        if job["state"] in states:
            return job
        if time.monotonic() > deadline:
            raise AssertionError(f"job {job_id} still {job['state']} after {timeout} s")
        await anyio.sleep(0.2)
