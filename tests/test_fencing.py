"""Fenced jobs against real daemons: a stale holder after a lease takeover touches nothing of the
current holder's, and a job whose input keeps killing the daemon ends ``poisoned``.

Both run ``montaged run`` as separate processes sharing one SQLite store, so the stalls
(SIGSTOP) and crashes (SIGKILL) are the real thing.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path
from typing import Any

import anyio
import pytest
from conftest import make_talk_clip
from daemon_harness import JFK, DaemonProcess, request, wait_state
from fake_deepgram import FakeDeepgram, load_fixtures
from test_fault_drills import check_output_folder

from montaged.store import Caps
from montaged.store.sqlite import SqliteStore

pytestmark = pytest.mark.anyio

FAST_LEASE = {"MONTAGE_STORE__LEASE_SECONDS": "2", "MONTAGE_STORE__HEARTBEAT_SECONDS": "0.5"}


def _second(tmp_path: Path, name: str, **env: str) -> DaemonProcess:
    """Another daemon on the same store and output folder, with its own state dir and socket."""
    return DaemonProcess(
        tmp_path, log_name=name, **env,
        MONTAGE_PATHS__STATE_DIR=str(tmp_path / f"state-{name}"),
        MONTAGE_CONTROL__SOCKET_PATH=str(tmp_path / f"run-{name}" / "montaged.sock"),
    )  # fmt: skip


async def _show(sock: Path, job_id: str) -> dict[str, Any]:
    return dict(await request(sock, "show", job_id=job_id))


async def _wait_job(sock: Path, job_id: str, timeout: float, **want: Any) -> dict[str, Any]:
    """Poll until the job's fields equal ``want`` (a stage lasts seconds; polls are 50 ms apart)."""
    deadline = time.monotonic() + timeout
    while True:
        job: dict[str, Any] = (await _show(sock, job_id))["job"]
        if all(job.get(k) == v for k, v in want.items()):
            return job
        if time.monotonic() > deadline:
            raise AssertionError(f"job {job_id} never had {want}: {job}")
        await anyio.sleep(0.05)


