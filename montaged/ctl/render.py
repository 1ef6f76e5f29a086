"""Human-readable output of montagectl: tables and detail views drawn from the daemon's replies.

Only plain dicts go in (the shapes of ``Job.to_dict``, ``show``, ``stats``), so what a script gets
with ``--json`` and what a person reads here always come from the same reply.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from montaged import jobview
from montaged.control.protocol import EventKind
from montaged.ctl.candidates import print_candidates
from montaged.jobview import CANCELLED_HERE, FAILED_HERE, STOPPED_HERE, JobView, event_of
from montaged.model import STAGES

STATE_STYLE = {
    "queued": "yellow", "running": "cyan", "done": "green", "failed": "red", "cancelled": "magenta",
}


def emit_json(document: Any) -> None:
    """One JSON document on stdout, for scripts."""
    sys.stdout.write(json.dumps(document, indent=2, default=str) + "\n")
    sys.stdout.flush()


def duration(seconds: float) -> str:
    """Coarse, short: 42s, 5m, 3h, 2d."""
    seconds = max(0.0, seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size:.0f}{unit}"
    return f"{seconds:.0f}s"


def ago(at: float | None, now: float | None = None) -> str:
    return duration((now or time.time()) - at) if at else "-"


def clock(at: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(at)) if at else "-"


def plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def state_text(state: str) -> str:
    return f"[{STATE_STYLE.get(state, 'white')}]{state}[/]"


def name(job: dict[str, Any]) -> str:
    return Path(job.get("spec", {}).get("source", "?")).name


def clips_of(job: dict[str, Any]) -> list[dict[str, Any]]:
    clips: list[dict[str, Any]] = (job.get("result") or {}).get("clips") or []
    return clips


def flagged_clips(job: dict[str, Any]) -> int:
    """How many of a job's clips carry the ``quality`` flag."""
    return sum("quality" in ((c.get("quality") or {}).get("flags") or ()) for c in clips_of(job))


def clips_cell(job: dict[str, Any]) -> str:
    """How many clips, and how many of them carry the ``quality`` flag."""
    flagged = flagged_clips(job)
    return f"{len(clips_of(job))} ({flagged} quality)" if flagged else str(len(clips_of(job)))


def jobs_table(jobs: list[dict[str, Any]]) -> Table:
    table = Table(box=None, header_style="bold", pad_edge=False)
    for col, justify in (("ID", "left"), ("STATE", "left"), ("STAGE", "left"), ("PROGRESS", "right"),
                         ("FILE", "left"), ("CLIPS", "right"), ("AGE", "right")):
        table.add_column(col, justify=justify, no_wrap=col != "FILE")  # type: ignore[arg-type]
    now = time.time()
    for job in jobs:
        done = job["state"] == "done"
        stage = job.get("error_stage") or (job.get("stage") if job["state"] == "running" else None)
        table.add_row(
            job["id"],
            state_text(job["state"]),
            escape(stage or "-"),
            f"{job.get('progress', 0) * 100:.0f}%",
            escape(name(job)),
            clips_cell(job) if done else "-",
            ago(job.get("created_at"), now),
        )
    return table


def print_list(console: Console, jobs: list[dict[str, Any]]) -> None:
    if not jobs:
        console.print("no jobs")
        return
    console.print(jobs_table(jobs))


# What a release means for the job (montaged/stages/__init__.py): its next run starts at probe
# again (the file may have changed), every later stage takes its stored result instead of computing
# it, and render keeps the clips already finished. The stage it stopped at is only where it was.
RESUMES = ("its next run starts at probe again and reuses every stored stage result and finished clip,"
           " so the work resumes at the first stage without one")


def released_line(stopped_at: str | None) -> str:
    return f"stopped at {stopped_at} (montaged was stopping); {RESUMES}"


def _event_summary(event: dict[str, Any]) -> str:
    data = event.get("data") or {}
    kind = EventKind.parse(str(event.get("kind") or event.get("event") or ""))
    if kind is EventKind.JOB_SUBMITTED:
        return f"{data.get('origin', '?')}: {data.get('source', '')}"
    if kind is EventKind.JOB_CLAIMED:
        extra = f", took over from {data['took_over_from']}" if data.get("took_over_from") else ""
        return f"by {data.get('worker', '?')} (attempt {data.get('attempt', '?')}{extra})"
    if kind is EventKind.JOB_FAILED:
        return f"in {data.get('stage')}: {data.get('error_class')}: {data.get('message')}"
    if kind is EventKind.JOB_RELEASED:
        return f"stopped at {data.get('stopped_at')}"
    if kind is EventKind.JOB_CANCELLED:
        return f"was {data.get('was', '?')}"
    if kind is EventKind.JOB_DONE and isinstance(data.get("clips"), list):
        return plural(len(data["clips"]), "clip")
    shown = {k: v for k, v in data.items() if not isinstance(v, dict | list)}
    return " ".join(f"{k}={v}" for k, v in shown.items())


