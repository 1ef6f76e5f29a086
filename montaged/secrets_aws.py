"""AWS Secrets Manager as a source of Montage's secrets.

A secret is named ``aws:<secret id>`` (its whole ``SecretString``) or ``aws:<secret id>#<key>``
(one key of a JSON ``SecretString``, as RDS and most rotation lambdas store them). A fetched value
is used for ``ttl`` seconds, then fetched again, so a rotated secret is picked up without a
restart; :meth:`AwsSecrets.refresh_loop` refetches in a worker thread before values expire, so
the event loop never waits on AWS once the daemon runs. When AWS cannot be reached the last value
is kept (with a warning), because the old credential usually still works during a rotation.
Values are ``SecretStr`` and appear in no log, error or repr; errors name the secret id only.
boto3 is imported on first use (``pip install 'montage[aws]'``).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import anyio
import structlog
from pydantic import SecretStr

from montaged.errors import ConfigError

log = structlog.get_logger(__name__)

PREFIX = "aws:"


@dataclass(frozen=True)
class AwsSecretRef:
    secret_id: str
    key: str | None = None

    def __str__(self) -> str:
        return PREFIX + self.secret_id + (f"#{self.key}" if self.key else "")


def parse_ref(text: str, where: str = "secret") -> AwsSecretRef:
    """``aws:<secret id>[#<json key>]`` → :class:`AwsSecretRef`; a clear error otherwise."""
    if not text.startswith(PREFIX):
        raise ConfigError(f"{where}: expected aws:<secret id>[#<json key>] (got {text!r})")
    secret_id, _, key = text[len(PREFIX):].partition("#")
    if not secret_id.strip() or (key == "" and text.endswith("#")):
        raise ConfigError(f"{where}: expected aws:<secret id>[#<json key>] (got {text!r})")
    return AwsSecretRef(secret_id.strip(), key.strip() or None)


@dataclass
class _Entry:
    value: str
    fetched: float


class AwsSecrets:
    """Reads secrets from AWS Secrets Manager with a TTL cache.

    Args:
        region: the AWS region (``None``: boto3's default chain, e.g. ``AWS_REGION``).
        endpoint_url: an endpoint override (a VPC endpoint, or a local test server).
        ttl: seconds a fetched value is used before it is fetched again.
        client: a ready Secrets Manager client (default: built with boto3 on first use).
        clock: monotonic seconds (tests pass their own).
    """

    def __init__(self, *, region: str | None = None, endpoint_url: str | None = None, ttl: float = 300.0,
                 client: Any = None, clock: Callable[[], float] = time.monotonic) -> None:
        if ttl <= 0:
            raise ValueError(f"ttl must be positive (got {ttl})")
        self.region = region
        self.endpoint_url = endpoint_url
        self.ttl = ttl
        self._client = client
        self._clock = clock
        self._cache: dict[str, _Entry] = {}
        self._lock = threading.Lock()  # get() may run in worker threads and the event loop at once

    def __repr__(self) -> str:
        return f"AwsSecrets(region={self.region!r}, cached={sorted(self._cache)})"

    def _boto_client(self) -> Any:
        if self._client is None:
            try:
                import boto3
            except ImportError as e:
                raise ConfigError("secrets from AWS Secrets Manager need boto3: "
                                  "pip install 'montage[aws]'") from e
            from botocore.config import Config

            # Bounded waits: a daemon would rather keep its last value than hang on AWS.
            config = Config(connect_timeout=5, read_timeout=10,
                            retries={"max_attempts": 3, "mode": "standard"})
            self._client = boto3.client("secretsmanager", region_name=self.region,
                                        endpoint_url=self.endpoint_url, config=config)
        return self._client

    def _fetch(self, secret_id: str) -> str | None:
        """The current ``SecretString``; ``None`` when the secret does not exist."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            reply = self._boto_client().get_secret_value(SecretId=secret_id)
        except ClientError as e:
            code = e.response.get("Error", {}).get("Code", "")
            if code == "ResourceNotFoundException":
                return None
            raise ConfigError(f"secret {secret_id} in AWS Secrets Manager: {code or 'error'}; check the "
                              "id, the region and that this role may secretsmanager:GetSecretValue") from None
        except BotoCoreError as e:
            raise ConfigError(f"secret {secret_id} in AWS Secrets Manager: cannot reach the service "
                              f"({type(e).__name__}); check the network, region and credentials") from None
        text = reply.get("SecretString")
        if text is None:
            raise ConfigError(f"secret {secret_id} in AWS Secrets Manager holds binary data; "
                              "store the value as a string")
        return str(text)

    def _current(self, secret_id: str, *, force: bool = False) -> str | None:
        with self._lock:
            entry = self._cache.get(secret_id)
        if entry is not None and not force and self._clock() - entry.fetched < self.ttl:
            return entry.value
        try:
            value = self._fetch(secret_id)
        except ConfigError as e:
            if entry is None:
                raise
            log.warning("AWS Secrets Manager unavailable; using the last value", secret_id=secret_id,
                        error=str(e))
            with self._lock:  # for another TTL: reads never wait on an unreachable AWS again and again
                self._cache[secret_id] = _Entry(entry.value, self._clock())
            return entry.value
        with self._lock:
            if value is None:
                self._cache.pop(secret_id, None)
            else:
                if entry is not None and entry.value != value:
                    log.info("secret rotated; using the new value", secret_id=secret_id)
                self._cache[secret_id] = _Entry(value, self._clock())
        return value

    def get(self, ref: AwsSecretRef) -> SecretStr | None:
        """The secret's value (or its JSON key's), ``None`` when the secret or key is absent or
        empty. Fetches from AWS only when the cached value is older than ``ttl``."""
        text = self._current(ref.secret_id)
        if text is None:
            return None
        if ref.key is None:
            value = text.strip()
        else:
            try:
                doc = json.loads(text)
            except json.JSONDecodeError:
                raise ConfigError(f"{ref}: the secret is not a JSON object, so it has no key "
                                  f"{ref.key!r}; name the secret without #{ref.key}") from None
            if not isinstance(doc, dict):
                raise ConfigError(f"{ref}: the secret is not a JSON object; name it without #{ref.key}")
            raw = doc.get(ref.key)
            value = "" if raw is None else str(raw).strip()
        return SecretStr(value) if value else None

    async def refresh_loop(self) -> None:
        """Refetches every cached secret at 80% of the TTL, in a worker thread, for the daemon's
        lifetime; failures keep the last value (see :meth:`get`)."""
        while True:
            await anyio.sleep(self.ttl * 0.8)
            with self._lock:
                ids = list(self._cache)
            for secret_id in ids:
                try:
                    await anyio.to_thread.run_sync(partial(self._current, secret_id, force=True))
                except ConfigError as e:
                    log.warning("secret refresh failed", secret_id=secret_id, error=str(e))
