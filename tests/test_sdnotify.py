"""sd_notify against a fake systemd: a real AF_UNIX datagram socket standing in for $NOTIFY_SOCKET."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest
from conftest import ROOT
from system_tools import run_tool

from montaged import metrics
from montaged.sdnotify import Notifier, daemon_status, format_status, watchdog_loop

pytestmark = pytest.mark.anyio


class FakeSystemd:
    """Receives what the daemon sends, as systemd's notify socket would."""

    def __init__(self, address: str | bytes) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(address)
        self.sock.settimeout(10.0)

    def receive(self) -> list[str]:
        return self.sock.recv(4096).decode().split("\n")


@pytest.fixture
def systemd(tmp_path: Path) -> Iterator[tuple[str, FakeSystemd]]:
    path = str(tmp_path / "notify")
    fake = FakeSystemd(path)
    yield path, fake
    fake.sock.close()


def test_ready_status_stopping_reach_the_socket(systemd: tuple[str, FakeSystemd]) -> None:
    path, fake = systemd
    n = Notifier(path)
    assert n.enabled
    assert n.ready("running 0, queued 0")
    assert fake.receive() == ["READY=1", "STATUS=running 0, queued 0"]
    assert n.status("two\nlines")  # a newline would start a new assignment
    assert fake.receive() == ["STATUS=two lines"]
    assert n.watchdog()
    assert fake.receive() == ["WATCHDOG=1"]
    assert n.stopping("draining")
    assert fake.receive() == ["STOPPING=1", "STATUS=draining"]
    n.close()


def test_abstract_namespace_address() -> None:
    name = f"montage-test-{uuid.uuid4().hex}"
    fake = FakeSystemd(b"\0" + name.encode())
    try:
        n = Notifier("@" + name)
        assert n.ready()
        assert fake.receive() == ["READY=1"]
        n.close()
    finally:
        fake.sock.close()


def test_no_socket_is_a_no_op() -> None:
    for value in (None, "", "vsock:2:1234"):
        n = Notifier(value, watchdog_usec="30000000")
        assert not n.enabled
        assert not n.ready() and not n.watchdog() and not n.stopping()


def test_a_vanished_socket_is_reported_not_raised(tmp_path: Path) -> None:
    n = Notifier(str(tmp_path / "gone"))
    assert n.enabled
    assert not n.ready()
    assert not n.watchdog()


def test_from_env_reads_and_unsets() -> None:
    env = {"NOTIFY_SOCKET": "/run/systemd/notify", "WATCHDOG_USEC": "30000000",
           "WATCHDOG_PID": str(os.getpid()), "OTHER": "x"}
    n = Notifier.from_env(env)
    assert n.address == "/run/systemd/notify"
    assert n.watchdog_interval == 15.0
    assert env == {"OTHER": "x"}  # worker processes must not inherit them
    kept = {"NOTIFY_SOCKET": "@x"}
    assert Notifier.from_env(kept, unset=False).address == b"\0x" and kept == {"NOTIFY_SOCKET": "@x"}


@pytest.mark.parametrize(
    ("usec", "pid", "interval"),
    [
        (None, None, None),
        ("30000000", None, 15.0),
        ("30000000", "own", 15.0),
        ("30000000", "1", None),  # meant for another process
        ("0", None, None),
        ("-5", None, None),
        ("soon", None, None),
        ("1000", None, 0.0005),
    ],
)
def test_watchdog_interval_is_half_the_timeout(usec: str | None, pid: str | None,
                                               interval: float | None) -> None:
    own = os.getpid()
    n = Notifier("/x", watchdog_usec=usec, watchdog_pid=str(own) if pid == "own" else pid, pid=own)
    assert n.watchdog_interval == interval


def test_status_line() -> None:
    assert format_status(running=2, queued=5) == "running 2, queued 5"
    assert (format_status(running=0, queued=1, paused=True, stopping=True, degraded=["store", "redis"])
            == "running 0, queued 1, paused, draining, degraded: redis store")
    metrics.JOBS.labels(state="queued").set(3)
    health = {"status": "degraded", "ready": False, "store": True, "redis": False, "stopping": False,
              "in_flight": 1, "degraded": ["whisper-pool"]}
    assert daemon_status(health, paused=False) == "running 1, queued 3, degraded: redis whisper-pool"
    health.update(degraded={"whisper-pool": "restarting", "hotfolder": "down"})
    line = daemon_status(health, paused=False)
    assert line == "running 1, queued 3, degraded: hotfolder redis whisper-pool"
    health.update(redis=None, degraded={})
    assert daemon_status(health, paused=True) == "running 1, queued 3, paused"


async def test_watchdog_loop_pings_and_sends_status_on_change(systemd: tuple[str, FakeSystemd]) -> None:
    path, fake = systemd
    n = Notifier(path, watchdog_usec="100000")  # 0.1 s timeout: a ping every 0.05 s
    lines = iter(["running 0, queued 1"] * 3 + ["running 1, queued 0"] * 1000)
    async with anyio.create_task_group() as tg:
        tg.start_soon(watchdog_loop, n, lambda: next(lines))
        received: list[list[str]] = []
        with anyio.fail_after(20):
            while sum(m == ["WATCHDOG=1"] for m in received) < 3:
                received += await anyio.to_thread.run_sync(lambda: [fake.receive()])
        tg.cancel_scope.cancel()
    statuses = [line for m in received for line in m if line.startswith("STATUS=")]
    assert statuses == ["STATUS=running 0, queued 1", "STATUS=running 1, queued 0"]
    assert received[0] == ["STATUS=running 0, queued 1", "WATCHDOG=1"]
    assert all("WATCHDOG=1" in m for m in received)
    n.close()


