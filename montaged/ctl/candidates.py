"""The ranked candidates of a job (every moment select scored, picked or not), as a table.

Shared by ``montagectl show``, ``submit --dry-run`` and ``montaged process --dry-run``: rank,
range, score, the clip number it became (or ``-``), speakers, reason and the words.
"""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

TEXT_CHARS = 90  # words shown per row; --json has the whole text


def candidates_of(job: dict[str, Any]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = (job.get("result") or {}).get("candidates") or []
    return rows


def candidates_table(rows: list[dict[str, Any]]) -> Table:
    table = Table(box=None, header_style="bold", pad_edge=False)
    for col, justify in (("RANK", "right"), ("RANGE (s)", "right"), ("LEN", "right"), ("SCORE", "right"),
                         ("CLIP", "right"), ("SPEAKERS", "left"), ("REASON / TEXT", "left")):
        table.add_column(col, justify=justify, no_wrap=col != "REASON / TEXT")  # type: ignore[arg-type]
    for row in rows:
        start, end = float(row.get("start", 0)), float(row.get("end", 0))
        text = str(row.get("text", ""))
        text = text if len(text) <= TEXT_CHARS else text[: TEXT_CHARS - 1] + "…"
        clip = row.get("clip")
        table.add_row(
            str(row.get("rank", "?")), f"{start:.2f}–{end:.2f}", f"{end - start:.1f}",
            f"{float(row.get('score', 0)):.2f}", "-" if clip is None else f"#{clip}",
            escape(", ".join(row.get("speakers") or []) or "-"),
            f"{escape(str(row.get('reason', '')))}\n[dim]{escape(text)}[/]",
        )
    return table


def print_candidates(console: Console, job: dict[str, Any]) -> None:
    rows = candidates_of(job)
    if not rows:
        return
    picked = sum(1 for r in rows if r.get("clip") is not None)
    console.print(f"[bold]candidates[/] ({len(rows)}, best first; {picked} picked)", highlight=False)
    console.print(candidates_table(rows))
