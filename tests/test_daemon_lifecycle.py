"""The daemon as a real process: graceful SIGTERM, SIGKILL mid-job, restart and resume exactly once,
and two daemons sharing one PostgreSQL without ever running the same job."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import anyio
import pytest
from conftest import make_talk_clip
from daemon_harness import JFK, DaemonProcess, request, wait_state

from montaged.control.client import ControlClient

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(400)]


def _outputs(out: Path) -> list[str]:
    return sorted(p.name for p in out.iterdir()) if out.exists() else []


def _assert_clean_outputs(out: Path, clips: list[dict]) -> None:
    """Every clip once, with its sidecar and captions; nothing partial, nothing extra."""
    names = _outputs(out)
    expected = sorted(
        n
        for c in clips
        for n in (Path(c["path"]).name, Path(c["sidecar_path"]).name, Path(c["srt_path"]).name,
                  Path(c["srt_path"]).with_suffix(".vtt").name)
    )
    assert names == expected, f"output folder holds {names}, expected {expected}"
    for c in clips:
        doc = json.loads(Path(c["sidecar_path"]).read_text())
        assert abs(doc["clip"]["end"] - doc["clip"]["start"] - (c["end"] - c["start"])) < 0.05
        assert doc["quality"]["mean_word_confidence"] is not None and doc["captions"]["style"] == "bold"
        assert abs(doc["loudness"]["output"]["integrated_lufs"] - doc["loudness"]["target_lufs"]) <= 1.0


async def _wait_for_stage(sock: Path, job_id: str, stage: str, timeout: float = 120) -> None:
    async with ControlClient(sock) as c:
        await c.request("subscribe", job_id=job_id)
        job = (await c.request("show", job_id=job_id))["job"]
        if job["stage"] == stage:
            return
        with anyio.fail_after(timeout):
            async for event in c.events():
                if event["event"] == "job.stage" and event["data"]["stage"] == stage:
                    return
                if event["event"] in ("job.done", "job.failed"):
                    raise AssertionError(f"job ended before reaching {stage}: {event}")


def _events(shown: dict, kind: str) -> list[dict]:
    return [e for e in shown["events"] if e["kind"] == kind]


@pytest.fixture
def talk(tmp_path: Path) -> Path:
    # JFK's real speech (11 s) over a test pattern, 20 s long: several stages with real work
    return make_talk_clip(tmp_path / "talk.mp4", seconds=20, size="640x360", speech=JFK)


async def test_sigterm_finishes_stage_then_resumes(tmp_path: Path, talk: Path) -> None:
    daemon = DaemonProcess(tmp_path, log_name="first").start()
    try:
        await daemon.wait_ready()
        job = await request(daemon.socket, "submit", path=str(talk), options={"max_clips": 1})
        await _wait_for_stage(daemon.socket, job["id"], "transcribe")
        daemon.signal(signal.SIGTERM)
        assert await anyio.to_thread.run_sync(daemon.wait, 60.0) == 0
    finally:
        daemon.stop()
    log = daemon.log()
    assert "job released" in log and "montaged stopped" in log
    assert not daemon.socket.exists()

    second = DaemonProcess(tmp_path, log_name="second").start()
    try:
        await second.wait_ready()
        done = await wait_state(second.socket, job["id"], {"done", "failed"})
        assert done["state"] == "done", done
        shown = await request(second.socket, "show", job_id=job["id"])
    finally:
        second.stop()
    released = _events(shown, "job.released")
    assert len(released) == 1 and released[0]["data"]["stopped_at"] in (
        "diarize",
        "select",
        "frame",
        "render",
    )
    assert "transcribe" in done["result"]["cached_stages"]  # resumed: not heard twice
    assert len(_events(shown, "job.done")) == 1
    _assert_clean_outputs(tmp_path / "out", done["result"]["clips"])


async def test_sigkill_mid_render_resumes_exactly_once(tmp_path: Path, talk: Path) -> None:
    daemon = DaemonProcess(tmp_path, log_name="first").start()
    try:
        await daemon.wait_ready()
        job = await request(daemon.socket, "submit", path=str(talk), options={"max_clips": 1})
        await _wait_for_stage(daemon.socket, job["id"], "render")
        await anyio.sleep(0.3)  # inside the encode
        daemon.kill()
    finally:
        daemon.stop()
    second = DaemonProcess(tmp_path, log_name="second").start()
    try:
        await second.wait_ready()
        done = await wait_state(second.socket, job["id"], {"done", "failed"})
        shown = await request(second.socket, "show", job_id=job["id"])
    finally:
        second.stop()
    assert done["state"] == "done", done
    assert done["attempts"] == 2  # claimed again once its lease lapsed
    assert {"transcribe", "select", "frame"} <= set(done["result"]["cached_stages"])
    assert len(_events(shown, "job.done")) == 1
    _assert_clean_outputs(tmp_path / "out", done["result"]["clips"])


async def test_two_daemons_share_postgres_without_duplicates(tmp_path: Path, pg_url: str) -> None:
    clips = [
        make_talk_clip(tmp_path / f"talk{i}.mp4", seconds=4, size="320x180", speech=JFK) for i in range(6)
    ]
    env = {"MONTAGE_STORE__URL": pg_url, "MONTAGE_FRAME__ENABLED": "false"}
    a = DaemonProcess(tmp_path / "a", log_name="a", **env)
    b = DaemonProcess(tmp_path / "b", log_name="b", **env)
    for d in (a, b):
        (d.tmp_path).mkdir(exist_ok=True)
        d.env["MONTAGE_PATHS__INPUT_ROOTS"] = json.dumps([str(tmp_path)])
        d.env["MONTAGE_PATHS__OUTPUT_DIR"] = str(tmp_path / "out")
    a.start()
    b.start()
    try:
        await a.wait_ready()
        await b.wait_ready()
        ids = []
        for i, clip in enumerate(clips):
            daemon = a if i % 2 else b
            ids.append(
                (await request(daemon.socket, "submit", path=str(clip), options={"max_clips": 1}))["id"]
            )
        finals = [await wait_state(a.socket, job_id, {"done", "failed"}, timeout=240) for job_id in ids]
        shows = [await request(a.socket, "show", job_id=job_id) for job_id in ids]
    finally:
        a.stop()
        b.stop()
    assert [f["state"] for f in finals] == ["done"] * len(ids), finals
    workers = set()
    for shown in shows:
        claims = _events(shown, "job.claimed")
        assert len(claims) == 1, claims  # never claimed twice
        assert len(_events(shown, "job.done")) == 1
        workers.add(claims[0]["data"]["worker"])
    assert len(workers) == 2, f"both daemons should have worked, got {workers}"
    names = _outputs(tmp_path / "out")
    assert len([n for n in names if n.endswith(".mp4")]) == len(ids)
    assert not [n for n in names if n.startswith(".")]


def _check_config(cfg: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """``montaged --config CFG --check-config`` as an operator runs it, in its own process."""
    return subprocess.run(
        [sys.executable, "-m", "montaged", "--config", str(cfg), "--check-config"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )


def test_check_config_prints_every_error(tmp_path: Path) -> None:
    cfg = tmp_path / "montage.toml"
    cfg.write_text('[whisper]\nbeam_size = 99\nmodle = "x"\n[daemon]\nshutdown_grace_seconds = -1\n')
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "MONTAGE_CONTROL__MAX_LINE_BYTES": "12"}
    proc = _check_config(cfg, env)
    assert proc.returncode == 1
    lines = set(proc.stdout.splitlines())
    assert "whisper.beam_size: Input should be less than or equal to 10 (got 99)" in lines
    assert "whisper.modle: unknown key (got 'x')" in lines
    assert "daemon.shutdown_grace_seconds: Input should be greater than or equal to 0 (got -1)" in lines
    assert "control.max_line_bytes: Input should be greater than or equal to 1024 (got '12')" in lines

    cfg.write_text('[deepgram]\napi_key = "sk-live-123"\n')
    proc = _check_config(cfg, env)
    assert proc.returncode == 1
    assert "deepgram.api_key: secrets are not read from the config file" in proc.stdout
    assert "sk-live-123" not in proc.stdout + proc.stderr

    cfg.write_text("[whisper]\nmodel = 'tiny.en'\n")
    del env["MONTAGE_CONTROL__MAX_LINE_BYTES"]
    proc = _check_config(cfg, env)
    assert proc.returncode == 0 and "configuration OK" in proc.stdout
