"""Overlap framing: while two people on screen talk at once, one wider crop holds both faces.

The rule (plan.py splices the result into the single-speaker path):

- A *real* overlap is a stretch in which the diarization turns of two or more speakers overlap
  (:func:`montaged.diarize.overlap.overlaps`), at least two of them map to faces of the clip, and
  it lasts at least :data:`MIN_OVERLAP` seconds. Stretches of the same people less than that
  apart are joined first, so the crop does not leave the wide box for a breath between them.
- The wide box has the output aspect, is wide (and tall) enough for the faces' union plus the
  plan's margin on each side, is never smaller than the single-speaker crop and never larger than
  the largest box of the aspect inside the source. When even the largest cannot hold the union
  (9:16 from 16:9 with the two far apart) in :data:`WIDE_MIN_FIT` of the samples, or the faces
  are seen together in fewer than :data:`BOTH_SEEN` of them, the stretch keeps the single-speaker
  crop: a box that shows half of each face is worse than one whole face.
- Inside the stretch the box centres on the union horizontally and puts the eye line at the
  plan's headroom, moved as little as needed to keep every face inside.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from montaged.diarize.overlap import overlaps
from montaged.frame.analyse import ClipAnalysis
from montaged.frame.target import Frame, crop_size, faces_at
from montaged.model import SpeakerTurn

MIN_OVERLAP = 0.6
"""Shortest overlap framed wide, in seconds. A back-channel ("yeah", "mm-hm", a laugh) is one or
two syllables, under 0.5 s at conversational rates of four to five syllables a second, and two
cuts less than 0.6 s apart read as a flicker (the same reach as speaker.SWITCH_REACH)."""
BOTH_SEEN = 0.5
"""Least share of a stretch's samples in which every overlapping face is seen."""
WIDE_MIN_FIT = 0.9
"""Least share of those samples in which the faces' union fits the wide box."""


@dataclass(frozen=True)
class WideStretch:
    """One stretch framed wide: its box size and per-sample centre targets (NaN: hold)."""

    start: float
    end: float
    people: tuple[int, ...]
    frame: Frame
    cx: np.ndarray
    cy: np.ndarray


def real_overlaps(
    turns: Sequence[tuple[float, float, str]], faces: Mapping[str, int], min_seconds: float | None = None
) -> list[tuple[float, float, tuple[int, ...]]]:
    """Overlaps of at least ``min_seconds`` (default :data:`MIN_OVERLAP`) between speakers with
    faces (``faces``: label → identity), as ``(start, end, identities)`` in clip seconds."""
    least = MIN_OVERLAP if min_seconds is None else min_seconds
    joined: list[tuple[float, float, tuple[int, ...]]] = []
    for o in overlaps([SpeakerTurn(a, b, s) for a, b, s in turns]):
        people = tuple(sorted({faces[s] for s in o.speakers if s in faces}))
        if len(people) < 2:
            continue
        if joined and joined[-1][2] == people and o.start - joined[-1][1] < least:
            joined[-1] = (joined[-1][0], o.end, people)
        else:
            joined.append((o.start, o.end, people))
    return [o for o in joined if o[1] - o[0] >= least]


def wide_stretches(
    an: ClipAnalysis,
    turns: Sequence[tuple[float, float, str]],
    faces: Mapping[str, int],
    frame: Frame,
    aspect: float,
    min_seconds: float | None = None,
) -> list[WideStretch]:
    """The real overlaps (module doc) that one box of ``aspect`` can frame, with its targets."""
    max_w, _ = crop_size(an.frame_w, an.frame_h, aspect)
    out = []
    for start, end, people in real_overlaps(turns, faces, min_seconds):
        idx = np.flatnonzero((an.times >= start) & (an.times < end))
        unions: dict[int, tuple[float, float, float, float, float]] = {}
        for i in idx:
            seen = faces_at(an.tracks, int(i), an.max_gap)
            if all(p in seen for p in people):
                boxes = [seen[p].box for p in people]
                unions[int(i)] = (
                    min(b[0] for b in boxes),
                    min(b[1] for b in boxes),
                    max(b[0] + b[2] for b in boxes),
                    max(b[1] + b[3] for b in boxes),
                    float(np.mean([seen[p].eye_y for p in people])),
                )
        if not len(idx) or len(unions) < BOTH_SEEN * len(idx):
            continue
        u = np.array(list(unions.values()))
        pad = 1 + 2 * frame.margin
        need = max(
            float(np.percentile(u[:, 2] - u[:, 0], 90)) * pad,
            float(np.percentile(u[:, 3] - u[:, 1], 90)) * pad * aspect,
            frame.crop_w,
        )
        w = min(need, max_w)
        h = w / aspect
        fits = (u[:, 2] - u[:, 0] <= w) & (u[:, 3] - u[:, 1] <= h)
        if float(fits.mean()) < WIDE_MIN_FIT:
            continue
        wide = Frame(an.frame_w, an.frame_h, w, h, headroom=frame.headroom, margin=frame.margin)
        cx, cy = np.full(len(an.times), np.nan), np.full(len(an.times), np.nan)
        for k, (x0, y0, x1, y1, eye) in unions.items():
            y = eye - frame.headroom * h + h / 2
            y = min(max(y, y1 - h / 2), y0 + h / 2) if y1 - y0 <= h else y
            cx[k], cy[k] = wide.clamp((x0 + x1) / 2, y)
        out.append(WideStretch(start, end, people, wide, cx, cy))
    return out
