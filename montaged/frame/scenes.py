"""Scene cuts from colour-histogram differences between sampled frames.

A cut changes the whole picture at once, so the colour distribution jumps; a pan or a person
moving changes it little. Each frame gets a small HSV + brightness histogram; the Bhattacharyya
distance between neighbours is the cut score. A cut needs both an absolute score above
``threshold`` and a clear peak over the local level (``ratio`` times the median of the
neighbouring scores), so a shaky hand-held shot whose scores are all high does not cut everywhere.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

H_BINS, S_BINS, V_BINS = 16, 8, 16


def signature(bgr: np.ndarray) -> np.ndarray:
    """Normalised histogram of hue x saturation plus one of brightness (1-D float32)."""
    small = bgr if bgr.shape[1] <= 160 else cv2.resize(bgr, (160, max(1, bgr.shape[0] * 160 // bgr.shape[1])))
    hsv = cv2.cvtColor(small, cv2.COLOR_BGR2HSV)
    hs = cv2.calcHist([hsv], [0, 1], None, [H_BINS, S_BINS], [0, 180, 0, 256]).ravel()
    v = cv2.calcHist([hsv], [2], None, [V_BINS], [0, 256]).ravel()
    sig = np.concatenate([hs / max(hs.sum(), 1.0), v / max(v.sum(), 1.0)]).astype(np.float32)
    return sig


def distance(a: np.ndarray, b: np.ndarray) -> float:
    """Bhattacharyya distance of two signatures: 0 same colours, 1 disjoint."""
    n = H_BINS * S_BINS
    d_hs = cv2.compareHist(a[:n], b[:n], cv2.HISTCMP_BHATTACHARYYA)
    d_v = cv2.compareHist(a[n:], b[n:], cv2.HISTCMP_BHATTACHARYYA)
    return float(max(d_hs, d_v))


def find_cuts(
    scores: Sequence[float], threshold: float = 0.35, ratio: float = 3.0, window: int = 4
) -> list[int]:
    """Indices ``i`` where a new shot starts (``scores[i]`` compares frame ``i`` with ``i - 1``).

    ``scores[0]`` is ignored (nothing precedes the first frame).
    """
    s = np.asarray(scores, dtype=np.float64)
    cuts: list[int] = []
    for i in range(1, len(s)):
        if s[i] < threshold:
            continue
        near = np.concatenate([s[max(1, i - window) : i], s[i + 1 : i + 1 + window]])
        level = float(np.median(near)) if near.size else 0.0
        if s[i] >= ratio * level and (not cuts or i - cuts[-1] > 1):
            cuts.append(i)
    return cuts
