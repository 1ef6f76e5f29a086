"""One function per montagectl command: send the request(s), print the reply, return the exit code.

Every command prints either a human view (rich, on stdout) or, with ``--json``, exactly one JSON
document on stdout. Progress bars and problems go to stderr.
"""

from __future__ import annotations

import argparse
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape

from montaged.control.client import ControlClient, ControlError
from montaged.ctl import editing, exits, parser, purge, render
from montaged.ctl.watch import Board, wait_for_jobs, watch

Command = Callable[[ControlClient, argparse.Namespace, Console], Awaitable[int]]


def _answer(args: argparse.Namespace, out: Console, doc: Any, human: Callable[[Console], None]) -> int:
    """Print ``doc`` as the one JSON document with ``--json``, else the human view; exit OK."""
    if args.json:
        render.emit_json(doc)
    else:
        human(out)
    return exits.OK


def _absolute(path: Path) -> str:
    """Absolute, not resolved: the daemon resolves symlinks itself to check its input roots."""
    return str(path.expanduser().absolute())


async def submit(client: ControlClient, args: argparse.Namespace, out: Console) -> int:
    """Queue every file; one refused file does not stop the others (exit 1 at the end)."""
    profile, options = parser.render_options(args)
    if args.max_clips is not None:
        options["max_clips"] = args.max_clips
    if args.speakers is not None:
        options["speakers"] = args.speakers
    if args.captions is not None:
        options["captions"] = args.captions
    for key in ("language", "min_seconds", "max_seconds"):
        if getattr(args, key) is not None:
            options[key] = getattr(args, key)
    if args.dry_run:
        options["stop_after"] = "select"
        args.wait = True
    output_dir = _absolute(args.output_dir) if args.output_dir is not None else None
    if args.wait:
        await client.request("subscribe")  # first, so no event of the new jobs can be missed
    err = Console(stderr=True, soft_wrap=True)
    jobs: list[dict[str, Any]] = []
    refused: list[dict[str, str]] = []
    for f in args.files:
        path = _absolute(f)
        try:
            jobs.append(await client.request("submit", path=path, profile=profile,
                                             options=options or None, output_dir=output_dir))
        except ControlError as e:
            refused.append({"path": path, "code": e.code, "message": e.message})
            err.print(escape(f"montagectl: {e.message} [{e.code}]"), highlight=False)
    if jobs and args.wait:
        if args.json:
            jobs = await wait_for_jobs(client, [j["id"] for j in jobs], None)
        else:
            for job in jobs:
                out.print(f"submitted {job['id']}  {escape(job['spec']['source'])}", highlight=False)
            with Board(Console(stderr=True, soft_wrap=True), follow_all=False) as board:
                for job in jobs:
                    board.add(job)
                jobs = await wait_for_jobs(client, [j["id"] for j in jobs], board)
            for job in jobs:
                render.print_outcome(out, job)
    if args.json:
        render.emit_json({"jobs": jobs, "refused": refused})
    elif not args.wait:
        for job in jobs:
            out.print(f"{job['id']}  {render.state_text(job['state'])}  {escape(job['spec']['source'])}",
                      highlight=False)
    if args.wait and any(j["state"] != "done" for j in jobs):
        return exits.JOB_FAILED
    return exits.REFUSED if refused else exits.OK


async def list_jobs(client: ControlClient, args: argparse.Namespace, out: Console) -> int:
    result = await client.request("list", state=args.state, limit=args.limit)
    return _answer(args, out, result, lambda o: render.print_list(o, result["jobs"]))


async def show(client: ControlClient, args: argparse.Namespace, out: Console) -> int:
    result = await client.request("show", job_id=args.job_id)
    return _answer(args, out, result, lambda o: render.print_job(o, result))


async def cancel(client: ControlClient, args: argparse.Namespace, out: Console) -> int:
    job = await client.request("cancel", job_id=args.job_id)
    return _answer(args, out, {"job": job}, lambda o: o.print(
        f"job {job['id']} cancelled ({escape(render.name(job))})", highlight=False))


async def retry(client: ControlClient, args: argparse.Namespace, out: Console) -> int:
    job = await client.request("retry", job_id=args.job_id)
    return _answer(args, out, {"job": job}, lambda o: o.print(
        f"job {job['id']} queued again ({escape(render.name(job))}); {render.RESUMES}",
        highlight=False))


async def pause(client: ControlClient, args: argparse.Namespace, out: Console) -> int:
    result = await client.request("pause")
    return _answer(args, out, result, lambda o: o.print(
        "intake paused: queued jobs wait, running jobs go on (`montagectl resume` to go on)"))


async def resume(client: ControlClient, args: argparse.Namespace, out: Console) -> int:
    result = await client.request("resume")
    return _answer(args, out, result, lambda o: o.print("intake resumed"))


async def stats(client: ControlClient, args: argparse.Namespace, out: Console) -> int:
    result = await client.request("stats")
    return _answer(args, out, result, lambda o: render.print_stats(o, result))


async def watch_command(client: ControlClient, args: argparse.Namespace, out: Console) -> int:
    # the live view is this command's output (stdout); with --json the events are
    return await watch(client, args.job_id, out, args.json)


COMMANDS: dict[str, Command] = {
    "submit": submit,
    "list": list_jobs,
    "show": show,
    "cancel": cancel,
    "retry": retry,
    "watch": watch_command,
    "pause": pause,
    "resume": resume,
    "stats": stats,
    "export": editing.export,
    "render": editing.render_again,
    "purge": purge.purge,
}
