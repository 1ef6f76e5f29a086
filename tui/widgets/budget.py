"""Budget panel: spent, reserved and remaining per period against the caps, and the cloud ear's state.

A period turns yellow from ``NEAR_CAP`` of its cap (spent + reserved, since reserved money is
already promised) and red when nothing is left; a blocked cloud ear gets its own red line with the
daemon's reason, because that is the moment transcripts silently fall back to Whisper alone.
"""

from __future__ import annotations

from typing import Any

from rich.console import Group
from rich.table import Table
from rich.text import Text
from textual.widgets import Static

from tui.widgets import format as fmt

NEAR_CAP = 0.8
PERIOD_ORDER = {"job": 0, "day": 1, "month": 2}


def level(spent: float, reserved: float, cap: float) -> str:
    """``ok``, ``near`` (≥ NEAR_CAP of the cap promised) or ``over`` (nothing left)."""
    if cap <= 0 or spent + reserved >= cap:
        return "over"
    if (spent + reserved) / cap >= NEAR_CAP:
        return "near"
    return "ok"


LEVEL_STYLE = {"ok": "", "near": "bold #d7af00", "over": "bold #ff5f5f"}
LEVEL_NOTE = {"ok": "", "near": "near cap", "over": "CAP REACHED"}


def budget_rows(stats: dict[str, Any], job: dict[str, Any] | None) -> list[dict[str, Any]]:
    """Rows for job/day/month. The daemon reports day and month; a job row comes from the daemon
    when it sends one for ``job``, otherwise from the job's recorded cost against the per-job cap."""
    rows = [dict(r) for r in stats.get("budget") or [] if not str(r.get("period", "")).startswith("job:")]
    cap = (stats.get("caps") or {}).get("job")
    if job is not None and cap is not None:
        period = f"job:{job['id']}"
        sent = next((dict(r) for r in stats.get("budget") or [] if r.get("period") == period), None)
        if sent is not None:
            rows.append(sent)
        else:
            spent = fmt.job_cost(job) or 0.0
            rows.append({"period": f"job:{job['id']}", "spent": spent, "reserved": None,
                         "remaining": max(0.0, float(cap) - spent), "cap": float(cap)})
    return sorted(rows, key=lambda r: PERIOD_ORDER.get(str(r["period"]).split(":", 1)[0], 9))


def cloud_line(stats: dict[str, Any]) -> Text:
    cloud = stats.get("cloud") or {}
    if cloud.get("blocked"):
        return Text.assemble(("  CLOUD ASR BLOCKED  ", "bold reverse #ff5f5f"),
                             (f" {cloud.get('reason') or 'no reason given'} — Whisper only", "bold #ff5f5f"))
    if cloud.get("enabled"):
        return Text.assemble(("cloud ASR ", "bold"), ("on", "bold #5fd75f"), " (Deepgram beside Whisper)")
    return Text.assemble(("cloud ASR ", "bold"), ("off", "dim"), " (Whisper only; nothing is spent)")


def render_budget(stats: dict[str, Any] | None, job: dict[str, Any] | None) -> Group | Text:
    if not stats:
        return Text("waiting for the daemon's first stats…", style="dim")
    table = Table(box=None, padding=(0, 1), expand=False, header_style="bold")
    table.add_column("period", no_wrap=True, width=14)
    for name in ("spent", "reserved", "remaining", "cap"):
        table.add_column(name, justify="right", no_wrap=True)
    table.add_column("used", no_wrap=True)
    table.add_column("", no_wrap=True)
    for row in budget_rows(stats, job):
        kind, _, which = str(row["period"]).partition(":")
        label = f"job {fmt.short_id(which)}" if kind == "job" else f"{kind} {which}"
        spent, cap = float(row.get("spent") or 0.0), float(row.get("cap") or 0.0)
        reserved = row.get("reserved")
        lvl = level(spent, float(reserved or 0.0), cap)
        share = (spent + float(reserved or 0.0)) / cap if cap > 0 else 1.0
        style = LEVEL_STYLE[lvl]
        table.add_row(
            Text(label, style="bold"), fmt.money(spent), fmt.money(reserved),
            Text(fmt.money(row.get("remaining")), style=style), fmt.money(cap),
            Text(fmt.bar(share, 8), style=style or "#5fafff"), Text(LEVEL_NOTE[lvl], style=style),
        )
    hint = Text("job row: the selected job (its cost against the per-job cap)", style="dim")
    return Group(Text("Budget (USD)", style="bold underline"), Text(""), table, Text(""), cloud_line(stats),
                 Text(""), hint)


class BudgetPanel(Static):
    def show(self, stats: dict[str, Any] | None, job: dict[str, Any] | None) -> None:
        self.update(render_budget(stats, job))
