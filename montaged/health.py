"""Prometheus ``/metrics`` and ``/healthz`` over plain HTTP on the event loop (no thread, no framework),
and the probes that keep the health of the store and Redis current."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Sequence
from typing import Any

import anyio
import structlog
from anyio.abc import SocketStream, TaskStatus
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from montaged.metrics import REDIS_UP, REGISTRY, STORE_UP
from montaged.store import JobStore

log = structlog.get_logger(__name__)

HealthFn = Callable[[], dict[str, object]]


def _response(status: str, body: bytes, content_type: str) -> bytes:
    head = (f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {len(body)}\r\n"
            "Connection: close\r\n\r\n")
    return head.encode() + body


async def _client(stream: SocketStream, health: HealthFn) -> None:
    async with stream:
        data = b""
        with anyio.move_on_after(5):
            while b"\r\n\r\n" not in data and len(data) < 16384:
                try:
                    data += await stream.receive(4096)
                except (anyio.EndOfStream, anyio.BrokenResourceError, OSError):
                    return
        parts = data.split(b"\r\n", 1)[0].split()
        method, path = (parts[0], parts[1].split(b"?")[0]) if len(parts) >= 2 else (b"", b"")
        if method not in (b"GET", b"HEAD"):
            reply = _response("405 Method Not Allowed", b"use GET\n", "text/plain")
        elif path == b"/metrics":
            reply = _response("200 OK", generate_latest(REGISTRY), CONTENT_TYPE_LATEST)
        elif path == b"/healthz":
            state = health()
            status = "200 OK" if state.get("status") == "ok" else "503 Service Unavailable"
            reply = _response(status, json.dumps(state).encode() + b"\n", "application/json")
        else:
            reply = _response("404 Not Found", b"try /metrics or /healthz\n", "text/plain")
        with contextlib.suppress(anyio.BrokenResourceError, OSError):
            await stream.send(reply)


async def serve_http(host: str, port: int, health: HealthFn, *,
                     task_status: TaskStatus[int] = anyio.TASK_STATUS_IGNORED) -> None:
    """Serve until cancelled; ``task_status`` gets the bound port (useful with port 0 in tests)."""
    listener = await anyio.create_tcp_listener(local_host=host, local_port=port, reuse_port=False)
    bound = listener.extra(anyio.abc.SocketAttribute.local_port)
    log.info("metrics listening", url=f"http://{host}:{bound}/metrics")
    task_status.started(bound)
    async with listener:
        await listener.serve(lambda s: _client(s, health))


class ServiceHealth:
    """The one record of whether the job store and Redis answer.

    The probe writes it on a timer and the claim loop when a claim fails or succeeds; ``/healthz``,
    the ``stats`` op and systemd's status line read it. Only changes are logged (an outage is one
    warning, not one per tick). ``redis_ok`` is None when no Redis is configured.
    """

    def __init__(self) -> None:
        self.store_ok = False  # until the first connection succeeds
        self.redis_ok: bool | None = None

    def store(self, ok: bool, error: str = "") -> None:
        if ok and not self.store_ok:
            log.info("health: store reachable")
        elif not ok and self.store_ok:
            log.warning("health: store unavailable", error=error)
        self.store_ok = ok
        STORE_UP.set(int(ok))

    def redis(self, ok: bool) -> None:
        if ok and self.redis_ok is False:
            log.info("health: redis reachable again")
        elif not ok and self.redis_ok is not False:
            log.warning("health: redis unavailable")
        self.redis_ok = ok
        REDIS_UP.set(int(ok))


class ServiceProbe:
    """Pings the job store and Redis on a timer into a :class:`ServiceHealth`, so health tells the
    truth during an outage even while no job happens to touch the service (the Redis cache, for
    one, stops asking for a while after a failure).

    Args:
        store: the job store (``ping()``).
        health: where the results go.
        redis_urls: every Redis the daemon uses (cache, intake); empty = none.
        redis_password: the ``redis_password`` secret, when the server needs one.
        timeout: seconds one ping may take before the service counts as down.
    """

    def __init__(self, store: JobStore, health: ServiceHealth, redis_urls: Sequence[str], *,
                 redis_password: str | None = None, timeout: float = 2.0) -> None:
        self.store = store
        self.health = health
        self.timeout = timeout
        self._redis: list[Any] = []
        if redis_urls:
            import redis.asyncio as aioredis

            self._redis = [
                aioredis.Redis.from_url(url, password=redis_password, socket_timeout=timeout,
                                        socket_connect_timeout=timeout, retry_on_timeout=False)
                for url in dict.fromkeys(redis_urls)
            ]

    async def check(self) -> None:
        """Ping everything once."""
        store_ok, error = False, "timed out"
        with anyio.move_on_after(self.timeout):
            try:
                await self.store.ping()
                store_ok = True
            except Exception as e:  # whatever stops a ping is what health must report
                error = f"{type(e).__name__}: {e}"
        self.health.store(store_ok, error)
        if self._redis:
            self.health.redis(all([await self._ping_redis(client) for client in self._redis]))

    async def _ping_redis(self, client: Any) -> bool:
        from redis.exceptions import RedisError

        with anyio.move_on_after(self.timeout):
            try:
                return bool(await client.ping())
            except (RedisError, OSError):  # down, refused, or timed out
                return False
        return False

    async def run(self, interval: float) -> None:
        """Check every ``interval`` seconds until cancelled."""
        try:
            while True:
                await self.check()
                await anyio.sleep(interval)
        finally:
            with anyio.CancelScope(shield=True):
                for client in self._redis:
                    await client.aclose()
