"""Burned-in word captions: timed words → an ASS script that libass draws during the one encode.

Words are grouped into cues at sentence and phrase boundaries (the same rules as the SRT/WebVTT
files, :func:`montaged.asr.formats.cues`), never across a change of speaker, and each cue is cut
into 1-2 lines within the style's word and character limits. Every cue becomes one ASS event per
word, each holding the *whole* cue text with only that word's colour changed: a colour override
changes no glyph metrics, so the lines never reflow as words light up.

Lines stay inside the platform-safe margins of the output's aspect (a vertical clip keeps clear
of the app's buttons on the right and its caption/description block at the bottom).
"""

from __future__ import annotations

import math
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import pysubs2

from montaged.asr.formats import cues
from montaged.config import CaptionStyle
from montaged.model import Word

NONE = "none"
"""The style name that turns burned captions off."""
CHAR_WIDTH = 0.62
"""Average glyph advance of a DejaVu-like sans face, as a share of the font size."""
CHAR_WIDTH_WIDE = 0.72
"""The same for bold or upper-case text, which runs wider."""


@dataclass(frozen=True)
class SafeArea:
    """Margins as shares of the frame (left/right of the width, top/bottom of the height)."""

    left: float
    right: float
    top: float
    bottom: float


def safe_area(width: int, height: int) -> SafeArea:
    """Where platform overlays leave text readable, by the output's shape.

    Vertical (9:16 and taller): TikTok/Reels/Shorts put buttons down the right edge and the
    account, description and audio credit over the bottom quarter. Portrait and square feeds
    overlay less. Landscape uses the broadcast title-safe 10 %.
    """
    tall = height / width
    if tall >= 1.5:
        return SafeArea(left=0.06, right=0.12, top=0.13, bottom=0.25)
    if tall >= 0.9:
        return SafeArea(left=0.06, right=0.06, top=0.08, bottom=0.12)
    return SafeArea(left=0.10, right=0.10, top=0.10, bottom=0.10)


@dataclass(frozen=True)
class CaptionCue:
    """Words on screen together, laid out as lines (each line a tuple of word indices)."""

    start: float
    end: float
    words: tuple[Word, ...]
    lines: tuple[tuple[int, ...], ...]


def resolve_style(styles: Mapping[str, CaptionStyle], name: object) -> CaptionStyle | None:
    """The style called ``name``; ``None`` for ``"none"``. Raises ``ValueError`` naming the choices."""
    if not isinstance(name, str):
        raise ValueError(f"captions: must be a style name or {NONE!r} (got {name!r})")
    if name.strip().lower() == NONE:
        return None
    if name not in styles:
        choices = ", ".join([*styles, NONE])
        raise ValueError(f"captions: no caption style {name!r}; use one of {choices} (render.caption_styles)")
    return styles[name]


def font_px(style: CaptionStyle, height: int) -> int:
    return max(8, round(style.size * height))


def line_chars(style: CaptionStyle, width: int, height: int) -> int:
    """Characters per line: the style's limit, or fewer where the safe width holds fewer."""
    area = safe_area(width, height)
    usable = width * (1 - area.left - area.right)
    wide = style.bold or style.case == "upper"
    per_char = font_px(style, height) * (CHAR_WIDTH_WIDE if wide else CHAR_WIDTH)
    return max(4, min(style.max_chars, int(usable / per_char)))


def _layout(texts: Sequence[str], max_words: int, max_chars: int, max_lines: int) -> list[int] | None:
    """Word counts per line (balanced by width) for one cue, or None if it does not fit."""

    def fits(ts: Sequence[str]) -> bool:
        return len(ts) <= max_words and (len(" ".join(ts)) <= max_chars or len(ts) == 1)

    if fits(texts):
        return [len(texts)]
    if max_lines < 2:
        return None
    best: list[int] | None = None
    best_width = math.inf
    for i in range(1, len(texts)):
        first, rest = texts[:i], texts[i:]
        if fits(first) and fits(rest):
            width = max(len(" ".join(first)), len(" ".join(rest)))
            if width < best_width:
                best, best_width = [i, len(texts) - i], width
    return best


