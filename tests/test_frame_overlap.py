"""Overlap framing: a real overlap of two people on screen widens the crop to hold both faces.

Rule checks on hand-built analyses, then the measured scene: the first 8 s of the speaker-switch
scene (tests/framing_switches.py: real talking heads A and B side by side, C far right, at known
places, with known face boxes per output frame) with synthetic turns: B talks over A for 2 s
(1.0-3.0 s) and A says "yeah" over B for 0.3 s (4.5-4.8 s). Scored on every output frame (25 fps).

Bounds and what they rest on:
- both faces inside in ≥ 90% of the long overlap's frames: the wide box is entered with a cut (or
  a 0.2 s ease, at most 3 of its 50 frames half-way) on the overlap's first frame and smoothed like
  the single crop; the rest is left for detector misses on real faces. Measured: see the printout.
- during the back-channel, and outside the long overlap's edges, the crop is frame for frame what
  it was with overlap framing switched off (MIN_OVERLAP = inf): nothing else may change.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from framing_metrics import cache_dir, inside, per_frame
from framing_switches import SwitchScene, build
from test_frame import _cfg, _hist, _obs, _profile

from montaged.config import FrameConfig, ProfileConfig
from montaged.frame import wide
from montaged.frame.analyse import ClipAnalysis, analyse_clip
from montaged.frame.plan import EASE_SECONDS, build_plan
from montaged.frame.tracks import link
from montaged.media.probe import probe_media
from montaged.model import CropPlan, SpeakerTurn

FACE_W, FACE_H = 150.0, 190.0  # test_frame._obs
LONG, SHORT = (3.0, 5.0), (7.0, 7.3)
TURNS = [SpeakerTurn(0.0, 10.0, "A"), SpeakerTurn(*LONG, "B"), SpeakerTurn(*SHORT, "B")]

# --- the rule, on hand-built analyses -------------------------------------------------------------


def _pair(xs: tuple[float, float], n: int = 50, duration: float = 10.0) -> ClipAnalysis:
    """Two faces at ``xs``; A's mouth moves throughout, B's only during B's turns."""
    times = np.linspace(0, duration, n, endpoint=False)
    b_talks = [any(a <= t < b for a, b in (LONG, SHORT)) for t in times]
    frames = [
        [_obs(i, xs[0], _hist(1), act=0.8), _obs(i, xs[1], _hist(2), act=0.8 if b_talks[i] else 0.0)]
        for i in range(n)
    ]
    tracks = link(frames, max_gap=5, min_obs=2)
    return ClipAnalysis(0.0, duration, 1920, 1080, 25.0, times, tracks, [], [], [], [], "test", 5)


def _boxes(plan: CropPlan, times: np.ndarray) -> np.ndarray:
    return per_frame(plan.path, list(times), 1920, 1080)


def _holds(box: np.ndarray, x: float) -> bool:
    return inside(box.tolist(), (x, 300.0, FACE_W, FACE_H))


def _plans(
    monkeypatch: pytest.MonkeyPatch, an: ClipAnalysis, profile: ProfileConfig, turns: list[SpeakerTurn]
) -> tuple[CropPlan, CropPlan]:
    """The plan, and the plan with overlap framing switched off (no overlap is long enough)."""
    cfg = _cfg(split_screen=False)
    with monkeypatch.context() as m:
        m.setattr(wide, "MIN_OVERLAP", math.inf)
        before = build_plan(an, 0, profile, cfg, turns)
    return build_plan(an, 0, profile, cfg, turns), before