def print_job(console: Console, shown: dict[str, Any]) -> None:
    """``show``: the job's spec and state, stage timings, clips, error and stored events."""
    job, events = shown["job"], shown.get("events") or []
    spec, result = job.get("spec") or {}, job.get("result") or {}
    out = console.print
    out(f"[bold]job {job['id']}[/]  {state_text(job['state'])}", highlight=False)
    rows: list[tuple[str, str]] = [
        ("file", spec.get("source", "?")),
        ("profile", f"{spec.get('profile')} (from {spec.get('origin')})"),
        ("options", ", ".join(f"{k}={v}" for k, v in (spec.get("options") or {}).items()) or "-"),
        ("output dir", spec.get("output_dir") or "(daemon default)"),
        ("stage", f"{job.get('stage') or '-'}  {job.get('progress', 0) * 100:.0f}%"),
        ("created", f"{clock(job.get('created_at'))} ({ago(job.get('created_at'))} ago)"),
        ("updated", f"{clock(job.get('updated_at'))} ({ago(job.get('updated_at'))} ago)"),
        ("attempts", str(job.get("attempts", 0))),
        ("worker", job.get("worker") or "-"),
    ]
    if job.get("stopped_at") and job["state"] == "queued":
        rows.append(("stopped at", f"{job['stopped_at']}; {RESUMES}"))
    elif job.get("stopped_at"):
        rows.append(("stopped at", f"{job['stopped_at']} (in an earlier run)"))
    if job.get("content_hash"):
        rows.append(("content", job["content_hash"]))
    for key, value in rows:
        out(f"  {key:<11} {escape(str(value))}", highlight=False)

    if job.get("error_class") or job.get("error_message"):
        out("[bold red]error[/]")
        out(f"  in {escape(str(job.get('error_stage') or '?'))}: {escape(str(job.get('error_class')))}: "
            f"{escape(str(job.get('error_message')))}", highlight=False)

    timings = stage_timings(job, events)
    if timings:
        out("[bold]stages[/] (seconds)")
        cached = set(result.get("cached_stages") or [])
        for stage, seconds, note in timings:
            note = "cached" if stage in cached else note
            out(f"  {stage:<11} {seconds:8.2f}{f'  ({note})' if note else ''}", highlight=False)
        if result.get("wall_seconds") is not None:
            ratio = result.get("processing_ratio")
            out(f"  {'total':<11} {result['wall_seconds']:8.2f}  (ratio {ratio})", highlight=False)

    clips = clips_of(job)
    if job["state"] == "done" and not result.get("dry_run"):
        encoder = result.get("encoder") or "-"
        out(f"[bold]clips[/] ({len(clips)}, encoder {escape(str(encoder))})", highlight=False)
        several = len({c.get("profile") for c in clips}) > 1
        for clip in clips:
            print_clip(console, clip, profile=several)
    print_candidates(console, job)
    for note in result.get("notes") or []:
        out(f"  note: {escape(str(note))}", highlight=False)

    if events:
        out("[bold]events[/]")
        for event in events:
            out(f"  {clock(event.get('at'))}  {event.get('kind', '?'):<15} {escape(_event_summary(event))}",
                highlight=False)


def stage_timings(job: dict[str, Any], events: list[dict[str, Any]]) -> list[tuple[str, float, str]]:
    """(stage, seconds, note) in pipeline order.

    A finished job has measured ``stage_seconds``; a failed, cancelled or running one has only its
    stored events, folded by the shared reducer: each stage of the latest claim lasts from its
    ``job.stage`` event to the event that ended it (the stage still running is timed until now).
    """
    measured = (job.get("result") or {}).get("stage_seconds") or {}
    if measured:
        order = {s: i for i, s in enumerate(STAGES)}
        return [(s, float(v), "") for s, v in sorted(measured.items(), key=lambda kv: order.get(kv[0], 99))]
    view = jobview.fold(JobView(str(job.get("id", ""))), [e for e in map(event_of, events) if e is not None])
    out: list[tuple[str, float, str]] = []
    now = time.time()
    for span in view.spans:  # the latest claim's
        if span.ended is not None:
            out.append((span.stage, span.seconds(now), SPAN_NOTES.get(span.outcome, "")))
        elif job.get("state") == "running":
            out.append((span.stage, span.seconds(now), "running"))
    return out


