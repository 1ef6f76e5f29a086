"""How good a finished clip is, from what its sidecar already records.

Word confidence says whether the captions (and the reason the clip was picked) rest on speech the
recogniser was sure of; the output loudness and true peak say whether the sound meets the
profile's target; the face-detection confidence and the share of frames with the active speaker's
face inside the crop (frame/onscreen.py) say whether the framing can be trusted; the SSIM of the
encode against its cropped source at a few frames (fidelity.py, measured by the renderer) says
whether the encoder kept the picture. A clip outside :class:`~montaged.config.QualityLimits`
carries the ``quality`` flag and one warning per reason; it is still written, for an editor to judge.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from montaged import metrics
from montaged.config import QualityLimits

FLAG = "quality"


def _number(v: object) -> float | None:
    return float(v) if isinstance(v, int | float) and not isinstance(v, bool) else None


def assess(doc: Mapping[str, Any], limits: QualityLimits) -> dict[str, Any]:
    """The ``quality`` object of a sidecar ``doc``: measures, warnings and flags."""
    confidences = [c for w in doc.get("words") or [] if (c := _number(w.get("confidence"))) is not None]
    mean = sum(confidences) / len(confidences) if confidences else None
    low = sum(c < limits.low_word_confidence for c in confidences) / len(confidences) if confidences else None
    loud = doc.get("loudness") or {}
    out = loud.get("output") or {}
    lufs, peak = _number(out.get("integrated_lufs")), _number(out.get("true_peak_dbtp"))
    crop = doc.get("crop") or {}
    warnings: list[str] = []
    if mean is not None and mean < limits.min_mean_confidence:
        warnings.append(f"mean word confidence {mean:.2f} is under {limits.min_mean_confidence:.2f}")
    if low is not None and low > limits.max_low_confidence_share:
        limit = limits.max_low_confidence_share
        warnings.append(f"{low:.0%} of the words are low-confidence (limit {limit:.0%})")
    target, ceiling = _number(loud.get("target_lufs")), _number(loud.get("true_peak_limit_dbtp"))
    if lufs is not None and target is not None and abs(lufs - target) > limits.loudness_tolerance_lu:
        warnings.append(f"loudness {lufs:.1f} LUFS is off the {target:.1f} LUFS target")
    if peak is not None and ceiling is not None and peak > ceiling:
        warnings.append(f"true peak {peak:.1f} dBTP is over the {ceiling:.1f} dBTP ceiling")
    inside = _number(crop.get("speaker_in_crop"))
    if inside is not None and inside < limits.min_speaker_in_crop:
        warnings.append(f"the speaker's face is inside the crop in {inside:.0%} of the frames "
                        f"(limit {limits.min_speaker_in_crop:.0%})")
    faithful = doc.get("fidelity") or {}
    ssim = _number(faithful.get("ssim"))
    if ssim is not None and ssim < limits.min_ssim:
        limit = limits.min_ssim
        warnings.append(f"the encode's SSIM against the cropped source is {ssim:.3f} (limit {limit:.2f})")
    return {
        "mean_word_confidence": round(mean, 4) if mean is not None else None,
        "low_confidence_share": round(low, 4) if low is not None else None,
        "words": len(confidences),
        "loudness_lufs": lufs,
        "true_peak_dbtp": peak,
        "crop_confidence": _number(crop.get("confidence")),
        "face_confidence": _number(crop.get("face_confidence")),
        "speaker_in_crop": inside,
        "ssim": ssim,
        "ssim_min": _number(faithful.get("ssim_min")),
        "warnings": warnings,
        "flags": [FLAG] if warnings else [],
    }


_HISTOGRAMS = (
    ("mean_word_confidence", metrics.CLIP_WORD_CONFIDENCE),
    ("low_confidence_share", metrics.CLIP_LOW_CONFIDENCE_SHARE),
    ("loudness_lufs", metrics.CLIP_LOUDNESS),
    ("true_peak_dbtp", metrics.CLIP_TRUE_PEAK),
    ("crop_confidence", metrics.CLIP_CROP_CONFIDENCE),
    ("face_confidence", metrics.CLIP_FACE_CONFIDENCE),
    ("speaker_in_crop", metrics.CLIP_SPEAKER_IN_CROP),
    ("ssim", metrics.CLIP_SSIM),
)
"""Each measure and its histogram; a measure a clip does not have (None) is not observed."""


def observe(quality: Mapping[str, Any]) -> None:
    """Export one clip's measures to Prometheus."""
    for key, histogram in _HISTOGRAMS:
        if (value := _number(quality.get(key))) is not None:
            histogram.observe(value)
    metrics.CLIPS_ASSESSED.labels(flagged=str(bool(quality.get("flags"))).lower()).inc()
