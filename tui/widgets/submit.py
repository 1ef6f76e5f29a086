"""Submit dialog: a path input that completes file names like a shell, then asks the daemon.

The dialog stays open when the daemon refuses (missing file, outside the input roots, …) and shows
its message, so the operator can fix the path without retyping it. ``tab`` (or →) completes; the
list under the input shows what matches.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, ClassVar

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.suggester import Suggester
from textual.widgets import Input, Static

from tui.client import call_for_dialog

MEDIA_SUFFIXES = frozenset({".mp4", ".mov", ".mkv", ".webm", ".m4v", ".avi", ".ts", ".mxf", ".flv",
                            ".wav", ".flac", ".mp3", ".m4a", ".aac", ".ogg", ".opus"})
MAX_LISTED = 6


def matches(value: str) -> list[str]:
    """Entries of the typed directory that start with the typed name: directories end with ``/``,
    then media files, then everything else; hidden entries only when the name starts with a dot."""
    if not value:
        return []
    expanded = os.path.expanduser(value)
    folder, prefix = os.path.split(expanded)
    try:
        entries = list(os.scandir(folder or "."))
    except OSError:
        return []
    found: list[tuple[int, str]] = []
    for entry in entries:
        if not entry.name.startswith(prefix) or (entry.name.startswith(".") and not prefix.startswith(".")):
            continue
        try:
            is_dir = entry.is_dir()
        except OSError:
            continue
        rank = 0 if is_dir else 1 if Path(entry.name).suffix.lower() in MEDIA_SUFFIXES else 2
        found.append((rank, entry.name + ("/" if is_dir else "")))
    return [name for _, name in sorted(found)]


def complete(value: str) -> str | None:
    """The longest unambiguous completion of ``value`` (a full name when only one entry fits)."""
    names = matches(value)
    if not names:
        return None
    folder, prefix = os.path.split(value)
    common = os.path.commonprefix(names)  # noqa: RUF071 (names share a folder: compare characters)
    if len(common) <= len(prefix):
        return None
    return os.path.join(folder, common) if folder else common


class PathSuggester(Suggester):
    """Shows the completion greyed after the cursor; → or tab accepts it."""

    def __init__(self) -> None:
        super().__init__(use_cache=False, case_sensitive=True)

    async def get_suggestion(self, value: str) -> str | None:
        return complete(value)


class SubmitScreen(ModalScreen[dict[str, Any] | None]):
    """Dismisses with the submitted job, or None when the operator gives up (escape)."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "dismiss_none", "close"),
        Binding("tab", "complete", "complete", priority=True),
    ]

    def __init__(self, socket: Path, start: str = "", *, preview: bool = False) -> None:
        super().__init__()
        self.socket = socket
        self.start = start
        self.preview = preview  # a dry run: selection only, the ranked candidates, nothing rendered

    def compose(self) -> ComposeResult:
        with Vertical(id="submit-box", classes="dialog"):
            title = "Preview a talk (candidates only, nothing rendered)" if self.preview else "Submit a talk"
            yield Static(Text(title, style="bold"))
            yield Input(self.start, placeholder="/path/to/talk.mp4", suggester=PathSuggester(), id="path",
                        select_on_focus=False)
            yield Static("", id="candidates")
            yield Static(Text("enter submit · tab complete · ctrl+u clear · esc close", style="dim"),
                         id="submit-help")
            yield Static("", id="submit-error")

    def on_mount(self) -> None:
        field = self.query_one("#path", Input)
        field.focus()
        field.cursor_position = len(field.value)  # go on typing from the folder already filled in
        self.show_candidates(self.start)

    @on(Input.Changed, "#path")
    def changed(self, event: Input.Changed) -> None:
        self.query_one("#submit-error", Static).update("")
        self.show_candidates(event.value)

    def show_candidates(self, value: str) -> None:
        names = matches(value)
        text = Text(style="dim")
        for name in names[:MAX_LISTED]:
            text.append(f"  {name}\n", style="bold #5fafff" if name.endswith("/") else "")
        if len(names) > MAX_LISTED:
            text.append(f"  … {len(names) - MAX_LISTED} more")
        self.query_one("#candidates", Static).update(text)

    def action_complete(self) -> None:
        field = self.query_one("#path", Input)
        done = complete(field.value)
        if done is not None:
            field.value = done
            field.cursor_position = len(done)

    def action_dismiss_none(self) -> None:
        self.dismiss(None)

    @on(Input.Submitted, "#path")
    def submitted(self, event: Input.Submitted) -> None:
        path = os.path.expanduser(event.value.strip())
        if not path:
            self.show_error("type the path of a media file first")
            return
        if not os.path.isabs(path):
            path = os.path.abspath(path)  # the daemon wants absolute paths; relative means "from here"
        self.send(path)

    def show_error(self, message: str) -> None:
        self.query_one("#submit-error", Static).update(Text(message, style="bold #ff5f5f"))

    @work(exclusive=True, group="submit")
    async def send(self, path: str) -> None:
        options = {"stop_after": "select"} if self.preview else None
        job, problem = await call_for_dialog(self.socket, "submit", path=path, options=options)
        if problem is not None:
            self.show_error(problem)
            return
        self.dismiss(job)
