"""montagectl commands for editors: export a job's clips as a timeline an editing application opens.

The daemon builds the export (it can read the sidecars and the source); montagectl saves it where
the user asked, so the file belongs to the user, not to the daemon's account.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape

from montaged.control.client import ControlClient
from montaged.ctl import exits, render
from montaged.ctl.watch import Board, wait_for_jobs

EXPORT_FORMATS = ("otio", "fcpxml", "edl")


def add_parsers(command: Any) -> None:
    """Add this module's sub-commands through parser.py's ``command(name, help, description)``."""
    p = command("export", "a finished job's clips as an editor timeline: OTIO, FCPXML or CMX 3600 EDL",
                "Write the selected ranges of a finished job, cut against the source media on the source's"
                " own timecode, for DaVinci Resolve, Premiere or Final Cut. Each clip carries a marker"
                " with its rank, score and reason; the OTIO file also keeps its text, speakers and crop"
                " path as metadata. Without -o the export goes to stdout.")
    p.add_argument("job_id", metavar="ID")
    p.add_argument("--format", "-f", choices=EXPORT_FORMATS, default="otio",
                   help="otio (OpenTimelineIO JSON), fcpxml (Final Cut Pro X / Resolve) or edl (CMX 3600);"
                        " default otio")
    p.add_argument("--output", "-o", type=Path, metavar="FILE",
                   help="write here (a folder gets montage-<job>.<format>); '-' or none: stdout")
    tc = p.add_mutually_exclusive_group()
    tc.add_argument("--drop-frame", dest="drop_frame", action="store_const", const=True, default=None,
                    help="29.97/59.94 sources: count timecode in drop frame (default: the source's own"
                         " timecode tag, else drop frame)")
    tc.add_argument("--non-drop-frame", dest="drop_frame", action="store_const", const=False,
                    help="29.97/59.94 sources: count timecode without drop frames")


async def render_again(client: ControlClient, args: argparse.Namespace, out: Console) -> int:
    options: dict[str, Any] = {"exact": args.exact}
    for key in ("clip", "candidate", "start", "end", "captions"):
        if getattr(args, key) is not None:
            options[key] = getattr(args, key)
    if args.wait:
        await client.request("subscribe")
    job = await client.request("render", job_id=args.job_id, profile=args.profile, options=options)
    if args.wait:
        board = None
        if not args.json:
            out.print(f"submitted {job['id']}  re-cut of {args.job_id}", highlight=False)
            board = Board(Console(stderr=True, soft_wrap=True), follow_all=False)
        if board is not None:
            with board:
                board.add(job)
                (job,) = await wait_for_jobs(client, [job["id"]], board)
            render.print_outcome(out, job)
        else:
            (job,) = await wait_for_jobs(client, [job["id"]], None)
    if args.json:
        render.emit_json({"job": job})
    elif not args.wait:
        (start, end), = job["spec"]["options"]["ranges"]
        out.print(f"{job['id']}  {render.state_text(job['state'])}  re-cut of {args.job_id}:"
                  f" {start:.2f}-{end:.2f} s", highlight=False)
    return exits.OK if not args.wait or job["state"] == "done" else exits.JOB_FAILED


def _target(output: Path | None, result: dict[str, Any]) -> Path | None:
    if output is None or str(output) == "-":
        return None
    if output.is_dir():
        return output / f"montage-{result['job_id'][:8]}{result['suffix']}"
    return output


def _save(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise exits.CtlExit(exits.USAGE, f"{path}: cannot write the export ({e.strerror});"
                            " choose another -o") from None


async def export(client: ControlClient, args: argparse.Namespace, out: Console) -> int:
    options = {"drop_frame": args.drop_frame} if args.drop_frame is not None else None
    result = await client.request("export", job_id=args.job_id, format=args.format, options=options)
    path = _target(args.output, result)
    if path is None:
        if args.json:
            render.emit_json(result)
        else:
            sys.stdout.write(result["text"])
            sys.stdout.flush()
        return exits.OK
    _save(path, result["text"])
    summary = {k: v for k, v in result.items() if k != "text"} | {"path": str(path)}
    if args.json:
        render.emit_json(summary)
        return exits.OK
    out.print(f"{escape(str(path))}: {len(result['clips'])} clips, {result['format']}, "
              f"{result['fps']:g} fps {'DF' if result['drop_frame'] else 'NDF'}, source starts at"
              f" {result['source_timecode']}", highlight=False)
    for clip in result["clips"]:
        out.print(f"  #{clip['index'] + 1:<3} {clip['source_in']} - {clip['source_out']}  "
                  f"({clip['frames']} frames)", highlight=False)
    return exits.OK
