"""``montagectl`` entry point: parse, connect, run one command, turn every ending into an exit code."""

from __future__ import annotations

import argparse
import os
import sys
from typing import NoReturn

import anyio
from rich.console import Console

from montaged.control.client import ControlError, DaemonUnreachable
from montaged.ctl import exits
from montaged.ctl.commands import COMMANDS
from montaged.ctl.connect import no_answer, open_client, socket_path
from montaged.ctl.parser import build_parser
from montaged.errors import leaf_errors


async def _run(args: argparse.Namespace) -> int:
    path = socket_path(args.socket, args.config)
    async with open_client(path, args.timeout) as client:
        try:
            return await COMMANDS[args.command](client, args, Console(highlight=False, soft_wrap=True))
        except BaseException as e:  # a reply overdue, maybe inside watch's task group
            if isinstance(_find(e), TimeoutError):
                raise exits.CtlExit(exits.UNREACHABLE, no_answer(path, args.timeout)) from None
            raise


def _find(e: BaseException) -> BaseException:
    """The error that says what happened, from inside task groups' exception groups."""
    if isinstance(e, BaseExceptionGroup):
        for leaf in leaf_errors(e):
            if isinstance(leaf, exits.CtlExit | ControlError | DaemonUnreachable | TimeoutError
                          | KeyboardInterrupt | BrokenPipeError | SystemExit):
                return leaf
    return e


def _fail(code: int, message: str) -> int:
    print(f"montagectl: {message}", file=sys.stderr)
    return code


def _broken_pipe() -> NoReturn:
    # `montagectl watch --json | head`: the reader left; no traceback, and no second error when
    # Python flushes stdout at exit
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    sys.exit(exits.OK)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)  # usage errors exit 2 here
    try:
        return anyio.run(_run, args)
    except KeyboardInterrupt:
        return _interrupted(args)
    except BaseException as raised:
        e = _find(raised)
        if isinstance(e, exits.CtlExit):
            return _fail(e.code, e.message)
        if isinstance(e, ControlError):
            return _fail(exits.REFUSED, f"{e.message} [{e.code}]")
        if isinstance(e, DaemonUnreachable):
            return _fail(exits.UNREACHABLE, str(e))
        if isinstance(e, KeyboardInterrupt):
            return _interrupted(args)
        if isinstance(e, BrokenPipeError):
            _broken_pipe()
        if isinstance(e, SystemExit):  # rich ends a write to a closed pipe this way
            raise e from None
        raise


def _interrupted(args: argparse.Namespace) -> int:
    if args.command == "submit" and getattr(args, "wait", False):
        return _fail(exits.INTERRUPTED, "interrupted; the submitted jobs go on in montaged"
                     " (`montagectl watch ID` follows one, `montagectl cancel ID` stops it)")
    if args.command == "watch":
        return exits.INTERRUPTED  # Ctrl-C is how `watch` ends; nothing to explain
    return _fail(exits.INTERRUPTED, "interrupted")


if __name__ == "__main__":
    sys.exit(main())
