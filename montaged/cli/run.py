"""``montaged run``: the long-running daemon (systemd, containers, a terminal)."""

from __future__ import annotations

import argparse
import sys

import anyio

from montaged.app import Daemon
from montaged.config import Secrets, Settings, load
from montaged.control.server import SocketInUse
from montaged.errors import ConfigError, MontageError, leaf_errors
from montaged.logging import setup


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("run", help="run the daemon: intake, pipeline, control socket, metrics",
                       description="Run montaged in the foreground until SIGTERM/SIGINT (a second "
                       "signal forces the stop).")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        settings = load(args.config)
    except ConfigError as e:
        print("montaged: configuration errors (run `montaged --check-config`):", file=sys.stderr)
        print(e, file=sys.stderr)
        return 1
    setup(settings.log)
    try:
        anyio.run(_serve, settings)
    except KeyboardInterrupt:
        return 0
    except BaseException as e:
        known = expected_failure(e)
        if known is None:
            raise
        print(f"montaged: {known}", file=sys.stderr)
        return 1
    return 0


async def _serve(settings: Settings) -> None:
    # built inside the loop: it owns anyio events and scopes
    await Daemon(settings, Secrets(config=settings.secrets)).run()


def expected_failure(e: BaseException) -> BaseException | None:
    """The operator-facing error inside ``e`` (task groups wrap errors in exception groups)."""
    return next((leaf for leaf in leaf_errors(e) if isinstance(leaf, SocketInUse | MontageError)), None)
