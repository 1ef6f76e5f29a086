"""One daemon per state dir, and a SIGKILLed daemon's leftovers cleared by the next one on it.

The debris a killed daemon leaves is planted the way the daemon makes it (a marked FIFO folder
in the temp folder with an ffmpeg blocked on it, scratch under ``state/work``) or made by the
daemon itself (its pool workers, one of them stopped so it cannot notice its parent died).
Another live daemon's debris, on another state dir, must survive the clean-up.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import anyio
import psutil
import pytest
from conftest import make_talk_clip
from daemon_harness import DaemonProcess, request

from montaged.debris import check_state_dir_free, fifo_prefix, own_state_dir, state_token
from montaged.errors import MontageError

pytestmark = pytest.mark.anyio


def plant_encoder(state_dir: Path) -> tuple[Path, subprocess.Popen[bytes]]:
    """A FIFO folder as render/encode.py makes it, with an encoder blocked opening its FIFO."""
    folder = Path(tempfile.mkdtemp(prefix=f"montage-fifo-{state_token(state_dir)}-"))
    fifo = folder / "video.yuv"
    os.mkfifo(fifo, 0o600)
    encoder = subprocess.Popen(
        ["ffmpeg", "-nostdin", "-loglevel", "error", "-f", "rawvideo", "-pix_fmt", "yuv420p",
         "-s", "64x64", "-i", str(fifo), "-f", "null", "-"],
        start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    return folder, encoder


def workers_of(state_dir: Path) -> list[dict[str, object]]:
    doc = json.loads((state_dir / "workers.pid").read_text())
    return list(doc["workers"])


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


async def wait_until(check: object, timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():  # type: ignore[operator]
            return True
        await anyio.sleep(0.1)
    return False


async def test_the_fifo_prefix_carries_the_state_dirs_mark(tmp_path: Path) -> None:
    assert fifo_prefix() == "montage-fifo-"  # outside a daemon (tools, tests)
    seen: list[str] = []

    async def render() -> None:  # a pipeline task started while the daemon holds its state dir
        seen.append(fifo_prefix())

    with own_state_dir(tmp_path / "state") as owner:
        assert fifo_prefix() == f"montage-fifo-{owner.token}-"
        async with anyio.create_task_group() as tg:
            tg.start_soon(render)
        assert seen == [fifo_prefix()]
        assert owner.token == state_token(tmp_path / "state") != state_token(tmp_path / "other")
        with pytest.raises(MontageError, match=rf"another montaged \(pid {os.getpid()}\)"), \
                own_state_dir(tmp_path / "state"):
            pass
    with own_state_dir(tmp_path / "state"):  # released on exit
        pass
    (tmp_path / "file").touch()
    with pytest.raises(MontageError, match="cannot create the state dir's lock file"):
        check_state_dir_free(tmp_path / "file" / "state")


async def test_a_second_daemon_on_the_same_state_dir_is_refused(tmp_path: Path, talk: Path) -> None:
    first = DaemonProcess(tmp_path, log_name="first").start()
    try:
        await first.wait_ready()
        assert first.proc is not None
        spool = tmp_path / "state" / "work" / "job-running" / "audio.pcm"
        spool.parent.mkdir(parents=True)
        spool.write_bytes(b"\0" * 64)  # the first daemon's scratch
        second = DaemonProcess(tmp_path, log_name="second",
                               MONTAGE_CONTROL__SOCKET_PATH=str(tmp_path / "run2" / "s.sock")).start()
        code = second.wait(120)
        assert code != 0
        assert f"another montaged (pid {first.proc.pid}) is using the state dir" in second.log(), second.log()
        assert spool.exists()  # not swept from under the first daemon
        # the one-shot command takes the same lock, before it submits anything
        env = {**first.env, "MONTAGE_CONTROL__SOCKET_PATH": str(tmp_path / "run3" / "s.sock")}
        argv = [sys.executable, "-m", "montaged", "process", str(talk), "-o", str(tmp_path / "o")]
        run = await anyio.run_process(argv, env=env, check=False)
        assert run.returncode != 0 and f"(pid {first.proc.pid})" in run.stderr.decode(), run.stderr
        jobs = await _jobs(first.socket)
        assert jobs == []
    finally:
        first.stop()


async def _jobs(socket: Path) -> list[dict[str, object]]:
    return list((await request(socket, "list"))["jobs"])


@pytest.fixture
def talk(tmp_path: Path) -> Path:
    return make_talk_clip(tmp_path / "talk.mp4", seconds=4, size="320x180")


async def test_a_killed_daemons_debris_is_cleared_at_the_next_start_and_no_one_elses(tmp_path: Path) -> None:
    state, other_state = tmp_path / "a" / "state", tmp_path / "b" / "state"
    planted: list[subprocess.Popen[bytes]] = []
    listed: list[int] = []
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
    other = DaemonProcess(tmp_path / "b", log_name="other").start()  # a live neighbour
    killed = DaemonProcess(tmp_path / "a", log_name="killed", MONTAGE_WHISPER__WORKERS="2").start()
    try:
        await other.wait_ready()
        await killed.wait_ready()
        assert killed.proc is not None
        listed += [int(str(w["pid"])) for w in workers_of(state)]
        assert len(listed) == 2 and all(alive(p) for p in listed)
        neighbours = [int(str(w["pid"])) for w in workers_of(other_state)]
        # the neighbour's leftovers-to-be, which must outlive our clean-up
        other_folder, other_encoder = plant_encoder(other_state)
        planted.append(other_encoder)
        # ours: an encoder on a marked FIFO, scratch, and a worker hung so it cannot see its parent go
        folder, encoder = plant_encoder(state)
        planted.append(encoder)
        (state / "work" / "job-x").mkdir(parents=True)
        (state / "work" / "job-x" / "audio.pcm").write_bytes(b"\0" * 4096)
        hung, free = listed
        hung_rss = psutil.Process(hung).memory_info().rss
        os.kill(hung, signal.SIGSTOP)
        os.kill(killed.proc.pid, signal.SIGKILL)  # the daemon alone, as the OOM killer would
        killed.proc.wait(10)
        # a worker that can still run notices its parent is gone and exits by itself
        assert await wait_until(lambda: not alive(free), 15), "a free worker outlived its daemon"
        assert alive(hung) and encoder.poll() is None and folder.exists()

        restarted = DaemonProcess(tmp_path / "a", log_name="restarted").start()
        try:
            await restarted.wait_ready()
            assert await wait_until(lambda: not alive(hung), 15), "the orphaned worker is still alive"
            assert await wait_until(lambda: encoder.poll() is not None, 15), "the orphaned encoder is alive"
            assert not folder.exists()
            assert not (state / "work" / "job-x").exists()
            log = restarted.log()
            assert "removed what an earlier montaged on this state dir left behind" in log, log
            print(f"reclaimed a {hung_rss / 2**20:.0f} MB orphaned whisper worker (tiny.en)")
            # the live neighbour on another state dir lost nothing
            assert other_folder.exists() and other_encoder.poll() is None
            assert all(alive(p) for p in neighbours)
            assert other.proc is not None and other.proc.poll() is None
        finally:
            restarted.stop()
    finally:
        other.stop()
        killed.stop()
        for p in planted:
            if p.poll() is None:
                p.kill()
                p.wait(10)
        for pid in listed:  # whatever a failed assertion left
            _kill_if_ours(pid)


def _kill_if_ours(pid: int) -> None:
    try:
        proc = psutil.Process(pid)
        if "montaged.procworker" in proc.cmdline():
            proc.kill()
    except psutil.Error:
        pass
