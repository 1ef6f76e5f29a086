"""Who is speaking: mouth motion per face, matched to diarization turns and voice activity.

Mouth motion: the same square around a face is cut from two consecutive samples and dense flow
is run between the two patches. Moving the whole head moves every pixel alike, so the median
flow is taken out; what is left in the mouth region, minus what is left around the eyes (blinks,
box jitter), is the face's *mouth activity*. Measured on the talking heads in ../shared/media:
0.4-0.9 px (of a 64 px patch) while talking against 0.0 ± 0.05 for the same faces held still and
swayed by ±12 px.

Matching:
- With diarization turns: each speaker label is mapped to the on-screen person whose mouth moves
  most during that label's turns relative to the others' turns (an assignment, so two labels
  never map to one face). A label that maps to nobody (an off-screen interviewer) holds the shot.
- Without turns: inside voice activity, the person with the most mouth activity speaks.
- Hysteresis: a run shorter than ``min_hold`` seconds (an interjection, a laugh) is absorbed by
  the run before it (the floor stays with whoever held it), so the crop does not flick between
  people; a new speaker is followed only once they hold the floor that long.
- Word boundary: a change of speaker is moved into the pause between the last word of one and
  the first word of the other, as heard in the clip's own audio (voice activity): half-way
  through the pause, but 0.12-0.5 s before the new speaker's first word (``SWITCH_LEAD``,
  ``SWITCH_MAX_LEAD``), never before the old speaker's last word ended. Diarization edges are
  often a few tenths of a second off; the pause is not. Where there is no pause within reach
  (one talks straight into the other), the change goes to where the new speaker's mouth starts
  moving more than the old one's (a step fitted to the difference of their raw mouth activity
  within reach, contradicted by at most one sample), else it stays on the diarization edge.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import cv2
import numpy as np
from scipy.optimize import linear_sum_assignment

from montaged.frame.detect import Box
from montaged.frame.tracks import Track

PATCH = 64
MOUTH = (slice(40, 60), slice(18, 46))
"""Rows and columns of the mouth in a PATCH-sized square around the face box (box = 1.1x)."""
UPPER = (slice(8, 30), slice(10, 54))
"""Eyes and brow: the reference for motion that is not speech."""
MIN_MAP_MARGIN = 0.05
"""A speaker label maps to a face only if its mouth moves this much more (px) in the label's turns."""
SWITCH_LEAD = 0.12
"""Least seconds before the new speaker's first word at which the crop switches (three frames at
25 fps): the face is on screen when the first word is heard, the old speaker's last word is over."""
SWITCH_MAX_LEAD = 0.5
"""Most seconds before the new speaker's first word at which the crop switches (a long pause)."""
SWITCH_REACH = 0.6
"""A diarization edge (or a mouth-motion change) moves to a pause at most this far away."""
MOUTH_STEP_ERRORS = 1
"""Samples a mouth-activity step may contradict and still move a change with no pause."""


def mouth_activity(prev_gray: np.ndarray, gray: np.ndarray, box: Box) -> float:
    """Non-rigid motion of the mouth between two grey frames, in pixels of a 64 px face patch."""
    x, y, w, h = box
    cx, cy, side = x + w / 2.0, y + h / 2.0, max(w, h) * 1.1
    k = PATCH / max(side, 1.0)
    m = np.array([[k, 0, PATCH / 2 - cx * k], [0, k, PATCH / 2 - cy * k]], dtype=np.float32)
    a = cv2.warpAffine(prev_gray, m, (PATCH, PATCH), flags=cv2.INTER_AREA, borderMode=cv2.BORDER_REPLICATE)
    b = cv2.warpAffine(gray, m, (PATCH, PATCH), flags=cv2.INTER_AREA, borderMode=cv2.BORDER_REPLICATE)
    flow: np.ndarray = np.zeros((PATCH, PATCH, 2), np.float32)
    flow = cv2.calcOpticalFlowFarneback(a, b, flow, 0.5, 2, 9, 3, 5, 1.1, 0)
    flow -= np.median(flow[8:56, 8:56].reshape(-1, 2), axis=0)
    mag = np.hypot(flow[..., 0], flow[..., 1])
    return float(mag[MOUTH].mean() - mag[UPPER].mean())