def _kinds(shown: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    return [e for e in shown["events"] if e["kind"] == kind]


def _log_events(daemon: DaemonProcess) -> list[str]:
    out = []
    for line in daemon.log().splitlines():
        if line.startswith("{"):
            try:
                out.append(str(json.loads(line).get("event")))
            except ValueError:
                continue
    return out


@pytest.mark.timeout(300)
async def test_stale_holder_after_a_lease_takeover_touches_nothing(tmp_path: Path, ffmpeg: str) -> None:
    """A stalls mid-render (SIGSTOP) past its lease; B takes the job over and renders; A wakes up.

    Before fencing both wrote the same ``.part`` file and A's cleanup deleted B's output, or A
    failed a job B was about to finish. Now A's writes are refused and it stops its copy: the
    job ends done once, by B, with every clip whole.
    """
    clip = make_talk_clip(tmp_path / "talk.mp4", seconds=11.0, speech=JFK)
    env = {**FAST_LEASE, "MONTAGE_STORE__URL": f"sqlite:///{tmp_path / 'shared' / 'montage.db'}"}
    a = DaemonProcess(tmp_path, log_name="a", **env).start()
    b = _second(tmp_path, "b", **env)
    try:
        await a.wait_ready(90)
        job_id = (await request(a.socket, "submit", path=str(clip), options={"max_clips": 2}))["id"]
        await _wait_job(a.socket, job_id, 120, stage="render", state="running")
        assert a.proc is not None
        os.killpg(a.proc.pid, signal.SIGSTOP)  # a stall: no heartbeat, no progress, lease lapses
        try:
            b.start()
            await b.wait_ready(90)
            await _wait_job(b.socket, job_id, 60, stage="render", attempts=2)
        finally:
            os.killpg(a.proc.pid, signal.SIGCONT)  # A wakes up in the middle of B's render
        done = await wait_state(b.socket, job_id, {"done", "failed"}, timeout=120)
        await anyio.sleep(3.0)  # A's heartbeat and its writes have run into the fence by now
        shown = await _show(b.socket, job_id)
        assert done["state"] == "done", done
        assert len(_kinds(shown, "job.done")) == 1 and _kinds(shown, "job.failed") == []
        assert shown["job"]["state"] == "done" and shown["job"]["attempts"] == 2
        claims = _kinds(shown, "job.claimed")
        assert len(claims) == 2 and claims[1]["data"]["took_over_from"] == claims[0]["data"]["worker"]
        # A noticed and stood down without touching the job; it is still up and serving
        assert a.proc.poll() is None and (await request(a.socket, "ping"))["pong"]
        seen = _log_events(a)
        assert "job no longer ours; stopping it" in seen or "store.fenced" in seen, seen[-30:]
        # the output: exactly B's clips, whole, and no part file of either attempt left over
        out = tmp_path / "out"
        made = sorted(Path(c["path"]).name for c in done["result"]["clips"])
        assert sorted(p.name for p in out.glob("*.mp4")) == made and len(made) >= 1
        assert check_output_folder(out, finished=True) == len(made)
        assert [p.name for p in out.iterdir() if p.name.startswith(".")] == []
    finally:
        b.stop()
        a.stop()


@pytest.mark.timeout(300)
async def test_input_that_kills_the_daemon_every_time_is_poisoned(tmp_path: Path, ffmpeg: str) -> None:
    """The daemon dies (SIGKILL) in the same stage of the same job three times; the next claim
    fails the job as poisoned, naming that stage, and the daemon goes on with other work."""
    clip = make_talk_clip(tmp_path / "talk.mp4", seconds=6.0, speech=JFK)
    env = {**FAST_LEASE, "MONTAGE_DAEMON__MAX_ATTEMPTS": "3"}
    job_id = ""
    for life in range(3):
        daemon = DaemonProcess(tmp_path, log_name=f"life{life}", **env).start()
        try:
            await daemon.wait_ready(90)
            if not job_id:
                submitted = await request(daemon.socket, "submit", path=str(clip), options={"max_clips": 1})
                job_id = submitted["id"]
            await _wait_job(daemon.socket, job_id, 60, stage="transcribe", state="running", attempts=life + 1)
            daemon.kill()  # the input "crashed" montaged in transcribe
        finally:
            if daemon.proc is not None and daemon.proc.poll() is None:
                daemon.kill()
    last = DaemonProcess(tmp_path, log_name="last", **env).start()
    try:
        await last.wait_ready(90)
        job = await wait_state(last.socket, job_id, {"failed", "done"}, timeout=60)
        assert job["state"] == "failed" and job["error_class"] == "poisoned", job
        assert job["error_stage"] == "transcribe" and job["attempts"] == 3
        assert "stopped 3 times in a row" in job["error_message"]
        assert f"montagectl retry {job_id}" in job["error_message"]
        # other work goes on; and a retry gives the job a fresh count (it is claimed again)
        other = make_talk_clip(tmp_path / "other.mp4", seconds=4.0, speech=JFK)
        nxt = (await request(last.socket, "submit", path=str(other), options={"max_clips": 1}))["id"]
        assert (await wait_state(last.socket, nxt, {"done", "failed"}, timeout=120))["state"] == "done"
        await request(last.socket, "retry", job_id=job_id)
        again = await wait_state(last.socket, job_id, {"done", "failed"}, timeout=120)
        assert again["state"] == "done" and again["attempts"] == 4
    finally:
        last.stop()


@pytest.mark.timeout(300)
async def test_resumed_job_is_not_refused_its_own_cloud_ear(tmp_path: Path, media_dir: Path) -> None:
    """The daemon dies while the job streams to Deepgram; its reservation would leave the job cap no
    room, so before, the resumed job was refused its cloud ear. Now its reservation releases the
    dead claim's first: the job ends heard by both ears, and nothing stays reserved."""
    talk = make_talk_clip(tmp_path / "talk.mp4", seconds=12.0, size="320x180", speech=JFK)
    db = tmp_path / "shared" / "montage.db"
    async with FakeDeepgram(load_fixtures(["jfk"], media_dir), api_key="dg-key") as fake:
        fake.stall_after = [4.0]  # the first stream hangs after 4 s of audio: the daemon dies meanwhile
        env = {
            **FAST_LEASE, "MONTAGE_STORE__URL": f"sqlite:///{db}", "MONTAGE_DEEPGRAM_API_KEY": "dg-key",
            "MONTAGE_DEEPGRAM__ENABLED": "true", "MONTAGE_DEEPGRAM__BASE_URL": fake.ws_url,
            "MONTAGE_DEEPGRAM__TIMEOUT_SECONDS": "60", "MONTAGE_FRAME__ENABLED": "false",
            "MONTAGE_BUDGET__PRICES_PER_MINUTE": '{"deepgram/nova-3": 0.006}',
            "MONTAGE_BUDGET__PER_JOB": "0.002",  # room for one 12 s reservation ($0.0012), not two
        }  # fmt: skip
        first = DaemonProcess(tmp_path, log_name="first", **env).start()
        store = SqliteStore(f"sqlite:///{db}")
        caps = Caps(per_job=0.002, per_day=10.0, per_month=10.0)
        try:
            await first.wait_ready(90)
            job_id = (await request(first.socket, "submit", path=str(talk), options={"max_clips": 1}))["id"]
            deadline = time.monotonic() + 60
            while not (fake.sessions and fake.sessions[0].closed.startswith("stalled")):
                assert time.monotonic() < deadline, "the first stream never started"
                await anyio.sleep(0.1)
            assert (await store.spend(caps, job_id=job_id))[0].reserved > 0
            first.kill()  # mid-stream, its reservation open
        finally:
            if first.proc is not None and first.proc.poll() is None:
                first.kill()
        second = DaemonProcess(tmp_path, log_name="second", **env).start()
        try:
            await second.wait_ready(90)
            done = await wait_state(second.socket, job_id, {"done", "failed"}, timeout=120)
        finally:
            second.stop()
        assert done["state"] == "done", done
        assert done["result"]["transcript"]["engine"] == "rover", done["result"]["notes"]
        assert not [n for n in done["result"]["notes"] if n.startswith("budget:")]
        assert len(fake.sessions) == 2
        job = (await store.spend(caps, job_id=job_id))[0]
        assert job.reserved == 0 and 0 < job.spent <= 0.002
        await store.close()
