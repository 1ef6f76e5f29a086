"""Per-clip quality from the sidecar: measures, the ``quality`` flag, its line in montagectl, metrics."""

from __future__ import annotations

from montaged import metrics
from montaged.config import QualityLimits
from montaged.ctl.render import quality_line
from montaged.render.quality import assess, observe


def _doc(confidences: list[float], lufs: float = -14.1, peak: float = -1.4) -> dict[str, object]:
    return {
        "words": [{"text": f"w{i}", "confidence": c} for i, c in enumerate(confidences)],
        "loudness": {"target_lufs": -14.0, "true_peak_limit_dbtp": -1.0,
                     "output": {"integrated_lufs": lufs, "true_peak_dbtp": peak, "lra": 4.0}},
        "crop": {"confidence": 0.8},
    }


def test_good_clip_is_not_flagged() -> None:
    q = assess(_doc([0.9, 0.95, 0.8, 0.99]), QualityLimits())
    assert q["flags"] == [] and q["warnings"] == []
    assert q["mean_word_confidence"] == 0.91 and q["low_confidence_share"] == 0.0
    assert (q["loudness_lufs"], q["true_peak_dbtp"], q["crop_confidence"]) == (-14.1, -1.4, 0.8)


def test_each_limit_flags_with_its_reason() -> None:
    q = assess(_doc([0.3, 0.4, 0.9, 0.95], lufs=-16.0, peak=-0.2), QualityLimits())
    assert q["flags"] == ["quality"]
    text = " | ".join(q["warnings"])
    assert "mean word confidence 0.64 is under 0.70" in text
    assert "50% of the words are low-confidence (limit 20%)" in text
    assert "loudness -16.0 LUFS is off the -14.0 LUFS target" in text
    assert "true peak -0.2 dBTP is over the -1.0 dBTP ceiling" in text
    # the limits are configuration
    assert assess(_doc([0.3, 0.4, 0.9, 0.95]), QualityLimits(min_mean_confidence=0.5,
                                                          max_low_confidence_share=0.6))["flags"] == []


def test_clip_without_words_or_sound() -> None:
    q = assess({"words": [], "loudness": None}, QualityLimits())
    assert q["mean_word_confidence"] is None and q["loudness_lufs"] is None and q["flags"] == []


def test_montagectl_line_and_metrics() -> None:
    q = assess(_doc([0.3, 0.4, 0.9, 0.95]), QualityLimits())
    line = quality_line(q)
    assert line.startswith("quality: words 0.64 mean confidence, 50% low; sound -14.1 LUFS, peak -1.4 dBTP")
    assert "[quality] mean word confidence" in line

    def flagged() -> float:
        return metrics.REGISTRY.get_sample_value("montage_clips_assessed_total", {"flagged": "true"}) or 0.0

    before = flagged()
    observe(q)
    assert flagged() == before + 1
    assert (metrics.REGISTRY.get_sample_value("montage_clip_loudness_lufs_count") or 0) >= 1


def test_montagectl_list_counts_flagged_clips() -> None:
    from montaged.ctl.render import clips_cell

    good, bad = assess(_doc([0.9, 0.95]), QualityLimits()), assess(_doc([0.1, 0.2]), QualityLimits())
    job = {"result": {"clips": [{"quality": good}, {"quality": bad}, {}]}}
    assert clips_cell(job) == "3 (1 quality)"
    assert clips_cell({"result": {"clips": [{"quality": good}]}}) == "1"
