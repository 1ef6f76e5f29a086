"""Unit tests of the framing parts: smoothing bounds, tracks, scene cuts, speakers, split rule,
geometry for every aspect, detectors on real faces, and plan_crop / the worker pool end to end."""

from __future__ import annotations

import itertools
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from montaged.config import FrameConfig, ProfileConfig
from montaged.errors import MediaError, ModelError
from montaged.frame import scenes
from montaged.frame.analyse import ClipAnalysis
from montaged.frame.detect import Detection, FaceDetector, HaarDetector, YuNetDetector, make_detector
from montaged.frame.plan import build_plan, plan_crop
from montaged.frame.smooth import Motion, backlash, decimate, follow_axis, smooth_axis
from montaged.frame.speaker import (
    SpeakerRun,
    _hold,
    _map_labels,
    mouth_activity,
    speaking_runs,
    voice_activity,
)
from montaged.frame.target import Frame, crop_size, parse_aspect
from montaged.frame.tracks import FaceObs, Track, link
from montaged.frame.worker import FrameWorkers, plan_crops_in_process
from montaged.media.probe import probe_media
from montaged.model import ClipPlan, SpeakerTurn

DT = 1 / 25
M = Motion(dead_zone=30, max_speed=600, max_accel=1200, lookahead=0.3, presmooth=0.25)


def _cfg(**kw: object) -> FrameConfig:
    return FrameConfig.model_validate(kw)


def _profile(aspect: str = "9:16", w: int = 1080, h: int = 1920) -> ProfileConfig:
    return ProfileConfig.model_validate({"aspect": aspect, "width": w, "height": h})


def _first_frame(path: Path, t: float = 0.5) -> np.ndarray:
    with av.open(str(path)) as c:
        for f in c.decode(video=0):
            if (f.time or 0) >= t:
                return np.ascontiguousarray(f.to_ndarray(format="bgr24"))
    raise AssertionError(f"{path} has no frame at {t}")


# --- smoothing ---------------------------------------------------------------------------------


def _bounds_hold(x: np.ndarray, m: Motion) -> None:
    v = np.diff(x) / DT
    a = np.diff(v) / DT
    assert np.abs(v).max() <= m.max_speed + 1e-6
    assert np.abs(a).max() <= m.max_accel + 1e-6


def test_follower_bounds_speed_and_acceleration_on_a_step() -> None:
    goal = np.r_[np.zeros(50), np.full(150, 900.0)]
    x = follow_axis(goal, DT, M)
    _bounds_hold(x, M)
    assert abs(x[-1] - 900) < 1.0  # arrives and settles
    assert np.abs(np.diff(x[-30:])).max() < 0.5


def test_smoothing_ignores_jitter_inside_the_dead_zone() -> None:
    rng = np.random.default_rng(1)
    goal = 960 + rng.normal(0, 8, 250)  # detector jitter of a still head
    x = smooth_axis(goal, DT, [], 304, 1616, M, default=960)
    assert np.ptp(x) < 1.0


def test_smoothing_follows_a_walk_within_bounds() -> None:
    t = np.arange(300) * DT
    goal = 960 + 500 * np.sin(2 * np.pi * t / 10) + np.random.default_rng(2).normal(0, 6, 300)
    x = smooth_axis(goal, DT, [], 304, 1616, M, default=960)
    _bounds_hold(x, M)
    clean = 960 + 500 * np.sin(2 * np.pi * t / 10)
    assert np.abs(x - clean).max() < 100  # lag and dead zone together stay well under a face width


def test_cut_jumps_at_once_and_nowhere_else() -> None:
    goal = np.r_[np.full(100, 400.0), np.full(100, 1500.0)]
    x = smooth_axis(goal, DT, [100], 304, 1616, M, default=960)
    assert x[99] == pytest.approx(400, abs=0.5) and x[100] == pytest.approx(1500, abs=0.5)
    steps = np.abs(np.diff(x))
    assert steps[99] > 1000 and np.delete(steps, 99).max() < 1.0


def test_backlash_and_gaps() -> None:
    assert list(backlash(np.array([0.0, 5, -5, 20, 20, 0]), 10)) == [0, 0, 0, 10, 10, 10]
    goal = np.array([np.nan, np.nan, 500.0, np.nan, 700.0])
    x = smooth_axis(goal, DT, [], 0, 2000, Motion(0, 1e6, 1e9, 0, 0), default=960)
    assert x[0] == pytest.approx(500, abs=1)  # the head holds the first known target


