"""Throughput panel: processing ratio and media minutes per hour as sparklines, the stage queues,
busy workers, the encoder in use and the cache hit ratio — all from the ``daemon.stats`` snapshot."""

from __future__ import annotations

from typing import Any

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.widgets import Sparkline, Static

STAGE_ORDER = ("probe", "transcribe", "diarize", "select", "frame", "render")


def ratio_text(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f}×"


def queues_table(queues: dict[str, dict[str, int]]) -> Table:
    table = Table(box=None, padding=(0, 1), header_style="bold", title="queues", title_style="bold")
    table.add_column("stage", no_wrap=True)
    table.add_column("queued", justify="right", no_wrap=True)
    table.add_column("busy", justify="right", no_wrap=True)
    for stage in (*STAGE_ORDER, *sorted(set(queues) - set(STAGE_ORDER))):
        q = queues.get(stage)
        if q is None:
            continue
        depth, cap, busy = int(q.get("depth", 0)), int(q.get("capacity", 0)), int(q.get("busy", 0))
        table.add_row(stage, Text(f"{depth}/{cap}", style="bold #d7af00" if cap and depth >= cap else ""),
                      Text(str(busy), style="bold #5fafff" if busy else "dim"))
    return table


def facts(stats: dict[str, Any]) -> Text:
    encoder = stats.get("encoder") or {}
    cache = stats.get("cache") or {}
    queues = stats.get("queues") or {}
    whisper = (stats.get("pools") or {}).get("whisper") or {}
    busy = sum(int(q.get("busy", 0)) for q in queues.values())
    kind = "hardware" if encoder.get("hardware") else "software"
    hits, misses = int(cache.get("hits", 0)), int(cache.get("misses", 0))
    lines = [
        ("encoder ", f"{encoder.get('name', '?')} ({kind})"),
        ("cache   ", f"{float(cache.get('hit_ratio', 0.0)) * 100:.0f}% hits ({hits} of {hits + misses})"),
        ("busy    ", f"{busy} stage workers · {len(stats.get('in_flight') or [])} jobs in flight"),
        ("whisper ", f"{whisper.get('workers', '?')}× {whisper.get('model', '?')}"
                     f" on {whisper.get('device', '?')}"),
        ("finished", f" {(stats.get('throughput') or {}).get('jobs_finished', 0)} jobs since start"),
    ]
    return Text("\n").join(Text.assemble((k, "bold"), " ", v) for k, v in lines)


class ThroughputPanel(Horizontal):
    """Sparklines and facts on the left, the queue table on the right."""

    def compose(self) -> ComposeResult:
        with Vertical(id="throughput-left"):
            yield Static(id="ratio-label", classes="spark-label")
            yield Sparkline([], id="ratio-spark")
            yield Static(id="mmph-label", classes="spark-label")
            yield Sparkline([], id="mmph-spark")
            yield Static(id="facts")
        yield Static(id="queues")

    def show(self, stats: dict[str, Any] | None) -> None:
        if not stats:
            return
        tp = stats.get("throughput") or {}
        ratio = tp.get("processing_ratio")
        self.query_one("#ratio-label", Static).update(Text.assemble(
            ("processing ratio ", "bold"), (ratio_text(ratio), "bold #5fafff"),
            (" wall/media, lower is faster", "dim")))
        self.query_one("#ratio-spark", Sparkline).data = list(tp.get("ratio_history") or [0.0])
        self.query_one("#mmph-label", Static).update(Text.assemble(
            ("media minutes/hour ", "bold"), (f"{float(tp.get('media_minutes_per_hour') or 0.0):.1f}",
                                              "bold #5fafff"), (" last hour", "dim")))
        self.query_one("#mmph-spark", Sparkline).data = list(tp.get("mmph_history") or [0.0])
        self.query_one("#facts", Static).update(facts(stats))
        self.query_one("#queues", Static).update(queues_table(stats.get("queues") or {}))
