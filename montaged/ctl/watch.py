"""Live progress from montaged's event stream: ``watch [ID]`` and ``submit --wait``.

Bars move on pushed events (``job.stage``, ``job.progress``, ...), never on polling; each job's
state comes from the reducer the TUI uses too (montaged/jobview.py). The daemon
drops events for a subscriber that falls behind (the store holds the truth), so a wait that hears
nothing about its jobs for ``RECHECK_SECONDS`` asks the store once whether they ended meanwhile;
that check only ends a wait, it never draws progress.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any

import anyio
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.markup import escape
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.text import Text

from montaged import jobview
from montaged.control.client import ControlClient
from montaged.control.protocol import TERMINAL_EVENTS, EventKind
from montaged.ctl import exits
from montaged.ctl.render import name, plural, print_outcome, released_line, state_text
from montaged.jobview import JobView, event_of
from montaged.model import TERMINAL_STATES, JobEvent, JobState

TERMINAL = {s.value for s in TERMINAL_STATES}
RECHECK_SECONDS = 10.0
KEEP_FINISHED = 8  # finished bars kept on screen by `watch` (all jobs)


class Board:
    """One progress bar per job plus, for ``watch`` of every job, a header from ``daemon.stats``.

    Args:
        console: where the bars go (stderr for ``submit --wait``, so stdout stays the result).
        follow_all: add a bar for any job an event names (``watch``); else only ``add``-ed jobs.
    """

    def __init__(self, console: Console, *, follow_all: bool) -> None:
        self.console = console
        self.follow_all = follow_all
        self.progress = Progress(
            TextColumn("{task.fields[job_id]}", style="dim"),
            TextColumn("{task.fields[name]}", justify="left"),
            TextColumn("{task.fields[stage]}"),
            BarColumn(),
            TextColumn("{task.percentage:>3.0f}%"),
            TimeElapsedColumn(),
            console=console,
        )
        self.tasks: dict[str, TaskID] = {}
        self.names: dict[str, str] = {}
        self.views: dict[str, JobView] = {}  # what the events said of each job, as the bars show it
        self.finished: list[str] = []
        self.header = Text("")
        parts: list[RenderableType] = [self.header, self.progress] if follow_all else [self.progress]
        self.live = Live(Group(*parts), console=console, refresh_per_second=8)

    def __enter__(self) -> Board:
        self.live.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.live.stop()
        if not self.console.is_terminal:
            self.console.line()  # Live ends its last frame with a newline only on a terminal

    def add(self, job: dict[str, Any]) -> None:
        """A bar for ``job`` (a ``Job.to_dict``) at its current stage and progress."""
        job_id = job["id"]
        self.views[job_id] = JobView.from_job(job)
        self.names[job_id] = name(job)[:40]
        stage = (job.get("stage") or "") if job["state"] == "running" else job["state"]
        fields = {"job_id": job_id, "name": escape(self.names[job_id]), "stage": _stage_cell(stage)}
        if job_id in self.tasks:
            self.progress.update(self.tasks[job_id], completed=job.get("progress", 0.0), **fields)
            return
        self.tasks[job_id] = self.progress.add_task("", total=1.0, completed=job.get("progress", 0.0),
                                                    **fields)
        if job["state"] in TERMINAL:
            self._finished(job_id)

    def set_name(self, job_id: str, text: str) -> None:
        self.names[job_id] = text[:40]
        if job_id in self.tasks:
            self.progress.update(self.tasks[job_id], name=escape(text[:40]))

    def apply(self, message: dict[str, Any]) -> bool:
        """Draw one pushed event; True when it named a job this board has no bar for yet."""
        event = event_of(message)
        if event is None:
            return False  # a kind this montagectl does not know
        if event.kind is EventKind.DAEMON_STATS:
            self.header.plain = header_line(event.data)
            return False
        job_id = event.job_id
        if not job_id:
            return False
        new = False
        if job_id not in self.tasks:
            if not self.follow_all:
                return False
            job = event.data.get("job") or {"id": job_id, "state": "queued", "spec": {"source": job_id}}
            self.add(job)
            new = "job" not in event.data
        before = self.views[job_id]
        after = self.views[job_id] = jobview.apply(before, event)
        self._draw(job_id, event, before, after)
        return new

    def _draw(self, job_id: str, event: JobEvent, before: JobView, after: JobView) -> None:
        """The bar as ``after`` has it, and a line for each stage or run that ``event`` ended."""
        task = self.tasks[job_id]
        shown = escape(self.names[job_id])
        if event.kind in (EventKind.JOB_SUBMITTED, EventKind.JOB_RETRIED):
            self.progress.reset(task, total=1.0, completed=0)  # the elapsed time starts again
        running = after.running_span
        if after.state == JobState.RUNNING:
            cell = _stage_cell(running.stage if running is not None else "claimed")
        else:
            cell = _stage_cell(after.state)
        self.progress.update(task, stage=cell, completed=after.progress)
        for i, span in enumerate(after.spans):
            was = before.spans[i] if i < len(before.spans) else None
            if span.ended is not None and not span.outcome and (was is None or was.ended is None):
                self.console.print(f"  [green]✓[/] {shown}: {escape(span.stage)} "
                                   f"{span.seconds(span.ended):.1f} s", highlight=False)
        if after.state == before.state:
            return
        if after.state == JobState.DONE:
            clips = plural(len(after.clips), "clip")
            self.console.print(f"[green]✓[/] {shown}: done, {clips}", highlight=False)
        elif after.state == JobState.FAILED:
            self.console.print(f"[red]✗ {shown}: {escape(str(after.error_stage))}: "
                               f"{escape(str(after.error_message))}[/]", highlight=False)
        elif event.kind is EventKind.JOB_RELEASED:
            self.console.print(f"  {shown}: {released_line(after.stopped_at)}", highlight=False)
        if after.finished:
            self._finished(job_id)

    def _finished(self, job_id: str) -> None:
        if job_id in self.finished:
            return
        self.finished.append(job_id)
        while self.follow_all and len(self.finished) > KEEP_FINISHED:
            old = self.finished.pop(0)
            self.progress.remove_task(self.tasks.pop(old))


def _stage_cell(stage: str) -> str:
    if stage in ("queued", "done", "failed", "cancelled"):
        return f"{state_text(stage)}{' ' * (10 - len(stage))}"
    return f"[cyan]{escape(stage):<10}[/]"


def header_line(stats: dict[str, Any]) -> str:
    jobs = stats.get("jobs") or {}
    throughput = stats.get("throughput") or {}
    ratio = throughput.get("processing_ratio")
    parts = [
        f"{jobs.get('running', 0)} running, {jobs.get('queued', 0)} queued",
        f"{throughput.get('media_minutes_per_hour', 0):.1f} media min/h",
        f"ratio {'-' if ratio is None else f'{ratio:.2f}'}",
        f"encoder {(stats.get('encoder') or {}).get('name', '?')}",
    ]
    if stats.get("paused"):
        parts.append("intake PAUSED")
    if stats.get("draining"):
        parts.append("draining")
    return "montaged: " + " · ".join(parts)


def print_event_json(event: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(event, separators=(",", ":"), default=str) + "\n")
    sys.stdout.flush()


def snapshot_event(job: dict[str, Any]) -> dict[str, Any]:
    """montagectl's own first line of ``watch ID --json``: the job as it stood when watching began."""
    return {"event": EventKind.JOB_SNAPSHOT, "job_id": job["id"], "at": time.time(), "data": {"job": job}}