def test_decimate_reproduces_the_path() -> None:
    t = np.arange(500) * DT
    x = 960 + 300 * np.sin(t)
    keep = decimate(t, [x], 1.0)
    assert len(keep) < 200  # of 500 frames (the error bound h²/8·300 px/s² <= 1 px needs ~120)
    assert np.abs(np.interp(t, t[keep], x[keep]) - x).max() <= 1.0


# --- geometry ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("aspect", "want"),
    [("9:16", (607.5, 1080)), ("1:1", (1080, 1080)), ("4:5", (864, 1080)), ("16:9", (1920, 1080))],
)
def test_crop_size_for_every_aspect(aspect: str, want: tuple[float, float]) -> None:
    assert crop_size(1920, 1080, parse_aspect(aspect)) == pytest.approx(want)
    w, h = crop_size(1080, 1920, parse_aspect(aspect))  # portrait source
    assert w <= 1080 and h <= 1920 and w / h == pytest.approx(parse_aspect(aspect))


def test_rule_of_thirds_and_other_faces() -> None:
    frame = Frame(1920, 1080, *crop_size(1920, 1080, 9 / 16, zoom=2.0))
    face = Detection((900, 400, 120, 150), 0.9, ((930, 450), (990, 452), (960, 480), (935, 510), (985, 510)))
    cx, cy = frame.face_centre(face)
    assert cy - frame.crop_h / 2 + frame.crop_h / 3 == pytest.approx(451, abs=0.5)  # eyes 1/3 down
    frame = Frame(1920, 1080, *crop_size(1920, 1080, 9 / 16))
    cx, cy = frame.face_centre(face)
    near = Detection((1100, 400, 120, 150), 0.9)
    px, _ = frame.face_centre(face, [near])
    assert px > cx  # pulled towards a listener who fits beside the speaker...
    assert frame.contains(px, cy, face.box)  # ...never losing the speaker
    far = Detection((1700, 400, 120, 150), 0.9)
    assert frame.face_centre(face, [far])[0] == cx  # one that cannot fit does not pull


def test_bad_aspect_is_refused() -> None:
    with pytest.raises(ValueError, match="9:16"):
        parse_aspect("tall")


# --- tracks, scenes, speakers --------------------------------------------------------------------


def _obs(i: int, x: float, hist: np.ndarray, score: float = 0.9, act: float | None = None) -> FaceObs:
    return FaceObs(i, Detection((x, 300.0, 150.0, 190.0), score), hist, act)


def _hist(seed: int) -> np.ndarray:
    """A peaked hue-saturation histogram, like a face's (skin in a few bins)."""
    h = np.random.default_rng(seed).dirichlet(np.full(128, 0.05)).astype(np.float32)
    return h / h.sum()


def test_tracks_keep_identity_through_misses_and_drop_blips() -> None:
    a, b = _hist(1), _hist(2)
    frames: list[list[FaceObs]] = []
    for i in range(40):
        here = []
        if not 10 <= i < 14:  # A missed for 4 samples (a turned head)
            here.append(_obs(i, 300 + 5 * i, a))
        here.append(_obs(i, 1400 - 3 * i, b))
        if i == 20:
            here.append(_obs(i, 900, _hist(3), score=0.65))  # one-sample false positive
        frames.append(here)
    tracks = link(frames, max_gap=5, min_obs=2)
    assert len(tracks) == 2
    left = min(tracks, key=lambda t: t.obs[0].det.box[0])
    assert left.first == 0 and left.last == 39 and len(left.obs) == 36
    assert left.at(12, 5) is not None  # interpolated inside the gap


def test_tracks_end_at_a_cut_and_the_same_face_keeps_its_identity() -> None:
    a, b = _hist(1), _hist(2)
    frames = [[_obs(i, 300, a)] for i in range(10)] + [[_obs(i, 1400, b)] for i in range(10, 20)]
    frames += [[_obs(i, 1200, a)] for i in range(20, 30)]
    tracks = link(frames, [10, 20], max_gap=5, min_obs=2)
    assert len(tracks) == 3
    assert tracks[0].identity == tracks[2].identity != tracks[1].identity


