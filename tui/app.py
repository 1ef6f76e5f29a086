"""montage-tui: the daemon's jobs, budget and throughput, live from its control socket.

Layout (fits 80×24): a status line; then either the "unreachable" panel or three tabs (Jobs,
Budget, Throughput); then the key footer. One worker, ``watch_daemon``, owns the event feed and
posts messages (tui/messages.py); the handlers here apply them to a ``JobBook`` and redraw. Every
action opens its own short connection and reports the daemon's answer, or its error, as a toast.
"""

from __future__ import annotations

import functools
import os
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import structlog
from textual import work
from textual.app import App, ComposeResult, SystemCommand
from textual.binding import Binding, BindingType
from textual.screen import ModalScreen, Screen
from textual.widgets import ContentSwitcher, DataTable, Footer, TabbedContent, TabPane

from montaged.control.protocol import TERMINAL_EVENTS, EventKind
from tui.client import LIST_LIMIT, RETRY_SECONDS, ControlError, DaemonUnreachable, call, run_feed
from tui.messages import (
    Connected,
    IntakeChanged,
    JobChanged,
    JobEventReceived,
    JobProgress,
    JobsLoaded,
    StatsReceived,
    Unreachable,
)
from tui.state import FILTERS, STATES, JobBook
from tui.widgets import format as fmt
from tui.widgets.budget import BudgetPanel
from tui.widgets.confirm import ConfirmScreen
from tui.widgets.detail import JobScreen
from tui.widgets.jobs import FilterBar, JobTable
from tui.widgets.offline import OfflinePanel
from tui.widgets.recut import RecutScreen
from tui.widgets.status import StatusLine
from tui.widgets.submit import SubmitScreen
from tui.widgets.throughput import ThroughputPanel

log = structlog.get_logger(__name__)

# events after which the job's stored record (and its budget) differ beyond what the event says
RELOAD_EVENTS = frozenset({*TERMINAL_EVENTS, EventKind.JOB_RELEASED})
JOB_ACTIONS = {"cancel_job", "retry_job", "recut_job"}
MAIN_ONLY_ACTIONS = {"cycle_filter", "open_job", "tab"}
OUR_ACTIONS = {"submit", "preview", "toggle_intake", *JOB_ACTIONS, *MAIN_ONLY_ACTIONS}


_M = TypeVar("_M")


def _while_shown(handler: Callable[[MontageApp, _M], None]) -> Callable[[MontageApp, _M], None]:
    """Feed messages can arrive while the app is closing; with no screen left they are dropped."""

    @functools.wraps(handler)
    def wrapper(self: MontageApp, message: _M) -> None:
        if self.screen_stack:
            handler(self, message)

    return wrapper


