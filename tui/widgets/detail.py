"""Job detail: where the time went (stage timings), what was heard (transcript excerpt), what came
out (each clip's score, reason, path and encoder) and, for a failed job, the error with its stage.

It draws the record the app already holds at once, then the daemon's ``show`` answer (which adds
the stored events); the app forwards live changes, so an open detail view follows a running job.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.screen import Screen
from textual.widgets import Footer, Static

from montaged.ctl.render import quality_line
from tui.client import ControlError, DaemonUnreachable, call
from tui.messages import JobDetailLoaded
from tui.widgets import format as fmt

STAGE_ORDER = ("probe", "transcribe", "diarize", "select", "frame", "render")
EVENTS_SHOWN = 8


def heading(title: str) -> Text:
    return Text(f"── {title} ", style="bold #5fafff")


def summary(job: dict[str, Any], now: float, started: float) -> Text:
    spec = job.get("spec") or {}
    state = str(job.get("state") or "?")
    text = Text.assemble(("Job ", "bold"), (job["id"], "bold"), "  ", fmt.state_text(state), "\n")
    text.append("file     ", style="dim").append(f"{spec.get('source', '?')}\n")
    text.append("profile  ", style="dim").append(
        f"{spec.get('profile', '?')} · from {spec.get('origin', '?')} · attempt {job.get('attempts', 0)}")
    if job.get("worker"):
        text.append(f" · {job['worker']}")
    text.append("\nstage    ", style="dim").append(
        f"{job.get('stage') or fmt.DASH} · {fmt.percent(job.get('progress'))} · elapsed "
        f"{fmt.duration(fmt.elapsed(job, now, started))}")
    if state == "running":
        text.append(f" · ETA {fmt.duration(fmt.eta(job, now, started))}")
    text.append(f" · cost {fmt.money(fmt.job_cost(job))}")
    return text


def error_block(job: dict[str, Any]) -> RenderableType | None:
    if not job.get("error_message") and job.get("state") != "failed":
        return None
    text = Text.assemble(("stage ", "dim"), (str(job.get("error_stage") or "?"), "bold #ff5f5f"),
                         ("  class ", "dim"), (str(job.get("error_class") or "?"), "bold #ff5f5f"), "\n")
    text.append(str(job.get("error_message") or "no message"), style="#ff5f5f")
    return Group(heading("error"), text)


def timings_block(result: dict[str, Any]) -> RenderableType | None:
    seconds: dict[str, float] = result.get("stage_seconds") or {}
    if not seconds:
        return None
    total = sum(seconds.values()) or 1.0
    cached = set(result.get("cached_stages") or [])
    table = Table(box=None, padding=(0, 1), show_header=False)
    table.add_column(no_wrap=True)
    table.add_column(justify="right", no_wrap=True)
    table.add_column(no_wrap=True)
    table.add_column(no_wrap=True)
    for stage in (*STAGE_ORDER, *sorted(set(seconds) - set(STAGE_ORDER))):
        if stage in seconds:
            s = float(seconds[stage])
            table.add_row(stage, f"{s:.2f}s", Text(fmt.bar(s / total, 20), style="#5fafff"),
                          Text("cached", style="dim") if stage in cached else "")
    wall, ratio = result.get("wall_seconds"), result.get("processing_ratio")
    foot = Text(f"wall {fmt.duration(wall)}", style="dim")
    if ratio is not None:
        foot.append(f" · {float(ratio):.2f}× media duration")
    return Group(heading("stage timings"), table, foot)


def transcript_block(result: dict[str, Any]) -> RenderableType | None:
    tr = result.get("transcript") or {}
    if not tr:
        return None
    title = f"transcript ({tr.get('engine', '?')} {tr.get('model', '')}, {tr.get('words', 0)} words)"
    return Group(heading(title), Text(f"“{tr.get('excerpt', '')}”", style="italic"))


def clips_block(result: dict[str, Any]) -> RenderableType | None:
    clips = result.get("clips")
    if clips is None or result.get("dry_run"):
        return None
    parts: list[RenderableType] = [heading(f"clips ({len(clips)})")]
    if not clips:
        parts.append(Text("no moment scored high enough for a clip", style="dim"))
    several = len({c.get("profile") for c in clips}) > 1
    for i, c in enumerate(clips, 1):
        if isinstance(reel := c.get("reel"), dict):  # the clips joined into one file
            line = Text.assemble(("reel ", "bold"), (f"{c.get('profile')} " if several else "", "dim"),
                                 f"{float(c.get('end', 0)):.1f}s, {len(reel.get('clips') or [])} clips, "
                                 f"{reel.get('transition')} {float(reel.get('seconds') or 0):.2f}s")
            line.append("\n   ").append(str(c.get("path", "?")), style="#5fafff")
            parts.append(line)
            continue
        score = c.get("score")
        span = f"{float(c.get('start', 0)):.1f}–{float(c.get('end', 0)):.1f}s"
        number = c["index"] + 1 if isinstance(c.get("index"), int) else i  # as in file names
        line = Text.assemble((f"#{number} ", "bold"), (f"{c.get('profile')} " if several else "", "dim"),
                             ("score ", "dim"),
                             (f"{score:.2f}" if isinstance(score, int | float) else fmt.DASH, "bold #5fd75f"),
                             "  ", span, ("  encoder ", "dim"), str(c.get("encoder", "?")))
        line.append("\n   ").append(str(c.get("reason") or fmt.DASH), style="italic")
        line.append("\n   ").append(str(c.get("path", "?")), style="#5fafff")
        if isinstance(quality := c.get("quality"), dict):
            measures, _, _ = quality_line({**quality, "warnings": []}).partition("  [")
            line.append("\n   ").append(measures, style="dim")
            if quality.get("flags"):
                flags = ", ".join(map(str, quality["flags"]))
                line.append("\n   ").append(f"[{flags}] ", style="bold yellow")
                line.append("; ".join(map(str, quality.get("warnings") or ())), style="yellow")
        parts.append(line)
    return Group(*parts)


def candidates_block(result: dict[str, Any]) -> RenderableType | None:
    """Every ranked moment, picked or not: the preview list (``e`` re-cuts one, e.g. ``r2``)."""
    rows = result.get("candidates") or []
    if not rows:
        return None
    table = Table(box=None, padding=(0, 1), show_header=True, header_style="dim")
    for col in ("rank", "range", "score", "clip", "reason"):
        table.add_column(col, no_wrap=col != "reason")
    for r in rows:
        clip = r.get("clip")
        span = f"{float(r.get('start', 0)):.1f}–{float(r.get('end', 0)):.1f}s"
        table.add_row(f"r{r.get('rank', '?')}", span, f"{float(r.get('score', 0)):.2f}",
                      fmt.DASH if clip is None else f"#{clip}", str(r.get("reason") or fmt.DASH))
    title = "preview: candidates" if result.get("dry_run") else "candidates"
    return Group(heading(f"{title} ({len(rows)}, best first · e re-cut)"), table)


def notes_block(result: dict[str, Any]) -> RenderableType | None:
    notes = result.get("notes") or []
    if not notes:
        return None
    return Group(heading("notes"), Text("\n").join(Text(f"• {n}") for n in notes))


def events_block(events: list[dict[str, Any]], now: float) -> RenderableType | None:
    if not events:
        return None
    text = Text()
    for e in events[-EVENTS_SHOWN:]:
        ago = fmt.duration(now - float(e.get("at") or now))
        data = e.get("data") or {}
        what = data.get("stage") or data.get("message") or ""
        text.append(f"{ago:>7} ago ", style="dim").append(str(e.get("kind", "?")), style="bold")
        text.append(f" {str(what)[:60]}\n" if what else "\n")
    text.rstrip()
    return Group(heading(f"events (last {min(len(events), EVENTS_SHOWN)} of {len(events)})"), text)


def render_job(job: dict[str, Any], events: list[dict[str, Any]], now: float, started: float) -> Group:
    result = job.get("result") or {}
    blocks = [summary(job, now, started), error_block(job), timings_block(result), transcript_block(result),
              clips_block(result), candidates_block(result), notes_block(result), events_block(events, now)]
    spaced: list[RenderableType] = []
    for block in blocks:
        if block is not None:
            spaced.extend([block, Text("")])
    return Group(*spaced[:-1])


class JobScreen(Screen[None]):
    """Details of one job; escape goes back to the table. Cancel and retry act on this job."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape,backspace", "app.pop_screen", "back")]

    def __init__(self, socket: Path, job: dict[str, Any], *, clock: Callable[[], float] = time.time,
                 started: float | None = None, fetch: bool = True) -> None:
        super().__init__()
        self.socket = socket
        self.job = job
        self.job_id: str = job["id"]
        self.events: list[dict[str, Any]] = []
        self.clock = clock
        self.started = started if started is not None else float(job.get("created_at") or 0.0)
        self.fetch = fetch

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="detail-scroll"):
            yield Static(id="detail")
        yield Footer()

    def on_mount(self) -> None:
        self.draw()
        if self.fetch:
            self.load()

    def draw(self) -> None:
        rendered = render_job(self.job, self.events, self.clock(), self.started)
        self.query_one("#detail", Static).update(rendered)

    def follow(self, job: dict[str, Any], started: float, *, reload: bool = False) -> None:
        """A newer record from the app's live feed; ``reload`` fetches the stored events too."""
        self.job, self.started = job, started
        self.draw()
        if reload and self.fetch:
            self.load()

    @work(exclusive=True, group="detail")
    async def load(self) -> None:
        try:
            shown = await call(self.socket, "show", job_id=self.job_id)
        except (ControlError, DaemonUnreachable) as e:
            self.notify(f"could not load job {fmt.short_id(self.job_id)}: {e}", severity="error")
            return
        self.post_message(JobDetailLoaded(shown["job"], list(shown.get("events") or [])))

    def on_job_detail_loaded(self, message: JobDetailLoaded) -> None:
        self.job, self.events = message.job, message.events
        self.draw()