def test_scene_cut_scores_on_real_frames(media_dir: Path) -> None:
    v = media_dir / "video"
    a1, a2 = (
        _first_frame(v / "videoretalking_face2.mp4", 0.5),
        _first_frame(v / "videoretalking_face2.mp4", 0.7),
    )
    b = _first_frame(v / "videoretalking_face3.mp4", 0.5)
    same = scenes.distance(scenes.signature(a1), scenes.signature(a2))
    other = scenes.distance(scenes.signature(a1), scenes.signature(b))
    assert same < 0.1 < 0.35 < other  # 0.35: frame.scene_cut_threshold
    assert scenes.find_cuts([0, 0.05, 0.04, 0.6, 0.05, 0.06]) == [3]
    assert scenes.find_cuts([0, 0.4, 0.45, 0.5, 0.42, 0.47]) == []  # shaky, not a cut


def test_hysteresis_absorbs_interjections() -> None:
    runs = [SpeakerRun(0, 4, 0), SpeakerRun(4, 8, 1), SpeakerRun(8, 8.6, 0), SpeakerRun(8.6, 12, 1)]
    assert _hold(runs, 1.5) == [SpeakerRun(0, 4, 0), SpeakerRun(4, 12, 1)]
    assert _hold([SpeakerRun(0, 1, -1), SpeakerRun(1, 5, 0)], 1.5) == [SpeakerRun(0, 5, 0)]


def test_turn_labels_map_to_the_face_whose_mouth_moves() -> None:
    times = np.arange(50) * 0.2
    act = np.vstack([np.where(times < 4, 0.8, 0.05), np.where(times >= 6, 0.7, 0.05)])
    turns = [(0.0, 4.0, "SPK_1"), (6.0, 10.0, "SPK_0")]
    assert _map_labels(turns, times, act) == {"SPK_1": 0, "SPK_0": 1}
    # An off-screen interviewer (4-6 s) moves no mouth on screen: no face, the shot holds.
    assert _map_labels([*turns, (4.0, 6.0, "SPK_9")], times, act) == {"SPK_1": 0, "SPK_0": 1}


def test_speaking_runs_from_mouth_motion_and_turns() -> None:
    a, b = _hist(1), _hist(2)
    frames = [
        [_obs(i, 300, a, act=0.8 if i < 25 else 0.0), _obs(i, 1400, b, act=0.0 if i < 25 else 0.7)]
        for i in range(50)
    ]
    tracks = link(frames, max_gap=5, min_obs=2)
    times = np.arange(50) * 0.2
    runs = speaking_runs(tracks, times, 10.0, speech=[(0.2, 4.9), (5.1, 9.8)])
    assert [r.identity for r in runs] == [tracks[0].identity, tracks[1].identity]
    assert runs[1].start == pytest.approx(5.1 - 0.12)  # into the pause, just before the next word
    turns = [(0.0, 5.3, "X"), (5.3, 10.0, "Y")]
    runs = speaking_runs(tracks, times, 10.0, turns=turns, speech=[(0.2, 9.8)])
    # No pause to land in: the edge goes to where the mouths change (between samples 4.8 and 5.0).
    assert runs[1].start == pytest.approx(4.9)
    runs = speaking_runs(tracks, times, 10.0, turns=turns, speech=[(0.2, 5.0), (5.5, 9.8)])
    assert runs[1].start == pytest.approx(5.25)  # a pause within reach wins: half-way through it


def test_voice_activity_on_real_speech(media_dir: Path) -> None:
    with av.open(str(media_dir / "audio" / "jfk.flac")) as c:
        rs = av.AudioResampler(format="flt", layout="mono", rate=16000)
        pcm = np.concatenate([o.to_ndarray().reshape(-1) for f in c.decode(audio=0) for o in rs.resample(f)])
    regions = voice_activity(pcm)
    assert 2 <= len(regions) <= 8  # JFK pauses between phrases
    speech = sum(b - a for a, b in regions)
    assert 6.0 < speech < 10.5  # of 11 s
    assert voice_activity(np.zeros(16000, np.float32)) == []


def test_mouth_activity_separates_talking_from_a_still_face(media_dir: Path) -> None:
    path = media_dir / "video" / "videoretalking_face2.mp4"
    frames = []
    with av.open(str(path)) as c:
        for i, f in enumerate(c.decode(video=0)):
            if i % 5 == 0:
                frames.append(
                    cv2.cvtColor(cv2.resize(f.to_ndarray(format="bgr24"), (480, 480)), cv2.COLOR_BGR2GRAY)
                )
    box = (140.0, 120.0, 170.0, 225.0)  # the face in a 480 px frame (union of detections)
    talking = [mouth_activity(a, b, box) for a, b in itertools.pairwise(frames)]
    still = []
    for k, g in enumerate(frames[:10]):
        shifted = np.roll(g, (k % 3 - 1) * 4, axis=1)  # the same frame, swayed 4 px
        still.append(mouth_activity(g, shifted, box))
    assert np.median(talking) > 0.2 > 0.1 > np.median(still)  # measured ~0.6 vs ~0.0


