"""Each class of bad media fails its own job with its own clear error; the daemon keeps serving."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import make_talk_clip
from daemon_harness import JFK, request, running_daemon, wait_state

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(300)]


def _bad_inputs(tmp_path: Path) -> dict[str, tuple[Path, str, str]]:
    """name -> (file, expected error_class, words the message must hold)."""
    good = make_talk_clip(tmp_path / "good.mp4", seconds=4, size="320x180", speech=JFK)
    data = good.read_bytes()
    bad = tmp_path / "bad"
    bad.mkdir()
    cases: dict[str, tuple[Path, str, str]] = {}
    (bad / "notes.mp4").write_text("these are meeting notes, not a video\n" * 50)
    cases["not media"] = (bad / "notes.mp4", "not_media", "not an audio or video file")
    (bad / "half.mp4").write_bytes(data[: len(data) // 2])
    cases["truncated"] = (bad / "half.mp4", "corrupt_media", "truncated")
    (bad / "empty.mp4").touch()
    cases["zero length"] = (bad / "empty.mp4", "empty_media", "empty")
    subprocess.run(
        ["ffmpeg", "-loglevel", "error", "-y", "-i", str(good), "-an", "-c", "copy", str(bad / "silent.mp4")],
        check=True,
    )
    cases["no audio"] = (bad / "silent.mp4", "no_audio", "no audio stream")
    (bad / "codec.mp4").write_bytes(data.replace(b"avc1", b"zzz9"))
    cases["unsupported codec"] = (bad / "codec.mp4", "unsupported_codec", "cannot decode")
    return cases


async def test_bad_media_fails_clearly_and_daemon_serves_on(tmp_path: Path) -> None:
    cases = _bad_inputs(tmp_path)
    async with running_daemon(tmp_path, MONTAGE_FRAME__ENABLED="false") as daemon:
        sock = daemon.settings.control.socket()
        jobs = {name: await request(sock, "submit", path=str(path)) for name, (path, _, _) in cases.items()}
        for name, (path, error_class, words) in cases.items():
            job = await wait_state(sock, jobs[name]["id"], {"done", "failed"})
            assert job["state"] == "failed", name
            assert job["error_stage"] == "probe", name
            assert job["error_class"] == error_class, (name, job["error_class"], job["error_message"])
            assert str(path) in job["error_message"] and words in job["error_message"], job["error_message"]
        good = await request(sock, "submit", path=str(tmp_path / "good.mp4"))
        done = await wait_state(sock, good["id"], {"done", "failed"})
        assert done["state"] == "done" and done["result"]["clips"]
        # Audio only is not bad input: its clips are audiograms (picture drawn from the sound).
        shutil.copy(JFK, tmp_path / "speech.flac")
        podcast = await request(sock, "submit", path=str(tmp_path / "speech.flac"))
        done = await wait_state(sock, podcast["id"], {"done", "failed"})
        assert done["state"] == "done" and done["result"]["clips"], done.get("error_message")
        clip = done["result"]["clips"][0]
        assert (clip["width"], clip["height"]) == (1080, 1920) and Path(clip["path"]).exists()
