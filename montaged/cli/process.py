"""``montaged process FILE… -o DIR``: the daemon's pipeline, once, in the foreground.

The same stages and store records as daemon jobs (origin ``cli``), with a progress bar per file
showing its current stage, and a summary of the clips at the end. Ctrl-C cancels the jobs.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

from montaged.cli.run import expected_failure
from montaged.config import Secrets, Settings, load
from montaged.control.protocol import EventKind
from montaged.ctl.candidates import print_candidates
from montaged.ctl.parser import add_render_options, render_options
from montaged.errors import ConfigError, MontageError
from montaged.events import EventBus
from montaged.intake import Submitter
from montaged.logging import setup
from montaged.model import Job, JobSpec, JobState
from montaged.options import DRY_RUN_STAGE
from montaged.pipeline import Pipeline
from montaged.runtime import connect_store, open_resources
from montaged.stages import default_stages


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "process", help="process files now, in the foreground, and print where the clips are",
        description="Run the whole pipeline (probe, transcribe, diarize, select, frame, render) on each"
        " FILE and write the clips, sidecar JSON and SRT captions to DIR.",
    )
    p.add_argument("files", nargs="+", type=Path, metavar="FILE")
    p.add_argument("--output", "-o", type=Path, metavar="DIR",
                   help="folder for the clips (required unless --dry-run)")
    add_render_options(p, default_profile="vertical")
    p.add_argument("--max-clips", type=int, metavar="N", help="at most N clips per file")
    p.add_argument("--speakers", type=int, metavar="N", help="number of speakers, when known")
    p.add_argument("--language", "-l", metavar="CODE", help="spoken language (en, de…; whisper.language)")
    p.add_argument("--min-seconds", type=float, metavar="S", help="shortest clip (select.min_seconds)")
    p.add_argument("--max-seconds", type=float, metavar="S", help="longest clip (select.max_seconds)")
    p.add_argument("--model", help="Whisper model for this run (default: whisper.model)")
    p.add_argument("--range", "-r", dest="ranges", type=time_range, action="append", metavar="START-END",
                   help="render exactly this range (seconds, e.g. 12.5-58.0; repeat for more) instead of the"
                        " ranked picks; edges inside a word move to the nearer word edge unless --exact")
    p.add_argument("--exact", action="store_true", help="with --range: cut at exactly the given times")
    p.add_argument("--dry-run", "-n", action="store_true",
                   help="preview: run up to selection only and print the ranked candidates (range, score,"
                        " reason, text, speakers); renders nothing")
    p.add_argument("--json", action="store_true", help="print the results as JSON on stdout")
    p.add_argument("--verbose", "-v", action="store_true", help="log every stage (stderr)")
    p.set_defaults(func=run)


def time_range(text: str) -> tuple[float, float]:
    """``START-END`` in seconds (``12.5-58``) for ``--range``."""
    start, sep, end = text.partition("-")
    try:
        if not sep:
            raise ValueError
        a, b = float(start), float(end)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: use START-END in seconds, e.g. 12.5-58.0") from None
    if not 0 <= a < b:
        raise argparse.ArgumentTypeError(f"{text!r}: the start must be 0 or more and before the end")
    return a, b


def run(args: argparse.Namespace) -> int:
    try:
        settings = load(args.config)
        if args.model:
            whisper = settings.whisper.model_dump() | {"model": args.model}
            settings.whisper = settings.whisper.model_validate(whisper)
    except ConfigError as e:
        print(f"montaged process: configuration errors:\n{e}", file=sys.stderr)
        return 1
    profile, options = render_options(args)
    profile = profile or "vertical"
    if unknown := [p for p in [profile, *options.get("profiles", [])] if p not in settings.profiles]:
        print(f"montaged process: unknown profile {unknown[0]!r}; configured: "
              f"{', '.join(sorted(settings.profiles))}", file=sys.stderr)
        return 2
    setup(settings.log.model_copy(update={"level": "info" if args.verbose else "warning"}))
    if args.output is None and not args.dry_run:
        print("montaged process: -o DIR is required (where the clips go), unless --dry-run",
              file=sys.stderr)
        return 2
    if args.dry_run:
        options["stop_after"] = DRY_RUN_STAGE
    if args.ranges:
        options["ranges"] = [list(r) for r in args.ranges]
        options["exact"] = args.exact
    if args.max_clips is not None:
        options["max_clips"] = args.max_clips
    if args.speakers is not None:
        options["speakers"] = args.speakers
    for key in ("language", "min_seconds", "max_seconds"):
        if getattr(args, key) is not None:
            options[key] = getattr(args, key)
    out = (args.output or Path.cwd()).expanduser().resolve()
    try:
        jobs, refused = anyio.run(_process, settings, [f.expanduser().absolute() for f in args.files], out,
                         profile, options, args.json)
    except KeyboardInterrupt:
        print("montaged process: interrupted; the jobs were cancelled", file=sys.stderr)
        return 130
    except BaseException as e:
        known = expected_failure(e)
        if known is None:
            raise
        print(f"montaged process: {known}", file=sys.stderr)
        return 1
    return 0 if jobs and not refused and all(j.state == JobState.DONE for j in jobs) else 1


async def _process(settings: Settings, files: list[Path], out: Path, profile: str,
                   options: dict[str, Any], as_json: bool) -> tuple[list[Job], int]:
    # The operator names the files on the command line: any readable file may be processed, so the
    # stages' checks at use (paths.input_roots, meant for the daemon's doors) accept the same "/".
    paths = settings.paths.model_copy(update={"input_roots": [Path("/")]})
    settings = settings.model_copy(update={"paths": paths})
    secrets = Secrets(config=settings.secrets)
    store = await connect_store(settings, secrets, wait=False)
    bus = EventBus()
    console = Console(stderr=True)
    try:
        submitter = Submitter(store, bus, input_roots=settings.paths.input_roots, profiles=settings.profiles)
        ids: list[str] = []
        failed_submit = 0
        for f in files:
            try:
                job = await submitter.submit(JobSpec(source=str(f), profile=profile, origin="cli",
                                                     options=options, output_dir=str(out)))
                ids.append(job.id)
            except MontageError as e:
                failed_submit += 1
                console.print(f"[red]✗[/] {e}")
        if not ids:
            return [], failed_submit
        console.print(f"[dim]starting: loading models (whisper {settings.whisper.model})…[/]")
        async with open_resources(settings, store, secrets) as res:
            pipeline = Pipeline(settings, store, bus, res, default_stages(), only=ids)
            async with anyio.create_task_group() as tg:
                tg.start_soon(_cancel_on_signal, store, pipeline, ids, tg.cancel_scope)
                with _Bars(console, ids, files) as bars:
                    tg.start_soon(bars.follow, bus)
                    await anyio.lowlevel.checkpoint()
                    await pipeline.run()
                tg.cancel_scope.cancel()
        jobs = [j for j in [await store.get(i) for i in ids] if j is not None]
        _summary(console, jobs, as_json)
        return jobs, failed_submit
    finally:
        with anyio.CancelScope(shield=True):
            await store.close()


async def _cancel_on_signal(store: Any, pipeline: Pipeline, ids: list[str], scope: anyio.CancelScope) -> None:
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for _ in signals:
            for job_id in ids:
                await store.cancel(job_id)
                pipeline.cancel_job(job_id)
            scope.cancel()
            raise KeyboardInterrupt


class _Bars:
    """One progress bar per file: its current stage and overall progress; a line per finished stage."""

    def __init__(self, console: Console, ids: list[str], files: list[Path]) -> None:
        self.console = console
        self.names = {i: f.name for i, f in zip(ids, files, strict=False)}
        self.progress = Progress(
            TextColumn("{task.fields[name]}", justify="left"),
            TextColumn("[cyan]{task.fields[stage]:<10}"),
            BarColumn(),
            TextColumn("{task.percentage:>3.0f}%"),
            TimeElapsedColumn(),
            console=console,
            transient=False,
        )
        self.tasks: dict[str, TaskID] = {}
        self.stage_started: dict[str, tuple[str, float]] = {}

    def __enter__(self) -> _Bars:
        self.progress.start()
        for job_id, name in self.names.items():
            self.tasks[job_id] = self.progress.add_task("", total=1.0, name=name[:40], stage="queued")
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    async def follow(self, bus: EventBus) -> None:
        async with bus.subscribe() as events:
            async for event in events:
                task = self.tasks.get(event.job_id)
                if task is None:
                    continue
                data = event.data
                if event.kind is EventKind.JOB_STAGE:
                    self._stage_done(event.job_id)
                    self.stage_started[event.job_id] = (data["stage"], time.monotonic())
                    self.progress.update(task, stage=data["stage"], completed=data.get("progress", 0))
                elif event.kind is EventKind.JOB_PROGRESS:
                    self.progress.update(task, completed=data["progress"])
                elif event.kind is EventKind.JOB_DONE:
                    self._stage_done(event.job_id)
                    self.progress.update(task, stage="done", completed=1.0)
                elif event.kind is EventKind.JOB_FAILED:
                    self.progress.update(task, stage="[red]failed")
                    self.progress.console.print(f"[red]✗ {self.names[event.job_id]}: {data['stage']}: "
                                                f"{data['message']}")

    def _stage_done(self, job_id: str) -> None:
        if job_id in self.stage_started:
            stage, t0 = self.stage_started.pop(job_id)
            self.progress.console.print(
                f"  [green]✓[/] {self.names[job_id][:40]}: {stage} {time.monotonic() - t0:.1f} s")


def _summary(console: Console, jobs: list[Job], as_json: bool) -> None:
    if as_json:
        print(json.dumps([j.to_dict() for j in jobs], indent=2, default=str))
        return
    for job in jobs:
        name = Path(job.spec.source).name
        if job.state != JobState.DONE:
            console.print(f"[red]✗ {name}[/]: {job.state} in {job.error_stage}: {job.error_message}")
            continue
        result = job.result
        if result.get("dry_run"):
            console.print(f"[green]✓ {name}[/]: preview of job {job.id} (nothing rendered)")
            print_candidates(Console(highlight=False, soft_wrap=True), job.to_dict())
            continue
        ratio = result.get("processing_ratio")
        console.print(f"[green]✓ {name}[/]: {len(result.get('clips', []))} clips in "
                      f"{result.get('wall_seconds', 0):.1f} s (ratio {ratio}), job {job.id}")
        if result.get("cached_stages"):
            console.print(f"    from cache: {', '.join(result['cached_stages'])}")
        for clip in result.get("clips", []):
            print(clip["path"])
            if reel := clip.get("reel"):
                console.print(f"    reel of {len(reel['clips'])} clips, {clip['end'] - clip['start']:.1f} s,"
                              f" {reel['transition']} {reel['seconds']:.2f} s, {reel['order']} order",
                              highlight=False)
                continue
            console.print(f"    {clip['end'] - clip['start']:.1f} s, score {clip['score']:.2f}: "
                          f"{clip['reason']}", highlight=False)
