"""Whether a crop plan keeps the person talking in the picture, from what the framer already saw.

Two numbers per clip, for the render's quality report (no second detection pass):

- ``face_confidence``: the detector's mean score over the faces it really saw in the clip
  (interpolated gaps do not count), so a clip framed on faint or doubtful faces shows it.
- ``speaker_in_crop``: of the analysis samples where the active speaker's face is known, the share
  whose face box lies inside the crop at that time (at least ``INSIDE_SHARE`` of its area; either
  pane of a split screen). None where the speaker's face is never known (a motion or centre crop).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from montaged.frame.speaker import SpeakerRun, run_at
from montaged.frame.target import faces_at
from montaged.frame.tracks import Track
from montaged.model import CropBox
from montaged.render.croppath import box_at

INSIDE_SHARE = 0.9
"""A face counts as inside the crop when this much of its box is: a trimmed ear is still framed."""

Box = tuple[float, float, float, float]


def _inside(face: Box, crop: Box) -> bool:
    fx, fy, fw, fh = face
    cx, cy, cw, ch = crop
    ow = max(0.0, min(fx + fw, cx + cw) - max(fx, cx))
    oh = max(0.0, min(fy + fh, cy + ch) - max(fy, cy))
    return fw > 0 and fh > 0 and ow * oh >= INSIDE_SHARE * fw * fh


def face_confidence(tracks: Sequence[Track]) -> float | None:
    """Mean detector score of every face observed (None: no face seen)."""
    scores = [o.det.score for t in tracks for o in t.obs]
    return round(sum(scores) / len(scores), 4) if scores else None


def speaker_in_crop(
    times: np.ndarray | Sequence[float],
    tracks: Sequence[Track],
    runs: Sequence[SpeakerRun],
    paths: Sequence[Sequence[CropBox]],
    max_gap: int,
) -> float | None:
    """Share of samples with the active speaker's face known whose face lies inside a crop path."""
    panes = [p for p in paths if p]
    if not panes or not runs:
        return None
    known = inside = 0
    for i, t in enumerate(times):
        speaker = run_at(runs, float(t)).identity
        face = faces_at(tracks, i, max_gap).get(speaker) if speaker >= 0 else None
        if face is None:
            continue
        known += 1
        inside += any(_inside(face.box, box_at(p, float(t))) for p in panes)
    return round(inside / known, 4) if known else None
