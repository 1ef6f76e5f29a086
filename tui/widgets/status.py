"""The top line: connection, intake, job counts, the cloud ear and today's spend, at a glance.

It has to fit 80 cells with a long worker name, so the parts that matter most come first and the
worker name is cut; today's spend, the widest part, goes last (and gives way to a blocked cloud ear).
"""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual.widgets import Static

from tui.widgets import format as fmt
from tui.widgets.budget import LEVEL_STYLE, level

SEP = (" │ ", "dim")


def status_text(online: bool, worker: str, stats: dict[str, Any] | None, counts: dict[str, int]) -> Text:
    text = Text.assemble((" montage ", "bold #1c1c1c on #5fafff"), " ")
    if not online:
        return text.append("● daemon unreachable", style="bold #ff5f5f")
    text.append("● ", style="bold #5fd75f").append(fmt.clip(worker or "connected", 16))
    stats = stats or {}
    if stats.get("paused"):
        text.append(" ").append(" PAUSED ", style="bold #1c1c1c on #d7af00")
    elif stats.get("memory_paused"):  # the memory guard holds claims back; running jobs go on
        text.append(" ").append(" LOW MEMORY ", style="bold #1c1c1c on #d7af00")
    elif stats.get("draining"):
        text.append(" draining", style="bold #d7af00")
    text.append(*SEP)
    for i, (state, letter) in enumerate((("queued", "q"), ("running", "r"), ("done", "d"), ("failed", "f"))):
        text.append(" " if i else "").append(f"{letter}{counts.get(state, 0)}", style=fmt.STATE_STYLES[state])
    if (stats.get("cloud") or {}).get("blocked"):  # says more than the spend; tab 2 has both
        return text.append(*SEP).append("cloud ASR BLOCKED", style="bold #ff5f5f")
    day = next((r for r in stats.get("budget") or [] if str(r.get("period", "")).startswith("day:")), None)
    if day is not None:
        spent, reserved = float(day.get("spent") or 0.0), float(day.get("reserved") or 0.0)
        style = LEVEL_STYLE[level(spent, reserved, float(day.get("cap") or 0.0))]
        text.append(*SEP).append("day ", style="dim")
        text.append(f"{fmt.money(spent)}/{fmt.money(day.get('cap'))}", style=style)
    return text


class StatusLine(Static):
    def show(self, online: bool, worker: str, stats: dict[str, Any] | None, counts: dict[str, int]) -> None:
        self.update(status_text(online, worker, stats, counts))
