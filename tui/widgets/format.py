"""Short, fixed-width renderings of job and money figures, shared by the table and the panels."""

from __future__ import annotations

import os
from typing import Any

from rich.text import Text

STATE_STYLES = {
    "queued": "bold #8a8a8a",
    "running": "bold #5fafff",
    "done": "bold #5fd75f",
    "failed": "bold #ff5f5f",
    "cancelled": "bold #d7af00",
}
DASH = "–"


def short_id(job_id: str) -> str:
    return job_id[:8]


def clip(text: str, width: int) -> str:
    """``text`` cut to ``width`` cells with an ellipsis, so long names never push columns out."""
    return text if len(text) <= width else text[: max(0, width - 1)] + "…"


def file_name(job: dict[str, Any]) -> str:
    return os.path.basename(str((job.get("spec") or {}).get("source") or "")) or "?"


def state_text(state: str) -> Text:
    return Text(state, style=STATE_STYLES.get(state, ""))


def duration(seconds: float | None) -> str:
    """At most 6 cells: 9s, 12m05s, 3h05m, 12d03h."""
    if seconds is None or seconds < 0:
        return DASH
    s = round(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def percent(progress: float | None) -> str:
    return DASH if progress is None else f"{round(max(0.0, min(1.0, progress)) * 100):d}%"


def money(amount: float | None) -> str:
    """Dollars to the cent, and to a hundredth of a cent below one cent (a minute of cloud ASR
    costs less than a cent, so cents alone would show a short job's real spend as nothing)."""
    if amount is None:
        return DASH
    if amount == 0 or abs(amount) >= 0.01:
        return f"${amount:.2f}"
    return f"${amount:.4f}"


def elapsed(job: dict[str, Any], now: float, started: float) -> float | None:
    """Queued: time waiting; running: time since this run began; finished: how long it took."""
    state = job.get("state")
    created = float(job.get("created_at") or 0.0)
    if state == "queued":
        return now - created
    if state == "running":
        return now - started
    wall = (job.get("result") or {}).get("wall_seconds")
    if state == "done" and wall is not None:
        return float(wall)
    return float(job.get("updated_at") or created) - created


def eta(job: dict[str, Any], now: float, started: float) -> float | None:
    """Remaining time of a running job at its pace so far; None until there is a pace to go by."""
    progress = float(job.get("progress") or 0.0)
    if job.get("state") != "running" or progress < 0.01:
        return None
    return (now - started) * (1.0 - progress) / progress


def clip_count(job: dict[str, Any]) -> str:
    clips = (job.get("result") or {}).get("clips")
    return str(len(clips)) if job.get("state") == "done" and clips is not None else DASH


def job_cost(job: dict[str, Any]) -> float | None:
    cost = (job.get("result") or {}).get("cost")
    return float(cost) if cost is not None else None


def bar(share: float, width: int = 10) -> str:
    """A plain block bar; ``share`` is clamped to 0..1."""
    filled = round(max(0.0, min(1.0, share)) * width)
    return "█" * filled + "░" * (width - filled)
