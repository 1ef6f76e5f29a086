"""Framing quality measured on real faces with known truth (see tests/framing_truth.py).

For each scene, three crops are scored on the same frames and printed side by side:
Montage's plan, a naive per-frame face-centring crop, and a static centre crop.

Bounds and what they rest on (measured on this machine, 1920x1080 at 25 fps):
- inside >= 95%: the issue's bar. Montage measured 100% on every scene, with and without
  diarization turns, split or not (the naive crop 50% on the dialogue, the centre crop 0-20%).
- jerk (third difference of the crop centre, px/frame³): the renderer snaps crops to even pixels,
  which alone gives up to 8 on a steady pan; the follower's own acceleration switch adds at most
  2 * max_accel * crop_w / fps² (3.9 for 9:16, 6.9 for 1:1). Montage measured mean 0-2.0 and p99
  0-10 (the moving scene; 10 at 1:1); the naive crop mean 3.7-8.7 and p99 17-40.
  Bounds: mean <= 4 (twice the measured worst), p99 <= 16 (8 + 6.9 + 1 px of path tolerance,
  rounded up), and at most half the naive p99 wherever the naive crop exceeds that bound.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from framing_metrics import Score, cache_dir, naive_boxes, per_frame, score, static_boxes
from framing_truth import Scenario, build_all

from montaged.config import FrameConfig, ProfileConfig
from montaged.frame.analyse import ClipAnalysis, analyse_clip
from montaged.frame.plan import build_plan
from montaged.frame.target import parse_aspect
from montaged.media.probe import probe_media
from montaged.model import CropPlan, SpeakerTurn

INSIDE_MIN = 0.95
JERK_MEAN_MAX = 4.0
JERK_P99_MAX = 16.0


@pytest.fixture(scope="session")
def scenes(media_dir: Path, ffmpeg: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Scenario]:
    return build_all(media_dir, cache_dir(tmp_path_factory.mktemp("framing")))


@pytest.fixture(scope="session")
def analyses(scenes: dict[str, Scenario]) -> dict[str, ClipAnalysis]:
    cfg = FrameConfig.model_validate({})
    return {k: analyse_clip(s.video, probe_media(s.video), 0.0, s.duration, cfg) for k, s in scenes.items()}


@pytest.fixture(scope="session")
def naive(scenes: dict[str, Scenario]) -> dict[str, np.ndarray]:
    """Naive per-frame crops (9:16), computed once per scene."""
    return {k: naive_boxes(s.video, 1920, 1080, 9 / 16) for k, s in scenes.items()}


def _panes(plan: CropPlan, sc: Scenario) -> list[np.ndarray]:
    times = [f.t for f in sc.frames]
    panes = [per_frame(plan.path, times, 1920, 1080)]
    if plan.layout == "split":
        panes.append(per_frame(plan.second_path, times, 1920, 1080))
    return panes


def _turns(sc: Scenario) -> tuple[SpeakerTurn, ...]:
    return tuple(SpeakerTurn(u.start, u.end, u.speaker) for u in sc.turns)


def _compare(
    sc: Scenario, an: ClipAnalysis, naive_crop: np.ndarray, cfg: FrameConfig, turns: bool
) -> tuple[Score, Score, Score, CropPlan]:
    profile = ProfileConfig.model_validate({})
    plan = build_plan(an, 0, profile, cfg, _turns(sc) if turns else ())
    aspect = parse_aspect(profile.aspect)
    ours = score("montage", sc, _panes(plan, sc))
    naive = score("naive", sc, [naive_crop])
    static = score("centre", sc, [static_boxes(len(sc.frames), 1920, 1080, aspect)])
    print(f"\n{sc.name} ({plan.layout}, {'with' if turns else 'without'} diarization turns)")
    for s in (ours, naive, static):
        print("  " + s.row())
    return ours, naive, static, plan


@pytest.mark.parametrize(
    ("name", "split", "turns", "layout"),
    [
        ("moving", True, False, "crop"),
        ("dialogue", False, False, "crop"),
        ("dialogue", False, True, "crop"),
        ("dialogue", True, False, "split"),
        ("cut", True, False, "crop"),
    ],
)
def test_framing_beats_naive_and_centre(
    scenes: dict[str, Scenario],
    analyses: dict[str, ClipAnalysis],
    naive: dict[str, np.ndarray],
    name: str,
    split: bool,
    turns: bool,
    layout: str,
) -> None:
    cfg = FrameConfig.model_validate({"split_screen": split})
    ours, base, static, plan = _compare(scenes[name], analyses[name], naive[name], cfg, turns)
    assert plan.layout == layout, plan.notes
    assert ours.inside >= INSIDE_MIN, plan.notes
    assert ours.jerk_mean <= JERK_MEAN_MAX
    assert ours.jerk_p99 <= JERK_P99_MAX
    # The static centre crop never holds both sides of these scenes; the naive one jitters.
    assert ours.inside > static.inside
    if base.jerk_p99 > JERK_P99_MAX:
        assert ours.jerk_p99 <= base.jerk_p99 / 2


def test_interjection_is_not_followed(scenes: dict[str, Scenario], analyses: dict[str, ClipAnalysis]) -> None:
    """During A's 0.6 s interjection (7.9-8.5 s) the crop stays on B: no cut inside it."""
    sc = scenes["dialogue"]
    plan = build_plan(
        analyses["dialogue"],
        0,
        ProfileConfig.model_validate({}),
        FrameConfig.model_validate({"split_screen": False}),
    )
    boxes = _panes(plan, sc)[0]
    during = [i for i, f in enumerate(sc.frames) if 7.7 <= f.t <= 8.7]
    assert len({int(boxes[i][0]) for i in during}) == 1
    assert boxes[during[0]][0] > 960  # B sits on the right


