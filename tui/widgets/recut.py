"""Re-cut dialog: render a clip, a ranked candidate or any range of a finished job again.

The daemon makes it a new job on the same source (transcript from the cache, new file names), so
the earlier clips stay. The dialog stays open when the daemon refuses and shows its message.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Checkbox, Input, Static

from tui.client import call_for_dialog


def recut_options(which: str, start: str, end: str, exact: bool) -> dict[str, Any]:
    """The ``render`` op's options from the dialog's fields; ValueError says what to fix.

    ``which``: ``N`` (or ``#N``) is the job's clip N, ``rN`` the candidate of rank N; empty means
    the times alone.
    """
    options: dict[str, Any] = {"exact": exact}
    which = which.strip().lower().lstrip("#")
    if which:
        key = "candidate" if which.startswith("r") else "clip"
        number = which[1:] if key == "candidate" else which
        if not number.isdigit() or int(number) < 1:
            raise ValueError(f"clip or candidate: a clip number (2) or a rank (r3), not {which!r}")
        options[key] = int(number)
    for name, value in (("start", start), ("end", end)):
        if value.strip():
            try:
                seconds = float(value)
            except ValueError:
                raise ValueError(f"{name}: seconds of the source, like 12.5 (got {value!r})") from None
            if seconds < 0:
                raise ValueError(f"{name}: 0 seconds or more (got {value!r})")
            options[name] = seconds
    if not which and ("start" not in options or "end" not in options):
        raise ValueError("name a clip (2), a candidate (r3), or both start and end")
    return options


class RecutScreen(ModalScreen[dict[str, Any] | None]):
    """Dismisses with the new job, or None (escape)."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "dismiss_none", "close")]

    def __init__(self, socket: Path, job: dict[str, Any]) -> None:
        super().__init__()
        self.socket = socket
        self.job = job

    def compose(self) -> ComposeResult:
        with Vertical(id="recut-box", classes="dialog"):
            yield Static(Text(f"Re-cut job {self.job['id'][:12]}", style="bold"))
            yield Input(placeholder="clip 2, or candidate r3 (empty: start and end alone)", id="which")
            yield Input(placeholder="start, seconds of the source (empty: the clip's)", id="start")
            yield Input(placeholder="end, seconds of the source (empty: the clip's)", id="end")
            yield Checkbox("exact: cut inside words if the times say so", id="exact")
            yield Static(Text("enter render · tab next field · esc close", style="dim"))
            yield Static("", id="recut-error")

    def on_mount(self) -> None:
        self.query_one("#which", Input).focus()

    def action_dismiss_none(self) -> None:
        self.dismiss(None)

    @on(Input.Submitted)
    def submitted(self, event: Input.Submitted) -> None:
        try:
            which, start, end = (self.query_one(f"#{n}", Input).value for n in ("which", "start", "end"))
            options = recut_options(which, start, end, self.query_one("#exact", Checkbox).value)
        except ValueError as e:
            self.show_error(str(e))
            return
        self.send(options)

    def show_error(self, message: str) -> None:
        self.query_one("#recut-error", Static).update(Text(message, style="bold #ff5f5f"))

    @work(exclusive=True, group="recut")
    async def send(self, options: dict[str, Any]) -> None:
        job, problem = await call_for_dialog(self.socket, "render", job_id=self.job["id"], options=options)
        if problem is not None:
            self.show_error(problem)
            return
        self.dismiss(job)
