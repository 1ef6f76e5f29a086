"""Clips at ranges a person asked for (a re-cut), instead of ranked ones.

A requested edge that falls inside a word moves to the nearer edge of that word, so no word is
cut in half; ``exact`` keeps the edges as given. The transcript, speakers and audio analysis are
the job's own (from the caches), so a re-cut never transcribes again.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from montaged.errors import MediaError
from montaged.model import ClipPlan, Transcript, Word, speakers_of
from montaged.render.sidecar import clip_words

MAX_RANGES = 100


class RangeError(MediaError):
    """A requested range that cannot be cut (not two numbers, reversed, outside the media)."""

    code = "bad_range"


def parse_ranges(value: Any, duration: float) -> list[tuple[float, float]]:
    """``options.ranges`` (``[[start, end], …]`` in media seconds), checked against ``duration``."""
    if not isinstance(value, list) or not 1 <= len(value) <= MAX_RANGES:
        raise RangeError(
            f"options.ranges: a list of 1 to {MAX_RANGES} [start, end] pairs in seconds (got {value!r})"
        )
    out = []
    for i, pair in enumerate(value):
        ok = (
            isinstance(pair, list | tuple)
            and len(pair) == 2
            and all(isinstance(v, int | float) and not isinstance(v, bool) for v in pair)
        )
        if not ok:
            raise RangeError(f"options.ranges[{i}]: [start, end] in seconds (got {pair!r})")
        start, end = float(pair[0]), float(pair[1])
        if not 0 <= start < end:
            raise RangeError(f"options.ranges[{i}]: start must be 0 or more and before end (got {pair!r})")
        if start >= duration:
            raise RangeError(
                f"options.ranges[{i}]: starts at {start:g} s, after the media ends ({duration:.2f} s)"
            )
        out.append((start, min(end, duration)))
    return out


def snap(t: float, words: Sequence[Word]) -> float:
    """``t``, or the nearer edge of the word it falls inside."""
    for w in words:
        if w.start < t < w.end:
            return w.start if t - w.start <= w.end - t else w.end
    return t


def requested_clips(
    transcript: Transcript,
    ranges: Sequence[tuple[float, float]],
    *,
    exact: bool | str,
    origin: dict[str, Any] | None = None,
) -> list[ClipPlan]:
    """One plan per range, in the order given. ``exact``: True keeps both edges, ``"start"`` or
    ``"end"`` only that one (a re-cut keeps the edge it carries over from a chosen clip, which
    selection already placed on the sound). ``origin`` (``options.recut_of``) names the clip or
    candidate re-cut; its score and reason carry over, since the moment is the same one."""
    words = sorted(transcript.words, key=lambda w: (w.start, w.end))
    plans = []
    for i, (start, end) in enumerate(ranges):
        if exact not in (True, "start"):
            start = snap(start, words)
        if exact not in (True, "end"):
            end = snap(end, words)
        if end <= start:
            raise RangeError(
                f"range {i + 1} ({start:.2f}-{end:.2f} s) is inside one word; widen it or use --exact"
            )
        inside = clip_words(words, start, end)
        origin = origin or {}
        score = origin.get("score")
        plans.append(
            ClipPlan(
                index=i,
                start=start,
                end=end,
                score=float(score) if isinstance(score, int | float) else 0.0,
                features={},
                reason=str(origin.get("reason") or "requested range"),
                text=" ".join(w.text.strip() for w in inside),
                speakers=speakers_of(inside),
            )
        )
    return plans
