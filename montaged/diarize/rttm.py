"""Speaker turns as RTTM (what pyannote and the NIST md-eval tools read) and as JSON.

RTTM is one line per turn with ten space-separated fields:
``SPEAKER <uri> <channel> <onset> <duration> <NA> <NA> <speaker> <NA> <NA>``. Times are seconds
with millisecond precision; ``uri`` must not contain spaces (md-eval splits on whitespace).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from montaged.model import SpeakerTurn

FORMATS = ("rttm", "json")


class RttmError(ValueError):
    """A line that is not valid RTTM; the message names the file/line and what is wrong."""


def _uri(uri: str) -> str:
    # md-eval and pyannote.database split on whitespace: a space inside the uri shifts every field.
    return "_".join(uri.split()) or "audio"


def to_rttm(turns: Iterable[SpeakerTurn], uri: str, channel: int = 1) -> str:
    """RTTM text for ``turns`` (one ``SPEAKER`` line each, in time order)."""
    name = _uri(uri)
    lines = []
    for t in sorted(turns, key=lambda t: (t.start, t.end, t.speaker)):
        duration = max(0.0, t.end - t.start)
        spk = "_".join(t.speaker.split())
        lines.append(f"SPEAKER {name} {channel} {t.start:.3f} {duration:.3f} <NA> <NA> {spk} <NA> <NA>")
    return "".join(line + "\n" for line in lines)


def parse_rttm(text: str, *, source: str = "<rttm>", uri: str | None = None) -> list[SpeakerTurn]:
    """Turns from RTTM text; only ``SPEAKER`` lines (of ``uri`` when given) are kept.

    Blank lines and ``;;`` comments are skipped, as md-eval does.
    """
    turns = []
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith(";;"):
            continue
        fields = line.split()
        if fields[0] != "SPEAKER":
            continue
        if len(fields) < 8:
            raise RttmError(
                f"{source}:{n}: expected 10 fields (SPEAKER uri chan onset dur ...), got {len(fields)}"
            )
        if uri is not None and fields[1] != uri:
            continue
        try:
            onset, duration = float(fields[3]), float(fields[4])
        except ValueError as e:
            raise RttmError(
                f"{source}:{n}: onset/duration are not numbers ({fields[3]!r} {fields[4]!r})"
            ) from e
        if duration < 0 or onset < 0:
            raise RttmError(f"{source}:{n}: negative onset or duration ({onset} {duration})")
        turns.append(SpeakerTurn(start=onset, end=onset + duration, speaker=fields[7]))
    return sorted(turns, key=lambda t: (t.start, t.end))


def read_rttm(path: Path, *, uri: str | None = None) -> list[SpeakerTurn]:
    return parse_rttm(path.read_text(), source=str(path), uri=uri)


def to_json(turns: Sequence[SpeakerTurn], uri: str) -> str:
    """``{"uri": ..., "speakers": [...], "turns": [{start, end, speaker}, ...]}`` (times in seconds)."""
    speakers = list(dict.fromkeys(t.speaker for t in turns))
    doc: dict[str, Any] = {
        "uri": uri,
        "speakers": speakers,
        "turns": [{"start": round(t.start, 3), "end": round(t.end, 3), "speaker": t.speaker} for t in turns],
    }
    return json.dumps(doc, indent=2) + "\n"


def parse_json(text: str, *, source: str = "<json>") -> list[SpeakerTurn]:
    try:
        doc = json.loads(text)
        return [SpeakerTurn(float(t["start"]), float(t["end"]), str(t["speaker"])) for t in doc["turns"]]
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
        raise RttmError(f"{source}: not a speaker-turn JSON document ({e})") from e


def render(turns: Sequence[SpeakerTurn], fmt: str, uri: str) -> str:
    if fmt == "rttm":
        return to_rttm(turns, uri)
    if fmt == "json":
        return to_json(turns, uri)
    raise ValueError(f"unknown turn format {fmt!r}; use one of {', '.join(FORMATS)}")
