"""Sentences from timed words: the units a clip may start and end on.

A clip that starts or ends mid-sentence sounds broken, so every candidate window is a run of whole
sentences. Sentences end on terminal punctuation; where the transcript has (almost) none (a cloud
ear without smart formatting), they end on pauses instead. A change of speaker always ends one.
"""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from montaged.model import Word
from montaged.select.lexicon import QUESTION_OPENERS, TRAILING_OFF, ends_sentence, is_question, norm

# A transcript with fewer sentence ends than one per this many words is treated as unpunctuated:
# written English averages 15–25 words a sentence, so a real punctuated transcript is far above it.
PUNCTUATED_WORDS_PER_END = 60


@dataclass(frozen=True)
class Sentence:
    """Words ``first..last`` (inclusive indexes into the time-sorted word list)."""

    first: int
    last: int
    start: float
    end: float
    question: bool
    terminal: bool  # ends on punctuation or a clear pause: a natural place to stop a clip
    speaker: str | None
    complete: bool = True
    """The thought is finished here, so a clip may end here and the next sentence may open one:
    the talk's last word; else terminal punctuation (in an unpunctuated transcript, a clear pause
    or a change of speaker), and a last word that does not trail off (lexicon.TRAILING_OFF). A
    piece cut from a run-on (``max_seconds``) or a speaker cut off mid-sentence is not complete."""


def safe_cuts(starts: npt.NDArray[np.float64], ends: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """``gap[k]``: silence between word ``k`` and ``k+1`` (negative where words overlap in time).

    Uses the running maximum of word ends, so a cut in a gap with ``gap >= 0`` lies inside no
    word at all, even when an earlier long word overlaps later ones.
    """
    if len(starts) < 2:
        return np.zeros(0)
    return starts[1:] - np.maximum.accumulate(ends)[:-1]


def split_sentences(
    words: Sequence[Word], *, pause_seconds: float = 0.8, max_seconds: float | None = None
) -> list[Sentence]:
    """Split time-sorted ``words`` into sentences.

    Args:
        words: sorted by start time (``select_clips`` sorts them).
        pause_seconds: a silence this long ends a sentence in an unpunctuated transcript; three
            times this ends one even when punctuated (a thought that trails off).
        max_seconds: sentences longer than this (run-ons) are split at their widest safe pause,
            so that every clip length can still be made of whole sentences.
    """
    n = len(words)
    if n == 0:
        return []
    starts = np.fromiter((w.start for w in words), float, n)
    ends = np.fromiter((w.end for w in words), float, n)
    gap = safe_cuts(starts, ends)
    punct = np.fromiter((ends_sentence(w.text) for w in words), bool, n)
    punctuated = punct.sum() * PUNCTUATED_WORDS_PER_END >= n
    speakers = [w.speaker for w in words]
    change = np.fromiter(
        (a is not None and b is not None and a != b for a, b in itertools.pairwise(speakers)),
        bool,
        n - 1,
    )
    pause = gap >= pause_seconds - 1e-6  # times are rounded decimals: 1.7 - 0.9 < 0.8 in floats
    split = (punct[:-1] | change | (pause if not punctuated else gap >= 3 * pause_seconds - 1e-6)) & (
        gap >= 0
    )
    natural = punct[:-1] | pause | change
    finished = punct if punctuated else np.append(natural, True)
    trailing = np.fromiter((norm(w.text) in TRAILING_OFF for w in words), bool, n)
    bounds = [0, *(np.flatnonzero(split) + 1).tolist(), n]
    pieces = [(a, b - 1) for a, b in itertools.pairwise(bounds)]
    if max_seconds is not None:
        pieces = _split_long(pieces, starts, ends, gap, words, max_seconds)
    out = []
    for first, last in pieces:
        spk = Counter(s for s in speakers[first : last + 1] if s is not None).most_common(1)
        out.append(
            Sentence(
                first=first,
                last=last,
                start=float(starts[first]),
                end=float(ends[first : last + 1].max()),
                # Without punctuation, a sentence opening with "why/how/what…" is taken as a question.
                question=is_question(words[last].text)
                or (not punctuated and norm(words[first].text) in QUESTION_OPENERS),
                terminal=bool(last == n - 1 or punct[last] or natural[last]),
                speaker=spk[0][0] if spk else None,
                complete=bool(last == n - 1 or (finished[last] and not trailing[last])),
            )
        )
    return out


def _split_long(
    pieces: list[tuple[int, int]],
    starts: npt.NDArray[np.float64],
    ends: npt.NDArray[np.float64],
    gap: npt.NDArray[np.float64],
    words: Sequence[Word],
    max_seconds: float,
) -> list[tuple[int, int]]:
    """Split run-on pieces at their widest safe gap (a comma counts 0.3 s wider) until they fit."""
    out: list[tuple[int, int]] = []
    stack = list(reversed(pieces))
    while stack:
        first, last = stack.pop()
        if last == first or ends[first : last + 1].max() - starts[first] <= max_seconds:
            out.append((first, last))
            continue
        inner = gap[first:last].copy()  # gaps after words first..last-1
        clause = (",", ";", ":")
        comma = np.fromiter((words[k].text.rstrip().endswith(clause) for k in range(first, last)), bool)
        inner = np.where(inner >= 0, inner + 0.3 * comma, -np.inf)
        if not np.isfinite(inner).any():  # overlapping words throughout: no cut lies outside a word
            out.append((first, last))
            continue
        k = first + int(np.argmax(inner))
        stack.append((k + 1, last))
        stack.append((first, k))
    return out
