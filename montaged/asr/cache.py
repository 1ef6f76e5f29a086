"""Transcripts cached by media content and the parameters that produced them.

The same file submitted twice (or re-run after a crash) costs no decoding and no cloud money.
Redis, when configured, is the shared fast layer (with a TTL) for several daemons; the job
store is always written too, so a result survives Redis eviction or a Redis restart. A Redis
that is down never fails a job: it is logged, skipped for ``RETRY_SECONDS``, and the store
answers instead.
"""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import structlog

from montaged.asr.whisper_worker import resolve_compute_type, resolve_device
from montaged.config import CacheConfig, WhisperConfig
from montaged.keys import param_key
from montaged.metrics import CACHE_REQUESTS, REDIS_UP
from montaged.model import Transcript
from montaged.store import ResultStore

log = structlog.get_logger(__name__)

STAGE = "transcript"
RETRY_SECONDS = 30.0
"""After a Redis failure, go straight to the store for this long instead of waiting on timeouts."""


def cache_key(content_hash: str, engine: str, model: str, options: Mapping[str, Any] | None = None) -> str:
    """The key of a cached transcript: the media hash, engine, model and options (order-independent)."""
    return param_key(content_hash, engine, model, dict(options or {}))


def whisper_key(content_hash: str, cfg: WhisperConfig, model: str | None = None) -> str:
    """The key of a local Whisper transcript, shared by the daemon and ``montaged transcribe``.

    Computable before a pool exists (so a hit costs no worker start). The compute type is part
    of it: int8 on CPU and float16 on a GPU decode slightly differently.
    """
    compute = resolve_compute_type(cfg.compute_type, resolve_device(cfg.device))
    options = {
        "beam_size": cfg.beam_size,
        "language": cfg.language,
        "window_seconds": cfg.window_seconds,
        "compute_type": compute,
    }
    return cache_key(content_hash, "whisper", model or cfg.model, options)


@dataclass
class _Shared:
    """What a cache shares with its per-job views: look-up counts and the Redis back-off."""

    hits: int = 0
    misses: int = 0
    redis_down_until: float = 0.0


class TranscriptCache:
    """``get(key)``/``put(key, transcript)`` over Redis (optional) and the job store.

    Args:
        store: the job store; results go to ``put_result("transcript", key, ...)``. May be None
            when only Redis is wanted (tools, benchmarks).
        cfg: the ``[cache]`` settings (``redis_url``, ``key_prefix``, ``ttl_days``).
        redis_password: the ``redis_password`` secret, when the server needs one.
    """

    def __init__(
        self, store: ResultStore | None, cfg: CacheConfig, *, redis_password: str | None = None
    ) -> None:
        self.store = store
        self.cfg = cfg
        self._shared = _Shared()
        self._redis: Any = None
        if cfg.redis_url:
            import redis.asyncio as aioredis

            self._redis = aioredis.Redis.from_url(
                cfg.redis_url,
                password=redis_password,
                socket_timeout=cfg.redis_timeout_seconds,
                socket_connect_timeout=cfg.redis_timeout_seconds,
                retry_on_timeout=False,
            )

    async def aclose(self) -> None:
        if self._redis is not None:
            await self._redis.aclose()

    async def __aenter__(self) -> TranscriptCache:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def for_job(self, results: ResultStore) -> TranscriptCache:
        """This cache writing to the store through ``results`` (a job's lease, whose writes are
        fenced by its claim); Redis, counts and back-off stay shared with this one."""
        view = copy.copy(self)
        view.store = results
        return view

    @property
    def hits(self) -> int:
        return self._shared.hits

    @property
    def misses(self) -> int:
        return self._shared.misses

    @property
    def hit_ratio(self) -> float:
        """Hits over look-ups since this cache was made (0.0 before the first look-up)."""
        total = self.hits + self.misses
        return self.hits / total if total else 0.0

    def _rkey(self, key: str) -> str:
        return f"{self.cfg.key_prefix}{STAGE}:{key}"

    def _redis_usable(self) -> bool:
        return self._redis is not None and time.monotonic() >= self._shared.redis_down_until

    def _redis_failed(self, op: str, e: Exception) -> None:
        self._shared.redis_down_until = time.monotonic() + RETRY_SECONDS
        REDIS_UP.set(0)
        log.warning("redis cache unavailable; using the job store", op=op, error=f"{type(e).__name__}: {e}")

    async def get(self, key: str) -> Transcript | None:
        found = await self._lookup(key)
        self.count(found is not None)
        return found

    def count(self, hit: bool) -> None:
        """Record a look-up; also used when a stored stage result (a superset) answered it."""
        self._shared.hits += hit
        self._shared.misses += not hit
        CACHE_REQUESTS.labels(cache=STAGE, result="hit" if hit else "miss").inc()

    async def _lookup(self, key: str) -> Transcript | None:
        from redis.exceptions import RedisError

        if self._redis_usable():
            try:
                raw = await self._redis.get(self._rkey(key))
                REDIS_UP.set(1)
                if raw is not None:
                    log.debug("transcript cache hit", layer="redis", key=key[:12])
                    return Transcript.from_dict(json.loads(raw))
            except (RedisError, OSError) as e:
                self._redis_failed("get", e)
            except ValueError as e:  # a corrupt entry is a miss, not a failed job
                log.warning("corrupt transcript in redis; ignoring it", key=key[:12], error=str(e))
        if self.store is None:
            return None
        payload = await self.store.get_result(STAGE, key)
        if payload is None:
            return None
        log.debug("transcript cache hit", layer="store", key=key[:12])
        transcript = Transcript.from_dict(payload)
        if self._redis_usable():  # warm the shared layer for the other daemons
            await self._redis_put(key, json.dumps(payload))
        return transcript

    async def put(self, key: str, transcript: Transcript) -> None:
        payload = transcript.to_dict()
        if self.store is not None:
            await self.store.put_result(STAGE, key, payload)
        if self._redis_usable():
            await self._redis_put(key, json.dumps(payload))

    async def _redis_put(self, key: str, blob: str) -> None:
        from redis.exceptions import RedisError

        try:
            await self._redis.set(self._rkey(key), blob, ex=int(self.cfg.ttl_days * 86400))
            REDIS_UP.set(1)
        except (RedisError, OSError) as e:
            self._redis_failed("put", e)