SPAN_NOTES = {FAILED_HERE: "failed here", CANCELLED_HERE: "cancelled here", STOPPED_HERE: "stopped here"}


def print_reel(console: Console, clip: dict[str, Any]) -> None:
    """A reel: its file, transition and length, then each clip's source range and place in it."""
    reel = clip["reel"]
    profile = escape(f"[{clip['profile']}]") + "  " if clip.get("profile") else ""
    console.print(f"  reel  {profile}{float(clip.get('end', 0)):.1f} s, {len(reel.get('clips') or [])} clips,"
                  f" {escape(str(reel.get('transition')))} {float(reel.get('seconds') or 0):.2f} s,"
                  f" {escape(str(reel.get('order')))} order  {escape(str(clip.get('encoder', '-')))}  "
                  f"{escape(str(clip.get('path', '?')))}", highlight=False)
    for c in reel.get("clips") or []:
        console.print(f"      #{int(c['index']) + 1}  source {float(c['start']):7.1f}–{float(c['end']):.1f} s"
                      f"  at {float(c['place_start']):.2f}–{float(c['place_end']):.2f} s of the reel",
                      highlight=False, style="dim")
    if isinstance(q := clip.get("quality"), dict):
        console.print(f"      {escape(quality_line(q))}", highlight=False,
                      style="yellow" if q.get("flags") else "dim")


def print_clip(console: Console, clip: dict[str, Any], *, profile: bool = False) -> None:
    """One rendered clip (or reel); ``profile``: name its profile (a job of several)."""
    if isinstance(clip.get("reel"), dict):
        print_reel(console, clip)
        return
    length = float(clip.get("end", 0)) - float(clip.get("start", 0))
    score = clip.get("score")
    score_text = f"{score:.2f}" if isinstance(score, int | float) else "-"
    number = clip["index"] + 1 if isinstance(clip.get("index"), int) else "?"  # as in file names
    named = escape(f"[{clip['profile']}]") + "  " if profile and clip.get("profile") else ""
    console.print(f"  #{number}  {named}{clip.get('start', 0):7.1f}–{clip.get('end', 0):.1f} s "
                  f"({length:.1f} s)  score {score_text}  {escape(str(clip.get('encoder', '-')))}  "
                  f"{escape(str(clip.get('path', '?')))}", highlight=False)
    if clip.get("reason"):
        console.print(f"      {escape(str(clip['reason']))}", highlight=False, style="dim")
    if isinstance(q := clip.get("quality"), dict):
        console.print(f"      {escape(quality_line(q))}", highlight=False,
                      style="yellow" if q.get("flags") else "dim")


def quality_line(q: dict[str, Any]) -> str:
    """One line of a clip's quality measures; flagged clips say why."""

    def num(key: str, fmt: str) -> str:
        v = q.get(key)
        return format(v, fmt) if isinstance(v, int | float) else "-"

    line = (f"quality: words {num('mean_word_confidence', '.2f')} mean confidence, "
            f"{num('low_confidence_share', '.0%')} low; sound {num('loudness_lufs', '.1f')} LUFS, "
            f"peak {num('true_peak_dbtp', '.1f')} dBTP")
    if q.get("speaker_in_crop") is not None or q.get("face_confidence") is not None:
        line += (f"; faces {num('face_confidence', '.2f')} confidence, "
                 f"speaker in crop {num('speaker_in_crop', '.0%')}")
    if q.get("ssim") is not None:
        line += f"; encode SSIM {num('ssim', '.3f')}"
    if q.get("warnings"):
        line += "  [" + ", ".join(map(str, q.get("flags") or [])) + "] " + "; ".join(map(str, q["warnings"]))
    return line