def test_a_long_overlap_frames_both_faces_and_a_back_channel_does_not(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # 550 px from A's left edge to B's right edge: more than one single crop leans to (0.9 of 608)
    # yet inside the 9:16 crop with its margins, so only the overlap rule can show both.
    an = _pair((600, 1000))
    plan, before = _plans(monkeypatch, an, _profile(), TURNS)
    assert plan.wide == (LONG,) and before.wide == ()
    t = np.arange(0, 10, 1 / 25)
    boxes, old = _boxes(plan, t), _boxes(before, t)
    during = (t >= LONG[0] + EASE_SECONDS / 2) & (t < LONG[1] - EASE_SECONDS / 2)
    assert all(_holds(b, 600) and _holds(b, 1000) for b in boxes[during])
    assert not any(_holds(b, 600) and _holds(b, 1000) for b in old[during])  # it could fail before
    edges = (t > LONG[0] - EASE_SECONDS / 2 - 0.04) & (t < LONG[1] + EASE_SECONDS / 2 + 0.04)
    assert np.array_equal(boxes[~edges], old[~edges])  # the back-channel and the rest: unchanged
    short = (t >= SHORT[0]) & (t < SHORT[1])
    assert all(_holds(b, 600) and not _holds(b, 1000) for b in boxes[short])  # stays on A
    assert "1 wide for overlap" in plan.notes[-1]
    assert CropPlan.from_dict(plan.to_dict()).wide == plan.wide


def test_a_wider_box_than_the_zoomed_crop_is_cut_to() -> None:
    an = _pair((600, 1000))
    plan = build_plan(an, 0, _profile("16:9", 1920, 1080), _cfg(split_screen=False, zoom=4.0), TURNS)
    assert plan.wide == (LONG,)
    t = np.arange(0, 10, 1 / 25)
    boxes = _boxes(plan, t)
    inside_long = (t >= LONG[0]) & (t < LONG[1])
    assert boxes[inside_long, 2].min() > boxes[~inside_long, 2].max()  # wider only there
    assert all(_holds(b, 600) and _holds(b, 1000) for b in boxes[inside_long])
    jumps = [(a, b) for a, b in zip(plan.path, plan.path[1:], strict=False) if b.w != a.w]
    assert [round(b.t, 3) for _, b in jumps] == [LONG[0], LONG[1]]
    assert all(b.t - a.t <= 0.0011 for a, b in jumps)  # cuts, on the overlap's edges


def test_faces_too_far_apart_for_the_aspect_keep_the_single_crop(monkeypatch: pytest.MonkeyPatch) -> None:
    an = _pair((200, 1500))  # 1450 px: no 9:16 box inside a 1080 px high frame holds both
    plan, before = _plans(monkeypatch, an, _profile(), TURNS)
    assert plan.wide == ()
    assert plan.path == before.path


def test_short_overlaps_and_speakers_without_faces_are_not_real_overlaps() -> None:
    turns = [(0.0, 5.0, "A"), (1.0, 1.5, "B"), (1.9, 2.6, "B"), (3.4, 3.7, "B"), (4.0, 5.0, "X")]
    # 1.0-1.5 and 1.9-2.6 join (0.4 s apart, under MIN_OVERLAP); 3.4-3.7 is a back-channel
    # 0.8 s later; X has no face on screen.
    assert wide.real_overlaps(turns, {"A": 1, "B": 2}) == [(1.0, 2.6, (1, 2))]


# --- measured on real faces --------------------------------------------------------------------------

SCENE_END = 8.0
REAL_LONG, REAL_SHORT = (1.0, 3.0), (4.5, 4.8)
REAL_TURNS = [
    SpeakerTurn(0.0, 3.0, "A"),
    SpeakerTurn(*REAL_LONG, "B"),
    SpeakerTurn(3.3, 6.0, "B"),
    SpeakerTurn(*REAL_SHORT, "A"),
    SpeakerTurn(6.25, SCENE_END, "C"),
]
INSIDE_MIN = 0.90


@pytest.fixture(scope="module")
def scene(media_dir: Path, ffmpeg: str, tmp_path_factory: pytest.TempPathFactory) -> SwitchScene:
    return build(media_dir, cache_dir(tmp_path_factory.mktemp("switches")))


@pytest.mark.timeout(900)  # composing the scene (once, cached) and analysing 8 s of 1080p
def test_real_faces_both_in_the_crop_during_a_real_overlap(
    scene: SwitchScene, monkeypatch: pytest.MonkeyPatch
) -> None:
    an = analyse_clip(scene.video, probe_media(scene.video), 0.0, SCENE_END, FrameConfig())
    plan, before = _plans(monkeypatch, an, _profile(), REAL_TURNS)
    n = int(SCENE_END * scene.fps)
    t = np.arange(n) / scene.fps
    boxes, old = per_frame(plan.path, list(t), 1920, 1080), per_frame(before.path, list(t), 1920, 1080)
    truth = scene.frames[:n]

    def share(bx: np.ndarray, span: tuple[float, float], who: tuple[str, ...]) -> float:
        idx = np.flatnonzero((t >= span[0]) & (t < span[1]))
        return float(np.mean([all(inside(bx[i], truth[i][k]) for k in who) for i in idx]))

    both, both_before = share(boxes, REAL_LONG, ("A", "B")), share(old, REAL_LONG, ("A", "B"))
    print(f"\n{plan.notes[-1]}; wide {plan.wide}")
    print(f"both faces inside, 2 s overlap: {100 * both:.1f}% (without the rule {100 * both_before:.1f}%)")
    assert plan.wide == (REAL_LONG,)
    assert both >= INSIDE_MIN
    assert share(boxes, REAL_SHORT, ("B",)) == 1.0  # the back-channel: the crop stays on B
    edges = (t > REAL_LONG[0] - EASE_SECONDS / 2 - 0.04) & (t < REAL_LONG[1] + EASE_SECONDS / 2 + 0.04)
    changed = int(np.sum(np.any(boxes[~edges] != old[~edges], axis=1)))
    print(f"frames changed outside the overlap: {changed}")
    assert changed == 0
