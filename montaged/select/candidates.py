"""Candidate windows: runs of whole sentences whose padded length is within the clip bounds.

Cut times are chosen so that no clip starts or ends inside a word: a clip starting at word ``k``
starts a little before it (lead-in) but never before the midpoint of the silence that precedes
it, and never before the end of *any* earlier word (running maximum of word ends, so a long word
overlapping later ones is respected). Ends are mirrored. Sentence boundaries are only ever placed
in gaps where such a cut exists (``sentences.split_sentences``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from montaged.select.sentences import Sentence

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]

# Above this many windows the end sentences are strided: scoring stays well under a second even
# for a pathological transcript where every word is a sentence (20k words × ~150 ends each).
MAX_CANDIDATES = 200_000


def cut_times(starts: F64, ends: F64, duration: float, *, lead_in: float, tail: float) -> tuple[F64, F64]:
    """Padded clip start if a clip starts at word ``k``, and padded end if it ends at word ``k``.

    NaN where no cut outside every word exists at that side of word ``k`` (overlapping words).
    """
    n = len(starts)
    pmax = np.maximum.accumulate(ends)
    start_at = np.full(n, np.nan)
    end_at = np.full(n, np.nan)
    if n == 0:
        return start_at, end_at
    start_at[0] = min(starts[0], max(0.0, starts[0] - lead_in))
    gap_ok = starts[1:] >= pmax[:-1]
    mid = (pmax[:-1] + starts[1:]) / 2.0
    start_at[1:] = np.where(gap_ok, np.maximum(starts[1:] - lead_in, mid), np.nan)
    end_at[:-1] = np.where(gap_ok, np.minimum(pmax[:-1] + tail, mid), np.nan)
    end_at[-1] = max(pmax[-1], min(duration, pmax[-1] + tail)) if duration > 0 else pmax[-1] + tail
    return start_at, end_at


@dataclass(frozen=True)
class Windows:
    """Candidate clips as parallel arrays (one entry per window)."""

    first: I64  # index of the first sentence
    last: I64  # index of the last sentence (inclusive)
    start: F64  # padded clip start, seconds
    end: F64  # padded clip end, seconds

    def __len__(self) -> int:
        return len(self.first)

    @property
    def duration(self) -> F64:
        return self.end - self.start


def enumerate_windows(
    sentences: Sequence[Sentence],
    start_at: F64,
    end_at: F64,
    *,
    min_seconds: float,
    max_seconds: float,
    limit: int = MAX_CANDIDATES,
    whole: bool = False,
) -> Windows:
    """Every run of sentences ``i..j`` whose padded length lies in ``[min_seconds, max_seconds]``.

    With ``whole``, only runs of finished thoughts: ``j`` is complete and ``i`` is the first
    sentence or follows a complete one (``Sentence.complete``), so no clip stops mid-sentence or
    on a trailing "but…", and none opens on the second half of a cut-off sentence.

    Vectorised: padded sentence ends are non-decreasing, so for each start sentence the valid
    ends form one contiguous range found by binary search.
    """
    s = len(sentences)
    if s == 0:
        empty = np.zeros(0, np.int64)
        return Windows(empty, empty, np.zeros(0), np.zeros(0))
    firsts = np.fromiter((x.first for x in sentences), np.int64, s)
    lasts = np.fromiter((x.last for x in sentences), np.int64, s)
    s_start = start_at[firsts]
    s_end = end_at[lasts]
    if whole:
        complete = np.fromiter((x.complete for x in sentences), bool, s)
        s_start = np.where(np.append(True, complete[:-1]), s_start, np.nan)
        s_end = np.where(complete, s_end, np.nan)
    # A sentence whose outer cut is impossible (NaN) cannot start or end a window.
    ok_start = np.isfinite(s_start)
    ends_sorted = np.where(np.isfinite(s_end), s_end, np.nan)
    search = np.fmax.accumulate(np.nan_to_num(ends_sorted, nan=-np.inf))
    lo = np.searchsorted(search, s_start + min_seconds - 1e-9, side="left")
    hi = np.searchsorted(search, s_start + max_seconds + 1e-9, side="right")
    lo = np.maximum(lo, np.arange(s))
    counts = np.where(ok_start, np.maximum(hi - lo, 0), 0)
    total = int(counts.sum())
    step = max(1, -(-total // limit))
    if step > 1:
        counts = -(-counts // step)
    first = np.repeat(np.arange(s, dtype=np.int64), counts)
    offsets = np.arange(len(first)) - np.repeat(np.cumsum(counts) - counts, counts)
    last = np.repeat(lo, counts).astype(np.int64) + offsets * step
    start = s_start[first]
    end = s_end[last]
    dur = end - start
    keep = np.isfinite(end) & (dur >= min_seconds - 1e-9) & (dur <= max_seconds + 1e-9)
    return Windows(first[keep], last[keep], start[keep], end[keep])