def voice_activity(
    samples: np.ndarray, rate: int = 16_000, *, min_gap: float = 0.2, min_speech: float = 0.15
) -> list[tuple[float, float]]:
    """Speech regions ``(start, end)`` in seconds from an energy detector.

    Threshold: 12 dB over the noise floor (10th percentile of 30 ms frame energies), and not
    lower than 40 dB under the loudest frame. Gaps shorter than ``min_gap`` are bridged.
    """
    hop = int(rate * 0.03)
    n = len(samples) // hop
    if n == 0:
        return []
    frames = np.asarray(samples[: n * hop], dtype=np.float64).reshape(n, hop)
    db = 10 * np.log10(np.mean(frames**2, axis=1) + 1e-10)
    floor, peak = float(np.percentile(db, 10)), float(db.max())
    if peak - floor < 6:
        return []  # no contrast: silence, or noise all through
    voiced = db > max(floor + 12, peak - 40)
    regions: list[list[float]] = []
    for i in np.flatnonzero(voiced):
        t0, t1 = i * 0.03, (i + 1) * 0.03
        if regions and t0 - regions[-1][1] < min_gap:
            regions[-1][1] = t1
        else:
            regions.append([t0, t1])
    return [(a, b) for a, b in regions if b - a >= min_speech]


@dataclass(frozen=True)
class SpeakerRun:
    start: float
    end: float
    identity: int
    """Face identity speaking (tracks.Track.identity); -1 = nobody on screen is known to speak."""


def activity_matrix(tracks: Sequence[Track], n: int, people: list[int], smooth: int) -> np.ndarray:
    """Smoothed mouth activity per person and sample; NaN where the person is not seen."""
    act = np.full((len(people), n), np.nan)
    for t in tracks:
        row = people.index(t.identity)
        for o in t.obs:
            if o.activity is not None and 0 <= o.sample < n:
                act[row, o.sample] = o.activity
    out = np.full_like(act, np.nan)
    for r in range(len(people)):
        for i in range(n):
            win = act[r, max(0, i - smooth) : i + smooth + 1]
            if np.isfinite(win).any():
                out[r, i] = np.nanmean(win)
    return out


def _map_labels(
    turns: Sequence[tuple[float, float, str]], times: np.ndarray, act: np.ndarray
) -> dict[str, int]:
    """Speaker label → row of ``act`` by co-occurrence of turns and mouth motion."""
    labels = sorted({s for _, _, s in turns})
    if not labels or act.shape[0] == 0:
        return {}
    inside = np.zeros((len(labels), len(times)), dtype=bool)
    for a, b, s in turns:
        inside[labels.index(s)] |= (times >= a) & (times < b)
    filled = np.where(np.isfinite(act), act, 0.0)
    score = np.zeros((len(labels), act.shape[0]))
    for li in range(len(labels)):
        other = inside.any(axis=0) & ~inside[li]
        for r in range(act.shape[0]):
            mine = filled[r, inside[li]].mean() if inside[li].any() else 0.0
            rest = filled[r, other].mean() if other.any() else 0.0
            score[li, r] = mine - rest
    rows, cols = linear_sum_assignment(-score)
    return {labels[r]: int(c) for r, c in zip(rows, cols, strict=True) if score[r, c] > MIN_MAP_MARGIN}


def _runs(times: np.ndarray, who: np.ndarray, end: float) -> list[SpeakerRun]:
    runs: list[SpeakerRun] = []
    for i, w in enumerate(who):
        t0 = 0.0 if i == 0 else float((times[i - 1] + times[i]) / 2)
        if runs and runs[-1].identity == w:
            continue
        if runs:
            runs[-1] = SpeakerRun(runs[-1].start, t0, runs[-1].identity)
        runs.append(SpeakerRun(t0, end, int(w)))
    return runs