async def wait_for_jobs(client: ControlClient, ids: list[str], board: Board | None) -> list[dict[str, Any]]:
    """Follow ``ids`` (after ``subscribe``) until each is done, failed or cancelled; their final jobs.

    Raises CtlExit(UNREACHABLE) when montaged goes away first.
    """
    pending = set(ids)
    heard = anyio.Event()

    async def recheck() -> None:
        nonlocal heard
        while pending:
            with anyio.move_on_after(RECHECK_SECONDS):
                await heard.wait()
                heard = anyio.Event()
                continue
            for job_id in list(pending):
                job = (await client.request("show", job_id=job_id))["job"]
                if job["state"] in TERMINAL:
                    pending.discard(job_id)
                    if board is not None:
                        board.add(job)
        tg.cancel_scope.cancel()

    async with anyio.create_task_group() as tg:
        tg.start_soon(recheck)
        async for event in client.events():
            job_id = event.get("job_id")
            if board is not None:
                board.apply(event)
            if job_id in pending:
                heard.set()
                if event.get("event") in TERMINAL_EVENTS:
                    pending.discard(job_id)
                    if not pending:
                        tg.cancel_scope.cancel()
                        break
        else:
            if pending:
                raise exits.CtlExit(exits.UNREACHABLE, gone_message(client, pending))
    return [(await client.request("show", job_id=job_id))["job"] for job_id in ids]


