"""Where the crop wants to be at each sample: the active speaker, framed by the rule of thirds.

- Crop size: the largest box of the output aspect that fits the source, divided by ``zoom``.
- Horizontal: the speaker's face centre. Other faces that fit in the crop beside the speaker pull
  it towards them with a small weight (a listener's reaction is worth showing), never so far that
  the speaker's face leaves the crop's inner ``margin``.
- Vertical: the eye line one third from the top of the crop (``headroom``); with a full-height crop
  (9:16 from 16:9 at zoom 1) there is nothing to choose and the crop stays put.
- No speaker face at a sample: a face left on screen, else the motion centre when motion is
  concentrated (confidence falls with its spread) and no face was seen within ``MOTION_AFTER_FACE``
  seconds in the same shot (a face lost for a moment is better held than swapped for whatever
  moves), else no target (the path holds).

Confidence per sample: the face detector's score for a face, ``MOTION_CONFIDENCE`` scaled by how
concentrated motion is for a motion target, 0 for nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from montaged.frame.detect import Box, Detection
from montaged.frame.motion import MotionSample
from montaged.frame.speaker import SpeakerRun, run_at
from montaged.frame.tracks import Track

MOTION_CONFIDENCE = 0.5
"""Confidence of a crop that follows motion with no face: usable, never as good as a face."""
MOTION_AFTER_FACE = 2.0
"""Seconds around a face sighting (same shot) in which motion does not replace the face."""
OTHER_FACE_WEIGHT = 0.3
"""Pull of each non-speaking face on the horizontal target (the speaker weighs 1)."""


def parse_aspect(aspect: str) -> float:
    """``"9:16"`` → 0.5625 (width over height)."""
    w, _, h = aspect.partition(":")
    try:
        value = int(w) / int(h)
    except (ValueError, ZeroDivisionError):
        raise ValueError(f"aspect must look like 9:16 (got {aspect!r})") from None
    if value <= 0:
        raise ValueError(f"aspect must be positive (got {aspect!r})")
    return value


def crop_size(frame_w: int, frame_h: int, aspect: float, zoom: float = 1.0) -> tuple[float, float]:
    """The largest ``aspect`` box inside the frame, shrunk by ``zoom`` (>= 1)."""
    w, h = float(frame_w), float(frame_w) / aspect
    if h > frame_h:
        h, w = float(frame_h), frame_h * aspect
    z = max(1.0, zoom)
    return w / z, h / z


def face_crop_size(
    face_h: float, frame_w: int, frame_h: int, aspect: float, face_share: float
) -> tuple[float, float]:
    """A crop of ``aspect`` in which a face of height ``face_h`` fills ``face_share`` of the height
    (used for split-screen panes), no larger than the frame allows."""
    _, h_max = crop_size(frame_w, frame_h, aspect)
    h = min(h_max, max(face_h / max(face_share, 1e-3), 16.0))
    return h * aspect, h


@dataclass(frozen=True)
class Frame:
    """Geometry shared by every sample of one plan (source display pixels)."""

    frame_w: int
    frame_h: int
    crop_w: float
    crop_h: float
    headroom: float = 1 / 3
    margin: float = 0.05

    def bounds(self) -> tuple[tuple[float, float], tuple[float, float]]:
        """Allowed crop centres: ((x_lo, x_hi), (y_lo, y_hi))."""
        return (
            (self.crop_w / 2, self.frame_w - self.crop_w / 2),
            (self.crop_h / 2, self.frame_h - self.crop_h / 2),
        )

    def clamp(self, cx: float, cy: float) -> tuple[float, float]:
        (x0, x1), (y0, y1) = self.bounds()
        return min(max(cx, x0), x1), min(max(cy, y0), y1)

    def face_centre(self, det: Detection, others: Sequence[Detection] = ()) -> tuple[float, float]:
        """Crop centre that frames ``det``; ``others`` pull it a little without losing ``det``."""
        x, _y, w, _h = det.box
        cx = x + w / 2
        # Only faces that fit in the crop beside the speaker are worth leaning towards.
        room = self.crop_w * (1 - 2 * self.margin)
        others = [o for o in others if max(x + w, o.box[0] + o.box[2]) - min(x, o.box[0]) <= room]
        if others:
            weights = [1.0] + [OTHER_FACE_WEIGHT * o.score for o in others]
            centres = [cx] + [o.centre[0] for o in others]
            pulled = float(np.average(centres, weights=weights))
            m = self.margin * self.crop_w
            lo, hi = x + w + m - self.crop_w / 2, x - m + self.crop_w / 2
            cx = min(max(pulled, lo), hi) if lo <= hi else cx
        cy = det.eye_y - self.headroom * self.crop_h + self.crop_h / 2
        return self.clamp(cx, cy)

    def contains(self, cx: float, cy: float, box: Box) -> bool:
        x, y, w, h = box
        return (
            x >= cx - self.crop_w / 2 - 0.5
            and x + w <= cx + self.crop_w / 2 + 0.5
            and y >= cy - self.crop_h / 2 - 0.5
            and y + h <= cy + self.crop_h / 2 + 0.5
        )


@dataclass
class SampleTargets:
    """Per-sample targets; NaN where the crop should hold."""

    cx: np.ndarray
    cy: np.ndarray
    confidence: np.ndarray
    identity: np.ndarray
    """Identity framed at each sample (-1 none)."""


def faces_at(tracks: Sequence[Track], sample: int, max_gap: int) -> dict[int, Detection]:
    """Every person's face at ``sample`` (observed or interpolated in a short gap)."""
    out: dict[int, Detection] = {}
    for t in tracks:
        got = t.at(sample, max_gap)
        if got is None:
            continue
        det = got if isinstance(got, Detection) else got.det
        if t.identity not in out or det.score > out[t.identity].score:
            out[t.identity] = det
    return out


