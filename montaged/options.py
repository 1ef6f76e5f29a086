"""Job options: one schema, checked when a job is submitted through any door.

The socket, the hot folder, Redis entries and ``montaged process`` all hand their specs to the
Submitter, which calls :func:`problems`; an unknown key or a bad value is refused there, as
``options.key: problem (got value)``, instead of failing the job stages later (or being ignored).
Stages read the same keys with ``JobContext.option``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

MAX_RANGES = 100  # ranges of one re-cut job
MAX_PROFILES = 8  # renders of one job (each profile re-encodes every clip)
MAX_CLIP_SECONDS = 3600.0
DRY_RUN_STAGE = "select"
LANGUAGE = re.compile(r"^[a-z]{2,3}(-[A-Za-z0-9]{2,4})?$")

REEL_ORDERS = ("time", "score")
REEL_TRANSITIONS = ("crossfade", "dip")
MAX_TRANSITION_SECONDS = 5.0

Check = Callable[[Any], str | None]  # the problem with a value, or None


def _whole(low: int, high: int, what: str) -> Check:
    def check(value: Any) -> str | None:
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            return f"must be a whole number of {what} from {low} to {high}"
        return None

    return check


def _seconds(value: Any) -> str | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= MAX_CLIP_SECONDS:
        return f"must be a number of seconds above 0 and at most {MAX_CLIP_SECONDS:g}"
    return None


def _caption_style(value: Any) -> str | None:
    if not isinstance(value, str) or not 1 <= len(value) <= 64:
        return 'must be the name of a caption style (render.caption_styles) or "none"'
    return None


def _language(value: Any) -> str | None:
    """A code Whisper knows (``de``), optionally with a region for Deepgram (``de-CH``)."""
    from faster_whisper.tokenizer import _LANGUAGE_CODES  # a plain tuple; imported on first use

    if not isinstance(value, str) or not LANGUAGE.match(value) or value.split("-")[0] not in _LANGUAGE_CODES:
        return "must be a language code Whisper knows, like \"en\", \"de\" or \"pt-BR\""
    return None


def _stop_after(value: Any) -> str | None:
    if value != DRY_RUN_STAGE:
        return f"only {DRY_RUN_STAGE!r} (a preview that ends with the ranked candidates)"
    return None


def _ranges(value: Any) -> str | None:
    if not isinstance(value, list) or not 1 <= len(value) <= MAX_RANGES:
        return f"must be a list of 1 to {MAX_RANGES} [start, end] pairs in seconds"
    for pair in value:
        numbers = isinstance(pair, list) and len(pair) == 2 and all(
            isinstance(v, int | float) and not isinstance(v, bool) for v in pair)
        if not numbers or not 0 <= pair[0] < pair[1]:
            return "each range must be [start, end] in seconds, 0 or more, the start before the end"
    return None


def _profiles(value: Any) -> str | None:
    """Names only: whether each is configured is the Submitter's check (it knows the config)."""
    names = isinstance(value, list) and all(isinstance(v, str) and 1 <= len(v) <= 128 for v in value)
    if not names or not 1 <= len(value) <= MAX_PROFILES or len(set(value)) != len(value):
        return f"must be a list of 1 to {MAX_PROFILES} different profile names (keys of [profiles])"
    return None


def _reel(value: Any) -> str | None:
    """``true`` (the profile's reel settings, else the defaults), ``false`` (no reel, even where a
    profile makes one), or an object changing some of ``order``, ``transition``, ``seconds``."""
    if isinstance(value, bool):
        return None
    if not isinstance(value, dict):
        return ('must be true, false or an object like {"order": "time", "transition": "crossfade",'
                ' "seconds": 0.5}')
    found = []
    for key, item in value.items():
        if key == "order" and item not in REEL_ORDERS:
            found.append(f"order must be {' or '.join(map(repr, REEL_ORDERS))}")
        elif key == "transition" and item not in REEL_TRANSITIONS:
            found.append(f"transition must be {' or '.join(map(repr, REEL_TRANSITIONS))}")
        elif key == "seconds" and (isinstance(item, bool) or not isinstance(item, int | float)
                                   or not 0 < item <= MAX_TRANSITION_SECONDS):
            found.append("seconds (of each transition) must be above 0 and at most"
                         f" {MAX_TRANSITION_SECONDS:g}")
        elif key not in ("order", "transition", "seconds"):
            found.append(f"{key!r} is not a reel setting; use order, transition, seconds")
    return "; ".join(found) or None


def _flag(value: Any) -> str | None:
    return None if isinstance(value, bool) else "must be true or false"


EDGES = ("start", "end")


def _exact(value: Any) -> str | None:
    if isinstance(value, bool) or value in EDGES:
        return None
    return "must be true, false, \"start\" or \"end\""


def _object(value: Any) -> str | None:
    return None if isinstance(value, dict) else "must be a JSON object"


SCHEMA: dict[str, tuple[Check, str]] = {
    "language": (_language, "the spoken language, for Whisper and Deepgram alike"),
    "max_clips": (_whole(1, 100, "clips"), "at most this many clips"),
    "speakers": (_whole(1, 50, "speakers"), "the number of speakers, when known"),
    "captions": (_caption_style, "burned caption style, or \"none\""),
    "profiles": (_profiles, "render with each of these profiles, from one analysis"),
    "reel": (_reel, "join the clips into one reel with transitions (true, false or settings)"),
    "min_seconds": (_seconds, "shortest clip (overrides select.min_seconds)"),
    "max_seconds": (_seconds, "longest clip (overrides select.max_seconds)"),
    "stop_after": (_stop_after, "\"select\": a preview, no render"),
    "ranges": (_ranges, "render exactly these [start, end] ranges (a re-cut)"),
    "exact": (_exact, "with ranges: keep the edges (or only \"start\"/\"end\") even inside a word"),
    "recut_of": (_object, "which job and clip or candidate a re-cut comes from"),
    "hotfolder": (_object, "recorded by the hot folder"),
    "redis": (_object, "recorded by the Redis intake"),
}


def problems(options: dict[str, Any]) -> list[str]:
    """Every problem with ``options``, each as ``options.key: problem (got value)``."""
    found = []
    for key, value in options.items():
        entry = SCHEMA.get(key)
        if entry is None:
            found.append(f"options.{key}: not a job option (got {_shown(value)}); the options are"
                         f" {', '.join(SCHEMA)}")
            continue
        problem = entry[0](value)
        if problem is not None:
            found.append(f"options.{key}: {problem} (got {_shown(value)})")
    low, high = options.get("min_seconds"), options.get("max_seconds")
    if not found and low is not None and high is not None and low > high:
        found.append(f"options.min_seconds: must not be longer than options.max_seconds"
                     f" (got {low!r} > {high!r})")
    return found


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def job_profiles(profile: str, options: dict[str, Any]) -> list[str]:
    """The profiles a job renders with: ``options.profiles`` when given, else its one ``profile``."""
    chosen = options.get("profiles")
    return list(chosen) if isinstance(chosen, list) and chosen else [profile]
