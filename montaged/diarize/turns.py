"""Turn clean-up shared by the backends: window votes to frames, short-turn absorption, labels."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from montaged.model import SpeakerTurn

FRAME = 0.01
"""Resolution of the turn boundaries (seconds)."""


def vote_frames(
    regions: Sequence[tuple[float, float]],
    windows: Sequence[tuple[float, float]],
    labels: np.ndarray,
    clusters: int,
) -> list[tuple[float, float, np.ndarray]]:
    """Per 10 ms frame of each speech region, the cluster most of its covering windows got.

    Embedding windows are 1.5 s long and overlap; labelling each frame by a majority of the
    windows that contain it moves a speaker change to where the votes flip, instead of the
    midpoint between two window starts, which is where most confusion on short turns comes
    from. Ties go to the window whose centre is nearest. Returns ``(start, end, frame_labels)``.
    """
    if not windows:
        return []
    starts = np.array([w[0] for w in windows])
    ends = np.array([w[1] for w in windows])
    centres = (starts + ends) / 2
    out = []
    for a, b in regions:
        n = max(1, round((b - a) / FRAME))
        t = a + (np.arange(n) + 0.5) * FRAME
        lo = np.searchsorted(t, starts, side="left")  # first frame whose centre is >= window start
        hi = np.searchsorted(t, ends, side="left")
        counts = np.zeros((n + 1, clusters), dtype=np.int32)
        inside = hi > lo
        np.add.at(counts, (lo[inside], labels[inside]), 1)
        np.add.at(counts, (hi[inside], labels[inside]), -1)
        counts = np.cumsum(counts, axis=0)[:n]
        # Tie-break and fallback: the label of the window centred nearest to each frame.
        order = np.argsort(centres)
        pos = np.clip(np.searchsorted(centres[order], t), 1, len(order) - 1) if len(order) > 1 else None
        if pos is None:
            nearest = np.full(n, labels[0])
        else:
            left, right = order[pos - 1], order[pos]
            pick = np.where(np.abs(centres[left] - t) <= np.abs(centres[right] - t), left, right)
            nearest = labels[pick]
        best = counts.max(axis=1)
        winners = counts == best[:, None]
        chosen = np.where(winners[np.arange(n), nearest] | (best == 0), nearest, counts.argmax(axis=1))
        out.append((a, b, chosen))
    return out


def runs_to_turns(
    voted: Sequence[tuple[float, float, np.ndarray]], min_turn: float
) -> list[tuple[float, float, int]]:
    """Turns ``(start, end, cluster)`` from per-frame labels; short inner runs are absorbed.

    Inside one speech region a run shorter than ``min_turn`` is given to the longer of its
    neighbours (a 0.1 s "speaker change" is window noise, not a turn). A region shorter than
    ``min_turn`` on its own keeps its label: it is speech and someone said it.
    """
    turns: list[tuple[float, float, int]] = []
    min_frames = max(1, round(min_turn / FRAME))
    for a, b, labels in voted:
        runs = _runs(labels)
        changed = True
        while changed and len(runs) > 1:
            changed = False
            i = min(range(len(runs)), key=lambda j: runs[j][1] - runs[j][0])
            s, e, _ = runs[i]
            if e - s >= min_frames:
                break
            neighbours = [j for j in (i - 1, i + 1) if 0 <= j < len(runs)]
            j = max(neighbours, key=lambda j: runs[j][1] - runs[j][0])
            lab = runs[j][2]
            runs[i] = (s, e, lab)
            runs = _merge_runs(runs)
            changed = True
        for s, e, lab in runs:
            start = a + s * FRAME
            end = b if e == len(labels) else a + e * FRAME
            turns.append((start, end, lab))
    return turns


def _runs(labels: np.ndarray) -> list[tuple[int, int, int]]:
    if len(labels) == 0:
        return []
    cuts = np.flatnonzero(np.diff(labels)) + 1
    bounds = [0, *cuts.tolist(), len(labels)]
    return [(bounds[i], bounds[i + 1], int(labels[bounds[i]])) for i in range(len(bounds) - 1)]


def _merge_runs(runs: list[tuple[int, int, int]]) -> list[tuple[int, int, int]]:
    merged: list[tuple[int, int, int]] = []
    for s, e, lab in runs:
        if merged and merged[-1][2] == lab:
            merged[-1] = (merged[-1][0], e, lab)
        else:
            merged.append((s, e, lab))
    return merged


def relabel(turns: Sequence[tuple[float, float, object]]) -> list[SpeakerTurn]:
    """``S1``, ``S2``... in order of first appearance; touching or overlapping turns of one
    speaker joined. Turns of different speakers may overlap (overlapped speech)."""
    names: dict[object, str] = {}
    out: list[SpeakerTurn] = []
    last: dict[str, int] = {}  # speaker -> index in out of their latest turn
    for start, end, key in sorted(turns, key=lambda t: (t[0], t[1])):
        if end <= start:
            continue
        name = names.setdefault(key, f"S{len(names) + 1}")
        i = last.get(name)
        if i is not None and start - out[i].end < FRAME / 2:
            out[i] = SpeakerTurn(out[i].start, max(out[i].end, round(end, 3)), name)
        else:
            last[name] = len(out)
            out.append(SpeakerTurn(round(start, 3), round(end, 3), name))
    return out
