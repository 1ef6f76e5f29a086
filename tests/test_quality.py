"""Per-clip quality from the sidecar: measures, the ``quality`` flag, its line in montagectl, metrics."""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path
from typing import Any

import anyio
import numpy as np
from conftest import make_talk_clip

from montaged import metrics
from montaged.config import FrameConfig, ProfileConfig, QualityLimits
from montaged.ctl.render import quality_line
from montaged.frame.analyse import ClipAnalysis
from montaged.frame.detect import Detection
from montaged.frame.onscreen import speaker_in_crop
from montaged.frame.plan import build_plan
from montaged.frame.speaker import SpeakerRun
from montaged.frame.tracks import FaceObs, link
from montaged.media.encoders import EncoderChoice, encoder_args
from montaged.media.probe import probe_media
from montaged.model import ClipPlan, CropBox, CropPlan
from montaged.render import fidelity
from montaged.render.encode import render_clip
from montaged.render.extract import ExtractSpec
from montaged.render.quality import assess, observe


def _doc(confidences: list[float], lufs: float = -14.1, peak: float = -1.4) -> dict[str, Any]:
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


# --- framing: face confidence and the speaker inside the crop -----------------------------------


def _walking_face(n: int = 100, duration: float = 20.0) -> ClipAnalysis:
    """One talking face that walks from the left edge of a 1920x1080 frame to the right."""
    hist = np.random.default_rng(1).dirichlet(np.full(128, 0.05)).astype(np.float32)
    frames = [[FaceObs(i, Detection((100.0 + 16.0 * i, 300.0, 150.0, 190.0), 0.85), hist, 0.8)]
              for i in range(n)]
    times = np.linspace(0, duration, n, endpoint=False)
    return ClipAnalysis(0.0, duration, 1920, 1080, 25.0, times, link(frames, max_gap=5, min_obs=2),
                        [], [], [], [], "test", 5)


def test_a_plan_that_follows_the_face_keeps_it_inside() -> None:
    an = _walking_face()
    plan = build_plan(an, 0, ProfileConfig(aspect="9:16", width=1080, height=1920), FrameConfig())
    assert plan.layout == "crop" and len(plan.path) > 1
    assert plan.face_confidence == 0.85
    assert plan.speaker_in_crop is not None and plan.speaker_in_crop >= 0.95
    # a crop parked on the left third sees the face only while it walks through there
    runs = [SpeakerRun(0.0, an.duration, an.tracks[0].identity)]
    parked = (CropBox(0.0, 0, 0, 608, 1080),)
    share = speaker_in_crop(an.times, an.tracks, runs, [parked], an.max_gap)
    assert share is not None and 0.2 < share < 0.4
    assert CropPlan.from_dict(plan.to_dict()) == plan  # the summary survives the job store's round trip


def test_speaker_out_of_the_crop_flags_the_clip() -> None:
    doc = _doc([0.9, 0.95])
    doc["crop"] = {"confidence": 0.8, "face_confidence": 0.9, "speaker_in_crop": 0.5}
    q = assess(doc, QualityLimits())
    assert (q["face_confidence"], q["speaker_in_crop"]) == (0.9, 0.5)
    assert q["flags"] == ["quality"]
    assert "the speaker's face is inside the crop in 50% of the frames (limit 80%)" in q["warnings"]
    assert assess(doc, QualityLimits(min_speaker_in_crop=0.4))["flags"] == []
    assert "faces 0.90 confidence, speaker in crop 50%" in quality_line(q)
    before = metrics.REGISTRY.get_sample_value("montage_clip_speaker_in_crop_count") or 0.0
    observe(q)
    assert metrics.REGISTRY.get_sample_value("montage_clip_speaker_in_crop_count") == before + 1
    assert (metrics.REGISTRY.get_sample_value("montage_clip_face_confidence_count") or 0) >= 1


# --- encode fidelity: SSIM against the cropped source, on real renders --------------------------


def test_ssim_of_a_real_render_and_of_a_wrong_crop(tmp_path: Path, ffmpeg: str) -> None:
    src = make_talk_clip(tmp_path / "talk.mp4", seconds=3.0)
    info = probe_media(src)
    left = CropPlan(0, "crop", (CropBox(0.0, 0, 0, 202, 360),), confidence=0.9)
    profile = ProfileConfig(aspect="9:16", width=270, height=480, crf=20)
    enc = EncoderChoice("libx264", False, encoder_args("libx264", "ultrafast"))
    clip = anyio.run(lambda: render_clip(
        source=src, info=info, plan=ClipPlan(0, 0.5, 2.5, 1.0, {}, "", ""), crop=left, profile=profile,
        encoder=enc, out_dir=tmp_path / "out", stem="c", words=[], ffmpeg=ffmpeg))  # fmt: skip
    doc = json.loads(Path(clip.sidecar_path).read_text())
    assert doc["fidelity"]["frames"] == 5 and doc["fidelity"]["ssim"] > 0.9
    q = assess(doc, QualityLimits())
    assert q["ssim"] == doc["fidelity"]["ssim"] and not any("SSIM" in w for w in q["warnings"])
    # the same encode against a crop it was not made from scores far lower, and is flagged
    spec = ExtractSpec(source=src, start=doc["clip"]["start"], frames=clip.frames, rate=Fraction(25),
                       width=270, height=480, path=(CropBox(0.0, 300, 120, 101, 180),))  # fmt: skip
    wrong = fidelity.measure(spec, info.display_size, Path(clip.path))
    assert wrong is not None and wrong["ssim"] < doc["fidelity"]["ssim"] - 0.3
    doc["fidelity"] = wrong
    assert any("SSIM against the cropped source" in w for w in assess(doc, QualityLimits())["warnings"])
    assert fidelity.ssim(np.full((32, 32), 7, np.uint8), np.full((32, 32), 7, np.uint8)) == 1.0


def test_tui_shows_the_flag_in_the_job_list_and_the_measures_in_the_detail() -> None:
    from rich.console import Group
    from rich.text import Text

    from tui.widgets.detail import clips_block
    from tui.widgets.jobs import _clips

    good, bad = assess(_doc([0.9, 0.95]), QualityLimits()), assess(_doc([0.1, 0.2]), QualityLimits())
    result = {"clips": [{"path": "/o/a.mp4", "quality": good}, {"path": "/o/b.mp4", "quality": bad}]}
    cell = _clips({"state": "done", "result": result})
    assert isinstance(cell, Text) and cell.plain == "2 q1"
    assert any("yellow" in str(s.style) for s in cell.spans)
    assert _clips({"state": "done", "result": {"clips": [{"quality": good}]}}) == "1"
    block = clips_block(result)
    assert isinstance(block, Group)
    text = "\n".join(str(p) for p in block.renderables)
    assert text.count("quality: words") == 2
    assert "[quality] mean word confidence 0.15 is under 0.70" in text
