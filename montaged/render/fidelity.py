"""How faithful an encode is to what was fed to the encoder: SSIM at a few sampled frames.

The reference for output frame ``k`` is the source frame the extractor picked for it, cropped and
scaled along the clip's crop path by the extractor's own :class:`~montaged.render.extract.Framer`,
so a wrong crop, a shifted range or a starved encoder all lower the score. Luma only, both
downscaled to at most ``WIDTH`` pixels wide: cheap (a few seeks and decodes per clip), and what
SSIM was designed on. Burned-in captions differ from the source by design and lower the score by
about the share of the picture they cover.
"""

from __future__ import annotations

import dataclasses
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np

from montaged.media.probe import CorruptMediaError
from montaged.render.extract import ExtractSpec, Framer, _decode_from, _planes

SAMPLES = 5
"""Output frames compared per clip, spread evenly over it."""
WIDTH = 360
"""Frames are compared at this width at most (SSIM's detail scale, a tenth of the cost of 1080p)."""
_C1, _C2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    """Mean SSIM of two equal-size grey images (Gaussian window, sigma 1.5, as Wang et al.)."""
    if a.shape != b.shape:
        raise ValueError(f"SSIM needs equal sizes (got {a.shape} and {b.shape})")
    x, y = a.astype(np.float32), b.astype(np.float32)

    def blur(m: np.ndarray) -> np.ndarray:
        return cv2.GaussianBlur(m, (11, 11), 1.5)

    mx, my = blur(x), blur(y)
    vx, vy, cov = blur(x * x) - mx * mx, blur(y * y) - my * my, blur(x * y) - mx * my
    num = (2 * mx * my + _C1) * (2 * cov + _C2)
    den = (mx * mx + my * my + _C1) * (vx + vy + _C2)
    return float(np.mean(num / den))


def _small(luma: np.ndarray) -> np.ndarray:
    h, w = luma.shape
    if w <= WIDTH:
        return np.ascontiguousarray(luma)
    size = (WIDTH, max(2, round(h * WIDTH / w)))
    return cv2.resize(np.ascontiguousarray(luma), size, interpolation=cv2.INTER_AREA)


def _reference(spec: ExtractSpec, k: int, display: tuple[int, int]) -> np.ndarray | None:
    """The luma the extractor fed the encoder for output frame ``k`` (nearest source frame)."""
    t = float(k / spec.rate)
    at = dataclasses.replace(spec, start=spec.start + t, frames=1)
    frames = _decode_from(at)
    try:
        prev: tuple[av.VideoFrame, float] | None = None
        chosen = None
        for frame, ft in frames:
            if ft >= at.start:
                chosen = frame if prev is None or ft - at.start <= at.start - prev[1] else prev[0]
                break
            prev = (frame, ft)
        chosen = chosen if chosen is not None else (prev[0] if prev is not None else None)
    finally:
        frames.close()
    if chosen is None:
        return None
    w, h = spec.width, spec.height
    return Framer(spec, *display).render(chosen, t)[: w * h].reshape(h, w).copy()


def _encoded(path: Path, times: list[float], rate: Fraction) -> list[np.ndarray | None]:
    """Luma of the output frames at ``times`` (seconds from the clip's start)."""
    out: list[np.ndarray | None] = []
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        origin = container.start_time / av.time_base if container.start_time is not None else 0.0
        assert stream.time_base is not None
        for t in times:
            container.seek(int((t + origin) / stream.time_base), stream=stream, backward=True)
            got = None
            for frame in container.decode(stream):
                if frame.time is not None and frame.time - origin >= t - 0.5 / float(rate):
                    got = _planes(frame, 0)[0].copy()
                    break
            out.append(got)
    return out


def measure(spec: ExtractSpec, display: tuple[int, int], encoded: Path) -> dict[str, float | int] | None:
    """``{"ssim": mean, "ssim_min": worst, "frames": compared}`` of ``encoded`` against its
    reference at up to :data:`SAMPLES` frames; None when no frame could be compared (sync: run it
    in a thread)."""
    n = min(SAMPLES, spec.frames)
    ks = sorted({round((i + 0.5) * spec.frames / n) for i in range(n)} - {spec.frames})
    try:
        outs = _encoded(encoded, [float(k / spec.rate) for k in ks], spec.rate)
        scores = []
        for k, got in zip(ks, outs, strict=True):
            ref = _reference(spec, k, display)
            if got is not None and ref is not None and got.shape == ref.shape:
                scores.append(ssim(_small(ref), _small(got)))
    except (av.error.FFmpegError, CorruptMediaError):
        return None
    if not scores:
        return None
    mean = round(float(np.mean(scores)), 4)
    return {"ssim": mean, "ssim_min": round(min(scores), 4), "frames": len(scores)}
