"""What the TUI shows while no daemon answers: why, and that it is already trying again."""

from __future__ import annotations

from rich.text import Text
from textual.widgets import Static


def offline_text(socket: str, reason: str, attempt: int, retry_seconds: float, was_connected: bool) -> Text:
    title = "Lost the connection to montaged" if was_connected else "montaged is unreachable"
    text = Text(justify="center")
    text.append(f"{title}\n\n", style="bold #ff5f5f")
    text.append(f"{reason}\n\n")
    text.append("socket ", style="dim").append(f"{socket}\n\n")
    every = "every second" if retry_seconds <= 1 else f"every {retry_seconds:g} s"
    text.append(f"Trying again {every}", style="bold")
    if attempt > 1:
        text.append(f" (attempt {attempt})", style="dim")
    text.append("; this screen goes away by itself when the daemon answers.\n\n")
    text.append("q quit · ctrl+p commands · montage-tui --socket PATH for another daemon", style="dim")
    return text


class OfflinePanel(Static):
    def show(self, socket: str, reason: str, attempt: int, retry_seconds: float, was_connected: bool) -> None:
        self.update(offline_text(socket, reason, attempt, retry_seconds, was_connected))
