"""Transcript output: JSON (the stable word contract), SRT and WebVTT captions, plain text.

Caption cues follow common broadcast guidance (BBC/Netflix style): at most two lines of at most
42 characters, at most 6 s on screen, a new cue at a sentence end, a pause or a change of
speaker (or at a comma once a cue is half full), and lines balanced so the eye does not jump
between a long and a very short line.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

from montaged.model import Transcript, Word

MAX_CHARS = 42
MAX_LINES = 2
MAX_SECONDS = 6.0
PAUSE_SECONDS = 0.8
"""A silence this long between words starts a new cue."""
MIN_SECONDS = 1.0
"""Short cues are held this long when the next cue leaves room, so they can be read."""
SENTENCE_END = (".", "?", "!", "…", '."', '?"', '!"')
ABBREVIATIONS = frozenset(
    {"mr.", "mrs.", "ms.", "dr.", "st.", "vs.", "e.g.", "i.e.", "etc.", "no.", "jr.", "sr."}
)


@dataclass(frozen=True)
class Cue:
    start: float
    end: float
    lines: tuple[str, ...]
    speaker: str | None = None

    @property
    def text(self) -> str:
        return "\n".join(self.lines)


def _ends_sentence(text: str) -> bool:
    return text.endswith(SENTENCE_END) and text.lower() not in ABBREVIATIONS


def _join(words: Sequence[Word]) -> str:
    return " ".join(w.text for w in words)


def wrap(
    text_words: Sequence[str], max_chars: int = MAX_CHARS, max_lines: int = MAX_LINES
) -> list[str] | None:
    """Split words into at most ``max_lines`` balanced lines of at most ``max_chars``; None if they
    do not fit. A single word longer than a line gets a line of its own rather than being cut."""
    whole = " ".join(text_words)
    if len(whole) <= max_chars or len(text_words) == 1:
        return [whole]
    if max_lines < 2:
        return None
    best: list[str] | None = None
    best_width = None
    for i in range(1, len(text_words)):
        first = " ".join(text_words[:i])
        rest = wrap(text_words[i:], max_chars, max_lines - 1)
        if rest is None or len(first) > max_chars:
            continue
        width = max(len(first), *(len(r) for r in rest))
        if best_width is None or width < best_width:
            best, best_width = [first, *rest], width
    return best


def cues(
    words: Sequence[Word],
    *,
    max_chars: int = MAX_CHARS,
    max_lines: int = MAX_LINES,
    max_seconds: float = MAX_SECONDS,
    pause: float = PAUSE_SECONDS,
    speaker_labels: bool | None = None,
) -> list[Cue]:
    """Group timed words into caption cues.

    ``speaker_labels`` None means: label cues when any word carries a speaker. A labelled cue's
    first line starts with ``SPEAKER: `` and the label counts towards that line's length.
    """
    label = any(w.speaker for w in words) if speaker_labels is None else speaker_labels
    groups: list[list[Word]] = []
    current: list[Word] = []

    def fits(ws: list[Word]) -> bool:
        texts = [w.text for w in ws]
        if label and ws[0].speaker:
            texts[0] = f"{ws[0].speaker}: {texts[0]}"
        return wrap(texts, max_chars, max_lines) is not None

    for w in words:
        if current:
            prev = current[-1]
            filled = len(_join(current)) >= max_chars or w.end - current[0].start > max_seconds / 2
            new_cue = (
                _ends_sentence(prev.text)
                or (filled and prev.text.endswith((",", ";", ":")))
                or w.start - prev.end >= pause
                or (label and w.speaker != prev.speaker)
                or w.end - current[0].start > max_seconds
                or not fits([*current, w])
            )
            if new_cue:
                groups.append(current)
                current = []
        current.append(w)
    if current:
        groups.append(current)

    out: list[Cue] = []
    for g in groups:
        texts = [w.text for w in g]
        speaker = g[0].speaker if label else None
        if speaker:
            texts[0] = f"{speaker}: {texts[0]}"
        lines = wrap(texts, max_chars, max_lines) or [" ".join(texts)]
        out.append(Cue(g[0].start, max(g[-1].end, g[0].start), tuple(lines), speaker))
    # Hold very short cues a little longer, never into the next one.
    for i, c in enumerate(out):
        if c.end - c.start < MIN_SECONDS:
            limit = out[i + 1].start if i + 1 < len(out) else c.start + MIN_SECONDS
            out[i] = Cue(c.start, max(c.end, min(c.start + MIN_SECONDS, limit)), c.lines, c.speaker)
    return out


def _shifted(words: Sequence[Word], offset: float) -> list[Word]:
    """Words moved by ``offset`` (a clip's ``-start``); words wholly before 0 are dropped."""
    out = []
    for w in words:
        start, end = w.start + offset, w.end + offset
        if end <= 0:
            continue
        out.append(Word(w.text, max(0.0, start), end, w.confidence, w.speaker, w.source))
    return out


def _stamp(t: float, sep: str) -> str:
    ms = max(0, round(t * 1000))
    h, rem = divmod(ms, 3_600_000)
    m, rem = divmod(rem, 60_000)
    s, ms = divmod(rem, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}{sep}{ms:03d}"


def to_srt(words: Sequence[Word], offset: float = 0.0) -> str:
    """SubRip captions. ``offset`` shifts every time (pass ``-clip_start`` for a clip)."""
    blocks = []
    for i, c in enumerate(cues(_shifted(words, offset)), 1):
        blocks.append(f"{i}\n{_stamp(c.start, ',')} --> {_stamp(c.end, ',')}\n{c.text}\n")
    return "\n".join(blocks)


def _vtt_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def to_vtt(words: Sequence[Word], offset: float = 0.0) -> str:
    """WebVTT captions; speakers become ``<v Name>`` voice spans, which players can style."""
    blocks = ["WEBVTT\n"]
    for c in cues(_shifted(words, offset)):
        lines = list(c.lines)
        if c.speaker:
            lines[0] = lines[0].removeprefix(f"{c.speaker}: ")
            lines[0] = f"<v {_vtt_escape(c.speaker)}>{_vtt_escape(lines[0])}"
            lines[1:] = [_vtt_escape(x) for x in lines[1:]]
        else:
            lines = [_vtt_escape(x) for x in lines]
        blocks.append(f"{_stamp(c.start, '.')} --> {_stamp(c.end, '.')}\n" + "\n".join(lines) + "\n")
    return "\n".join(blocks)


def to_txt(t: Transcript, *, paragraph_pause: float = 2.0) -> str:
    """Readable text: a paragraph per speaker turn or long pause, speaker-labelled when known."""
    paras: list[list[Word]] = []
    for w in t.words:
        if paras and (w.speaker == paras[-1][-1].speaker and w.start - paras[-1][-1].end < paragraph_pause):
            paras[-1].append(w)
        else:
            paras.append([w])
    out = []
    for p in paras:
        text = _join(p)
        out.append(f"{p[0].speaker}: {text}" if p[0].speaker else text)
    return "\n\n".join(out) + ("\n" if out else "")


def to_json(t: Transcript) -> str:
    """The transcript contract (DESIGN.md): metadata, then one word object per line."""
    head = {k: v for k, v in t.to_dict().items() if k != "words"}
    head["notes"] = list(t.notes)
    words = [
        json.dumps(
            {
                "text": w.text,
                "start": round(float(w.start), 3),
                "end": round(float(w.end), 3),
                "confidence": round(float(w.confidence), 4),
                "speaker": w.speaker,
                "source": w.source,
            },
            ensure_ascii=False,
        )
        for w in t.words
    ]
    meta = json.dumps(head, ensure_ascii=False)[1:-1]
    body = ",\n    ".join(words)
    return "{" + meta + ', "words": [\n    ' + body + ("\n  ]}\n" if words else "]}\n")


FORMATS = ("json", "srt", "vtt", "txt")


def render(t: Transcript, fmt: str) -> str:
    """One transcript in one of :data:`FORMATS`."""
    if fmt == "json":
        return to_json(t)
    if fmt == "srt":
        return to_srt(t.words)
    if fmt == "vtt":
        return to_vtt(t.words)
    if fmt == "txt":
        return to_txt(t)
    raise ValueError(f"unknown transcript format {fmt!r}; use one of {', '.join(FORMATS)}")
