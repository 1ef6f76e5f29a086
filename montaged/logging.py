"""structlog set-up: JSON lines off a TTY (journald, containers), readable output on a TTY.

Logs go to stderr so commands that print results (transcribe, diarize, montagectl --json) keep
stdout clean. Noisy libraries are quieted here, in one place.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

import structlog

from montaged.config import LogConfig

NOISY = {"faster_whisper": logging.WARNING, "asyncio": logging.WARNING, "websockets": logging.WARNING,
         "httpx": logging.WARNING, "httpcore": logging.WARNING, "watchfiles": logging.WARNING,
         "numba": logging.WARNING, "matplotlib": logging.WARNING, "speechbrain": logging.WARNING,
         "deepgram": logging.WARNING}

SECRET_KEYS = ("api_key", "apikey", "password", "token", "secret", "authorization")


def _redact(_: Any, __: str, event: dict[str, Any]) -> dict[str, Any]:
    """Last line of defence: never write a value under a key that names a secret."""
    for key in list(event):
        if any(word in key.lower() for word in SECRET_KEYS):
            event[key] = "***"
    return event


class _Stderr:
    """Whatever ``sys.stderr`` is when writing (test runners swap it)."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


def keep_stdout_clean() -> None:
    """For commands whose standard output is their result (transcribe, diarize): logs go to stderr,
    warnings and worse unless logging was set up already, whatever wrote to stdout before."""
    if structlog.is_configured():
        structlog.configure(logger_factory=structlog.PrintLoggerFactory(_Stderr()))  # type: ignore[arg-type]
    else:
        structlog.configure(
            logger_factory=structlog.PrintLoggerFactory(_Stderr()),  # type: ignore[arg-type]
            wrapper_class=structlog.make_filtering_bound_logger(30),
        )


WORKER_ENV = "MONTAGE_LOG__LEVEL", "MONTAGE_LOG__FORMAT"


def setup_worker() -> None:
    """In a pool worker process: log like the parent (level and format come through the env)."""
    level = os.environ.get(WORKER_ENV[0], "warning")
    fmt = os.environ.get(WORKER_ENV[1], "json")
    if level not in ("debug", "info", "warning", "error"):
        level = "warning"
    if fmt not in ("json", "console"):
        fmt = "json"
    setup(LogConfig(level=level, format=fmt))


def setup(cfg: LogConfig, *, force_format: str | None = None) -> None:
    level = getattr(logging, cfg.level.upper())
    fmt = force_format or cfg.format
    if fmt == "auto":
        fmt = "console" if sys.stderr.isatty() else "json"
    # worker processes (spawned later) read these and log the same way
    os.environ[WORKER_ENV[0]] = cfg.level
    os.environ[WORKER_ENV[1]] = fmt
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _redact,
    ]
    renderer: Any
    if fmt == "json":
        renderer = structlog.processors.JSONRenderer()
        shared.append(structlog.processors.format_exc_info)
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    structlog.configure(
        processors=[*shared, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(_Stderr()),  # type: ignore[arg-type]
        cache_logger_on_first_use=False,
    )
    # stdlib loggers (libraries) go through the same renderer
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer
        ], foreign_pre_chain=shared)
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for name, lib_level in NOISY.items():
        logging.getLogger(name).setLevel(max(lib_level, level))