def _split(group: Sequence[Word], texts: Sequence[str], style: CaptionStyle, chars: int) -> list[CaptionCue]:
    """Cut one phrase into the fewest cues that fit the style's lines, preferring cuts after a
    comma and avoiding one-word cues (dynamic programming over the cut points)."""
    n = len(group)
    best: list[tuple[int, int, int] | None] = [None] * (n + 1)  # (cues, penalty, next cut)
    best[n] = (0, 0, n)
    layouts: dict[tuple[int, int], list[int]] = {}
    for i in range(n - 1, -1, -1):
        for j in range(i + 1, n + 1):
            layout = _layout(texts[i:j], style.words_per_line, chars, style.lines)
            if layout is None:
                break
            after = best[j]
            if after is None:
                continue
            penalty = (j < n and not texts[j - 1].endswith((",", ";", ":"))) + 2 * (j - i == 1 < n)
            cand = (after[0] + 1, after[1] + penalty, j)
            current = best[i]
            if current is None or cand[:2] < current[:2]:
                best[i], layouts[(i, j)] = cand, layout
    out: list[CaptionCue] = []
    i = 0
    while i < n:
        step = best[i]
        j = step[2] if step is not None else i + 1
        counts = layouts.get((i, j), [j - i])
        lines, k = [], 0
        for c in counts:
            lines.append(tuple(range(k, k + c)))
            k += c
        words = tuple(group[i:j])
        out.append(CaptionCue(words[0].start, words[-1].end, words, tuple(lines)))
        i = j
    return out


def caption_cues(words: Sequence[Word], style: CaptionStyle, width: int, height: int) -> list[CaptionCue]:
    """Cues for clip-relative ``words``: phrase groups per speaker turn, split to the style's lines."""
    chars = line_chars(style, width, height)
    runs: list[list[Word]] = []
    for w in words:
        if runs and runs[-1][-1].speaker == w.speaker:
            runs[-1].append(w)
        else:
            runs.append([w])
    out: list[CaptionCue] = []
    for run in runs:
        pos = 0
        for cue in cues(run, max_chars=chars * style.lines, max_lines=1, speaker_labels=False):
            # A cue's text is its words joined by spaces: take words until that length is reached.
            length, n = len(cue.text), 0
            while pos + n < len(run) and len(" ".join(w.text for w in run[pos : pos + n])) < length:
                n += 1
            group = run[pos : pos + max(1, n)]
            pos += len(group)
            out += _split(group, [_cased(w.text, style) for w in group], style, chars)
    # A cue stays up until the next one starts (short pauses do not blank the screen).
    held: list[CaptionCue] = []
    for k, c in enumerate(out):
        nxt = out[k + 1].start if k + 1 < len(out) else c.end + 0.5
        held.append(CaptionCue(c.start, max(c.end, min(nxt, c.end + 0.5)), c.words, c.lines))
    return held


def _cased(text: str, style: CaptionStyle) -> str:
    text = text.replace("\\", "/").replace("{", "(").replace("}", ")")  # ASS override syntax
    if style.case == "upper":
        return text.upper()
    if style.case == "lower":
        return text.lower()
    return text


def _colour(hex_colour: str) -> pysubs2.Color:
    """``#RRGGBB[AA]`` (AA opacity) → ASS colour (whose alpha counts transparency)."""
    h = hex_colour.lstrip("#")
    opacity = int(h[6:8], 16) if len(h) == 8 else 255
    return pysubs2.Color(int(h[0:2], 16), int(h[2:4], 16), int(h[4:6], 16), 255 - opacity)


def _override(hex_colour: str) -> str:
    h = hex_colour.lstrip("#")
    return f"{{\\c&H{h[4:6]}{h[2:4]}{h[0:2]}&}}"