# --- detectors ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["yunet", "haar"])
def test_detectors_find_the_real_face(media_dir: Path, name: str) -> None:
    img = cv2.resize(_first_frame(media_dir / "video" / "videoretalking_face3.mp4"), (480, 480))
    det: FaceDetector = make_detector(name, None)
    faces = det.detect(img)
    assert len(faces) >= 1
    best = max(faces, key=lambda d: d.score)
    cx, cy = best.centre
    assert 170 < cx < 310 and 130 < cy < 300  # face3's face, measured at (241, 215)
    assert isinstance(det, YuNetDetector if name == "yunet" else HaarDetector)
    assert (len(best.landmarks) == 5) == (name == "yunet")


def test_unknown_detector_and_bad_frames() -> None:
    with pytest.raises(ModelError, match="unknown face detector"):
        make_detector("mtcnn", None)
    with pytest.raises(ValueError, match="too large"):
        YuNetDetector().detect(np.zeros((1080, 1920, 3), np.uint8))


# --- split rule --------------------------------------------------------------------------------


def _analysis(
    xs: tuple[float, float], acts: list[tuple[float, float]], duration: float = 20.0
) -> ClipAnalysis:
    n = len(acts)
    frames = [
        [_obs(i, xs[0], _hist(1), act=acts[i][0]), _obs(i, xs[1], _hist(2), act=acts[i][1])] for i in range(n)
    ]
    tracks = link(frames, max_gap=5, min_obs=2)
    times = np.linspace(0, duration, n, endpoint=False)
    return ClipAnalysis(0.0, duration, 1920, 1080, 25.0, times, tracks, [], [], [], [], "test", 5)