async def test_watchdog_loop_without_systemd_returns() -> None:
    with anyio.fail_after(5):
        await watchdog_loop(Notifier(None), lambda: "unused")


async def test_pings_stop_while_the_event_loop_is_stuck(systemd: tuple[str, FakeSystemd]) -> None:
    """The watchdog sees a blocked loop: the pings come from it, not from a helper thread."""
    path, fake = systemd
    n = Notifier(path, watchdog_usec="200000")  # a ping every 0.1 s
    async with anyio.create_task_group() as tg:
        tg.start_soon(watchdog_loop, n, lambda: "ok")
        await anyio.to_thread.run_sync(fake.receive)
        time.sleep(1.0)  # the stuck loop under test
        fake.sock.setblocking(False)
        queued = 0
        with pytest.raises(BlockingIOError):
            while True:
                fake.sock.recv(4096)
                queued += 1
        assert queued <= 1  # at most the ping already due when the loop blocked
        fake.sock.settimeout(10.0)
        await anyio.to_thread.run_sync(fake.receive)  # pings resume once the loop runs again
        tg.cancel_scope.cancel()
    n.close()


# ---- the real daemon under a fake systemd -------------------------------------------------------

@pytest.mark.timeout(300)
async def test_daemon_reports_ready_status_watchdog_and_stopping(tmp_path: Path) -> None:
    if "sdnotify" not in (ROOT / "montaged" / "app.py").read_text():
        pytest.skip("montaged/app.py does not wire montaged.sdnotify yet")
    from daemon_harness import DaemonProcess  # here: the protocol tests need no daemon imports

    path = str(tmp_path / "notify")
    fake = FakeSystemd(path)
    fake.sock.settimeout(150.0)  # start-up loads the Whisper model
    daemon = DaemonProcess(tmp_path, NOTIFY_SOCKET=path, WATCHDOG_USEC="2000000")
    daemon.start()
    try:
        seen: list[str] = []
        while "READY=1" not in seen:
            seen += await anyio.to_thread.run_sync(fake.receive)
        assert any(re.fullmatch(r"STATUS=running \d+, queued \d+.*", line) for line in seen), seen
        before = len(seen)
        while "WATCHDOG=1" not in seen[before:]:
            seen += await anyio.to_thread.run_sync(fake.receive)
        daemon.signal()
        while "STOPPING=1" not in seen:
            seen += await anyio.to_thread.run_sync(fake.receive)
        assert await anyio.to_thread.run_sync(daemon.wait) == 0
    finally:
        daemon.stop()
        fake.sock.close()


# ---- the unit ------------------------------------------------------------------------------------

UNIT = ROOT / "systemd" / "montaged.service"


def _unit_keys() -> dict[str, list[str]]:
    keys: dict[str, list[str]] = {}
    for raw in UNIT.read_text().splitlines():
        key, sep, value = raw.strip().partition("=")
        if sep and not key.startswith(("#", ";", "[")):
            keys.setdefault(key, []).append(value)
    return keys


def test_unit_is_type_notify_with_a_watchdog() -> None:
    keys = _unit_keys()
    assert keys["Type"] == ["notify"]
    assert keys["NotifyAccess"] == ["main"]  # worker processes never speak for the daemon
    watchdog = keys["WatchdogSec"][0]
    assert re.fullmatch(r"\d+s", watchdog), watchdog
    # Long enough for a loaded 2-core box, short enough that a stuck daemon comes back soon.
    assert 10 <= int(watchdog[:-1]) <= 120
    assert keys["Restart"] == ["on-failure"]  # a watchdog timeout counts as a failure
    assert "PYTHONFAULTHANDLER=1" in " ".join(keys["Environment"])  # SIGABRT dumps the stuck stack


def _analyze(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return run_tool("systemd-analyze", *args, cwd=cwd)


def test_systemd_analyze_verify_and_security(tmp_path: Path) -> None:
    """verify must be silent; the offline exposure score must be the one the READMEs quote."""
    copy = tmp_path / "montaged.service"
    # verify checks that ExecStart= exists; the app is installed under /opt only on a real host.
    copy.write_text(UNIT.read_text().replace("/opt/montage/.venv/bin/montaged", str(shutil.which("true"))))
    verify = _analyze("verify", str(copy), cwd=tmp_path)
    assert verify.returncode == 0 and not verify.stderr.strip(), verify.stderr
    sec = _analyze("security", "--offline=yes", "--threshold=20", str(copy), cwd=tmp_path)
    assert sec.returncode == 0, sec.stderr
    found = re.search(r"exposure level for montaged\.service: (\d+\.\d+)", sec.stdout)
    assert found, sec.stdout[-2000:]
    exposure = found.group(1)
    assert float(exposure) <= 2.0, sec.stdout  # "OK"; anything above means hardening was lost
    for readme in (ROOT / "README.md", ROOT / "systemd" / "README.md"):
        quoted = re.findall(r"exposure (?:score )?(?:of )?(\d\.\d)", readme.read_text())
        assert quoted and set(quoted) == {exposure}, f"{readme.name} quotes {quoted}, measured {exposure}"


def test_status_line_says_when_claims_wait_for_memory() -> None:
    line = format_status(running=1, queued=4, low_memory=True)
    assert line == "running 1, queued 4, claims held: low memory"
