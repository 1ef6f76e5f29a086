"""Shared fixtures: real media, real services, generated clips; and the markers each test gets.

Tests that need something from outside the checkout skip locally with the reason, and fail with
CI=true (``unavailable``). Markers are applied at collection by what a test uses (tests/markers.py),
so a new test is marked without anyone remembering to: ``media`` (the real recordings, found by
tests/media.py), ``services`` (PostgreSQL or Redis), ``image`` (the container image) and ``slow``.
``pytest -m "not slow and not services"`` runs the quick subset; ``make test`` runs them all.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from markers import mark_by_use
from media import IN_CI, MEDIA, missing

ROOT = Path(__file__).resolve().parents[1]
PG_DSN = os.environ.get("MONTAGE_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("MONTAGE_TEST_REDIS", "redis://127.0.0.1:6379/0")


def unavailable(reason: str) -> None:
    """Skip locally, fail in CI: CI must prove everything, a laptop may lack a service."""
    if IN_CI:
        pytest.fail(f"{reason} (CI=true: required)")
    pytest.skip(reason)


def need_media(relpath: str = "") -> Path:
    """``relpath`` in the real recordings (tests/media.py says where they are); skips or fails
    (CI=true) with where it looked and how to provide them when they are not there."""
    reason = missing(relpath)
    if reason is not None:
        unavailable(reason)
    return MEDIA / relpath


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    mark_by_use(items)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """A test marked ``media`` (by hand or by ``mark_by_use``) skips or fails before it starts
    when the recordings are absent, also when it reaches them through a constant such as JFK."""
    if item.get_closest_marker("media") is not None:
        need_media()


def _port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return True
    except OSError:
        return False


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session")
def media_dir() -> Path:
    """The real recordings folder (tests/media.py), or a skip (a failure with CI=true)."""
    return need_media()


@pytest.fixture(scope="session")
def ffmpeg() -> str:
    path = shutil.which("ffmpeg")
    if path is None:
        unavailable("ffmpeg is not installed (make test installs it)")
    assert path is not None
    return path


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A PostgreSQL URL with a fresh schema, dropped afterwards."""
    if not _port_open("127.0.0.1", 5432):
        unavailable("PostgreSQL is not listening on 127.0.0.1:5432")
    schema = f"t_{uuid.uuid4().hex[:12]}"
    yield f"{PG_DSN}?schema={schema}"
    subprocess.run(
        ["psql", PG_DSN, "-q", "-c", f"DROP SCHEMA IF EXISTS {schema} CASCADE"],
        check=False,
        capture_output=True,
    )


@pytest.fixture
def redis_prefix() -> Iterator[str]:
    """A key prefix private to one test; its keys are deleted afterwards."""
    if not _port_open("127.0.0.1", 6379):
        unavailable("Redis is not listening on 127.0.0.1:6379")
    prefix = f"montage-test:{uuid.uuid4().hex[:10]}:"
    yield prefix
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    keys = list(client.scan_iter(f"{prefix}*"))
    if keys:
        client.delete(*keys)
    client.close()


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'montage.db'}"


def make_talk_clip(
    path: Path, *, seconds: float = 6.0, size: str = "640x360", fps: int = 25, speech: Path | None = None
) -> Path:
    """A small real-format talk clip: test pattern video plus real speech (or a tone)."""
    if speech is not None and not speech.exists():  # a recording: tests/media.py finds them
        unavailable(missing() or f"{speech} not found")
    audio = ["-i", str(speech)] if speech else ["-f", "lavfi", "-i", f"sine=frequency=300:duration={seconds}"]
    cmd = [
        "ffmpeg", "-hide_banner", "-loglevel", "error", "-y",
        "-f", "lavfi", "-i", f"testsrc2=size={size}:rate={fps}:duration={seconds}",
        *audio, "-t", str(seconds),
        "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-g", str(fps),
        "-c:a", "aac", "-ar", "48000", "-ac", "2", "-shortest", str(path),
    ]  # fmt: skip
    subprocess.run(cmd, check=True)
    return path
