"""``montaged``: the daemon (``run``), the one-shot pipeline and the stage commands. No logic here."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from montaged.cli import check, diarize, models, process, run, transcribe

EXIT_USAGE = 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="montaged",
        description="Montage: turn long talk videos into short, well-framed highlight clips.",
    )
    parser.add_argument(
        "--config", "-c", type=Path, default=None,
        help="TOML config file (default: $MONTAGE_CONFIG, else /etc/montage/montage.toml if present)",
    )
    parser.add_argument(
        "--check-config", action="store_true",
        help="validate the configuration, print every problem as 'key.path: problem (got value)', exit",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in (run, process, transcribe, diarize, models, check):
        module.add_parser(sub)
    # `montaged run --config F` works as well as `montaged --config F run`
    for command in sub.choices.values():
        command.add_argument("--config", "-c", type=Path, default=argparse.SUPPRESS,
                             help="TOML config file (as the global --config)")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.check_config:
        return check.check_config(args.config)
    if args.command is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
