"""Prometheus /metrics and /healthz from a real daemon; JSON logs off a TTY, job-bound, secret-free."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import anyio
import pytest
from conftest import make_talk_clip
from daemon_harness import JFK, daemon_env, http_text, request, running_daemon, wait_state

pytestmark = [pytest.mark.timeout(300)]


@pytest.mark.anyio
async def test_metrics_and_health(tmp_path: Path) -> None:
    talk = make_talk_clip(tmp_path / "talk.mp4", seconds=6, size="320x180", speech=JFK)
    async with running_daemon(tmp_path, MONTAGE_FRAME__ENABLED="false") as daemon:
        assert daemon.metrics_port
        status, body = await http_text(daemon.metrics_port, "/healthz")
        assert status == 200 and json.loads(body)["status"] == "ok"
        job = await request(daemon.settings.control.socket(), "submit", path=str(talk))
        await wait_state(daemon.settings.control.socket(), job["id"], {"done"})
        await anyio.sleep(1.0)  # one stats tick refreshes the job gauges
        status, text = await http_text(daemon.metrics_port, "/metrics")
        assert status == 200
        for needle in (
            'montage_jobs{state="done"} 1.0',
            'montage_stage_seconds_count{stage="render"}',
            'montage_queue_depth{stage="transcribe"}',
            "montage_encoder_info{",
            "montage_processing_ratio ",
            "montage_store_up 1.0",
        ):
            assert needle in text, needle
        assert (await http_text(daemon.metrics_port, "/nope"))[0] == 404


def test_json_logs_bind_job_and_hide_secrets(tmp_path: Path) -> None:
    talk = make_talk_clip(tmp_path / "talk.mp4", seconds=6, size="320x180", speech=JFK)
    secret = "dg-secret-0123456789"
    env = {
        **os.environ,
        **daemon_env(tmp_path),
        "MONTAGE_DEEPGRAM_API_KEY": secret,
        "MONTAGE_FRAME__ENABLED": "false",
        "MONTAGE_LOG__FORMAT": "auto",
    }
    proc = subprocess.run(
        [sys.executable, "-m", "montaged", "process", str(talk), "-o", str(tmp_path / "clips"), "-v"],
        capture_output=True,
        text=True,
        env=env,
        timeout=240,
        stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert secret not in proc.stdout + proc.stderr
    records = [json.loads(line) for line in proc.stderr.splitlines() if line.startswith("{")]
    assert records, proc.stderr[-2000:]
    stage_done = [r for r in records if r.get("event") == "stage done"]
    assert {r["stage"] for r in stage_done} >= {"probe", "transcribe", "select", "render"}
    assert all(r.get("job_id") and r.get("level") == "info" and r.get("timestamp") for r in stage_done)
    assert str(tmp_path / "clips") in proc.stdout  # clip paths on stdout
