"""Speaker changes land on the cut: unit checks of the switch rules, and the measured scene.

The scene (tests/framing_switches.py) is composed from four real talking-head recordings with
their own sound: turns with pauses of 0 to 0.35 s, close switches (two faces in one crop), far
switches, a hard position jump without a scene cut, and two interjections. Framing is scored on
every output frame (25 fps) against the known face boxes.

Bounds and what they rest on:
- inside ≥ 98% and no switch leaving the new speaker out of frame for more than 5 frames: the
  issue's bars. Measured on this machine (yunet at 480 px, 9:16): 98.9% inside and at most 3
  frames out with exact diarization turns, with every turn edge 0.3 s early, and without turns
  (voice activity and mouths); 99.3% / 3 frames with every edge 0.3 s late. Before this change
  the same scene gave 99.0% / 3 frames with exact turns but 95.3% and 8 frames out with turns
  0.3 s late (the crop cut on the diarization edge, not in the pause), 7 frames of the old
  speaker lost with turns 0.3 s early, and a 0.28 s early glide on close switches.
- nor is the old speaker dropped more than 5 frames before their turn ends: measured at most 4
  (B's recording falls silent 0.66 s before the turn's end; the crop switches in that pause).
- interjections are not followed: exactly the 7 sustained changes and the jump move the crop.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from framing_metrics import cache_dir, per_frame
from framing_switches import TURNS, SwitchScene, build, score
from test_frame import _cfg, _hist, _obs, _profile

from montaged.config import FrameConfig
from montaged.frame.analyse import ClipAnalysis, analyse_clip
from montaged.frame.plan import EASE_SECONDS, build_plan
from montaged.frame.speaker import SWITCH_LEAD
from montaged.frame.tracks import link
from montaged.media.probe import probe_media
from montaged.model import CropBox, SpeakerTurn

INSIDE_MIN = 0.98
OUT_FRAMES_MAX = 5

# --- the rules, on hand-built analyses -------------------------------------------------------------


def _two(xs: tuple[float, float], change_at: int, n: int = 50, duration: float = 10.0) -> ClipAnalysis:
    """Two faces; the first talks until sample ``change_at``, then the second."""
    frames = [
        [_obs(i, xs[0], _hist(1), act=0.8 if i < change_at else 0.0),
         _obs(i, xs[1], _hist(2), act=0.0 if i < change_at else 0.8)]
        for i in range(n)
    ]  # fmt: skip
    times = np.linspace(0, duration, n, endpoint=False)
    tracks = link(frames, max_gap=5, min_obs=2)
    return ClipAnalysis(0.0, duration, 1920, 1080, 25.0, times, tracks, [], [], [], [], "test", 5)


def _x_at(path: tuple[CropBox, ...], t: float) -> float:
    ts = [b.t for b in path]
    return float(np.interp(t, ts, [b.x for b in path]))


def test_a_near_change_eases_over_a_fifth_of_a_second_instead_of_gliding() -> None:
    # 300 px apart: the move (≈ 230 px) is under cut_distance (0.5 crop widths ≈ 304 px).
    an = _two((700, 1000), change_at=25)
    an.speech.extend([(0.1, 4.9), (5.0 + SWITCH_LEAD, 9.9)])  # the change lands at 5.0 s
    turns = [SpeakerTurn(0.0, 5.0, "A"), SpeakerTurn(5.0, 10.0, "B")]
    plan = build_plan(an, 0, _profile(), _cfg(split_screen=False), turns)
    before, after = _x_at(plan.path, 4.0), _x_at(plan.path, 6.0)
    assert after - before > 150  # it did move to the other face
    half = EASE_SECONDS / 2 + 0.041  # one output frame of slack
    assert _x_at(plan.path, 5.0 - half) == pytest.approx(before, abs=2)
    assert _x_at(plan.path, 5.0 + half) == pytest.approx(after, abs=2)
    assert "1 eases" in plan.notes[-1] and "0 speaker cuts" in plan.notes[-1]


def test_a_far_change_cuts_in_the_pause_before_the_first_word() -> None:
    an = _two((200, 1500), change_at=25)
    an.speech.extend([(0.1, 4.7), (5.2, 9.9)])  # the pause is 4.7-5.2 s
    turns = [SpeakerTurn(0.0, 5.5, "A"), SpeakerTurn(5.5, 10.0, "B")]  # diarization 0.3 s late
    plan = build_plan(an, 0, _profile(), _cfg(split_screen=False), turns)
    cut = [b for a, b in zip(plan.path, plan.path[1:], strict=False) if abs(b.x - a.x) > 500]
    assert len(cut) == 1 and cut[0].t == pytest.approx(4.95, abs=1e-3)  # half-way through the pause


def test_a_jump_of_the_same_face_within_a_shot_is_a_cut() -> None:
    """A reframed camera without a detectable scene cut: the follower would glide 1000 px."""
    frames = [[_obs(i, 300 if i < 25 else 1300, _hist(1), act=0.5)] for i in range(50)]
    times = np.linspace(0, 10.0, 50, endpoint=False)
    tracks = link(frames, max_gap=5, min_obs=2)
    assert len({t.identity for t in tracks}) == 1
    an = ClipAnalysis(0.0, 10.0, 1920, 1080, 25.0, times, tracks, [], [], [], [], "test", 5)
    plan = build_plan(an, 0, _profile(), _cfg())
    cut = [(a, b) for a, b in zip(plan.path, plan.path[1:], strict=False) if abs(b.x - a.x) > 500]
    assert len(cut) == 1 and cut[0][1].t - cut[0][0].t <= 0.0011
    assert cut[0][1].t == pytest.approx((times[24] + times[25]) / 2, abs=1e-3)


def test_an_interjection_does_not_move_the_crop() -> None:
    acts = [(0.8, 0.0)] * 20 + [(0.0, 0.8)] * 3 + [(0.8, 0.0)] * 27  # B says something for 0.6 s
    frames = [
        [_obs(i, 200, _hist(1), act=a), _obs(i, 1500, _hist(2), act=b)] for i, (a, b) in enumerate(acts)
    ]
    times = np.linspace(0, 10.0, 50, endpoint=False)
    an = ClipAnalysis(0.0, 10.0, 1920, 1080, 25.0, times, link(frames, max_gap=5, min_obs=2),
                      [], [], [], [], "test", 5)  # fmt: skip
    turns = [SpeakerTurn(0, 4.0, "A"), SpeakerTurn(4.0, 4.6, "B"), SpeakerTurn(4.6, 10, "A")]
    plan = build_plan(an, 0, _profile(), _cfg(split_screen=False), turns)
    assert max(b.x for b in plan.path) - min(b.x for b in plan.path) < 50


# --- measured on real faces --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def scene(media_dir: Path, ffmpeg: str, tmp_path_factory: pytest.TempPathFactory) -> SwitchScene:
    return build(media_dir, cache_dir(tmp_path_factory.mktemp("switches")))


@pytest.fixture(scope="module")
def analysis(scene: SwitchScene) -> ClipAnalysis:
    return analyse_clip(scene.video, probe_media(scene.video), 0.0, scene.duration, FrameConfig())


def _turns(shift: float) -> list[SpeakerTurn]:
    return [SpeakerTurn(max(0.0, a + shift), b + shift, who) for who, a, b in TURNS]


@pytest.mark.timeout(900)  # the first one composes the scene and analyses 32 s of 1080p: about
# 3 minutes on the shared 2-core host under load (measured 92 s + 77 s at load 10); then cached
@pytest.mark.parametrize(
    ("turns", "shift"),
    [(True, 0.0), (True, 0.3), (True, -0.3), (False, 0.0)],
    ids=["exact-turns", "turns-0.3s-late", "turns-0.3s-early", "no-turns"],
)
def test_switches_land_on_the_cut(
    scene: SwitchScene, analysis: ClipAnalysis, turns: bool, shift: float
) -> None:
    plan = build_plan(analysis, 0, _profile(), _cfg(split_screen=False), _turns(shift) if turns else ())
    boxes = per_frame(plan.path, [i / scene.fps for i in range(len(scene.frames))], 1920, 1080)
    s = score(scene, boxes)
    delays = np.array(s.delays)
    print(f"\n{plan.notes[-1]}; inside {100 * s.inside:.1f}%")
    print("\n".join(s.rows(scene.events)))
    print(
        f"delay (s): min {delays.min():+.2f} median {np.median(delays):+.2f} max {delays.max():+.2f}; "
        f"frames out: max {max(s.out_frames)}"
    )
    assert plan.layout == "crop"
    assert s.inside >= INSIDE_MIN
    assert max(s.out_frames) <= OUT_FRAMES_MAX
    assert max(s.early_frames) <= OUT_FRAMES_MAX
    moves = plan.notes[-1]
    cuts, eases = int(moves.split(" speaker cuts")[0].split()[-1]), int(moves.split(" eases")[0].split()[-1])
    assert cuts + eases == len(scene.events)  # the interjections moved nothing
