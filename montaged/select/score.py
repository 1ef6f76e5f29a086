"""What makes a moment worth clipping: documented features, normalised against the talk, weighted.

Every feature is computed for all candidate windows at once from prefix sums over words, frames
and sentences, so scoring a two-hour talk is a handful of vector operations. Continuous features
are robust z-scores across all windows of the talk (the windows tile the talk, so this is "how
unusual is this moment *for this talk*"), clipped to ±3 SD and scaled to [-1, 1]; cue features
are graded in [0, 1]. docs/selection.md has the table with the reasoning behind each weight.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from montaged.model import SpeakerTurn
from montaged.select import lexicon as lx
from montaged.select.candidates import Windows
from montaged.select.features import AudioFeatureTrack
from montaged.select.sentences import Sentence
from montaged.select.words import WordTable, csum

F64 = npt.NDArray[np.float64]

# Weights of the normalised features (see docs/selection.md for the reasoning).
WEIGHTS: dict[str, float] = {
    "hook": 0.16,  # the first seconds decide whether a viewer stays
    "salience": 0.14,  # specific, topical content rather than generic talk
    "completeness": 0.14,  # a clip must make sense without the talk around it
    "question_answer": 0.10,  # a question answered inside the clip is a self-contained story
    "exchange": 0.10,  # with several speakers: a whole exchange, no turn cut mid-way
    "pitch_variation": 0.08,  # lively intonation ↔ engaged speaker
    "energy": 0.08,  # loudness and its dynamics ↔ emphasis and excitement
    "emphasis": 0.08,  # stressed content words: the speaker marks what matters
    "speech_rate": 0.06,  # moderately faster than usual = engaged; extremes hurt
    "onset_energy": 0.04,  # a strong first breath
    "length": 0.04,  # near the target length, all else equal
    "filler": -0.06,  # um/uh/", like," make a clip feel unprepared
    "dead_air": -0.06,  # long silences are dead time on a short clip
}

HOOK_SECONDS = 3.0
QUESTION_HOOK_SECONDS = 8.0  # an opening question may take this long to ask
ANSWER_MIN, ANSWER_FULL = 2.0, 8.0  # seconds of speech after a question: none → full answer
DEAD_AIR_SECONDS = 1.0  # silences longer than this (beyond it) count as dead air
PAUSE_SECONDS = 0.5  # gaps longer than this are not speaking time for the speech rate
RATE_BEST, RATE_WIDTH = 0.1, 0.25  # log-ratio to the speaker's median: peak at 1.1×, 0 at 0.86× and 1.42×
TURN_TOLERANCE = 0.3  # a turn overlapping a cut by less than this is not "cut"


def robust_z(x: F64) -> F64:
    """(x − median) / (1.4826·MAD), falling back to SD when most values tie; clipped to ±3, / 3."""
    out = np.zeros(len(x))
    ok = np.isfinite(x)
    if ok.sum() < 2:
        return out
    v = x[ok]
    med = float(np.median(v))
    scale = 1.4826 * float(np.median(np.abs(v - med)))
    if scale < 1e-9:
        scale = float(np.std(v))
    if scale < 1e-9:
        return out
    out[ok] = np.clip((v - med) / scale, -3.0, 3.0) / 3.0
    return out


@dataclass(frozen=True)
class Scored:
    features: dict[str, F64]  # normalised value per feature, one entry per window
    total: F64
    weights: dict[str, float]
    word_first: npt.NDArray[np.int64]
    word_last: npt.NDArray[np.int64]
    first_question: npt.NDArray[np.int64]  # index of the first question sentence at or after each start


def _range(c: F64, a: npt.NDArray[np.int64], b: npt.NDArray[np.int64]) -> F64:
    """Sum of the underlying array over ``[a, b]`` inclusive, from its prefix sums ``c``."""
    return c[b + 1] - c[a]


def _anaphoric_start(tokens: list[str], first: int, last: int) -> tuple[float, float]:
    """Penalties (dangling conjunction, pronoun without antecedent) for a window opening at ``first``."""
    k = first
    conj = lx.DANGLING_CONJUNCTIONS.get(tokens[k], 0.0) if k <= last else 0.0
    while k < last and (tokens[k] in lx.DANGLING_CONJUNCTIONS or tokens[k] in lx.FILLERS or not tokens[k]):
        k += 1
    tok = tokens[k]
    nxt = tokens[k + 1] if k + 1 <= last else ""
    pron = (
        tok in lx.ANAPHORIC_ALWAYS
        or tok in ("that's", "those're")
        or (tok in lx.DEMONSTRATIVES and (nxt in lx.FOLLOWING_VERBS or nxt.endswith("'s")))
    )
    return conj, float(pron)


def _turn_cuts(turns: Sequence[SpeakerTurn], t: F64, max_seconds: float) -> npt.NDArray[np.bool_]:
    """Whether each time ``t`` falls inside a turn short enough to have fit in a clip whole."""
    short = sorted((x for x in turns if x.end - x.start <= max_seconds), key=lambda x: (x.start, x.end))
    if not short:
        return np.zeros(len(t), bool)
    st = np.array([x.start for x in short])
    pmax_end = np.maximum.accumulate(np.array([x.end for x in short]))
    idx = np.searchsorted(st, t - TURN_TOLERANCE, side="left") - 1
    return (idx >= 0) & (pmax_end[np.clip(idx, 0, None)] > t + TURN_TOLERANCE)


def score_windows(
    wt: WordTable,
    sentences: Sequence[Sentence],
    win: Windows,
    track: AudioFeatureTrack | None,
    *,
    turns: Sequence[SpeakerTurn],
    use_exchange: bool,
    target_seconds: float,
    half_range: float,
    max_seconds: float,
    weights: Mapping[str, float] | None = None,
) -> Scored:
    """Compute every feature for every window and the weighted total."""
    weights = dict(WEIGHTS if weights is None else weights)
    s_first = np.array([s.first for s in sentences], np.int64)
    s_last = np.array([s.last for s in sentences], np.int64)
    s_dur = np.array([s.end - s.start for s in sentences])
    s_q = np.array([s.question for s in sentences], bool)
    s_term = np.array([s.terminal for s in sentences], bool)
    wa, wb = s_first[win.first], s_last[win.last]
    n_words = (wb - wa + 1).astype(float)
    dur = win.duration
    f: dict[str, F64] = {}

    # Hook: cues among the words of the first few seconds.
    hb = np.maximum(np.searchsorted(wt.starts, wt.starts[wa] + HOOK_SECONDS, side="left") - 1, wa)
    hb = np.minimum(hb, wb)
    q_open = (s_q[win.first] & (s_dur[win.first] <= QUESTION_HOOK_SECONDS)).astype(float)
    cues = {name: (_range(csum(arr), wa, hb) > 0).astype(float) for name, arr in
            (("direct", wt.direct), ("number", wt.number), ("claim", wt.claim))}  # fmt: skip
    f["hook"] = np.minimum(
        1.0, 0.4 * q_open + 0.25 * cues["direct"] + 0.2 * cues["number"] + 0.3 * cues["claim"]
    )

    # Lexical salience: mean IDF weight per word (dense with specific terms).
    f["salience"] = robust_z(_range(csum(wt.idf), wa, wb) / n_words)

    # Completeness: clean start (no dangling conjunction/pronoun) and a natural end.
    pen = np.array([_anaphoric_start(wt.tokens, s.first, s.last) for s in sentences]).reshape(-1, 2)[
        win.first
    ]
    end_ok = np.where(s_q[win.last], 0.5, 1.0) * s_term[win.last]
    f["completeness"] = 0.4 * end_ok + 0.35 * (1.0 - pen[:, 0]) + 0.25 * (1.0 - pen[:, 1])

    # Question → answer: the first question inside the window, and how much speech follows it.
    nxt_q = np.full(len(sentences) + 1, len(sentences), np.int64)
    for i in range(len(sentences) - 1, -1, -1):
        nxt_q[i] = i if s_q[i] else nxt_q[i + 1]
    q = nxt_q[win.first]
    has_q = q < win.last
    q_end = np.array([s.end for s in sentences] + [np.inf])[q]
    f["question_answer"] = np.where(
        has_q, np.clip((win.end - q_end - ANSWER_MIN) / (ANSWER_FULL - ANSWER_MIN), 0, 1), 0
    )

    # Fillers and dead air (rates, normalised against the talk).
    f["filler"] = robust_z(_range(csum(wt.filler), wa, wb) / n_words)
    gaps = np.zeros(len(wt.starts))
    gaps[1:] = np.maximum(wt.starts[1:] - np.maximum.accumulate(wt.ends)[:-1], 0.0)  # gap before word k
    dead = np.maximum(gaps - DEAD_AIR_SECONDS, 0.0)
    f["dead_air"] = robust_z((_range(csum(dead), wa, wb) - dead[wa]) / dur)

    # Speech rate relative to the speaker's usual pace (median over the talk's sentences).
    pauses = np.where(gaps > PAUSE_SECONDS, gaps, 0.0)
    speaking = np.maximum(wt.ends[wb] - wt.starts[wa] - (_range(csum(pauses), wa, wb) - pauses[wa]), 1e-3)
    s_rate = (s_last - s_first + 1) / np.maximum(s_dur, 0.3)
    usual = float(np.median(s_rate[s_dur >= 1.0])) if (s_dur >= 1.0).any() else float(np.median(s_rate))
    log_ratio = np.log(np.maximum(n_words / speaking, 1e-3) / max(usual, 1e-3))
    f["speech_rate"] = np.clip(1.0 - ((log_ratio - RATE_BEST) / RATE_WIDTH) ** 2, -1.0, 1.0)

    # Length: 1 at the target, 0 at either bound.
    f["length"] = np.clip(1.0 - np.abs(dur - target_seconds) / max(half_range, 1e-6), 0.0, 1.0)

    if track is not None and len(track):
        _audio_features(f, wt, win, track, wa, wb)

    if use_exchange:
        # Only turns that could have fit whole count as "cut": a 10-minute monologue always is.
        start_cut = _turn_cuts(turns, win.start, max_seconds)
        end_cut = _turn_cuts(turns, win.end, max_seconds)
        change = np.zeros(len(wt.speaker))
        change[1:] = (wt.speaker[1:] != wt.speaker[:-1]) & (wt.speaker[1:] >= 0) & (wt.speaker[:-1] >= 0)
        whole = (_range(csum(change), wa, wb) - change[wa] >= 1) & ~start_cut & ~end_cut
        f["exchange"] = 0.35 * ~start_cut + 0.35 * ~end_cut + 0.3 * whole

    total = np.zeros(len(win))
    for name, value in f.items():
        total += weights.get(name, 0.0) * value
    return Scored(f, total, weights, wa, wb, q)


def _audio_features(
    f: dict[str, F64],
    wt: WordTable,
    win: Windows,
    track: AudioFeatureTrack,
    wa: npt.NDArray[np.int64],
    wb: npt.NDArray[np.int64],
) -> None:
    """Energy, pitch variation, emphasis and onset energy (only when audio features exist)."""
    stats = track.talk_stats()
    voiced = track.voiced().astype(float)
    e = track.energy_db.astype(np.float64)
    cv, ce, ce2 = csum(voiced), csum(e * voiced), csum(e * e * voiced)
    fa, fb = track.frame_index(win.start), track.frame_index(win.end)
    nv = cv[fb] - cv[fa]
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(nv > 0, (ce[fb] - ce[fa]) / nv, np.nan)
        sd = np.sqrt(np.maximum(np.where(nv > 0, (ce2[fb] - ce2[fa]) / nv - mean**2, np.nan), 0.0))
    loud = (mean - stats.energy_mean_db) / stats.energy_std_db
    f["energy"] = robust_z(0.5 * loud + 0.5 * sd / stats.energy_std_db)

    ha = track.frame_index(wt.starts[wa])
    hb = track.frame_index(wt.starts[wa] + HOOK_SECONDS)
    nh = cv[hb] - cv[ha]
    with np.errstate(invalid="ignore", divide="ignore"):
        onset = np.where(
            nh > 0, ((ce[hb] - ce[ha]) / nh - stats.energy_mean_db) / stats.energy_std_db, np.nan
        )
    f["onset_energy"] = robust_z(onset)

    has_p = np.isfinite(wt.pitch_z)
    pz = np.where(has_p, wt.pitch_z, 0.0)
    cn, c1, c2 = csum(has_p), csum(pz), csum(pz * pz)
    k = _range(cn, wa, wb)
    with np.errstate(invalid="ignore", divide="ignore"):
        m = _range(c1, wa, wb) / k
        var = np.where(k >= 5, _range(c2, wa, wb) / k - m**2, np.nan)  # < 5 voiced words: no estimate
    f["pitch_variation"] = robust_z(np.sqrt(np.maximum(var, 0.0)))

    n_content = _range(csum(wt.content), wa, wb)
    with np.errstate(invalid="ignore", divide="ignore"):
        share = np.where(n_content > 0, _range(csum(wt.prominent), wa, wb) / n_content, np.nan)
    f["emphasis"] = robust_z(share)