def _hold(runs: list[SpeakerRun], min_hold: float) -> list[SpeakerRun]:
    """Absorb runs shorter than ``min_hold`` (and "nobody" runs) into their neighbours."""
    runs = list(runs)
    while len(runs) > 1:
        short = [i for i, r in enumerate(runs) if r.end - r.start < min_hold or r.identity < 0]
        if not short:
            break
        i = min(short, key=lambda j: (runs[j].identity >= 0, runs[j].end - runs[j].start))
        r = runs.pop(i)
        if i > 0:
            runs[i - 1] = SpeakerRun(runs[i - 1].start, r.end, runs[i - 1].identity)
        else:
            runs[0] = SpeakerRun(r.start, runs[0].end, runs[0].identity)
        merged: list[SpeakerRun] = []
        for x in runs:
            if merged and merged[-1].identity == x.identity:
                merged[-1] = SpeakerRun(merged[-1].start, x.end, x.identity)
            else:
                merged.append(x)
        runs = merged
    return runs


def _snap(runs: list[SpeakerRun], pauses: Sequence[float], reach: float) -> list[SpeakerRun]:
    """Move each change point to the nearest pause within ``reach`` seconds."""
    out = list(runs)
    for i in range(1, len(out)):
        t = out[i].start
        near = [p for p in pauses if abs(p - t) <= reach and out[i - 1].start < p < out[i].end]
        if near:
            p = min(near, key=lambda q: abs(q - t))
            out[i - 1] = SpeakerRun(out[i - 1].start, p, out[i - 1].identity)
            out[i] = SpeakerRun(p, out[i].end, out[i].identity)
    return out


def _mouth_step(
    runs: list[SpeakerRun], t: np.ndarray, raw: np.ndarray, people: list[int], fixed: Sequence[float]
) -> list[SpeakerRun]:
    """Move changes that found no pause (not in ``fixed``) to the best step of mouth activity."""
    out = list(runs)
    for i in range(1, len(out)):
        p, q, c = out[i - 1].identity, out[i].identity, out[i].start
        if p < 0 or q < 0 or p == q or any(abs(c - f) < 1e-9 for f in fixed):
            continue
        lo, hi = max(out[i - 1].start, c - SWITCH_REACH), min(out[i].end, c + SWITCH_REACH)
        idx = np.flatnonzero((t > lo) & (t < hi))
        diff = raw[people.index(q), idx] - raw[people.index(p), idx]
        keep = np.isfinite(diff)
        idx, diff = idx[keep], diff[keep]
        if len(idx) < 4:
            continue
        # Split k: samples before it should favour p (diff < 0), from it on q (diff > 0).
        wrong = [int(np.sum(diff[:k] > 0) + np.sum(diff[k:] < 0)) for k in range(len(idx) + 1)]
        best = min(wrong)
        ks = [k for k, w in enumerate(wrong) if w == best and 0 < k < len(idx)]
        if not ks or best > MOUTH_STEP_ERRORS:
            continue  # the mouths do not say it clearly: the diarization edge stays
        splits = [float((t[idx[k - 1]] + t[idx[k]]) / 2) for k in ks]
        s = min(splits, key=lambda x: abs(x - c))
        out[i - 1] = SpeakerRun(out[i - 1].start, s, p)
        out[i] = SpeakerRun(s, out[i].end, q)
    return out


def word_boundaries(speech: Sequence[tuple[float, float]]) -> list[float]:
    """Where a switch lands in each pause between two stretches of speech: half-way through it,
    but at least ``SWITCH_LEAD`` and at most ``SWITCH_MAX_LEAD`` before the next word, and never
    before the pause began. The energy detector hears a soft first syllable late (0.2 s on the
    dialogue test scene), so a long pause is split evenly rather than cut just before the onset."""
    out = []
    for (_, b), (a2, _) in itertools.pairwise(sorted(speech)):
        lead = min(max((a2 - b) / 2, SWITCH_LEAD), SWITCH_MAX_LEAD)
        out.append(max(b, a2 - lead))
    return out


