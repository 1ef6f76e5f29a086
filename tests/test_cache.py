"""Transcript cache over real Redis and the real SQLite store."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from montaged.asr.cache import STAGE, TranscriptCache, cache_key
from montaged.config import CacheConfig
from montaged.metrics import CACHE_REQUESTS
from montaged.model import Transcript, Word
from montaged.store import JobStore, open_store

pytestmark = pytest.mark.anyio
REDIS = "redis://127.0.0.1:6379/0"

TRANSCRIPT = Transcript(
    words=(Word("Ask", 0.3, 0.6, 0.91), Word("not.", 0.6, 1.0, 0.72, speaker="A")),
    language="en",
    engine="whisper",
    model="tiny.en",
    duration=11.0,
)


@pytest.fixture
async def store(sqlite_url: str) -> AsyncIterator[JobStore]:
    s = open_store(sqlite_url)
    await s.migrate()
    yield s
    await s.close()


def _count(result: str) -> float:
    return CACHE_REQUESTS.labels(cache=STAGE, result=result)._value.get()


def test_key_depends_on_everything_that_changes_the_transcript() -> None:
    base = cache_key("abc", "whisper", "tiny.en", {"beam_size": 1, "language": "en"})
    assert base == cache_key("abc", "whisper", "tiny.en", {"language": "en", "beam_size": 1})  # order-free
    assert len({
        base,
        cache_key("abd", "whisper", "tiny.en", {"beam_size": 1, "language": "en"}),
        cache_key("abc", "deepgram", "tiny.en", {"beam_size": 1, "language": "en"}),
        cache_key("abc", "whisper", "base", {"beam_size": 1, "language": "en"}),
        cache_key("abc", "whisper", "tiny.en", {"beam_size": 5, "language": "en"}),
    }) == 5  # fmt: skip


async def test_store_only_cache_counts_hits_and_misses(store: JobStore) -> None:
    cache = TranscriptCache(store, CacheConfig.model_validate({}))
    hits, misses = _count("hit"), _count("miss")
    key = cache_key("h1", "whisper", "tiny.en")
    assert await cache.get(key) is None
    await cache.put(key, TRANSCRIPT)
    assert await cache.get(key) == TRANSCRIPT
    assert await store.get_result(STAGE, key) is not None
    assert (cache.hits, cache.misses, cache.hit_ratio) == (1, 1, 0.5)
    assert (_count("hit") - hits, _count("miss") - misses) == (1, 1)


async def test_redis_layer_with_ttl_and_prefix(store: JobStore, redis_prefix: str) -> None:
    import redis.asyncio as aioredis

    cfg = CacheConfig.model_validate({"redis_url": REDIS, "key_prefix": redis_prefix, "ttl_days": 1})
    key = cache_key("h2", "whisper", "tiny.en")
    async with TranscriptCache(store, cfg) as cache:
        await cache.put(key, TRANSCRIPT)
        assert await cache.get(key) == TRANSCRIPT
    client = aioredis.Redis.from_url(REDIS)
    try:
        rkey = f"{redis_prefix}{STAGE}:{key}"
        assert await client.exists(rkey)
        assert 0 < await client.ttl(rkey) <= 86400
        # Another daemon with its own (empty) store still hits through Redis.
        async with TranscriptCache(None, cfg) as other:
            assert await other.get(key) == TRANSCRIPT
        # Redis evicted it: the store answers and Redis is warmed again.
        await client.delete(rkey)
        async with TranscriptCache(store, cfg) as cache:
            assert await cache.get(key) == TRANSCRIPT
        assert await client.exists(rkey)
    finally:
        await client.aclose()


async def test_dead_redis_falls_back_to_the_store(store: JobStore) -> None:
    # Port 1 refuses connections at once: a Redis that is down must not fail the job.
    cfg = CacheConfig.model_validate({"redis_url": "redis://127.0.0.1:1/0", "redis_timeout_seconds": 0.5})
    key = cache_key("h3", "whisper", "tiny.en")
    async with TranscriptCache(store, cfg) as cache:
        assert await cache.get(key) is None
        await cache.put(key, TRANSCRIPT)
        assert await cache.get(key) == TRANSCRIPT
        assert cache.hit_ratio == 0.5


def test_whisper_key_matches_the_daemon_ears_key() -> None:
    from montaged.asr.cache import whisper_key
    from montaged.config import WhisperConfig

    cfg = WhisperConfig.model_validate({"model": "tiny.en", "device": "cpu"})
    expected = cache_key(
        "abc",
        "whisper",
        "tiny.en",
        {"beam_size": 1, "language": "en", "window_seconds": 30.0, "compute_type": "int8"},
    )
    assert whisper_key("abc", cfg) == expected
    assert whisper_key("abc", cfg, "base") != expected
