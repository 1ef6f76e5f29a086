"""montagectl as a user runs it: the installed console script, as a subprocess, against a real
``montaged run`` process (one per module: starting one costs seconds, each command ~0.5 s).

Exit codes under test: 0 ok, 1 refused by the daemon, 2 usage/config, 3 unreachable, 4 a waited-for
job failed or was cancelled, 130 interrupted.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from conftest import make_talk_clip
from daemon_harness import JFK, DaemonProcess, request

pytestmark = pytest.mark.timeout(120)

_SCRIPT = Path(sys.executable).with_name("montagectl")
CTL = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "montaged.ctl"]


def _env(sock: Path | None) -> dict[str, str]:
    # only the socket comes from MONTAGE_*: the runner's own MONTAGE_TEST_* would be unknown keys
    env = {k: v for k, v in os.environ.items() if not k.startswith("MONTAGE_")}
    if sock is not None:
        env["MONTAGE_CONTROL__SOCKET_PATH"] = str(sock)
    return env


def ctl(*args: str, sock: Path | None = None, cwd: Path | None = None,
        timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CTL, *args], capture_output=True, text=True, env=_env(sock), cwd=cwd,
                          timeout=timeout, stdin=subprocess.DEVNULL)


def ctl_json(*args: str, sock: Path, code: int = 0) -> Any:
    done = ctl(*args, "--json", sock=sock)
    assert done.returncode == code, done
    return json.loads(done.stdout)


def one_line(done: subprocess.CompletedProcess[str]) -> str:
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert done.stdout == ""
    return lines[0]


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonProcess]:
    d = DaemonProcess(tmp_path_factory.mktemp("ctl")).start()
    try:
        anyio.run(d.wait_ready, 90.0)
        yield d
    finally:
        d.stop()


class Lines:
    """A running montagectl whose stdout is read line by line without blocking the test forever."""

    def __init__(self, *args: str, sock: Path) -> None:
        self.proc = subprocess.Popen(
            [*CTL, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(sock),
            stdin=subprocess.DEVNULL,
            # Ctrl-C must reach it even when the test runner itself ignores SIGINT (a background job)
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        assert self.proc.stdout is not None
        self.reader = threading.Thread(target=self._read, args=(self.proc.stdout,), daemon=True)
        self.reader.start()

    def _read(self, stream: Any) -> None:
        for line in stream:
            self.lines.put(line)

    def until(self, predicate: Any, timeout: float = 30) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=0.2)
            except queue.Empty:
                assert self.proc.poll() is None, f"montagectl exited {self.proc.returncode}: {self.seen}"
                continue
            self.seen.append(line)
            if predicate(line):
                return line
        raise AssertionError(f"no such line within {timeout} s; got: {self.seen[-20:]}")

    def drain(self) -> None:
        """Collect what is left once the process has ended (the reader thread gets EOF)."""
        self.proc.wait(timeout=15)
        self.reader.join(timeout=5)
        while not self.lines.empty():
            self.seen.append(self.lines.get())

    def interrupt(self) -> tuple[int, str]:
        self.proc.send_signal(signal.SIGINT)
        assert self.proc.stderr is not None
        err = self.proc.stderr.read()
        self.drain()
        return self.proc.returncode, err


# ---- without a daemon ------------------------------------------------------------------------


def test_usage_errors_exit_2_and_help_lists_exit_codes() -> None:
    # each run costs ~0.3 s of CPU (Python start-up): a few representative mistakes
    for args in ([], ["show"], ["list", "--state", "sleeping"], ["--timeout", "0", "submit", "x"]):
        done = ctl(*args, sock=Path("/nonexistent/montaged.sock"))
        assert done.returncode == 2, (args, done)
        assert "usage: montagectl" in done.stderr and done.stdout == ""
    helped = ctl("--help")
    assert helped.returncode == 0
    for line in ("exit codes:", "0    done", "1    the daemon refused", "2    usage",
                 "3    montaged is not running", "4    a job waited for", "130  interrupted"):
        assert line in helped.stdout


def test_not_running_exit_3_with_one_line(tmp_path: Path) -> None:
    sock = tmp_path / "run" / "montaged.sock"
    # the socket path from the environment (as the daemon's own config reads it) ...
    line = one_line(done := ctl("list", sock=sock))
    assert done.returncode == 3
    assert line == f"montagectl: montaged is not running (no socket at {sock}); start it with `montaged run`"
    # ... from --config, and from --socket; --json changes nothing about errors (stderr, exit 3)
    config = tmp_path / "montage.toml"
    config.write_text(f'[control]\nsocket_path = "{tmp_path / "other.sock"}"\n')
    done = ctl("--config", str(config), "stats", "--json")
    assert done.returncode == 3 and f"no socket at {tmp_path / 'other.sock'}" in one_line(done)
    done = ctl("show", "abc", "--socket", str(tmp_path / "third.sock"), sock=sock)
    assert done.returncode == 3 and "third.sock" in one_line(done)
    # a broken config is a usage/config error, named, unless --socket makes it irrelevant
    config.write_text("[control]\nsocket_pth = 1\n")
    done = ctl("--config", str(config), "list")
    assert done.returncode == 2 and "control.socket_pth: unknown key" in one_line(done)
    assert ctl("--config", str(config), "--socket", str(sock), "list").returncode == 3


def test_socket_not_usable_exit_3(tmp_path: Path) -> None:
    # stale: a socket file nobody listens on any more (a crashed daemon)
    stale = tmp_path / "stale.sock"
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(str(stale))
    s.close()
    done = ctl("list", sock=stale)
    assert done.returncode == 3 and "stale socket" in one_line(done)

    # listening but never answering: --timeout bounds the wait
    mute = tmp_path / "mute.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(mute))
    listener.listen(8)
    try:
        started = time.monotonic()
        done = ctl("--timeout", "0.5", "stats", sock=mute)
        assert done.returncode == 3 and "did not answer within 0.5 s" in one_line(done)
        assert time.monotonic() - started < 10

        if os.geteuid() != 0:
            # no permission on the socket of a listening server
            mute.chmod(0)
            done = ctl("list", sock=mute)
            assert done.returncode == 3 and "permission denied" in one_line(done)
    finally:
        listener.close()

    # As root, permission bits are not checked (chmod 000 would still connect), so the
    # inaccessible case that applies to every user is a path that is not a socket at all:
    # a regular file, or a folder, where the socket should be.
    regular = tmp_path / "file.sock"
    regular.write_text("not a socket")
    done = ctl("list", sock=regular)
    assert done.returncode == 3
    assert one_line(done) == (f"montagectl: {regular} is a regular file, not montaged's socket; check"
                              " --socket or control.socket_path (`montaged check` prints the configured one)")
    done = ctl("list", sock=tmp_path)
    assert done.returncode == 3 and "is a folder" in one_line(done)


# ---- against a running daemon ----------------------------------------------------------------


def test_submit_wait_real_clip_then_list_show_stats(daemon: DaemonProcess) -> None:
    folder = daemon.tmp_path
    make_talk_clip(folder / "talk.mp4", seconds=8, size="320x180", speech=JFK)
    # a relative path: montagectl makes it absolute (the daemon accepts only absolute paths)
    done = ctl("submit", "talk.mp4", "--wait", "--max-clips", "2", sock=daemon.socket, cwd=folder,
               timeout=120)
    assert done.returncode == 0, (done, daemon.log()[-3000:])
    first = done.stdout.splitlines()[0]
    assert first.startswith("submitted ") and first.endswith(str(folder / "talk.mp4"))
    job_id = first.split()[1]
    assert f"✓ talk.mp4  job {job_id}: " in done.stdout
    assert "✓ talk.mp4: transcribe" in done.stderr and "done" in done.stderr  # stage lines, final bar

    shown = ctl_json("show", job_id, sock=daemon.socket)
    job = shown["job"]
    assert job["state"] == "done" and job["spec"]["options"] == {"max_clips": 2}
    clips = job["result"]["clips"]
    assert 1 <= len(clips) <= 2
    for clip in clips:
        assert Path(clip["path"]).stat().st_size > 0 and Path(clip["sidecar_path"]).exists()
        assert clip["path"] in done.stdout  # the human summary names every clip
    assert [e["kind"] for e in shown["events"]][:2] == ["job.submitted", "job.claimed"]

    human = ctl("show", job_id, sock=daemon.socket).stdout
    for stage in ("probe", "transcribe", "select", "frame", "render"):
        assert f"\n  {stage} " in human
    assert "clips (" in human and "encoder" in human and clips[0]["path"] in human
    assert "job.claimed" in human

    listed = ctl_json("list", sock=daemon.socket)["jobs"]
    assert job_id in [j["id"] for j in listed]
    table = ctl("list", "--state", "done", sock=daemon.socket).stdout
    header, *rows = table.splitlines()
    assert header.split() == ["ID", "STATE", "STAGE", "PROGRESS", "FILE", "CLIPS", "AGE"]
    row = next(r for r in rows if r.startswith(job_id)).split()
    assert row[1:6] == ["done", "-", "100%", "talk.mp4", str(len(clips))]

    stats = ctl_json("stats", sock=daemon.socket)
    assert stats["jobs"]["done"] >= 1 and stats["encoder"]["name"] and "hit_ratio" in stats["cache"]
    assert set(stats["queues"]) >= {"probe", "transcribe", "render"} and "throughput" in stats
    human = ctl("stats", sock=daemon.socket).stdout
    for word in ("jobs", "queues", "encoder", "cache", "throughput", "budget"):
        assert word in human


def test_failed_job_exit_4_refused_exit_1(daemon: DaemonProcess) -> None:
    bad = daemon.tmp_path / "notes.mp4"
    bad.write_text("a text file with a video name")
    missing = daemon.tmp_path / "missing.mp4"
    done = ctl("submit", str(bad), str(missing), "--wait", "--json", sock=daemon.socket)
    assert done.returncode == 4, done  # a waited-for job failed: 4 wins over the refused file's 1
    out = json.loads(done.stdout)
    [job] = out["jobs"]
    assert job["state"] == "failed" and job["error_stage"] == "probe" and job["error_class"]
    assert out["refused"] == [{"path": str(missing), "code": "bad_submission",
                               "message": f"{missing}: no such file; check the path"}]
    assert "[bad_submission]" in done.stderr

    human = ctl("show", job["id"], sock=daemon.socket).stdout
    assert "error\n  in probe: " in human and "failed here" in human

    done = ctl("submit", str(missing), sock=daemon.socket)
    assert done.returncode == 1 and "no such file" in one_line(done)
    done = ctl("show", "000000000000", sock=daemon.socket)
    assert done.returncode == 1
    assert one_line(done) == "montagectl: no job '000000000000'; `montagectl list` shows the jobs [not_found]"


def test_pause_cancel_retry_resume_and_watch_one(daemon: DaemonProcess) -> None:
    bad = daemon.tmp_path / "queued.mp4"
    bad.write_text("still not media")
    assert ctl_json("pause", sock=daemon.socket) == {"paused": True}
    try:
        assert ctl_json("stats", sock=daemon.socket)["paused"] is True
        [job] = ctl_json("submit", str(bad), "--profile", "vertical", sock=daemon.socket)["jobs"]
        time.sleep(0.5)  # paused: nothing claims it
        queued = ctl_json("list", "--state", "queued", sock=daemon.socket)["jobs"]
        assert [j["id"] for j in queued] == [job["id"]]

        assert ctl_json("cancel", job["id"], sock=daemon.socket)["job"]["state"] == "cancelled"
        again = ctl("cancel", job["id"], sock=daemon.socket)
        assert again.returncode == 1 and "[invalid_state]" in one_line(again)
        # watching a job that already ended: its outcome at once, exit 4 (cancelled)
        watched = ctl("watch", job["id"], sock=daemon.socket)
        assert watched.returncode == 4 and f"job {job['id']}: cancelled" in watched.stdout

        done = ctl("retry", job["id"], sock=daemon.socket)
        assert done.returncode == 0 and "queued again" in done.stdout
        # follow it from before it runs: watch ID ends by itself when the job ends
        watch = Lines("watch", job["id"], "--json", sock=daemon.socket)
        snapshot = json.loads(watch.until(lambda line: "job.snapshot" in line))
        assert snapshot["data"]["job"]["state"] == "queued"
    finally:
        assert ctl("resume", sock=daemon.socket).stdout.strip() == "intake resumed"
    # resumed: the retried job runs and fails in probe (not media), so watch exits 4
    assert watch.proc.wait(timeout=60) == 4
    watch.drain()
    events = [json.loads(line) for line in watch.seen]
    assert [e["event"] for e in events][:2] == ["job.snapshot", "job.claimed"]
    assert events[-1]["event"] == "job.failed" and events[-1]["data"]["stage"] == "probe"
    assert {e["job_id"] for e in events} == {job["id"]}  # only this job: no daemon.stats lines


def test_watch_follows_events_until_interrupted(daemon: DaemonProcess) -> None:
    bad = daemon.tmp_path / "watched.mp4"
    bad.write_text("not media either")
    before = anyio.run(request, daemon.socket, "stats")["subscribers"]
    raw = Lines("watch", "--json", sock=daemon.socket)
    bars = Lines("watch", sock=daemon.socket)
    try:
        raw.until(lambda line: json.loads(line)["event"] == "daemon.stats")  # subscribed and streaming
        deadline = time.monotonic() + 30  # the bars print nothing until an event: ask the daemon
        while anyio.run(request, daemon.socket, "stats")["subscribers"] < before + 2:
            assert time.monotonic() < deadline, "montagectl watch never subscribed"
            time.sleep(0.1)
        [job] = ctl_json("submit", str(bad), sock=daemon.socket)["jobs"]
        raw.until(lambda line: json.loads(line)["event"] == "job.failed" and job["id"] in line)
        bars.until(lambda line: "✗ watched.mp4: probe" in line)
    finally:
        code, err = raw.interrupt()
        bar_code, _ = bars.interrupt()
    assert code == 130 and err == ""
    kinds = [json.loads(line)["event"] for line in raw.seen if job["id"] in line]
    assert kinds[0] == "job.submitted" and "job.stage" in kinds and kinds[-1] == "job.failed"
    assert bar_code == 130
    screen = "".join(bars.seen)
    assert "montaged: " in screen and job["id"] in screen and "failed" in screen  # header, the job's bar
