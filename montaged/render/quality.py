"""How good a finished clip is, from what its sidecar already records: no second look at the media.

Word confidence says whether the captions (and the reason the clip was picked) rest on speech the
recogniser was sure of; the output loudness and true peak say whether the sound meets the
profile's target. A clip outside :class:`~montaged.config.QualityLimits` carries the ``quality``
flag and one warning per reason; it is still written, for an editor to judge.
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
    return {
        "mean_word_confidence": round(mean, 4) if mean is not None else None,
        "low_confidence_share": round(low, 4) if low is not None else None,
        "words": len(confidences),
        "loudness_lufs": lufs,
        "true_peak_dbtp": peak,
        "crop_confidence": _number(crop.get("confidence")),
        "warnings": warnings,
        "flags": [FLAG] if warnings else [],
    }


def observe(quality: Mapping[str, Any]) -> None:
    """Export one clip's measures to Prometheus."""
    if (mean := _number(quality.get("mean_word_confidence"))) is not None:
        metrics.CLIP_WORD_CONFIDENCE.observe(mean)
    if (low := _number(quality.get("low_confidence_share"))) is not None:
        metrics.CLIP_LOW_CONFIDENCE_SHARE.observe(low)
    if (lufs := _number(quality.get("loudness_lufs"))) is not None:
        metrics.CLIP_LOUDNESS.observe(lufs)
    if (peak := _number(quality.get("true_peak_dbtp"))) is not None:
        metrics.CLIP_TRUE_PEAK.observe(peak)
    if (framed := _number(quality.get("crop_confidence"))) is not None:
        metrics.CLIP_CROP_CONFIDENCE.observe(framed)
    metrics.CLIPS_ASSESSED.labels(flagged=str(bool(quality.get("flags"))).lower()).inc()
