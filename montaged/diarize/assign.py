"""A speaker for every word of the transcript, with turns that never split a word.

The diarizer's turn boundaries come from 1.5 s embedding windows and land a few hundred
milliseconds off; the words come from ASR with their own timing. So each *word* is labelled as
a whole (the speaker it overlaps most), never cut at a boundary, and a lone word that flips to
another speaker in the middle of someone's sentence is given back to that sentence's speaker.
"""

from __future__ import annotations

import bisect
import dataclasses
from collections.abc import Sequence

from montaged.model import SpeakerTurn, Word

MAX_FLIP_SECONDS = 0.5
"""A one-word flip is absorbed only when the word is at most this long..."""
MAX_FLIP_GAP = 0.3
"""...and it sits within this many seconds of the words either side (mid-sentence, not a reply)."""
HEARD_SHARE = 0.3
"""A second speaker is heard in a word when their turns cover at least this share of it: a
turn edge grazing a word is a boundary drawn from 17 ms model frames, not someone talking over it."""


def _speakers_of(
    word: Word, turns: Sequence[SpeakerTurn], starts: list[float], max_end: list[float], rank: dict[str, int]
) -> tuple[str, ...]:
    """Speakers overlapping ``word``, longest first (ties: the earlier speaker); the nearest
    turn's speaker alone when none overlaps. Others than the first must cover ``HEARD_SHARE``."""
    overlap: dict[str, float] = {}
    lo, hi = word.start, max(word.end, word.start + 1e-6)  # a zero-length word still has a place
    k = bisect.bisect_left(starts, hi) - 1
    # Walk left over turns starting before the word ends; stop once none further left can reach it.
    while k >= 0 and max_end[k] > lo:
        t = turns[k]
        shared = min(hi, t.end) - max(lo, t.start)
        if shared > 0:
            overlap[t.speaker] = overlap.get(t.speaker, 0.0) + shared
        k -= 1
    if overlap:
        heard = sorted(overlap, key=lambda s: (-overlap[s], rank[s]))
        return (heard[0], *(s for s in heard[1:] if overlap[s] >= HEARD_SHARE * (hi - lo)))
    # No overlap (the word is in a pause the VAD left out): the closest turn edge wins.
    mid = (lo + hi) / 2
    best = min(turns, key=lambda t: (max(t.start - mid, mid - t.end, 0.0), t.start))
    return (best.speaker,)


def assign_speakers(
    words: Sequence[Word],
    turns: Sequence[SpeakerTurn],
    *,
    max_flip_seconds: float = MAX_FLIP_SECONDS,
    max_flip_gap: float = MAX_FLIP_GAP,
) -> tuple[Word, ...]:
    """New words (same order) with ``speaker`` and ``speakers`` set from ``turns``.

    1. Each word gets the speaker whose turns overlap it longest (overlapped speech: the longer
       share wins); a word no turn touches gets the nearest turn's speaker. ``speakers`` is
       everyone heard in it: that speaker, then anyone else whose turns cover at least
       ``HEARD_SHARE`` of the word (both voices of overlapped speech).
    2. A single word whose speaker differs from the equal speakers before and after it is given
       to them when it is short (≤ ``max_flip_seconds``) and close to both (gaps ≤
       ``max_flip_gap``): a boundary drawn from 1.5 s windows, not a one-word reply.

    With no turns the words come back unchanged.
    """
    if not turns or not words:
        return tuple(words)
    ordered = sorted(turns, key=lambda t: (t.start, t.end))
    starts = [t.start for t in ordered]
    max_end: list[float] = []
    for t in ordered:
        max_end.append(max(t.end, max_end[-1]) if max_end else t.end)
    rank = {s: i for i, s in enumerate(dict.fromkeys(t.speaker for t in ordered))}
    heard = [_speakers_of(w, ordered, starts, max_end, rank) for w in words]
    speakers = [h[0] for h in heard]

    smoothed = list(speakers)
    for i in range(1, len(words) - 1):
        before, after = speakers[i - 1], speakers[i + 1]
        if speakers[i] == before or before != after:
            continue
        w = words[i]
        short = w.end - w.start <= max_flip_seconds
        close = w.start - words[i - 1].end <= max_flip_gap and words[i + 1].start - w.end <= max_flip_gap
        if short and close:
            smoothed[i] = before
    return tuple(
        # A word handed back to its sentence was a boundary artefact: only that speaker is heard.
        dataclasses.replace(w, speaker=s, speakers=(s, *(o for o in h if o != s)) if s == h[0] else (s,))
        for w, s, h in zip(words, smoothed, heard, strict=True)
    )


def word_turns(words: Sequence[Word]) -> list[SpeakerTurn]:
    """Turns made of whole words: each run of one speaker, from its first word's start to its last
    word's end (captions, sidecars and clip selection use these; words without a speaker are skipped)."""
    out: list[SpeakerTurn] = []
    for w in words:
        if w.speaker is None:
            continue
        if out and out[-1].speaker == w.speaker:
            out[-1] = SpeakerTurn(out[-1].start, max(out[-1].end, w.end), w.speaker)
        else:
            out.append(SpeakerTurn(w.start, w.end, w.speaker))
    return out