def label_faces(
    tracks: Sequence[Track],
    times: np.ndarray | Sequence[float],
    turns: Sequence[tuple[float, float, str]],
    mapping: Mapping[str, int] | None = None,
    smooth_samples: int = 2,
) -> dict[str, int]:
    """Speaker label → face identity of this clip: ``mapping`` (decided over the whole talk)
    where given, else from this clip's turns and mouths (``_map_labels``)."""
    t = np.asarray(times, dtype=np.float64)
    people = sorted({tr.identity for tr in tracks})
    if mapping is not None:
        return {k: v for k, v in mapping.items() if v in people}
    if not people or not turns or len(t) == 0:
        return {}
    act = activity_matrix(tracks, len(t), people, smooth_samples)
    return {k: people[r] for k, r in _map_labels(turns, t, act).items()}


def speaking_runs(
    tracks: Sequence[Track],
    times: np.ndarray | Sequence[float],
    duration: float,
    *,
    turns: Sequence[tuple[float, float, str]] = (),
    speech: Sequence[tuple[float, float]] = (),
    min_hold: float = 1.5,
    smooth_samples: int = 2,
    mapping: Mapping[str, int] | None = None,
) -> list[SpeakerRun]:
    """Who speaks when, as runs covering ``[0, duration]`` in clip seconds.

    Args:
        tracks: face tracks with mouth activity on their observations.
        times: clip time of every sample.
        turns: diarization turns ``(start, end, label)`` in clip seconds (may be empty).
        speech: voice-activity regions in clip seconds (may be empty).
        min_hold: shortest run kept (hysteresis).
        smooth_samples: half-width of the moving mean over mouth activity.
        mapping: speaker label → identity, decided over the whole talk (identity.py); None = map
            the labels from this clip's own turns and mouths.
    """
    t = np.asarray(times, dtype=np.float64)
    people = sorted({tr.identity for tr in tracks})
    if not people or len(t) == 0:
        return [SpeakerRun(0.0, duration, -1)]
    if len(people) == 1:
        return [SpeakerRun(0.0, duration, people[0])]
    act = activity_matrix(tracks, len(t), people, smooth_samples)
    seen = np.isfinite(act)
    best = np.where(seen.any(axis=0), np.argmax(np.where(seen, act, -np.inf), axis=0), -1)
    who = np.full(len(t), -1)
    if turns:
        rows = {k: people.index(v) for k, v in label_faces(tracks, t, turns, mapping, smooth_samples).items()}
        for a, b, label in turns:
            if label in rows:
                row = rows[label]
                who[(t >= a) & (t < b) & seen[row]] = people[row]
    else:
        in_speech = np.zeros(len(t), dtype=bool)
        for a, b in speech:
            in_speech |= (t >= a) & (t < b)
        if not speech:
            in_speech[:] = True
        for i in np.flatnonzero(in_speech & (best >= 0)):
            who[i] = people[int(best[i])]
    runs = _hold(_runs(t, who, duration), min_hold)
    if turns:
        # Diarization edges are exact to within a few tenths: first onto the nearest edge ...
        edges = sorted({a for a, _, _ in turns} | {b for _, b, _ in turns})
        runs = _snap(runs, edges, reach=SWITCH_REACH)
    # ... then into the pause between the words, which the audio itself marks ...
    pauses = word_boundaries(speech)
    runs = _snap(runs, pauses, reach=SWITCH_REACH)
    # ... or, with no pause, to where the new speaker's mouth takes over.
    return _mouth_step(runs, t, activity_matrix(tracks, len(t), people, 0), people, pauses)


def run_at(runs: Sequence[SpeakerRun], t: float) -> SpeakerRun:
    """The run covering clip time ``t`` (the last one past the end)."""
    for r in runs:
        if t < r.end:
            return r
    return runs[-1]


def speech_share(runs: Sequence[SpeakerRun]) -> dict[int, float]:
    """Seconds each identity holds the floor, as a share of all attributed time."""
    total: dict[int, float] = {}
    for r in runs:
        if r.identity >= 0:
            total[r.identity] = total.get(r.identity, 0.0) + r.end - r.start
    s = sum(total.values()) or 1.0
    return {k: v / s for k, v in total.items()}