def ass_style(style: CaptionStyle, width: int, height: int) -> pysubs2.SSAStyle:
    size = font_px(style, height)
    area = safe_area(width, height)
    alignment = {"bottom": 2, "middle": 5, "top": 8}[style.position]
    return pysubs2.SSAStyle(
        fontname=style.font,
        fontsize=size,
        bold=style.bold,
        primarycolor=_colour(style.colour),
        secondarycolor=_colour(style.highlight),
        outlinecolor=_colour(style.outline_colour),
        backcolor=_colour(style.shadow_colour),
        borderstyle=3 if style.box else 1,
        outline=round(style.outline * size, 1),
        shadow=round(style.shadow * size, 1),
        alignment=pysubs2.Alignment(alignment),
        marginl=round(area.left * width),
        marginr=round(area.right * width),
        marginv=round((area.top if style.position == "top" else area.bottom) * height),
    )


def ass_document(captions: Sequence[CaptionCue], style: CaptionStyle, width: int, height: int) -> str:
    """The ASS script: one event per word, the cue's full text with that word in ``highlight``."""
    subs = pysubs2.SSAFile()
    subs.info.update({"PlayResX": str(width), "PlayResY": str(height), "WrapStyle": "0",
                      "ScaledBorderAndShadow": "yes", "Title": "Montage captions"})
    subs.styles = {"Caption": ass_style(style, width, height)}
    for cue in captions:
        texts = [_cased(w.text, style) for w in cue.words]
        lit = [f"{_override(style.highlight)}{t}{{\\r}}" for t in texts]
        for i, w in enumerate(cue.words):
            start = cue.start if i == 0 else w.start
            end = cue.words[i + 1].start if i + 1 < len(cue.words) else cue.end
            if end <= start:
                continue
            lines = [
                " ".join(lit[k] if k == i else texts[k] for k in line)
                for line in cue.lines
            ]
            subs.append(pysubs2.SSAEvent(start=round(start * 1000), end=round(end * 1000),
                                         style="Caption", text="\\N".join(lines)))
    return subs.to_string("ass")


def clip_relative(words: Sequence[Word], start: float, end: float) -> list[Word]:
    """Words moved to clip time (the first frame is 0), clamped to the clip."""
    out = []
    for w in words:
        s, e = max(0.0, w.start - start), min(end - start, w.end - start)
        if e > 0 and s < end - start:
            out.append(Word(w.text, s, max(s, e), w.confidence, w.speaker, w.source))
    return out


def write_ass(path: Path, words: Sequence[Word], style: CaptionStyle, width: int, height: int) -> int:
    """Write the ASS script for clip-relative ``words``; return the number of cues."""
    captions = caption_cues(words, style, width, height)
    path.write_text(ass_document(captions, style, width, height), encoding="utf-8")
    return len(captions)


def ass_filter(path: Path) -> str:
    """``ass=filename=...`` with the path escaped for the option and for the filter graph."""
    value = str(path).replace("\\", "\\\\").replace("'", "\\'").replace(":", "\\:")
    graph = "".join("\\" + c if c in "\\'[],;" else c for c in value)
    return f"ass=filename={graph}"


def installed_families() -> set[str]:
    """Font families fontconfig (and so libass) can use here; empty without fc-list."""
    fc_list = shutil.which("fc-list")
    if fc_list is None:
        return set()
    out = subprocess.run([fc_list, ":", "family"], capture_output=True, text=True, timeout=30, check=False)
    return {name.strip() for line in out.stdout.splitlines() for name in line.split(",") if name.strip()}


def missing_fonts(styles: Mapping[str, CaptionStyle]) -> dict[str, str]:
    """Style name → its font family, for each style whose font is not installed."""
    have = {f.lower() for f in installed_families()}
    return {name: st.font for name, st in styles.items() if st.font.lower() not in have}
