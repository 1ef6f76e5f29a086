"""``montagectl purge --older-than 30d``: prune the store now, with one age for everything.

The daemon also prunes on its own (``[retention]`` in the config); this is for an operator who
wants space back at once or keeps ``retention.interval_minutes = 0``.
"""

from __future__ import annotations

import argparse
import re
from typing import Any

from rich.console import Console

from montaged.control.client import ControlClient
from montaged.ctl import exits, render

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 7 * 86_400}
_AGE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")


def age(text: str) -> float:
    """``30d``, ``12h``, ``90m``, ``3600s``, ``2w`` → seconds (above 0)."""
    m = _AGE.match(text.lower())
    if m is None:
        raise argparse.ArgumentTypeError(f"{text!r}: give an age like 30d, 12h, 90m, 3600s or 2w")
    seconds = float(m.group(1)) * _UNITS[m.group(2)]
    if seconds <= 0:
        raise argparse.ArgumentTypeError(f"{text!r}: the age must be more than 0")
    return seconds


def add_parsers(command: Any) -> None:
    """Add ``purge`` through parser.py's ``command(name, help, description)``."""
    p = command("purge", "delete finished jobs, events and stored results older than an age",
                "Delete, in the daemon's store, finished jobs (done, failed, cancelled) last changed"
                " before the age with their events, events of finished jobs recorded before it, and"
                " stage results and cached transcripts written before it. Queued and running jobs, and"
                " the stored results their media needs, are never deleted. Clips on disk stay.")
    p.add_argument("--older-than", dest="older_than", type=age, required=True, metavar="AGE",
                   help="30d, 12h, 90m, 3600s or 2w")


async def purge(client: ControlClient, args: argparse.Namespace, out: Console) -> int:
    result = await client.request("purge", options={"older_than_seconds": args.older_than})
    if args.json:
        render.emit_json(result)
    else:
        n = result["pruned"]
        out.print(f"purged {n['jobs']} finished jobs, {n['events']} events and {n['results']} stored"
                  " results", highlight=False)
    return exits.OK