def gone_message(client: ControlClient, pending: set[str]) -> str:
    ids = ", ".join(sorted(pending))
    return (f"montaged at {client.path} closed the connection before job(s) {ids} ended (stopped or"
            " restarted?); they resume when it runs again: `montagectl watch ID`")


async def watch(client: ControlClient, job_id: str | None, console: Console, as_json: bool) -> int:
    """``watch``: every job until Ctrl-C, or one job until it ends (exit 0 done, 4 otherwise)."""
    await client.request("subscribe", job_id=job_id)  # before reading state: nothing falls between
    if job_id is not None:
        return await _watch_one(client, job_id, console, as_json)
    if as_json:
        async for event in client.events():
            print_event_json(event)
        raise exits.CtlExit(exits.UNREACHABLE, f"montaged at {client.path} closed the connection")
    running = (await client.request("list", state="running", limit=100))["jobs"]
    queued = (await client.request("list", state="queued", limit=100))["jobs"]
    stats = await client.request("stats")
    with Board(console, follow_all=True) as board:
        board.header.plain = header_line(stats)
        for job in [*reversed(queued), *reversed(running)]:
            board.add(job)
        async with anyio.create_task_group() as tg:
            async for event in client.events():
                if board.apply(event):
                    tg.start_soon(_fill_name, client, board, event["job_id"])
            tg.cancel_scope.cancel()
    raise exits.CtlExit(exits.UNREACHABLE, f"montaged at {client.path} closed the connection (stopped?)")


async def _fill_name(client: ControlClient, board: Board, job_id: str) -> None:
    """A job first heard of through an event without its spec: look its file name up once."""
    job = (await client.request("show", job_id=job_id))["job"]
    board.set_name(job_id, name(job))


async def _watch_one(client: ControlClient, job_id: str, console: Console, as_json: bool) -> int:
    job = (await client.request("show", job_id=job_id))["job"]
    if as_json:
        print_event_json(snapshot_event(job))
        if job["state"] not in TERMINAL:
            async for event in client.events():
                if event.get("job_id") != job_id:
                    continue  # daemon.stats: `watch` without ID shows them
                print_event_json(event)
                if event.get("event") in TERMINAL_EVENTS:
                    break
            else:
                raise exits.CtlExit(exits.UNREACHABLE, gone_message(client, {job_id}))
            job = (await client.request("show", job_id=job_id))["job"]
        return exits.OK if job["state"] == "done" else exits.JOB_FAILED
    if job["state"] not in TERMINAL:
        with Board(console, follow_all=False) as board:
            board.add(job)
            job = (await wait_for_jobs(client, [job_id], board))[0]
    print_outcome(console, job)
    return exits.OK if job["state"] == "done" else exits.JOB_FAILED
