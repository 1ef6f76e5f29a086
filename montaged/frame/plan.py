"""From a clip's analysis to a crop plan: who to frame, where, and in which layout.

Layouts:

- ``crop``: one crop path that follows the active speaker (or motion). A change of speaker never
  glides: the crop cuts to the new speaker at the change (placed in the pause before their first
  word, speaker.py), like a vision mixer switching cameras, or, when the move is no longer than
  ``cut_distance`` crop widths, eases there over ``EASE_SECONDS`` centred on the change. A face
  that jumps further than that between two samples of one shot (a reframed camera the scene-cut
  detector cannot see) is cut to as well. Scene cuts always cut, on the exact frame.
- ``split``: two paths, the person on the left in the upper pane, for an output no wider than it
  is tall, when two people are both on screen too far apart for one crop, both speak, and they
  change at least ``split_min_switches_per_minute`` times a minute. Each pane frames its face at
  ``split_face_share`` of the pane height.
- wide (within ``crop``): while two people on screen talk at once for real (wide.py), one box
  of the output aspect holds both faces, cut (or eased, as for a change of speaker) into and out
  of at the overlap's edges; the plan's ``wide`` lists those stretches.
- ``letterbox`` / centre crop: the fallback (``fallback``) when the plan's confidence (mean per
  sample, see target.py) is under ``min_confidence``: a crop we cannot justify is worse than
  showing the whole frame.

The path: smoothed on a grid of output-frame times (smooth.py), then reduced to the knots from
which linear interpolation (what the renderer does between boxes) reproduces every frame within
``path_tolerance_px``. A hard cut is two knots 1 ms apart: the old box just before, the new box at
the cut. Boxes are in source pixels of the display orientation, at the output (or pane) aspect.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import structlog

from montaged.config import FrameConfig, ProfileConfig
from montaged.frame.analyse import ClipAnalysis, analyse_clip
from montaged.frame.onscreen import face_confidence, speaker_in_crop
from montaged.frame.smooth import Motion, decimate, smooth_axis
from montaged.frame.speaker import SpeakerRun, label_faces, speaking_runs, speech_share
from montaged.frame.target import Frame, crop_size, face_crop_size, faces_at, parse_aspect, sample_targets
from montaged.frame.wide import WideStretch, wide_stretches
from montaged.model import ClipPlan, CropBox, CropPlan, MediaInfo, SpeakerTurn
from montaged.render.croppath import box_at

log = structlog.get_logger(__name__)

CUT_GAP = 0.001
"""Seconds between the two knots of a hard cut."""
MAX_PANE_ASPECT = 2.0
"""Stacked panes wider than 2:1 (a 16:9 output split in two) show too little of a face: no split."""
EASE_SECONDS = 0.2
"""A near change of speaker moves the crop over this long, centred on the change: at most a
tenth of a second of the new speaker's first word can be missed, and the move reads as a
deliberate reframe, not a pan that chases the speaker."""


def _clip_turns(
    turns: Sequence[SpeakerTurn], start: float, duration: float
) -> list[tuple[float, float, str]]:
    out = []
    for s in turns:
        a, b = max(0.0, s.start - start), min(duration, s.end - start)
        if b > a:
            out.append((a, b, s.speaker))
    return sorted(out)


def _grid(duration: float, fps: float) -> np.ndarray:
    n = max(2, int(np.floor(duration * fps + 1e-6)) + 1)
    return np.arange(n) / fps


def _to_grid(grid: np.ndarray, times: np.ndarray, values: np.ndarray, bounds: Sequence[float]) -> np.ndarray:
    """Sample values on the grid: linear inside a piece, never across a boundary (a cut or a
    change of speaker), NaN (hold) where the nearest samples on this side have none."""
    b = np.asarray(sorted(bounds))
    piece_s = np.searchsorted(b, times, side="right")
    piece_g = np.searchsorted(b, grid, side="right")
    i1 = np.searchsorted(times, grid, side="right")
    out = np.full(len(grid), np.nan)
    for g, (j, p) in enumerate(zip(i1, piece_g, strict=True)):
        i0 = j - 1
        left = i0 >= 0 and piece_s[i0] == p
        right = j < len(times) and piece_s[j] == p
        if left and right and np.isfinite(values[i0]) and np.isfinite(values[j]):
            f = (grid[g] - times[i0]) / max(times[j] - times[i0], 1e-9)
            out[g] = values[i0] + (values[j] - values[i0]) * f
        elif left and np.isfinite(values[i0]):
            out[g] = values[i0]
        elif right and np.isfinite(values[j]):
            out[g] = values[j]
    return out


def _motion(cfg: FrameConfig, frame: Frame) -> tuple[Motion, Motion]:
    def axis(size: float) -> Motion:
        return Motion(
            dead_zone=cfg.dead_zone * size,
            max_speed=cfg.max_speed * size,
            max_accel=cfg.max_accel * size,
            lookahead=cfg.lookahead_seconds,
            presmooth=cfg.presmooth_seconds,
        )

    return axis(frame.crop_w), axis(frame.crop_h)


def _switches(
    runs: Sequence[SpeakerRun],
    times: np.ndarray,
    cx: np.ndarray,
    who: np.ndarray,
    far: float,
    scene_cuts: Sequence[float],
) -> tuple[list[float], list[float]]:
    """Times where the crop cuts, and where it eases, to a new target within a shot.

    - Each change of speaker between two people on screen: a cut when the targets are more than
      ``far`` pixels apart, else an ease.
    - A jump of one person's target by more than ``far`` between two neighbouring samples (the
      picture moved without a detected scene cut): a cut halfway between the two samples.
    Targets are compared within the shot: across a scene cut the picture jumps anyway."""
    cuts: list[float] = []
    eases: list[float] = []
    ok = np.isfinite(cx)
    for a, b in itertools.pairwise(runs):
        if a.identity < 0 or b.identity < 0 or a.identity == b.identity:
            continue
        shot = max([c for c in scene_cuts if c <= b.start], default=-np.inf)
        before = np.flatnonzero((times >= shot) & (times < b.start) & (who == a.identity) & ok)
        after = np.flatnonzero((times >= b.start) & (who == b.identity) & ok)
        if before.size and after.size:
            (cuts if abs(cx[after[0]] - cx[before[-1]]) > far else eases).append(b.start)
    changes = [*scene_cuts, *(r.start for r in runs)]
    for i in range(1, len(times)):
        same = who[i] == who[i - 1] >= 0 and ok[i] and ok[i - 1]
        jumped = same and abs(cx[i] - cx[i - 1]) > far
        if jumped and not any(times[i - 1] < c <= times[i] for c in changes):
            cuts.append(float((times[i - 1] + times[i]) / 2))
    return sorted(cuts), sorted(eases)


def _ease(grid: np.ndarray, xs: np.ndarray, at: float, seconds: float) -> None:
    """Replace ``xs`` around ``at`` by a cosine move from where it was to where it goes."""
    i0 = int(np.searchsorted(grid, at - seconds / 2))
    i1 = min(int(np.searchsorted(grid, at + seconds / 2)), len(grid) - 1)
    if i0 < 1 or i1 <= i0:
        return
    a, b = float(xs[i0 - 1]), float(xs[i1])
    f = (grid[i0:i1] - grid[i0 - 1]) / (grid[i1] - grid[i0 - 1])
    xs[i0:i1] = a + (b - a) * (1 - np.cos(np.pi * f)) / 2


def _path(
    grid: np.ndarray, xs: np.ndarray, ys: np.ndarray, frame: Frame, cuts: Sequence[float], tol: float
) -> tuple[CropBox, ...]:
    """Knots of the smoothed centre path as source-pixel boxes (see module doc for cuts)."""
    w, h = round(frame.crop_w), round(frame.crop_h)

    def box(t: float, cx: float, cy: float) -> CropBox:
        x = min(max(round(cx - w / 2), 0), frame.frame_w - w)
        y = min(max(round(cy - h / 2), 0), frame.frame_h - h)
        return CropBox(round(float(t), 4), int(x), int(y), int(w), int(h))

    idx = [0, *[int(np.searchsorted(grid, c)) for c in cuts], len(grid)]
    out: list[CropBox] = []
    for k, (a, b) in enumerate(itertools.pairwise(idx)):
        if b <= a:
            continue
        if k > 0:
            tc = float(cuts[k - 1])
            if out:
                out.append(box(max(tc - CUT_GAP, out[-1].t + CUT_GAP / 10), xs[a - 1], ys[a - 1]))
            out.append(box(tc, xs[a], ys[a]))
        for i in decimate(grid[a:b], [xs[a:b], ys[a:b]], tol):
            if not out or grid[a + i] > out[-1].t + 1e-4:
                out.append(box(grid[a + i], xs[a + i], ys[a + i]))
    return tuple(out)


def _follow(
    an: ClipAnalysis, frame: Frame, cfg: FrameConfig, cx: np.ndarray, cy: np.ndarray, grid: np.ndarray,
    cuts: Sequence[float], bounds: Sequence[float], eases: Sequence[float] = (),
) -> tuple[CropBox, ...]:  # fmt: skip
    """The smoothed path: every cut and ease starts a new stretch for the smoother (nothing is
    chased across a change of speaker); eases are then drawn in, cuts become two knots."""
    (xlo, xhi), (ylo, yhi) = frame.bounds()
    mx, my = _motion(cfg, frame)
    split = [int(np.searchsorted(grid, c)) for c in sorted([*cuts, *eases])]
    gx = _to_grid(grid, an.times, cx, bounds)
    gy = _to_grid(grid, an.times, cy, bounds)
    dt = float(grid[1] - grid[0])
    xs = smooth_axis(gx, dt, split, xlo, xhi, mx, default=an.frame_w / 2)
    ys = smooth_axis(gy, dt, split, ylo, yhi, my, default=(ylo + yhi) / 2)
    for e in eases:
        _ease(grid, xs, e, EASE_SECONDS)
        _ease(grid, ys, e, EASE_SECONDS)
    return _path(grid, xs, ys, frame, cuts, cfg.path_tolerance_px)


def _box_at(path: Sequence[CropBox], t: float) -> CropBox:
    x, y, w, h = box_at(path, t)
    return CropBox(round(t, 4), round(x), round(y), round(w), round(h))


def _blend(a: CropBox, b: CropBox, steps: int = 4) -> list[CropBox]:
    """Knots of a cosine move from ``a`` to ``b`` (the renderer is linear between knots)."""
    out = []
    for k in range(steps + 1):
        f = k / steps
        g = (1 - math.cos(math.pi * f)) / 2
        out.append(CropBox(
            round(a.t + (b.t - a.t) * f, 4), round(a.x + (b.x - a.x) * g), round(a.y + (b.y - a.y) * g),
            round(a.w + (b.w - a.w) * g), round(a.h + (b.h - a.h) * g),
        ))  # fmt: skip
    return out


def _near(a: CropBox, b: CropBox, far: float) -> bool:
    """A move the crop eases over instead of cutting: same size, centre no more than ``far`` away."""
    return a.w == b.w and abs(a.x + a.w / 2 - b.x - b.w / 2) <= far


def _widen(
    path: Sequence[CropBox], st: WideStretch, wide: Sequence[CropBox], far: float, end_t: float
) -> tuple[CropBox, ...]:
    """``path`` with ``wide`` in its place over the stretch: a cut into it at the stretch's start
    and out of it at its end, or an ease of ``EASE_SECONDS`` centred there when the move is near.
    Outside the stretch (and its eases) the path is what it was."""
    s, e, half = st.start, st.end, EASE_SECONDS / 2
    inner = [b for b in wide if s <= b.t < e]
    head, into = [b for b in path if b.t < s], []
    if s - half > 0 and _near(_box_at(path, s), _box_at(wide, s), far):
        head = [b for b in path if b.t < s - half - 1e-4]
        into = _blend(_box_at(path, s - half), _box_at(wide, s + half))
        inner = [b for b in inner if b.t > s + half + 1e-4]
    elif s > CUT_GAP:
        head = [b for b in path if b.t < s - CUT_GAP - 1e-4]
        into = [_box_at(path, s - CUT_GAP)]
    tail, out = [], []
    if e + half < end_t and _near(_box_at(wide, e - CUT_GAP), _box_at(path, e), far):
        inner = [b for b in inner if b.t < e - half - 1e-4]
        out = _blend(_box_at(wide, e - half), _box_at(path, e + half))
        tail = [b for b in path if b.t > e + half + 1e-4]
    elif e < end_t:
        out = [_box_at(path, e)]
        tail = [b for b in path if b.t > e + 1e-4]
    return tuple([*head, *into, *inner, *out, *tail])


def _split_pair(
    an: ClipAnalysis, runs: Sequence[SpeakerRun], frame: Frame, cfg: FrameConfig
) -> tuple[int, int] | None:
    """The two people to stack (left person first), or None when the split rule does not hold."""
    n = len(an.times)
    seen: dict[int, list[tuple[int, float]]] = {}
    for i in range(n):
        for k, d in faces_at(an.tracks, i, an.max_gap).items():
            seen.setdefault(k, []).append((i, d.box[0] + d.box[2] / 2))
    present = [k for k, v in seen.items() if len(v) >= cfg.split_min_presence * n]
    share = speech_share(runs)
    talkers = sorted(
        (k for k in present if share.get(k, 0.0) >= cfg.split_min_share), key=lambda k: -share[k]
    )
    if len(talkers) < 2:
        return None
    a, b = talkers[:2]
    switches = sum(1 for p, q in itertools.pairwise(runs) if {p.identity, q.identity} == {a, b})
    if switches / max(an.duration / 60.0, 1e-9) < cfg.split_min_switches_per_minute:
        return None
    both = [i for i in range(n) if all(faces_at(an.tracks, i, an.max_gap).get(k) for k in (a, b))]
    if not both:
        return None
    spans = []
    for i in both:
        fa = faces_at(an.tracks, i, an.max_gap)
        xs = [fa[a].box[0], fa[a].box[0] + fa[a].box[2], fa[b].box[0], fa[b].box[0] + fa[b].box[2]]
        spans.append(max(xs) - min(xs))
    if float(np.median(spans)) * (1 + 2 * frame.margin) <= frame.crop_w:
        return None  # one crop holds both faces
    mean_x = {k: float(np.mean([x for _, x in seen[k]])) for k in (a, b)}
    return (a, b) if mean_x[a] <= mean_x[b] else (b, a)


def _fallback(
    an: ClipAnalysis, clip_index: int, aspect: float, cfg: FrameConfig, why: str, conf: float
) -> CropPlan:
    if cfg.fallback == "letterbox":
        box = CropBox(0.0, 0, 0, an.frame_w, an.frame_h)
        return CropPlan(clip_index, "letterbox", (box,), confidence=conf, notes=(why, "fallback: letterbox"))
    w, h = crop_size(an.frame_w, an.frame_h, aspect)
    box = CropBox(0.0, round((an.frame_w - w) / 2), round((an.frame_h - h) / 2), round(w), round(h))
    return CropPlan(clip_index, "crop", (box,), confidence=conf, notes=(why, "fallback: centre crop"))


def build_plan(
    an: ClipAnalysis,
    clip_index: int,
    profile: ProfileConfig,
    cfg: FrameConfig,
    turns: Sequence[SpeakerTurn] = (),
    *,
    speakers: Mapping[str, int] | None = None,
    identity: dict[str, Any] | None = None,
) -> CropPlan:
    """The crop plan for an analysed clip (cheap: no decoding; one analysis serves every profile).

    ``speakers`` maps diarization labels to identities decided over the whole talk (identity.py;
    the tracks then carry talk face numbers); None maps them from this clip alone. ``identity``
    is recorded on the plan for the sidecar."""
    aspect = parse_aspect(profile.aspect)
    fps = profile.fps or an.fps or 30.0
    grid = _grid(an.duration, fps)
    frame = Frame(
        an.frame_w, an.frame_h, *crop_size(an.frame_w, an.frame_h, aspect, cfg.zoom), headroom=cfg.headroom
    )
    clip_turns = _clip_turns(turns, an.start, an.duration)
    runs = speaking_runs(
        an.tracks,
        an.times,
        an.duration,
        turns=clip_turns,
        speech=an.speech,
        min_hold=cfg.speaker_min_hold_seconds,
        mapping=speakers,
    )
    scene_cuts = [max(0.0, c - 0.5 / an.fps) for c in an.cut_times]

    def done(plan: CropPlan) -> CropPlan:
        """The plan with how well it keeps the active speaker's face in the picture."""
        inside = speaker_in_crop(an.times, an.tracks, runs, (plan.path, plan.second_path), an.max_gap)
        return dataclasses.replace(
            plan, face_confidence=face_confidence(an.tracks), speaker_in_crop=inside, identity=identity
        )

    people = sorted({t.identity for t in an.tracks})
    notes = [
        f"detector {an.detector}: {len(an.tracks)} face tracks, {len(people)} people, "
        f"{len(an.cut_times)} scene cuts",
        f"speaker runs: {len(runs)} from "
        + ("diarization" if clip_turns else "voice activity" if an.speech else "mouth motion"),
    ]
    pane_aspect = profile.width / (profile.height / 2)
    pair = None
    if cfg.split_screen and pane_aspect <= MAX_PANE_ASPECT and len(people) >= 2:
        pair = _split_pair(an, runs, frame, cfg)
    if pair is not None:
        paths, confs = [], []
        for who in pair:
            heights = [o.det.box[3] for t in an.tracks if t.identity == who for o in t.obs]
            pw, ph = face_crop_size(
                float(np.median(heights)), an.frame_w, an.frame_h, pane_aspect, cfg.split_face_share
            )
            pane = Frame(an.frame_w, an.frame_h, pw, ph, headroom=cfg.headroom)
            own = [SpeakerRun(0.0, an.duration, who)]
            tg = sample_targets(pane, an.times, [t for t in an.tracks if t.identity == who], own, [],
                                max_gap=an.max_gap, motion_min_energy=np.inf)  # fmt: skip
            paths.append(_follow(an, pane, cfg, tg.cx, tg.cy, grid, scene_cuts, scene_cuts))
            confs.append(float(tg.confidence.mean()))
        conf = float(np.mean(confs))
        if conf >= cfg.min_confidence:
            notes.append(f"split: people {pair[0]} (top) and {pair[1]} (bottom)")
            split = CropPlan(
                clip_index, "split", paths[0], paths[1], confidence=round(conf, 3), notes=tuple(notes)
            )
            return done(split)
    tg = sample_targets(
        frame,
        an.times,
        an.tracks,
        runs,
        an.motion,
        max_gap=an.max_gap,
        motion_min_energy=cfg.motion_min_energy,
        shot_starts=an.shot_starts,
    )
    conf = float(tg.confidence.mean()) if len(tg.confidence) else 0.0
    if conf < cfg.min_confidence:
        why = f"confidence {conf:.2f} < frame.min_confidence {cfg.min_confidence:.2f}"
        return done(_fallback(an, clip_index, aspect, cfg, why, round(conf, 3)))
    far = cfg.cut_distance * frame.crop_w
    speaker_cuts, eases = _switches(runs, an.times, tg.cx, tg.identity, far, scene_cuts)
    speaker_cuts = [c for c in speaker_cuts if all(abs(c - s) > 0.2 for s in scene_cuts)]
    eases = [e for e in eases if all(abs(e - s) > EASE_SECONDS for s in [*scene_cuts, *speaker_cuts])]
    cuts = sorted(scene_cuts + speaker_cuts)
    bounds = sorted(set(cuts) | set(eases) | {r.start for r in runs[1:]})
    path = _follow(an, frame, cfg, tg.cx, tg.cy, grid, cuts, bounds, eases)
    faces = label_faces(an.tracks, an.times, clip_turns, speakers)
    wide = wide_stretches(an, clip_turns, faces, frame, aspect)
    for st in wide:
        edges = sorted({*scene_cuts, st.start, st.end})
        wide_path = _follow(an, st.frame, cfg, st.cx, st.cy, grid, edges, edges)
        path = _widen(path, st, wide_path, far, float(grid[-1]))
    notes.append(
        f"crop {frame.crop_w:.0f}x{frame.crop_h:.0f}: {len(path)} knots, {len(speaker_cuts)} speaker cuts, "
        f"{len(eases)} eases, {len(wide)} wide for overlap"
    )
    stretches = tuple((round(st.start, 3), round(st.end, 3)) for st in wide)
    plan = CropPlan(clip_index, "crop", path, confidence=round(conf, 3), notes=tuple(notes), wide=stretches)
    return done(plan)