def _alternating(n: int, every: int) -> list[tuple[float, float]]:
    return [(0.8, 0.0) if (i // every) % 2 == 0 else (0.0, 0.8) for i in range(n)]


def test_split_when_two_far_apart_alternate_quickly() -> None:
    an = _analysis((200, 1500), _alternating(100, 15))  # a change every 3 s
    plan = build_plan(an, 0, _profile(), _cfg())
    assert plan.layout == "split" and plan.second_path
    top, bottom = plan.path[0], plan.second_path[0]
    assert top.x < bottom.x  # the left person is on top
    assert top.w / top.h == pytest.approx(1080 / 960, abs=0.01)  # pane aspect


@pytest.mark.parametrize(
    ("xs", "every", "cfg", "profile", "why"),
    [
        ((700, 1000), 15, {}, ("9:16", 1080, 1920), "both fit one crop"),
        ((200, 1500), 50, {}, ("9:16", 1080, 1920), "one change in 20 s is slow"),
        ((200, 1500), 15, {}, ("16:9", 1920, 1080), "16:9 panes would be 32:9"),
        ((200, 1500), 15, {"split_screen": False}, ("9:16", 1080, 1920), "split disabled"),
    ],
)
def test_no_split(
    xs: tuple[float, float], every: int, cfg: dict[str, object], profile: tuple[str, int, int], why: str
) -> None:
    an = _analysis(xs, _alternating(100, every))
    plan = build_plan(an, 0, _profile(*profile), _cfg(**cfg))
    assert plan.layout == "crop", why


def test_split_on_distance_alone_when_configured() -> None:
    an = _analysis((200, 1500), _alternating(100, 50))
    assert build_plan(an, 0, _profile(), _cfg(split_min_switches_per_minute=0)).layout == "split"


def test_speaker_change_far_away_cuts_instead_of_panning() -> None:
    an = _analysis((200, 1500), _alternating(100, 50))
    plan = build_plan(an, 0, _profile(), _cfg(split_screen=False))
    xs = [b.x for b in plan.path]
    jumps = [(a, b) for a, b in zip(plan.path, plan.path[1:], strict=False) if abs(b.x - a.x) > 500]
    assert len(jumps) == 1 and jumps[0][1].t - jumps[0][0].t <= 0.0011  # a cut: two knots 1 ms apart
    assert min(xs) < 400 and max(xs) > 1100


# --- plan_crop end to end ----------------------------------------------------------------------


def test_plan_crop_on_a_real_interview_range(media_dir: Path) -> None:
    src = media_dir / "video" / "visualvoice_interview_2spk.mp4"
    info = probe_media(src)
    clip = ClipPlan(3, 4.0, 10.0, 1.0, {}, "test", "")
    turns = [SpeakerTurn(0.0, 30.0, "SPEAKER_00")]
    plan = plan_crop(src, info, clip, _profile(), _cfg(), turns)
    assert plan.clip_index == 3 and plan.layout in ("crop", "split")
    assert plan.confidence > 0.5
    assert all(0 <= b.t <= 6.0 for b in plan.path)
    assert [b.t for b in plan.path] == sorted(b.t for b in plan.path)
    assert all(b.x >= 0 and b.x + b.w <= 1280 and b.y >= 0 and b.y + b.h <= 720 for b in plan.path)


def test_no_face_falls_back_to_letterbox_or_centre(media_dir: Path) -> None:
    src = media_dir / "video" / "autoeditor_example_voice_noface.mp4"
    info = probe_media(src)
    clip = ClipPlan(0, 5.0, 9.0, 1.0, {}, "test", "")
    plan = plan_crop(src, info, clip, _profile(), _cfg())
    assert plan.layout == "letterbox" and any("fallback" in n for n in plan.notes)
    plan = plan_crop(src, info, clip, _profile(), _cfg(fallback="centre"))
    assert plan.layout == "crop" and len(plan.path) == 1
    assert abs(plan.path[0].x - (1280 - plan.path[0].w) / 2) <= 1
    off = plan_crop(src, info, clip, _profile(), _cfg(enabled=False))
    assert off.layout == "crop" and "disabled" in off.notes[0]


def test_rotated_source_is_framed_in_display_orientation(
    tmp_path: Path, media_dir: Path, ffmpeg: str
) -> None:
    import subprocess

    src = tmp_path / "rotated.mp4"
    subprocess.run(
        [ffmpeg, "-v", "error", "-y", "-i", str(media_dir / "video" / "visualvoice_noisy_restaurant.mp4"),
         "-t", "3", "-c", "copy", "-metadata:s:v:0", "rotate=90", str(src)],
        check=True,
    )  # fmt: skip
    info = probe_media(src)
    if info.rotation % 180 == 0:
        pytest.skip("this ffmpeg did not write a rotation")
    plan = plan_crop(src, info, ClipPlan(0, 0.0, 3.0, 1.0, {}, "t", ""), _profile("1:1", 1080, 1080), _cfg())
    dw, dh = info.display_size
    assert (dw, dh) == (720, 1280)
    assert all(b.x + b.w <= dw and b.y + b.h <= dh for b in plan.path)


def test_bad_inputs_say_what_to_do(tmp_path: Path, media_dir: Path) -> None:
    src = media_dir / "video" / "videoretalking_face3.mp4"
    info = probe_media(src)
    with pytest.raises(ValueError, match="non-empty"):
        plan_crop(src, info, ClipPlan(0, 3.0, 3.0, 1.0, {}, "t", ""), _profile(), _cfg())
    with pytest.raises(MediaError, match="no video frames"):
        plan_crop(src, info, ClipPlan(0, 60.0, 70.0, 1.0, {}, "t", ""), _profile(), _cfg())
    gone = tmp_path / "gone.mp4"
    with pytest.raises(MediaError, match="cannot be opened"):
        plan_crop(gone, info, ClipPlan(0, 0.0, 1.0, 1.0, {}, "t", ""), _profile(), _cfg())


@pytest.mark.anyio
async def test_worker_pool_plans_clips_in_order(media_dir: Path) -> None:
    src = media_dir / "video" / "visualvoice_interview_2spk.mp4"
    info = probe_media(src)
    clips = [ClipPlan(7, 10.0, 13.0, 1.0, {}, "b", ""), ClipPlan(2, 1.0, 4.0, 1.0, {}, "a", "")]
    async with FrameWorkers(2, threads=1) as pool:
        plans = await plan_crops_in_process(src, info, clips, _profile(), _cfg(), workers=pool, job_id="j1")
    assert [p.clip_index for p in plans] == [7, 2]
    assert all(p.path for p in plans)


def test_track_at_outside_is_none() -> None:
    t = Track(0, [_obs(3, 100, _hist(1)), _obs(9, 200, _hist(1))])
    assert t.at(2, 5) is None and t.at(10, 5) is None
    assert t.at(6, 5) is not None and t.at(6, 4) is None