def print_outcome(console: Console, job: dict[str, Any]) -> None:
    """One finished job after ``submit --wait``: its clips, or why it has none."""
    state = job["state"]
    if state == "done" and (job.get("result") or {}).get("dry_run"):
        console.print(f"[green]✓[/] {escape(name(job))}  job {job['id']}: preview (nothing rendered)",
                      highlight=False)
        print_candidates(console, job)
    elif state == "done":
        result = job.get("result") or {}
        clips = clips_of(job)
        console.print(f"[green]✓[/] {escape(name(job))}  job {job['id']}: {plural(len(clips), 'clip')} in "
                      f"{result.get('wall_seconds', 0):.1f} s (ratio {result.get('processing_ratio')})",
                      highlight=False)
        several = len({c.get("profile") for c in clips}) > 1
        for clip in clips:
            print_clip(console, clip, profile=several)
        if result.get("cached_stages"):  # a re-cut shows here that nothing was transcribed again
            console.print(f"  from cache: {', '.join(result['cached_stages'])}", highlight=False)
    elif state == "failed":
        why = f"failed in {job.get('error_stage')}: {job.get('error_class')}: {job.get('error_message')}"
        console.print(f"[red]✗[/] {escape(name(job))}  job {job['id']}: {escape(why)}", highlight=False)
    else:
        console.print(f"[red]✗[/] {escape(name(job))}  job {job['id']}: {state}", highlight=False)


def print_stats(console: Console, s: dict[str, Any]) -> None:
    """``stats``: jobs by state, queues, pools, encoder, cache, throughput, budget."""
    out = console.print
    flags = [x for x in ("paused" if s.get("paused") else "", "draining" if s.get("draining") else "") if x]
    up = duration(float(s.get("uptime", 0)))
    out(f"[bold]montaged {s.get('version', '?')}[/] on {escape(str(s.get('worker', '?')))}, up {up}"
        + (f"  [yellow]{', '.join(flags)}[/]" if flags else ""), highlight=False)
    jobs = s.get("jobs") or {}
    out("[bold]jobs[/]   " + "  ".join(f"{state_text(k)} {v}" for k, v in jobs.items()), highlight=False)
    if s.get("in_flight"):
        out(f"  in flight: {', '.join(s['in_flight'])}", highlight=False)

    queues = s.get("queues") or {}
    if queues:
        table = Table("STAGE", "QUEUED", "CAPACITY", "BUSY", box=None, header_style="bold", pad_edge=False,
                      title="queues", title_justify="left", title_style="bold")
        for stage, q in queues.items():
            table.add_row(stage, str(q.get("depth", 0)), str(q.get("capacity", 0)), str(q.get("busy", 0)))
        out(table)

    encoder = s.get("encoder") or {}
    kind = "hardware" if encoder.get("hardware") else "software"
    out(f"[bold]encoder[/]  {encoder.get('name', '?')} ({kind})", highlight=False)
    for pool, p in (s.get("pools") or {}).items():
        workers = plural(int(p.get("workers") or 0), "worker")
        out(f"[bold]{pool}[/]  model {p.get('model')}, {workers} on {p.get('device')}",
            highlight=False)
    cache = s.get("cache") or {}
    out(f"[bold]cache[/]    hit ratio {cache.get('hit_ratio', 0) * 100:.0f}% ({cache.get('hits', 0)} hits, "
        f"{cache.get('misses', 0)} misses)", highlight=False)
    t = s.get("throughput") or {}
    ratio = t.get("processing_ratio")
    ratio_text = "-" if ratio is None else f"{ratio:.2f}"
    out(f"[bold]throughput[/]  {t.get('media_minutes_per_hour', 0):.1f} media min/h, processing ratio "
        f"{ratio_text}, {t.get('jobs_finished', 0)} jobs finished", highlight=False)

    cloud = s.get("cloud") or {}
    if cloud.get("enabled"):
        state = f"[red]blocked: {cloud.get('reason')}[/]" if cloud.get("blocked") else "[green]on[/]"
        out(f"[bold]cloud ASR[/]  {state}", highlight=False)
    budget = s.get("budget") or []
    if budget:
        table = Table("PERIOD", "SPENT", "RESERVED", "REMAINING", "CAP", box=None, header_style="bold",
                      pad_edge=False, title="budget (USD)", title_justify="left", title_style="bold")
        for row in budget:
            cap = row.get("cap")
            table.add_row(str(row.get("period")), *(f"{row.get(k, 0):.4f}" for k in ("spent", "reserved",
                          "remaining")), "-" if cap is None else f"{cap:.2f}")
        out(table)
    else:
        caps = s.get("caps") or {}
        out("[bold]budget[/]   nothing spent; caps " + ", ".join(
            f"{k} {'-' if v is None else v}" for k, v in caps.items()), highlight=False)
    health = s.get("health") or {}
    shown = {k: "n/a" if v is None else "ok" if v else "[red]down[/]" for k, v in health.items()}
    out("[bold]health[/]   " + ", ".join(f"{k} {v}" for k, v in shown.items()), highlight=False)