class MontageApp(App[None]):
    """The TUI. Build it with :func:`make_app`."""

    CSS_PATH = "montage.tcss"
    TITLE = "montage"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("s", "submit", "submit"),
        Binding("c", "cancel_job", "cancel"),
        Binding("r", "retry_job", "retry"),
        Binding("p", "toggle_intake", "pause/resume"),
        Binding("f", "cycle_filter", "filter"),
        Binding("v", "preview", "preview", show=False),
        Binding("e", "recut_job", "re-cut", show=False),
        Binding("1", "tab('jobs')", "jobs", show=False),
        Binding("2", "tab('budget')", "budget", show=False),
        Binding("3", "tab('throughput')", "throughput", show=False),
        Binding("q", "quit", "quit"),
    ]

    def __init__(self, socket: Path, *, clock: Callable[[], float] = time.time, connect: bool = True,
                 retry_seconds: float = RETRY_SECONDS) -> None:
        super().__init__()
        self.socket_path = socket
        self.clock = clock
        self.connect = connect
        self.retry_seconds = retry_seconds
        self.book = JobBook()
        self.last_stats: dict[str, Any] | None = None
        self.online = False
        self.worker_name = ""
        self.state_filter: str | None = None
        self._lost = False  # we had a daemon and lost it: say so when it is back
        self._mismatch = 0  # consecutive stats whose job counts disagree with ours
        self._fetching: set[str] = set()
        self._submit_start = os.getcwd().rstrip("/") + "/"

    # ---- layout ------------------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        yield StatusLine(id="status")
        with ContentSwitcher(initial="offline", id="main"):
            yield OfflinePanel(f"Connecting to montaged at {self.socket_path}…", id="offline")
            with TabbedContent(id="dashboard", initial="jobs"):
                with TabPane("1 Jobs", id="jobs"):
                    yield FilterBar(id="filter")
                    yield JobTable(id="table")
                with TabPane("2 Budget", id="budget"):
                    yield BudgetPanel(id="budget-panel")
                with TabPane("3 Throughput", id="throughput"):
                    yield ThroughputPanel(id="throughput-panel")
        yield Footer()

    def on_mount(self) -> None:
        self.draw_status()
        self.home.query_one(FilterBar).show(self.book.counts(), self.state_filter)
        self.set_interval(1.0, self.tick)
        if self.connect:
            self.watch_daemon()

    @work(exclusive=True, group="daemon-feed")
    async def watch_daemon(self) -> None:
        """The only reader of the event feed; runs (and reconnects) for the app's lifetime."""
        await run_feed(self.socket_path, self.post_message, retry_seconds=self.retry_seconds)

    # ---- drawing -----------------------------------------------------------------------------

    @property
    def home(self) -> Screen[Any]:
        """The main screen (the app's own queries would search whatever screen is on top)."""
        return self.screen_stack[0]

    @property
    def table(self) -> JobTable:
        return self.home.query_one(JobTable)

    def selected_job(self) -> dict[str, Any] | None:
        """The job on an open detail screen, else the one under the table cursor."""
        for screen in reversed(self.screen_stack):
            if isinstance(screen, JobScreen):
                return self.book.get(screen.job_id) or screen.job
        job_id = self.table.selected_id
        return self.book.get(job_id) if job_id else None

    def draw_status(self) -> None:
        status = self.home.query_one(StatusLine)
        status.show(self.online, self.worker_name, self.last_stats, self.book.counts())

    def draw_budget(self) -> None:
        self.home.query_one(BudgetPanel).show(self.last_stats, self.selected_job())

    def redraw(self) -> None:
        """Everything that depends on the job list (after a structural change)."""
        self.table.show(self.book, self.state_filter, self.clock())
        self.home.query_one(FilterBar).show(self.book.counts(), self.state_filter)
        self.draw_status()
        self.draw_budget()

    def job_changed(self, job_id: str, *, structural: bool, reload_detail: bool = False) -> None:
        job = self.book.get(job_id)
        if job is None:
            return
        if structural or self.state_filter is not None or not self.table.patch(job, self.book, self.clock()):
            self.redraw()
        else:
            self.home.query_one(FilterBar).show(self.book.counts(), self.state_filter)
            self.draw_status()
        for screen in self.screen_stack:
            if isinstance(screen, JobScreen) and screen.job_id == job_id:
                screen.follow(job, self.book.started(job), reload=reload_detail)

    def tick(self) -> None:
        if not self.screen_stack:
            return
        now = self.clock()
        self.table.tick(self.book, now)
        for screen in self.screen_stack:
            if isinstance(screen, JobScreen) and screen.job.get("state") in ("running", "queued"):
                screen.draw()

    # ---- feed messages -----------------------------------------------------------------------

    @_while_shown
    def on_connected(self, message: Connected) -> None:
        self.online, self.worker_name = True, message.worker
        self.sub_title = f"{message.worker} · montaged {message.version}"
        self.home.query_one(ContentSwitcher).current = "dashboard"
        if self.screen is self.screen_stack[0]:
            self.table.focus()
        if self._lost:
            self.notify(f"reconnected to montaged at {message.socket}", title="montaged is back")
        self._lost = False
        self.draw_status()

    @_while_shown
    def on_unreachable(self, message: Unreachable) -> None:
        self._lost = self._lost or message.was_connected
        self.online = False
        self.home.query_one(OfflinePanel).show(
            message.socket, message.reason, message.attempt, self.retry_seconds, message.was_connected
        )
        self.home.query_one(ContentSwitcher).current = "offline"
        self.draw_status()

    @_while_shown
    def on_jobs_loaded(self, message: JobsLoaded) -> None:
        self.book.load(message.jobs)
        self._mismatch = 0
        self.redraw()
        for screen in self.screen_stack:
            if isinstance(screen, JobScreen) and (job := self.book.get(screen.job_id)) is not None:
                screen.follow(job, self.book.started(job))

    @_while_shown
    def on_job_changed(self, message: JobChanged) -> None:
        job_id = message.job["id"]
        self._fetching.discard(job_id)
        known = job_id in self.book.jobs
        self.book.put(message.job)
        self.job_changed(job_id, structural=not known, reload_detail=True)

    @_while_shown
    def on_job_event_received(self, message: JobEventReceived) -> None:
        event = message.event
        if not self.book.apply(event):
            self.fetch_job(event.job_id)
            return
        self.job_changed(event.job_id, structural=False, reload_detail=event.kind in RELOAD_EVENTS)
        if event.kind in RELOAD_EVENTS:
            self.draw_budget()

    @_while_shown
    def on_job_progress(self, message: JobProgress) -> None:
        if not self.book.progress(message.job_id, message.stage, message.progress, message.at):
            self.fetch_job(message.job_id)
            return
        self.job_changed(message.job_id, structural=False)

    @_while_shown
    def on_stats_received(self, message: StatsReceived) -> None:
        self.last_stats = message.stats
        self.draw_status()
        self.draw_budget()
        self.home.query_one(ThroughputPanel).show(message.stats)
        self.check_counts(message.stats.get("jobs") or {})

    @_while_shown
    def on_intake_changed(self, message: IntakeChanged) -> None:
        if self.last_stats is not None:
            self.last_stats = {**self.last_stats, "paused": message.paused}
        self.draw_status()

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        self.draw_budget()  # the budget's job row follows the cursor

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        self.action_open_job()

    # ---- keeping in step with the store ------------------------------------------------------

    def check_counts(self, counts: dict[str, int]) -> None:
        """Events may be dropped when we fall far behind; two stats in a row whose job counts
        disagree with ours mean we missed something, so ask for the list again."""
        if not self.connect or not counts or sum(counts.values()) >= LIST_LIMIT:
            return
        if {s: int(counts.get(s, 0)) for s in STATES} == self.book.counts():
            self._mismatch = 0
            return
        self._mismatch += 1
        if self._mismatch >= 2:
            self._mismatch = 0
            self.resync()

    @work(exclusive=True, group="resync")
    async def resync(self) -> None:
        try:
            listed = await call(self.socket_path, "list", limit=LIST_LIMIT)
        except (ControlError, DaemonUnreachable) as e:
            log.info("resync failed", error=str(e))  # the feed reports an absent daemon itself
            return
        self.post_message(JobsLoaded(list(listed.get("jobs", []))))

    @work(group="fetch")
    async def fetch_job(self, job_id: str) -> None:
        """A job we have not seen (submitted before a resync, or beyond the list limit)."""
        if not self.connect or job_id in self._fetching:
            return
        self._fetching.add(job_id)
        try:
            shown = await call(self.socket_path, "show", job_id=job_id)
        except (ControlError, DaemonUnreachable) as e:
            self._fetching.discard(job_id)
            log.info("fetch failed", job_id=job_id, error=str(e))
            return
        self.post_message(JobChanged(shown["job"]))

    # ---- actions -----------------------------------------------------------------------------

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """Keys act on the dashboard and the detail view, never behind a dialog."""
        if action not in OUR_ACTIONS:
            return True
        if isinstance(self.screen, ModalScreen):
            return False
        return not (action in MAIN_ONLY_ACTIONS and self.screen is not self.screen_stack[0])

    @work(group="actions")
    async def request(self, op: str, done: str, **fields: Any) -> None:
        """Send one action; confirm with ``done`` or show the daemon's error."""
        try:
            result = await call(self.socket_path, op, **fields)
        except ControlError as e:
            self.notify(e.message, title=f"montaged refused {op} [{e.code}]", severity="error", timeout=10)
            return
        except DaemonUnreachable as e:
            self.notify(str(e), title="montaged is unreachable", severity="error", timeout=10)
            return
        if op in ("cancel", "retry") and isinstance(result, dict):
            self.post_message(JobChanged(result))
        if op in ("pause", "resume") and isinstance(result, dict):
            self.post_message(IntakeChanged(bool(result.get("paused"))))
        self.notify(done, title=f"montaged: {op} done")

    def action_submit(self) -> None:
        def submitted(job: dict[str, Any] | None) -> None:
            if job is None:
                return
            self._submit_start = os.path.dirname(str(job["spec"]["source"])).rstrip("/") + "/"
            self.post_message(JobChanged(job))
            self.notify(f"job {fmt.short_id(job['id'])} queued: {fmt.file_name(job)}",
                        title="montaged: submitted")

        self.push_screen(SubmitScreen(self.socket_path, self._submit_start), submitted)

    def action_preview(self) -> None:
        def submitted(job: dict[str, Any] | None) -> None:
            if job is not None:
                self.post_message(JobChanged(job))
                self.notify(f"job {fmt.short_id(job['id'])} previews {fmt.file_name(job)}: its candidates"
                            " show in the job's details when it is done", title="montaged: preview queued")

        self.push_screen(SubmitScreen(self.socket_path, self._submit_start, preview=True), submitted)

    def action_recut_job(self) -> None:
        job = self._job_or_warn("re-cut")
        if job is None:
            return

        def submitted(new: dict[str, Any] | None) -> None:
            if new is not None:
                self.post_message(JobChanged(new))
                self.notify(f"job {fmt.short_id(new['id'])} re-cuts job {fmt.short_id(job['id'])}; the"
                            " earlier clips stay", title="montaged: re-cut queued")

        self.push_screen(RecutScreen(self.socket_path, job), submitted)

    def _job_or_warn(self, verb: str) -> dict[str, Any] | None:
        job = self.selected_job()
        if job is None:
            self.notify(f"no job selected to {verb}; pick one in the table first", severity="warning")
        return job

    def action_cancel_job(self) -> None:
        job = self._job_or_warn("cancel")
        if job is None:
            return
        short, name = fmt.short_id(job["id"]), fmt.file_name(job)

        def answered(yes: bool | None) -> None:
            if yes:
                self.request("cancel", f"job {short} cancelled ({name})", job_id=job["id"])

        where = f" in {job['stage']}" if job.get("state") == "running" and job.get("stage") else ""
        self.push_screen(ConfirmScreen(f"Cancel job {short} ({name})?\nIt is {job.get('state')}{where}."),
                         answered)

    def action_retry_job(self) -> None:
        job = self._job_or_warn("retry")
        if job is not None:
            self.request("retry", f"job {fmt.short_id(job['id'])} queued again ({fmt.file_name(job)})",
                         job_id=job["id"])

    def action_toggle_intake(self) -> None:
        if (self.last_stats or {}).get("paused"):
            self.action_resume_intake()
        else:
            self.action_pause_intake()

    def action_pause_intake(self) -> None:
        self.request("pause", "intake paused: running jobs go on, queued ones wait")

    def action_resume_intake(self) -> None:
        self.request("resume", "intake resumed")

    def action_cycle_filter(self) -> None:
        self.set_filter(FILTERS[(FILTERS.index(self.state_filter) + 1) % len(FILTERS)])

    def set_filter(self, state: str | None) -> None:
        self.state_filter = state
        self.home.query_one(TabbedContent).active = "jobs"
        self.redraw()

    def action_open_job(self) -> None:
        job = self._job_or_warn("show")
        if job is not None:
            self.push_screen(JobScreen(self.socket_path, job, clock=self.clock,
                                       started=self.book.started(job), fetch=self.connect))

    def action_tab(self, name: str) -> None:
        self.home.query_one(TabbedContent).active = name

    def action_reconnect(self) -> None:
        if self.connect:
            self.watch_daemon()  # exclusive: replaces the running feed

    def get_system_commands(self, screen: Screen[Any]) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        yield SystemCommand("Submit a file", "Send a media file to the daemon (path with completion)",
                            self.action_submit)
        yield SystemCommand("Preview a file", "Dry run: rank the candidates, render nothing (v)",
                            self.action_preview)
        yield SystemCommand("Re-cut job", "Render a clip, candidate or range of the selected job again (e)",
                            self.action_recut_job)
        yield SystemCommand("Cancel job", "Cancel the selected job (asks first)", self.action_cancel_job)
        yield SystemCommand("Retry job", "Queue the selected failed or cancelled job again",
                            self.action_retry_job)
        yield SystemCommand("Pause intake", "Queued jobs wait; running jobs go on", self.action_pause_intake)
        yield SystemCommand("Resume intake", "Start taking queued jobs again", self.action_resume_intake)
        yield SystemCommand("Job details", "Stage timings, transcript, clips and errors of the selected job",
                            self.action_open_job)
        for state in FILTERS:
            label = state or "all"
            yield SystemCommand(f"Filter jobs: {label}", f"Show {label} jobs in the table",
                                lambda s=state: self.set_filter(s), discover=False)
        for tab in ("jobs", "budget", "throughput"):
            yield SystemCommand(f"Show {tab}", f"Switch to the {tab} tab", lambda t=tab: self.action_tab(t),
                                discover=False)
        yield SystemCommand("Reconnect now", "Try the daemon's socket again without waiting",
                            self.action_reconnect, discover=False)


def make_app(socket: Path | str, *, clock: Callable[[], float] = time.time, connect: bool = True,
             retry_seconds: float = RETRY_SECONDS) -> MontageApp:
    """Build the TUI for the daemon on ``socket``.

    Args:
        socket: path of montaged's control socket.
        clock: wall clock for elapsed times and ETAs (tests pin it for reproducible screens).
        connect: start the socket feed on mount; off only to render handed-in messages (snapshots).
        retry_seconds: pause between connection attempts while the daemon is unreachable.
    """
    return MontageApp(Path(socket), clock=clock, connect=connect, retry_seconds=retry_seconds)
