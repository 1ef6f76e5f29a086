"""Select: pick the best short clips of a talk from its transcript and audio features alone.

Vision runs later, only on what this picks, so the video side costs in proportion to the output.
Pipeline: sentences → candidate windows of whole sentences (padded, never cut inside a word) →
features normalised against the talk → weighted score → non-overlapping top-K in time order.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence

import numpy as np
import structlog

from montaged.config import SelectConfig
from montaged.errors import ConfigError
from montaged.model import ClipPlan, SpeakerTurn, Transcript, Word, speakers_of
from montaged.select.candidates import Windows, cut_times, enumerate_windows
from montaged.select.choose import choose_top
from montaged.select.edges import trim_to_sound
from montaged.select.features import AudioFeatureTrack
from montaged.select.reasons import explain
from montaged.select.score import WEIGHTS, score_windows
from montaged.select.sentences import Sentence, split_sentences
from montaged.select.words import build_word_table

__all__ = ["WEIGHTS", "AudioFeatureTrack", "Sentence", "rank_clips", "select_clips", "split_sentences"]

log = structlog.get_logger(__name__)

MAX_CANDIDATES = 50
"""Ranked moments kept beside the picks (non-overlapping, best first), for previews and re-cuts."""


def _check(cfg: SelectConfig) -> dict[str, float]:
    if cfg.min_seconds > cfg.max_seconds:
        raise ConfigError(
            f"select.min_seconds ({cfg.min_seconds}) is longer than select.max_seconds "
            f"({cfg.max_seconds}); make min_seconds the smaller one"
        )
    unknown = sorted(set(cfg.weights) - set(WEIGHTS))
    if unknown:
        raise ConfigError(
            f"select.weights: unknown feature {', '.join(unknown)} (known: {', '.join(sorted(WEIGHTS))})"
        )
    return {**WEIGHTS, **cfg.weights}


def _turns_from_words(words: Sequence[Word]) -> list[SpeakerTurn]:
    """Speaker runs of labelled words: turns for the exchange feature when none were given."""
    turns: list[SpeakerTurn] = []
    for w in words:
        if w.speaker is None:
            continue
        if turns and turns[-1].speaker == w.speaker:
            turns[-1] = SpeakerTurn(turns[-1].start, max(turns[-1].end, w.end), w.speaker)
        else:
            turns.append(SpeakerTurn(w.start, w.end, w.speaker))
    return turns


def _label_words(words: list[Word], turns: Sequence[SpeakerTurn]) -> list[Word]:
    """Give unlabelled words the speaker of the turn around their midpoint (latest-starting wins)."""
    if not turns or all(w.speaker is not None for w in words):
        return words
    ordered = sorted(turns, key=lambda t: (t.start, t.end))
    starts = np.array([t.start for t in ordered])
    out = []
    for w in words:
        if w.speaker is None:
            mid = (w.start + w.end) / 2
            i = int(np.searchsorted(starts, mid, side="right")) - 1
            if i >= 0 and ordered[i].end >= mid:
                w = Word(w.text, w.start, w.end, w.confidence, ordered[i].speaker, w.source)
        out.append(w)
    return out


def select_clips(
    transcript: Transcript,
    features: AudioFeatureTrack | None,
    cfg: SelectConfig,
    *,
    turns: Sequence[SpeakerTurn] = (),
    max_clips: int | None = None,
) -> list[ClipPlan]:
    """The best non-overlapping clips of a talk, in time order (see :func:`rank_clips`)."""
    return rank_clips(transcript, features, cfg, turns=turns, max_clips=max_clips)[0]


def rank_clips(
    transcript: Transcript,
    features: AudioFeatureTrack | None,
    cfg: SelectConfig,
    *,
    turns: Sequence[SpeakerTurn] = (),
    max_clips: int | None = None,
) -> tuple[list[ClipPlan], list[ClipPlan]]:
    """The best non-overlapping clips of a talk in time order, and the ranked candidates.

    The candidates are up to MAX_CANDIDATES non-overlapping moments, best first (their ``index``
    is the rank from 0); the clips are the first ``max_clips`` of them, put in time order.

    Args:
        transcript: timed words (any engine); sorted here by start time.
        features: per-hop audio energy/pitch of the same media, or None (transcript features only).
        cfg: clip bounds, padding, weights (``[select]`` in the config file).
        turns: speaker turns from diarization; without them, turns come from word speakers.
        max_clips: a job's own limit, overriding ``cfg.max_clips``.

    Every clip starts and ends on sentence boundaries, never inside a word, and lasts between
    ``cfg.min_seconds`` and ``cfg.max_seconds`` (except the single whole-talk clip of a talk
    too short for one, when ``cfg.whole_if_short``).
    """
    t_begin = time.perf_counter()
    weights = _check(cfg)
    if max_clips is not None and max_clips < 1:
        raise ConfigError(f"max_clips must be at least 1 (got {max_clips}); leave it out for the default")
    # Sorted by start; an end before its start (a broken engine) is clamped to the start.
    words = [
        w if w.end >= w.start else Word(w.text, w.start, w.start, w.confidence, w.speaker, w.source)
        for w in sorted(transcript.words, key=lambda w: (w.start, w.end))
    ]
    words = _label_words(words, turns)
    if not words:
        log.info("no clips: the transcript has no words")
        return [], []
    pads = cfg.lead_in_seconds + cfg.tail_seconds
    sentences = split_sentences(
        words, pause_seconds=cfg.pause_seconds, max_seconds=max(cfg.max_seconds - pads, 1.0)
    )
    wt = build_word_table(words, sentences, features)
    pad = {"lead_in": cfg.lead_in_seconds, "tail": cfg.tail_seconds}
    start_at, end_at = cut_times(wt.starts, wt.ends, transcript.duration, **pad)
    start_at, end_at = trim_to_sound(start_at, end_at, wt.starts, wt.ends, features, **pad)
    lo, hi = cfg.min_seconds, cfg.max_seconds
    win = enumerate_windows(sentences, start_at, end_at, min_seconds=lo, max_seconds=hi, whole=True)
    if len(win) == 0:
        # No run of finished thoughts fits the bounds (one run-on sentence longer than
        # max_seconds): clips of sentence pieces beat no clip at all.
        win = enumerate_windows(sentences, start_at, end_at, min_seconds=lo, max_seconds=hi)
        if len(win):
            log.info("no clip of whole sentences fits the bounds; clips may end mid-sentence")
    span = float(end_at[-1] - start_at[0])
    if len(win) == 0 and cfg.whole_if_short and span < cfg.min_seconds:
        one = np.array([0], np.int64)
        win = Windows(one, np.array([len(sentences) - 1], np.int64), start_at[:1], end_at[-1:])
    if len(win) == 0:
        log.info(
            "no clips: no run of whole sentences fits the clip bounds", sentences=len(sentences), span=span
        )
        return [], []

    turn_list = list(turns) or _turns_from_words(words)
    use_exchange = cfg.prefer_whole_exchanges and len({t.speaker for t in turn_list}) >= 2
    target = cfg.target_seconds or (cfg.min_seconds + cfg.max_seconds) / 2
    scored = score_windows(
        wt,
        sentences,
        win,
        features,
        turns=turn_list,
        use_exchange=use_exchange,
        target_seconds=target,
        half_range=max(cfg.max_seconds - cfg.min_seconds, 1.0) / 2,
        max_seconds=cfg.max_seconds,
        weights=weights,
    )
    k = min(max_clips or cfg.max_clips, max(1, math.floor(span / cfg.seconds_per_clip)))
    # greedy by score: the first k of a longer ranking are exactly the k picks
    ranked = choose_top(win.start, win.end, scored.total, max(k, MAX_CANDIDATES))
    picked = sorted(ranked[:k], key=lambda j: float(win.start[j]))

    def plan(index: int, j: int) -> ClipPlan:
        a, b = int(scored.word_first[j]), int(scored.word_last[j])
        speakers = speakers_of(words[a : b + 1])
        return ClipPlan(
            index=index,
            start=float(win.start[j]),  # not rounded: rounding could move a cut into a word
            end=float(win.end[j]),
            score=round(float(scored.total[j]), 4),
            features={name: round(float(v[j]), 4) for name, v in scored.features.items()},
            reason=explain(scored, j, wt, sentences, int(win.first[j])),
            text=" ".join(w.text.strip() for w in words[a : b + 1]),
            speakers=speakers,
        )

    clips = [plan(index, j) for index, j in enumerate(picked)]
    candidates = [plan(rank, j) for rank, j in enumerate(ranked)]
    log.info(
        "clips selected",
        clips=len(clips),
        candidates=len(win),
        sentences=len(sentences),
        words=len(words),
        audio=features is not None,
        seconds=round(time.perf_counter() - t_begin, 3),
    )
    return clips, candidates
