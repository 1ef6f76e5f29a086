"""The jobs table and the filter bar above it.

Columns have fixed widths that add up to less than 80 cells, so the table fits a classic terminal
without a horizontal scrollbar; each column carries its own one-cell gap (cell padding 0), which
saves the 18 cells DataTable's default padding would take.
"""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual.widgets import DataTable, Static
from textual.widgets.data_table import CellDoesNotExist, RowDoesNotExist

from montaged.ctl.render import flagged_clips
from tui.state import STATES, JobBook
from tui.widgets import format as fmt

# key, label, width (content cells), right-aligned
COLUMNS: tuple[tuple[str, str, int, bool], ...] = (
    ("id", "id", 8, False),
    ("file", "file", 13, False),
    ("state", "state", 9, False),
    ("stage", "stage", 10, False),
    ("progress", "prog", 4, True),
    ("elapsed", "elapsed", 7, True),
    ("eta", "ETA", 6, True),
    ("clips", "clips", 5, True),
    ("cost", "cost", 7, True),
)
TICKING = ("elapsed", "eta")


def _cell(text: str | Text, width: int, right: bool) -> Text:
    cell = text.copy() if isinstance(text, Text) else Text(text)
    cell.truncate(width, overflow="ellipsis")
    if right:
        cell.pad_left(width + 1 - cell.cell_len)
    else:
        cell.pad_right(width + 1 - cell.cell_len)
    return cell


def _clips(job: dict[str, Any]) -> str | Text:
    """The clip count, and how many clips carry the ``quality`` flag (``3 q1``), in yellow."""
    count, flagged = fmt.clip_count(job), flagged_clips(job)
    return Text.assemble(count, (f" q{flagged}", "bold yellow")) if flagged and count != fmt.DASH else count


def row_cells(job: dict[str, Any], book: JobBook, now: float) -> dict[str, Text]:
    """Every column of one job, already padded to its width."""
    started = book.started(job)
    state = str(job.get("state") or "?")
    stage = job.get("stage") or fmt.DASH
    if state == "failed" and job.get("error_stage"):
        stage = str(job["error_stage"])
    values: dict[str, str | Text] = {
        "id": fmt.short_id(job["id"]),
        "file": fmt.file_name(job),
        "state": fmt.state_text(state),
        "stage": str(stage) if state != "queued" else (job.get("stopped_at") or fmt.DASH),
        "progress": fmt.percent(job.get("progress")) if state != "queued" else fmt.DASH,
        "elapsed": fmt.duration(fmt.elapsed(job, now, started)),
        "eta": fmt.duration(fmt.eta(job, now, started)) if state == "running" else fmt.DASH,
        "clips": _clips(job),
        "cost": fmt.money(fmt.job_cost(job)),
    }
    return {key: _cell(values[key], width, right) for key, _, width, right in COLUMNS}


class JobTable(DataTable[Text]):
    """One row per job, keyed by job id; rebuilt on structural changes, patched cell by cell on ticks."""

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id, cursor_type="row", cell_padding=0, zebra_stripes=True)
        for key, label, width, right in COLUMNS:
            self.add_column(_cell(Text(label, style="bold"), width, right), key=key, width=width + 1)
        self.shown: list[str] = []

    @property
    def selected_id(self) -> str | None:
        if not self.shown or self.cursor_row < 0 or self.cursor_row >= len(self.shown):
            return None
        return self.shown[self.cursor_row]

    def show(self, book: JobBook, state: str | None, now: float) -> None:
        """Redraw every row for ``state`` (None = all), keeping the cursor on the same job."""
        keep = self.selected_id
        jobs = book.ordered(state)
        self.clear()
        self.shown = [j["id"] for j in jobs]
        for job in jobs:
            cells = row_cells(job, book, now)
            self.add_row(*(cells[key] for key, *_ in COLUMNS), key=job["id"])
        if keep in self.shown:
            self.move_cursor(row=self.shown.index(keep), animate=False)

    def patch(
        self, job: dict[str, Any], book: JobBook, now: float, keys: tuple[str, ...] | None = None
    ) -> bool:
        """Update one row in place; False when the row is not shown (the caller redraws)."""
        if job["id"] not in self.shown:
            return False
        cells = row_cells(job, book, now)
        try:
            for key in keys or tuple(cells):
                self.update_cell(job["id"], key, cells[key])
        except (CellDoesNotExist, RowDoesNotExist):
            return False
        return True

    def tick(self, book: JobBook, now: float) -> None:
        """Advance the clock columns of running and queued jobs (a local clock, not a daemon poll)."""
        for job_id in self.shown:
            job = book.get(job_id)
            if job is not None and job.get("state") in ("running", "queued"):
                self.patch(job, book, now, TICKING)


class FilterBar(Static):
    """``all 5  queued 1  running 1 …`` with the active filter highlighted; ``f`` cycles it."""

    def show(self, counts: dict[str, int], active: str | None) -> None:
        text = Text(" ")
        total = sum(counts.values())
        for name, n in (("all", total), *((s, counts.get(s, 0)) for s in STATES)):
            selected = (active or "all") == name
            style = "reverse bold" if selected else fmt.STATE_STYLES.get(name, "bold")
            text.append(f" {name} {n} ", style=style)
            text.append(" ")
        text.append(" f filter", style="dim")
        self.update(text)
