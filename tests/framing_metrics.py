"""Scoring a crop path against the framing truth set (tests and bench share these).

Boxes per output frame are computed the way the renderer does it (montaged/render/croppath.py):
linear interpolation between knots, held before the first and after the last, then snapped to
even pixels inside the frame. The metric therefore sees the crop a viewer sees.

Jerk: the third difference of the crop centre from frame to frame, in px/frame³ (the change of
acceleration). Frames whose 4-frame window touches an intended cut (a scene cut, or a change of
sustained speaker) are left out for every method alike: a cut is a jump by design.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from framing_truth import Scenario

from montaged.model import CropBox


def cache_dir(default: Path) -> Path:
    """Where the truth set lives: ``$MONTAGE_FRAMING_CACHE`` if set (reused across runs), else ``default``."""
    env = os.environ.get("MONTAGE_FRAMING_CACHE")
    return Path(env) if env else default


def interpolate(path: Sequence[CropBox], t: float) -> tuple[float, float, float, float]:
    if t <= path[0].t:
        b = path[0]
        return b.x, b.y, b.w, b.h
    for a, b in itertools.pairwise(path):
        if a.t <= t < b.t:
            f = (t - a.t) / (b.t - a.t)
            return (
                a.x + (b.x - a.x) * f,
                a.y + (b.y - a.y) * f,
                a.w + (b.w - a.w) * f,
                a.h + (b.h - a.h) * f,
            )
    b = path[-1]
    return b.x, b.y, b.w, b.h


def per_frame(path: Sequence[CropBox], times: Sequence[float], frame_w: int, frame_h: int) -> np.ndarray:
    """(n, 4) int boxes per frame, even-snapped inside the frame like the renderer."""
    out = np.zeros((len(times), 4), dtype=np.int64)
    for i, t in enumerate(times):
        x, y, w, h = interpolate(path, t)
        iw, ih = int(round(w / 2) * 2), int(round(h / 2) * 2)
        ix = min(max(int(round(x / 2) * 2), 0), frame_w - iw)
        iy = min(max(int(round(y / 2) * 2), 0), frame_h - ih)
        out[i] = (ix, iy, iw, ih)
    return out


def inside(box: Sequence[float], face: Sequence[float]) -> bool:
    x, y, w, h = box
    fx, fy, fw, fh = face
    return bool(fx >= x and fy >= y and fx + fw <= x + w and fy + fh <= y + h)


@dataclass(frozen=True)
class Score:
    method: str
    inside: float
    """Share of counted frames whose truth face is fully inside the crop (either pane when split)."""
    jerk_mean: float
    jerk_p99: float
    speed_p99: float
    """99th percentile of crop-centre speed, px/frame."""

    def row(self) -> str:
        return (
            f"{self.method:>10}: inside {100 * self.inside:5.1f}%  jerk mean {self.jerk_mean:5.2f}"
            f"  p99 {self.jerk_p99:6.2f} px/frame³  speed p99 {self.speed_p99:6.2f} px/frame"
        )


def score(method: str, sc: Scenario, panes: Sequence[np.ndarray]) -> Score:
    """Score one or two (split) per-frame box arrays against the truth of ``sc``."""
    hits = counted = 0
    for i, f in enumerate(sc.frames):
        if not f.ok:
            continue
        counted += 1
        hits += any(inside(p[i], face) for p in panes for face in f.ok)
    fps = sc.fps
    skip = np.zeros(len(sc.frames), dtype=bool)
    for a, b in sc.changes():
        skip[max(0, round(a * fps) - 1) : round(b * fps) + 4] = True
    jerks, speeds = [], []
    for p in panes:
        c = p[:, :2] + p[:, 2:] / 2.0
        v = np.diff(c, axis=0)
        j = c[3:] - 3 * c[2:-1] + 3 * c[1:-2] - c[:-3]
        ok = ~np.array([skip[max(0, n - 3) : n + 1].any() for n in range(3, len(c))])
        jerks.append(np.hypot(j[ok, 0], j[ok, 1]))
        okv = ~np.array([skip[n : n + 2].any() for n in range(len(c) - 1)])
        speeds.append(np.hypot(v[okv, 0], v[okv, 1]))
    jj, vv = np.concatenate(jerks), np.concatenate(speeds)
    return Score(
        method,
        hits / max(counted, 1),
        float(jj.mean()),
        float(np.percentile(jj, 99)),
        float(np.percentile(vv, 99)),
    )


def naive_boxes(video: Path, frame_w: int, frame_h: int, aspect: float, width: int = 480) -> np.ndarray:
    """The naive crop: every frame, centre on the most confident face (hold when none), no smoothing."""
    import av
    from yuface import c_detect

    cw = min(frame_w, frame_h * aspect)
    ch = cw / aspect
    scale = width / frame_w
    out, cx = [], frame_w / 2
    with av.open(str(video)) as c:
        for f in c.decode(video=0):
            img = f.reformat(width=width, height=round(frame_h * scale) // 2 * 2, format="bgr24").to_ndarray()
            rows = c_detect(np.ascontiguousarray(img))
            rows = rows[rows[:, 0] >= 60]
            if len(rows):
                r = rows[np.argmax(rows[:, 0])]
                cx = (r[1] + r[3] / 2) / scale
            out.append(
                CropBox(f.time or 0.0, round(cx - cw / 2), round((frame_h - ch) / 2), round(cw), round(ch))
            )
    return per_frame(out, [b.t for b in out], frame_w, frame_h)


def static_boxes(n: int, frame_w: int, frame_h: int, aspect: float) -> np.ndarray:
    cw = min(frame_w, frame_h * aspect)
    ch = cw / aspect
    box = CropBox(0.0, round((frame_w - cw) / 2), round((frame_h - ch) / 2), round(cw), round(ch))
    return per_frame([box], [0.0] * n, frame_w, frame_h)