@pytest.mark.parametrize(
    ("aspect", "size"),
    [("9:16", (1080, 1920)), ("1:1", (1080, 1080)), ("4:5", (1080, 1350)), ("16:9", (1920, 1080))],
)
def test_any_aspect_keeps_the_moving_face(
    scenes: dict[str, Scenario], analyses: dict[str, ClipAnalysis], aspect: str, size: tuple[int, int]
) -> None:
    sc = scenes["moving"]
    plan = build_plan(
        analyses["moving"],
        0,
        ProfileConfig.model_validate({"aspect": aspect, "width": size[0], "height": size[1]}),
        FrameConfig.model_validate({}),
    )
    want = parse_aspect(aspect)
    assert all(abs(b.w / b.h - want) < 0.01 for b in plan.path)
    assert all(b.x >= 0 and b.x + b.w <= 1920 and b.y >= 0 and b.y + b.h <= 1080 for b in plan.path)
    s = score(aspect, sc, _panes(plan, sc))
    print(f"\nmoving at {aspect}: {s.row()}")
    assert s.inside >= INSIDE_MIN
    assert s.jerk_p99 <= JERK_P99_MAX


def test_renderer_reads_the_path_as_planned(
    scenes: dict[str, Scenario], analyses: dict[str, ClipAnalysis]
) -> None:
    """The renderer's own interpolation (render/croppath.py) gives the boxes scored above."""
    from montaged.render.croppath import box_at, fit_box

    for name, split in (("moving", True), ("cut", True), ("dialogue", False)):
        sc = scenes[name]
        plan = build_plan(
            analyses[name],
            0,
            ProfileConfig.model_validate({}),
            FrameConfig.model_validate({"split_screen": split}),
        )
        ours = _panes(plan, sc)[0]
        for i, f in enumerate(sc.frames):
            theirs = fit_box(box_at(plan.path, f.t), 1080 / 1920, 1920, 1080)
            assert np.abs(np.array(theirs) - ours[i]).max() <= 2, (name, f.t, theirs, ours[i])
