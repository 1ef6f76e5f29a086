"""Link per-frame face detections into tracks, so a face keeps its identity through a clip.

Frame to frame, detections are matched to live tracks by an assignment (Hungarian) over a cost
that mixes overlap with the track's predicted box (constant velocity), centre distance in face
sizes, size change and appearance (a hue-saturation histogram of the face box). A track survives
``max_gap`` samples without a detection (a turned head, a hand over the face) and ends at a scene
cut. Afterwards, tracks that never overlap in time and look alike are given one ``identity``, so
the same person after a cut or a long occlusion is still the same speaker.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import cv2
import numpy as np
from scipy.optimize import linear_sum_assignment

from montaged.frame.detect import Box, Detection

MAX_COST = 2.0
"""Pairs costing more than this are never matched (the gate)."""
SAME_LOOK = 0.35
"""Bhattacharyya distance of face histograms below which two non-overlapping tracks are one person."""


@dataclass
class FaceObs:
    """One detected face at one sample, in source pixels."""

    sample: int
    det: Detection
    hist: np.ndarray
    """Hue-saturation histogram of the face box (appearance)."""
    activity: float | None = None
    """Mouth motion since the previous sample (see speaker.mouth_activity); None if unknown."""
    chip: np.ndarray | None = None
    """The face cut out upright for re-identification (embed.py), on some samples only."""


@dataclass
class Track:
    id: int
    obs: list[FaceObs] = field(default_factory=list)
    identity: int = -1
    """Tracks of the same person share an identity (set by :func:`link`, and across the whole
    talk by identity.py)."""
    embedding: np.ndarray | None = None
    """Mean face embedding of the track (embed.py), once computed; None if never embedded."""

    @property
    def first(self) -> int:
        return self.obs[0].sample

    @property
    def last(self) -> int:
        return self.obs[-1].sample

    def mean_hist(self) -> np.ndarray:
        mean: np.ndarray = np.mean([o.hist for o in self.obs], axis=0).astype(np.float32)
        return mean

    def predict(self, sample: int) -> Box:
        """Box expected at ``sample`` from the last two observations (constant velocity)."""
        last = self.obs[-1]
        if len(self.obs) < 2:
            return last.det.box
        prev = self.obs[-2]
        span = max(1, last.sample - prev.sample)
        k = (sample - last.sample) / span
        x, y, w, h = (b + (b - a) * k for a, b in zip(prev.det.box, last.det.box, strict=True))
        return x, y, max(w, 1.0), max(h, 1.0)

    def at(self, sample: int, max_gap: int) -> FaceObs | Detection | None:
        """The observation at ``sample``, an interpolated detection inside a gap of at most
        ``max_gap`` samples, or None outside the track."""
        if not self.obs or sample < self.first or sample > self.last:
            return None
        samples = [o.sample for o in self.obs]
        i = int(np.searchsorted(samples, sample))
        if samples[i] == sample:
            return self.obs[i]
        a, b = self.obs[i - 1], self.obs[i]
        if b.sample - a.sample > max_gap + 1:
            return None
        f = (sample - a.sample) / (b.sample - a.sample)
        box = tuple(p + (q - p) * f for p, q in zip(a.det.box, b.det.box, strict=True))
        marks: tuple[tuple[float, float], ...] = ()
        if len(a.det.landmarks) == len(b.det.landmarks):
            marks = tuple(
                (p[0] + (q[0] - p[0]) * f, p[1] + (q[1] - p[1]) * f)
                for p, q in zip(a.det.landmarks, b.det.landmarks, strict=True)
            )
        return Detection(box, min(a.det.score, b.det.score), marks)  # type: ignore[arg-type]


def face_hist(bgr: np.ndarray, box: Box) -> np.ndarray:
    """Hue-saturation histogram of the inner face box (hair and background trimmed off)."""
    x, y, w, h = box
    x0, y0 = max(0, int(x + 0.2 * w)), max(0, int(y + 0.25 * h))
    x1, y1 = min(bgr.shape[1], int(x + 0.8 * w)), min(bgr.shape[0], int(y + 0.9 * h))
    if x1 - x0 < 2 or y1 - y0 < 2:
        return np.full(16 * 8, 1.0 / 128, dtype=np.float32)
    hsv = cv2.cvtColor(bgr[y0:y1, x0:x1], cv2.COLOR_BGR2HSV)
    hist = cv2.calcHist([hsv], [0, 1], None, [16, 8], [0, 180, 0, 256]).ravel()
    return (hist / max(float(hist.sum()), 1.0)).astype(np.float32)


def iou(a: Box, b: Box) -> float:
    ax, ay, aw, ah = a
    bx, by, bw, bh = b
    ix = max(0.0, min(ax + aw, bx + bw) - max(ax, bx))
    iy = max(0.0, min(ay + ah, by + bh) - max(ay, by))
    inter = ix * iy
    union = aw * ah + bw * bh - inter
    return inter / union if union > 0 else 0.0


def look_distance(a: np.ndarray, b: np.ndarray) -> float:
    return float(cv2.compareHist(a, b, cv2.HISTCMP_BHATTACHARYYA))


def match_cost(track: Track, obs: FaceObs) -> float:
    """Cost of extending ``track`` with ``obs``; above MAX_COST means "not the same face"."""
    pred = track.predict(obs.sample)
    px, py, pw, ph = pred
    ox, oy, ow, oh = obs.det.box
    size = max(1.0, float(np.sqrt(pw * ph)))
    dist = float(np.hypot(px + pw / 2 - ox - ow / 2, py + ph / 2 - oy - oh / 2)) / size
    scale = abs(np.log(max(ow * oh, 1.0) / max(pw * ph, 1.0)))
    look = look_distance(track.obs[-1].hist, obs.hist)
    if dist > 2.0 or scale > 1.0 or look > 0.6:
        return MAX_COST + 1.0
    return float((1.0 - iou(pred, obs.det.box)) * 0.5 + dist * 0.5 + scale * 0.3 + look)


def link(
    frames: Sequence[Sequence[FaceObs]],
    shot_starts: Sequence[int] = (),
    *,
    max_gap: int = 5,
    min_obs: int = 3,
) -> list[Track]:
    """Tracks from per-sample observations ``frames[i]`` (sample ``i``).

    Args:
        frames: observations of each sample, in sample order.
        shot_starts: samples that begin a new shot; no track crosses one.
        max_gap: samples a track may go undetected and still continue.
        min_obs: tracks with fewer observations are dropped unless every score is high (a
            face glimpsed once at 0.95 is kept; three frames of 0.6 on a curtain are not).
    """
    starts = set(shot_starts)
    live: list[Track] = []
    done: list[Track] = []
    next_id = 0
    for i, obs_here in enumerate(frames):
        if i in starts:
            done += live
            live = []
        still = [t for t in live if i - t.last <= max_gap + 1]
        done += [t for t in live if i - t.last > max_gap + 1]
        live = still
        matched: set[int] = set()
        if live and obs_here:
            cost = np.array([[match_cost(t, o) for o in obs_here] for t in live])
            rows, cols = linear_sum_assignment(cost)
            for r, c in zip(rows, cols, strict=True):
                if cost[r, c] <= MAX_COST:
                    live[r].obs.append(obs_here[c])
                    matched.add(int(c))
        for j, o in enumerate(obs_here):
            if j not in matched:
                live.append(Track(next_id, [o]))
                next_id += 1
    done += live
    kept = [t for t in done if len(t.obs) >= min_obs or min(o.det.score for o in t.obs) >= 0.9]
    kept.sort(key=lambda t: (t.first, t.id))
    _assign_identities(kept)
    return kept


def _assign_identities(tracks: list[Track]) -> None:
    """Give non-overlapping look-alike tracks one identity (greedy, in time order)."""
    people: list[list[Track]] = []
    for t in tracks:
        h = t.mean_hist()
        best, best_d = None, SAME_LOOK
        for group in people:
            if any(not (t.first > g.last or t.last < g.first) for g in group):
                continue  # on screen at the same time: two people
            d = look_distance(group[-1].mean_hist(), h)
            if d < best_d:
                best, best_d = group, d
        if best is None:
            people.append([t])
        else:
            best.append(t)
    for n, group in enumerate(people):
        for t in group:
            t.identity = n
