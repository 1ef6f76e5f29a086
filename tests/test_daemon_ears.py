"""Both ears inside the daemon: Deepgram (the local protocol fake) beside Whisper, cached by content,
budget visible in stats, and a refused key that leaves the job running on Whisper alone."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from conftest import make_talk_clip
from daemon_harness import JFK, request, running_daemon, wait_state
from fake_deepgram import FakeDeepgram, load_fixtures

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(300)]
KEY = "daemon-test-key"


@pytest.fixture
async def fake(media_dir: Path) -> AsyncIterator[FakeDeepgram]:
    async with FakeDeepgram(load_fixtures(["jfk"], media_dir), api_key=KEY) as server:
        yield server


def _env(fake: FakeDeepgram) -> dict[str, str]:
    return {
        "MONTAGE_DEEPGRAM__ENABLED": "true",
        "MONTAGE_DEEPGRAM__BASE_URL": fake.ws_url,
        "MONTAGE_DEEPGRAM__TIMEOUT_SECONDS": "5",
        "MONTAGE_FRAME__ENABLED": "false",
        "MONTAGE_BUDGET__PRICES_PER_MINUTE": '{"deepgram/nova-3": 0.006}',
    }


async def test_two_ears_cache_and_budget(
    tmp_path: Path, fake: FakeDeepgram, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MONTAGE_DEEPGRAM_API_KEY", KEY)
    talk = make_talk_clip(tmp_path / "talk.mp4", seconds=12, size="320x180", speech=JFK)
    again = tmp_path / "again.mp4"
    shutil.copy(talk, again)  # same content, another name: the cache must recognise it
    async with running_daemon(tmp_path, **_env(fake)) as daemon:
        sock = daemon.settings.control.socket()
        first = await request(sock, "submit", path=str(talk), options={"max_clips": 1})
        done = await wait_state(sock, first["id"], {"done", "failed"})
        assert done["state"] == "done", done
        assert done["result"]["transcript"]["engine"] == "rover"
        assert fake.calls == 1
        assert done["result"]["cost"] > 0  # 11 s of audio at $0.006/min, settled to real usage
        second = await request(sock, "submit", path=str(again), options={"max_clips": 1})
        done2 = await wait_state(sock, second["id"], {"done", "failed"})
        assert done2["state"] == "done"
        assert fake.calls == 1, "the same media again must not call Deepgram"
        stats = await request(sock, "stats")
    day = next(r for r in stats["budget"] if r["period"].startswith("day:"))
    assert day["spent"] > 0 and day["remaining"] < day["cap"]
    assert stats["cache"]["hits"] >= 1
    assert stats["cloud"] == {"enabled": True, "blocked": False, "reason": None}


async def test_refused_key_continues_with_whisper(
    tmp_path: Path, fake: FakeDeepgram, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MONTAGE_DEEPGRAM_API_KEY", "wrong-key")
    talk = make_talk_clip(tmp_path / "talk.mp4", seconds=12, size="320x180", speech=JFK)
    async with running_daemon(tmp_path, **_env(fake)) as daemon:
        sock = daemon.settings.control.socket()
        job = await request(sock, "submit", path=str(talk), options={"max_clips": 1})
        done = await wait_state(sock, job["id"], {"done", "failed"})
    assert done["state"] == "done", done
    assert done["result"]["transcript"]["engine"] == "whisper"
    assert any("401" in n or "refused" in n.lower() for n in done["result"]["notes"]), done["result"]["notes"]
    assert done["result"]["cost"] == 0