def sample_targets(
    frame: Frame,
    times: np.ndarray | Sequence[float],
    tracks: Sequence[Track],
    runs: Sequence[SpeakerRun],
    motion: Sequence[MotionSample],
    *,
    max_gap: int,
    motion_min_energy: float,
    shot_starts: Sequence[int] = (),
) -> SampleTargets:
    """A target crop centre for every sample (``shot_starts``: samples that begin a shot)."""
    n = len(times)
    t_arr = np.asarray(times, dtype=np.float64)
    cx, cy = np.full(n, np.nan), np.full(n, np.nan)
    conf, who = np.zeros(n), np.full(n, -1)
    shot = np.searchsorted(np.asarray(sorted(shot_starts), dtype=np.int64), np.arange(n), side="right")
    seen = np.array([bool(faces_at(tracks, i, max_gap)) for i in range(n)], dtype=bool)
    for i, t in enumerate(times):
        faces = faces_at(tracks, i, max_gap)
        speaker = run_at(runs, t).identity
        if speaker not in faces and faces:
            # The speaker is not visible here: frame the most confident face that is.
            speaker = max(faces, key=lambda k: faces[k].score * faces[k].box[3])
        if speaker in faces:
            det = faces[speaker]
            others = [d for k, d in faces.items() if k != speaker]
            cx[i], cy[i] = frame.face_centre(det, others)
            conf[i], who[i] = det.score, speaker
            continue
        m = motion[i] if i < len(motion) else None
        near = (np.abs(t_arr - t) <= MOTION_AFTER_FACE) & (shot == shot[i]) & seen
        if m is not None and m.centre is not None and m.energy >= motion_min_energy and not near.any():
            concentration = max(0.0, 1.0 - m.spread / 0.3)
            if concentration > 0.2:
                cx[i], cy[i] = frame.clamp(m.centre[0], m.centre[1])
                conf[i] = MOTION_CONFIDENCE * concentration
    return SampleTargets(cx, cy, conf, who)
