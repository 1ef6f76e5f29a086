"""Crop-path geometry: where the crop window is at time ``t``, made to fit the output exactly.

A crop path is sampled (a few boxes per second, from the frame stage); each output frame needs a
box, so boxes are linearly interpolated between samples and held before the first and after the
last. Coordinates are source pixels in *display* orientation (after rotation metadata is applied).
Boxes are then forced to the output aspect around their centre, kept inside the frame, and snapped
to even pixels, because 4:2:0 chroma has one sample per 2x2 block and an odd crop would shift
colour against brightness by half a pixel.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence

from montaged.model import CropBox

Box = tuple[float, float, float, float]
"""x, y, w, h in source pixels (floats while interpolating)."""
IntBox = tuple[int, int, int, int]


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


def box_at(path: Sequence[CropBox], t: float) -> Box:
    """The crop box at ``t`` seconds from the clip start, linearly interpolated between samples.

    ``path`` must be sorted by ``t`` (the frame stage emits it so); an empty path is an error.
    """
    if not path:
        raise ValueError("empty crop path")
    if t <= path[0].t:
        b = path[0]
        return float(b.x), float(b.y), float(b.w), float(b.h)
    if t >= path[-1].t:
        b = path[-1]
        return float(b.x), float(b.y), float(b.w), float(b.h)
    i = bisect.bisect_right([b.t for b in path], t)
    a, b = path[i - 1], path[i]
    span = b.t - a.t
    f = (t - a.t) / span if span > 0 else 1.0
    return (
        a.x + (b.x - a.x) * f,
        a.y + (b.y - a.y) * f,
        a.w + (b.w - a.w) * f,
        a.h + (b.h - a.h) * f,
    )


def _even(v: float) -> int:
    return round(v / 2.0) * 2


def fit_box(box: Box, aspect: float, frame_w: int, frame_h: int) -> IntBox:
    """Reshape ``box`` to ``aspect`` (w/h) around its centre, inside the frame, on even pixels.

    The box keeps its height (or width, whichever makes it larger) so a face-sized box is widened
    rather than squashed; when the result is larger than the frame it is shrunk to fit.
    """
    x, y, w, h = box
    cx, cy = x + w / 2.0, y + h / 2.0
    w, h = max(w, 2.0), max(h, 2.0)
    if w / h > aspect:
        h = w / aspect
    else:
        w = h * aspect
    scale = min(1.0, frame_w / w, frame_h / h)
    w, h = w * scale, h * scale
    iw = max(2, min(_even(w), frame_w - frame_w % 2))
    ih = max(2, min(_even(h), frame_h - frame_h % 2))
    ix = min(max(_even(cx - iw / 2.0), 0), frame_w - iw)
    iy = min(max(_even(cy - ih / 2.0), 0), frame_h - ih)
    return max(0, ix - ix % 2), max(0, iy - iy % 2), iw, ih


def centre_box(frame_w: int, frame_h: int, aspect: float) -> IntBox:
    """The largest box of ``aspect`` centred in the frame (the crop when no path is known)."""
    return fit_box((0.0, 0.0, float(frame_w), float(frame_h)), aspect, frame_w, frame_h)


def fit_inside(src_w: int, src_h: int, dst_w: int, dst_h: int) -> tuple[int, int]:
    """Even size of ``src`` scaled to fit inside ``dst`` keeping its aspect (letterbox foreground)."""
    scale = min(dst_w / src_w, dst_h / src_h)
    return max(2, min(dst_w, _even(src_w * scale))), max(2, min(dst_h, _even(src_h * scale)))
