"""Where things move: dense optical flow plus background subtraction on small grey frames.

Used when no face is found (a speaker turned away, a demo on a table, a wide stage shot) and to
notice gestures. Both run at ``MOTION_WIDTH`` pixels wide: the question is *where* motion is, to
within a crop width, and flow at 160 px costs about a millisecond.

- Farneback flow between the previous and the current sample gives how far things moved.
- MOG2 background subtraction marks what is not background; multiplying the two keeps motion
  that belongs to foreground objects and drops flow noise on flat walls.

The motion centre is the flow-magnitude-weighted centroid; ``spread`` says how concentrated it is
(0: all in one spot, ~0.3: all over the frame), which bounds how much a crop should trust it.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

MOTION_WIDTH = 160
"""Width of the frames flow and background subtraction run on."""


@dataclass(frozen=True)
class MotionSample:
    """Motion at one sampled frame, in source pixels."""

    energy: float
    """Mean foreground flow speed in frame widths per second."""
    centre: tuple[float, float] | None
    """Centroid of moving foreground, or None when nothing moves."""
    spread: float
    """Horizontal standard deviation of the motion around its centre, in frame widths."""
    foreground: float
    """Share of the frame MOG2 calls foreground."""


class MotionAnalyser:
    """Feed sampled frames in order; each call answers the motion since the previous one.

    Args:
        source_width: width of the source in display pixels (answers are scaled back to it).
        history: frames MOG2 remembers as background (at 5 samples/s, 50 is ten seconds).
    """

    def __init__(self, source_width: int, history: int = 50) -> None:
        self._prev: np.ndarray | None = None
        self._history = history
        self._mog = cv2.createBackgroundSubtractorMOG2(history=history, varThreshold=16, detectShadows=False)
        self._scale = source_width / MOTION_WIDTH

    def reset(self) -> None:
        """Forget the past (after a scene cut: the old background is meaningless)."""
        self._prev = None
        self._mog = cv2.createBackgroundSubtractorMOG2(
            history=self._history, varThreshold=16, detectShadows=False
        )

    def update(self, gray: np.ndarray, dt: float) -> MotionSample:
        """Motion between the previous frame and ``gray`` (any size; resized here), ``dt`` apart."""
        h = max(2, round(gray.shape[0] * MOTION_WIDTH / gray.shape[1]))
        small = cv2.resize(gray, (MOTION_WIDTH, h), interpolation=cv2.INTER_AREA)
        fg = self._mog.apply(small).astype(np.float32) / 255.0
        prev, self._prev = self._prev, small
        if prev is None or dt <= 0:
            return MotionSample(0.0, None, 0.0, float(fg.mean()))
        flow: np.ndarray = np.zeros((h, MOTION_WIDTH, 2), np.float32)
        flow = cv2.calcOpticalFlowFarneback(prev, small, flow, 0.5, 2, 9, 2, 5, 1.1, 0)
        mag = np.hypot(flow[..., 0], flow[..., 1])
        # Camera pans move everything: take the median motion out so a pan is not "motion here".
        mag = np.maximum(mag - float(np.median(mag)), 0.0)
        weight = mag * (0.25 + fg)
        total = float(weight.sum())
        energy = float((mag * fg).mean()) / MOTION_WIDTH / dt
        if total < 1e-3 * weight.size:
            return MotionSample(energy, None, 0.0, float(fg.mean()))
        ys, xs = np.mgrid[0:h, 0:MOTION_WIDTH]
        cx = float((weight * xs).sum() / total)
        cy = float((weight * ys).sum() / total)
        spread = float(np.sqrt((weight * (xs - cx) ** 2).sum() / total)) / MOTION_WIDTH
        return MotionSample(
            energy, ((cx + 0.5) * self._scale, (cy + 0.5) * self._scale), spread, float(fg.mean())
        )