def centre_plan(info: MediaInfo, clip_index: int, profile: ProfileConfig, why: str) -> CropPlan:
    """A static centre crop (framing disabled, or nothing to analyse)."""
    dw, dh = info.display_size
    w, h = crop_size(dw, dh, parse_aspect(profile.aspect))
    box = CropBox(0.0, round((dw - w) / 2), round((dh - h) / 2), round(w), round(h))
    return CropPlan(clip_index, "crop", (box,), confidence=0.0, notes=(why,))


def plan_crop(
    source: Path,
    info: MediaInfo,
    clip: ClipPlan,
    profile: ProfileConfig,
    cfg: FrameConfig,
    turns: Sequence[SpeakerTurn] = (),
) -> CropPlan:
    """Frame one clip (sync, CPU-bound: run it in a worker process, see worker.py).

    Decodes only ``[clip.start, clip.end)`` of ``source``; ``turns`` are diarization turns in
    media time (any range: those outside the clip are ignored).
    """
    if not cfg.enabled:
        return centre_plan(info, clip.index, profile, "framing disabled (frame.enabled = false)")
    an = analyse_clip(source, info, clip.start, clip.end, cfg)
    plan = build_plan(an, clip.index, profile, cfg, turns)
    log.debug(
        "crop planned", clip=clip.index, layout=plan.layout, knots=len(plan.path), confidence=plan.confidence,
        vision_s=round(sum(an.timings.values()), 3), clip_s=round(an.duration, 2),
    )  # fmt: skip
    return plan
