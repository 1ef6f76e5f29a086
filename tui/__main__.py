"""``montage-tui [--socket PATH] [--config FILE] [--log FILE]``: parse arguments, run the app."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import structlog

from montaged.config import load
from montaged.errors import ConfigError
from tui.app import make_app


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="montage-tui",
        description="Watch and steer montaged live: jobs, budget and throughput from its control socket.",
    )
    p.add_argument("--socket", type=Path, metavar="PATH",
                   help="control socket of the daemon (default: control.socket_path from the config,"
                        " else $RUNTIME_DIRECTORY/montaged.sock)")
    p.add_argument("--config", type=Path, metavar="FILE",
                   help="montage config file to take the socket path from (default: $MONTAGE_CONFIG or"
                        " the daemon's usual locations)")
    p.add_argument("--log", type=Path, metavar="FILE",
                   help="append the TUI's own log lines here (default: none; the terminal is the screen)")
    return p


def _logging(path: Path | None) -> None:
    """The screen belongs to Textual: log lines go to a file or nowhere, never to the terminal."""
    sink = path.open("a", encoding="utf-8") if path is not None else open("/dev/null", "w")  # noqa: SIM115
    structlog.configure(
        processors=[structlog.processors.add_log_level, structlog.processors.TimeStamper(fmt="iso"),
                    structlog.processors.JSONRenderer()],
        wrapper_class=structlog.make_filtering_bound_logger(logging.INFO),
        logger_factory=structlog.PrintLoggerFactory(sink),
    )


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    socket = args.socket
    if socket is None:
        try:
            socket = load(args.config).control.socket()
        except ConfigError as e:
            print(f"montage-tui: cannot read the config for the socket path:\n{e}\n"
                  "fix the config or pass --socket PATH", file=sys.stderr)
            return 2
    _logging(args.log)
    make_app(socket=socket).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
