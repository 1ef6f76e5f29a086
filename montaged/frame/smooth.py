"""Turn a jittery per-frame target into a path a camera operator could have framed.

Per shot (between hard cuts), one axis at a time, on a uniform grid of output-frame times:

1. **Gaps**: samples with no target hold the last known one (the first known, at a shot start).
2. **Pre-smoothing**: a zero-phase Gaussian (``presmooth`` seconds) removes detector jitter
   without lag; the plan is made offline, so the filter may look both ways.
3. **Dead zone**: a backlash operator. The goal stays put while the target wanders within
   ``dead_zone`` pixels of it, and is dragged along when it leaves, so a talking head's sway
   never moves the camera but a walk is followed at the walker's own speed.
4. **Follower**: a time-optimal second-order follower with bounded speed and acceleration,
   chasing the goal ``lookahead`` seconds ahead (an operator anticipates a move they can see
   coming; offline, we can). Each step it asks for the speed from which it can still stop at the
   goal, ``min(max_speed, sqrt(2 * max_accel * distance))``, and changes its speed towards that
   by at most ``max_accel * dt``. So ``|v| <= max_speed`` and ``|a| <= max_accel`` hold exactly on
   the grid; the result is clamped to the frame, which only ever slows it.

Hard cuts (scene cuts, speaker changes too far to pan) reset the follower onto the new target.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.ndimage import gaussian_filter1d


@dataclass(frozen=True)
class Motion:
    """Camera limits for one axis, in pixels and seconds."""

    dead_zone: float
    max_speed: float
    max_accel: float
    lookahead: float = 0.3
    presmooth: float = 0.25


def fill_gaps(goal: np.ndarray, default: float) -> np.ndarray:
    """Forward-fill NaNs, back-fill a NaN head; all-NaN becomes ``default``."""
    out = np.asarray(goal, dtype=np.float64).copy()
    ok = np.isfinite(out)
    if not ok.any():
        return np.full_like(out, default)
    idx = np.where(ok, np.arange(len(out)), 0)
    np.maximum.accumulate(idx, out=idx)
    out = out[idx]
    first = int(np.argmax(ok))
    out[:first] = out[first]
    return out


def backlash(x: np.ndarray, width: float) -> np.ndarray:
    """Dead zone: the output moves only when ``x`` is more than ``width`` away from it."""
    out = np.empty_like(x)
    h = float(x[0])
    for i, v in enumerate(x):
        if v > h + width:
            h = float(v) - width
        elif v < h - width:
            h = float(v) + width
        out[i] = h
    return out


def follow_axis(goal: np.ndarray, dt: float, m: Motion, start: float | None = None) -> np.ndarray:
    """Bounded speed/acceleration follower of ``goal`` (already gap-free), one sample per ``dt``."""
    n = len(goal)
    ahead = max(0, round(m.lookahead / dt))
    target = np.concatenate([goal[ahead:], np.full(min(ahead, n), goal[-1])])[:n]
    x = float(goal[0] if start is None else start)
    v = 0.0
    out = np.empty(n)
    dv_max = m.max_accel * dt
    for i in range(n):
        e = float(target[i]) - x
        # Speed from which we can still stop at the goal, minus the step we are about to take.
        want = np.sign(e) * min(m.max_speed, np.sqrt(2.0 * m.max_accel * max(abs(e) - abs(v) * dt / 2, 0.0)))
        if abs(e) < 0.5 and abs(v) <= dv_max:
            want = 0.0
        v += float(np.clip(want - v, -dv_max, dv_max))
        x += v * dt
        out[i] = x
    return out


def smooth_axis(
    goal: np.ndarray, dt: float, cuts: Sequence[int], lo: float, hi: float, m: Motion, default: float
) -> np.ndarray:
    """Smoothed positions on the grid; ``cuts`` are grid indices where a new shot starts."""
    n = len(goal)
    bounds = [0, *sorted(c for c in set(cuts) if 0 < c < n), n]
    out = np.empty(n)
    for a, b in itertools.pairwise(bounds):
        # A shot with no target at all holds where the previous one ended.
        seg = fill_gaps(goal[a:b], float(out[a - 1]) if a > 0 else default)
        sigma = m.presmooth / dt
        if sigma > 0.5 and len(seg) > 1:
            seg = gaussian_filter1d(seg, sigma, mode="nearest")
        seg = np.clip(seg, lo, hi)
        seg = backlash(seg, m.dead_zone)
        out[a:b] = np.clip(follow_axis(seg, dt, m), lo, hi)
    return out


def decimate(t: np.ndarray, cols: Sequence[np.ndarray], tol: float) -> list[int]:
    """Indices of knots such that linear interpolation between them stays within ``tol`` of every
    column at every grid point (Ramer-Douglas-Peucker in time), first and last always kept."""
    n = len(t)
    if n <= 2:
        return list(range(n))
    keep = np.zeros(n, dtype=bool)
    keep[0] = keep[-1] = True
    stack = [(0, n - 1)]
    while stack:
        i, j = stack.pop()
        if j - i < 2:
            continue
        f = (t[i + 1 : j] - t[i]) / (t[j] - t[i])
        err = np.zeros(j - i - 1)
        for c in cols:
            err = np.maximum(err, np.abs(c[i + 1 : j] - (c[i] + (c[j] - c[i]) * f)))
        k = int(np.argmax(err))
        if err[k] > tol:
            mid = i + 1 + k
            keep[mid] = True
            stack += [(i, mid), (mid, j)]
    return [int(i) for i in np.flatnonzero(keep)]
