"""Both ears on one job: real decode + fan-out, real Whisper pool, real SDK against the fake cloud.

Media: jfk.flac (11 s, real speech). Whisper: tiny.en, beam 1, one worker of one thread.
"""

from __future__ import annotations

import functools
import hashlib
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from fake_deepgram import FakeDeepgram, load_fixtures

from montaged.asr.budget import Budget
from montaged.asr.cache import TranscriptCache
from montaged.asr.ears import Hearing, hear
from montaged.asr.whisper_pool import WhisperPool
from montaged.config import Secrets, Settings
from montaged.media.audio import stream_audio
from montaged.media.fanout import fan_out
from montaged.metrics import CACHE_REQUESTS, CLOUD_ASR
from montaged.model import AudioChunk, MediaInfo, Transcript
from montaged.store import JobStore, open_store

pytestmark = pytest.mark.anyio
KEY = "test-key-ears-81c2"
REDIS = os.environ.get("MONTAGE_TEST_REDIS", "redis://127.0.0.1:6379/0")


def settings(fake: FakeDeepgram, **sections: dict[str, Any]) -> Settings:
    data: dict[str, Any] = {
        "whisper": {"model": "tiny.en", "workers": 1, "cpu_threads": 1, "beam_size": 1},
        "deepgram": {"enabled": True, "base_url": fake.ws_url, "timeout_seconds": 5.0},
        "budget": {"prices_per_minute": {"deepgram/nova-3": 0.006}},
    }
    for name, values in sections.items():
        data[name] = {**data.get(name, {}), **values}
    return Settings.model_validate(data)


@pytest.fixture(scope="module")
async def pool(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[WhisperPool]:
    cfg = Settings.model_validate({"whisper": {"model": "tiny.en", "workers": 1, "cpu_threads": 1}}).whisper
    async with WhisperPool(cfg, tmp_path_factory.mktemp("models")) as p:
        yield p


@pytest.fixture
async def fake(media_dir: Path) -> AsyncIterator[FakeDeepgram]:
    async with FakeDeepgram(load_fixtures(["jfk"], media_dir), api_key=KEY) as server:
        yield server


@pytest.fixture
async def store(sqlite_url: str) -> AsyncIterator[JobStore]:
    s = open_store(sqlite_url)
    await s.migrate()
    yield s
    await s.close()


def media_info(path: Path) -> MediaInfo:
    data = path.read_bytes()
    return MediaInfo(
        path=str(path),
        content_hash=hashlib.sha256(data).hexdigest(),
        size_bytes=len(data),
        duration=11.0,
        container="flac",
        has_audio=True,
        has_video=False,
    )


async def run_job(
    path: Path,
    job_id: str,
    cfg: Settings,
    store: JobStore,
    pool: WhisperPool,
    cache: TranscriptCache,
    key: str,
) -> Transcript:
    """Decode once, fan out to a lossless Whisper sink and a lossy live sink, hear both."""
    src_send, src_recv = anyio.create_memory_object_stream[AudioChunk](cfg.audio.queue_chunks)
    w_send, w_recv = anyio.create_memory_object_stream[AudioChunk](2)
    # Large enough that the 3 chunks of an 11 s file never overflow it: this test is not about drops.
    d_send, d_recv = anyio.create_memory_object_stream[AudioChunk](64)
    progress: list[float] = []
    async with anyio.create_task_group() as tg:
        tg.start_soon(stream_audio, path, cfg.audio.chunk_seconds, src_send)
        tg.start_soon(functools.partial(fan_out, src_recv, [w_send, d_send], lossy=[False, True]))
        ears = Hearing(
            job_id=job_id,
            media=media_info(path),
            settings=cfg,
            pool=pool,
            cache=cache,
            budget=Budget(store, cfg.budget),
            secrets=Secrets(env={"MONTAGE_DEEPGRAM_API_KEY": key}),
            on_progress=progress.append,
        )
        transcript = await hear(w_recv, d_recv, ears)
    assert progress and progress[-1] == 1.0
    return transcript


def hits() -> float:
    return float(CACHE_REQUESTS.labels(cache="transcript", result="hit")._value.get())


@pytest.mark.parametrize("layer", ["store", "redis"])
async def test_same_media_twice_makes_one_deepgram_call(
    request: pytest.FixtureRequest,
    media_dir: Path,
    fake: FakeDeepgram,
    store: JobStore,
    pool: WhisperPool,
    layer: str,
) -> None:
    cache_cfg = {}
    if layer == "redis":
        cache_cfg = {"redis_url": REDIS, "key_prefix": request.getfixturevalue("redis_prefix")}
    cfg = settings(fake, cache=cache_cfg)
    path = media_dir / "audio" / "jfk.flac"
    async with TranscriptCache(store, cfg.cache) as cache:
        first = await run_job(path, "job-a", cfg, store, pool, cache, KEY)
        assert first.engine == "rover" and first.notes == ()
        assert {w.source for w in first.words} >= {"deepgram+whisper"}
        assert fake.calls == 1
        hits_before = hits()
        cached_before = CLOUD_ASR.labels(engine="deepgram", outcome="cached")._value.get()

        second = await run_job(path, "job-b", cfg, store, pool, cache, KEY)
        assert fake.calls == 1  # no second Deepgram call: the transcript came from the cache
        assert second.notes == ("deepgram: transcript reused from the cache (no new call)",)
        assert [w.text for w in second.words] == [w.text for w in first.words]
        assert hits() == hits_before + 2  # whisper and deepgram both hit
        assert CLOUD_ASR.labels(engine="deepgram", outcome="cached")._value.get() == cached_before + 1
        assert cache.hit_ratio == 0.5  # 2 misses then 2 hits
    budget = Budget(store, cfg.budget)
    job_a, job_b = [(await budget.summary(j))[0] for j in ("job-a", "job-b")]
    assert job_a.spent == pytest.approx(11.0 / 60 * 0.006, rel=0.01) and job_a.reserved == 0
    assert job_b.spent == 0 and job_b.reserved == 0  # the cached run cost nothing


async def test_budget_refusal_means_whisper_alone(
    media_dir: Path, fake: FakeDeepgram, store: JobStore, pool: WhisperPool
) -> None:
    cfg = settings(fake, budget={"per_job": 0.0005})  # 11 s of nova-3 costs $0.0011
    async with TranscriptCache(store, cfg.cache) as cache:
        out = await run_job(media_dir / "audio" / "jfk.flac", "job-c", cfg, store, pool, cache, KEY)
    assert out.engine == "whisper" and out.words
    assert len(out.notes) == 1 and out.notes[0].startswith("budget: deepgram/nova-3 for 0.2 min would cost")
    assert fake.calls == 0


async def test_refused_key_means_whisper_alone_and_nothing_spent(
    media_dir: Path, fake: FakeDeepgram, store: JobStore, pool: WhisperPool
) -> None:
    cfg = settings(fake)
    async with TranscriptCache(store, cfg.cache) as cache:
        out = await run_job(media_dir / "audio" / "jfk.flac", "job-d", cfg, store, pool, cache, "wrong-key")
    assert out.engine == "whisper"
    assert out.notes == ("deepgram: 401 invalid credentials — continuing with Whisper alone",)
    job = (await Budget(store, cfg.budget).summary("job-d"))[0]
    assert job.spent == 0 and job.reserved == 0  # reserved before the call, settled to zero after
