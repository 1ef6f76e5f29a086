"""Burned-in word captions: timed words → an ASS script that libass draws during the one encode.

Words are grouped into cues at sentence and phrase boundaries (the same rules as the SRT/WebVTT
files, :func:`montaged.asr.formats.cues`), never across a change of speaker, and each cue is cut
into 1-2 lines within the style's word and character limits. Every cue becomes one ASS event per
word, each holding the *whole* cue text with only that word's colour changed: a colour override
changes no glyph metrics, so the lines never reflow as words light up.

Lines stay inside the platform-safe margins of the output's aspect (a vertical clip keeps clear
of the app's buttons on the right and its caption/description block at the bottom).

Cost: ffmpeg's ``ass`` filter blends every glyph layer (fill, outline, shadow) onto every frame,
about 2 ms a 1080x1920 frame, even while the caption stands still. :func:`burn_filter` has libass
draw onto a transparent strip the height of the caption block, only on the frames where the
caption changes, and ``overlay`` (SIMD) lays that strip on each frame: the same pixels for about
half the CPU.
"""

from __future__ import annotations

import math
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np
import pysubs2

from montaged.asr.formats import cues
from montaged.config import CaptionStyle
from montaged.media.ffmpeg import rate_str
from montaged.model import Word

NONE = "none"
"""The style name that turns burned captions off."""
CHAR_WIDTH = 0.62
"""Average glyph advance of a DejaVu-like sans face, as a share of the font size."""
CHAR_WIDTH_WIDE = 0.72
"""The same for bold or upper-case text, which runs wider."""
LINE_HEIGHT = 1.5
"""A line's height as a share of the font size, with room to spare (DejaVu's is 1.16)."""


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


@dataclass(frozen=True)
class Band:
    """The strip of the frame the captions are drawn into: rows ``y`` to ``y + height``, with the
    lines ``margin`` pixels from its bottom (or top) edge, where the frame's margin puts them."""

    y: int
    height: int
    margin: int


def caption_band(style: CaptionStyle, width: int, height: int) -> Band:
    """The strip that holds every line of ``style``: its lines, one more in case libass wraps a
    line wider than estimated, and the outline and shadow around them; even rows (4:2:0)."""
    size = font_px(style, height)
    area = safe_area(width, height)
    pad = math.ceil((style.outline + style.shadow) * size) + 4
    tall = min(height, 2 * pad + math.ceil((style.lines + 1) * LINE_HEIGHT * size))
    if style.position == "bottom":
        bottom = min(height, height - round(area.bottom * height) + pad)
        y = bottom - tall
    elif style.position == "top":
        y = round(area.top * height) - pad
    else:
        y = (height - tall) // 2
    y = max(0, min(height - tall, y)) // 2 * 2
    tall = min(height - y, tall + tall % 2)
    if style.position == "bottom":
        margin = y + tall - (height - round(area.bottom * height))
    else:
        margin = round(area.top * height) - y if style.position == "top" else 0
    return Band(y, tall, max(0, margin))


def ass_style(style: CaptionStyle, width: int, height: int, band: Band | None = None) -> pysubs2.SSAStyle:
    size = font_px(style, height)
    area = safe_area(width, height)
    alignment = {"bottom": 2, "middle": 5, "top": 8}[style.position]
    marginv = round((area.top if style.position == "top" else area.bottom) * height)
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
        marginv=band.margin if band is not None else marginv,
    )


def ass_document(
    captions: Sequence[CaptionCue], style: CaptionStyle, width: int, height: int, band: Band | None = None
) -> str:
    """The ASS script: one event per word, the cue's full text with that word in ``highlight``.

    With ``band`` the script draws onto that strip alone (its own height, the lines at the same
    place in the frame, the sizes of the whole frame's)."""
    subs = pysubs2.SSAFile()
    play_h = band.height if band is not None else height
    subs.info.update({"PlayResX": str(width), "PlayResY": str(play_h), "WrapStyle": "0",
                      "ScaledBorderAndShadow": "yes", "Title": "Montage captions"})
    subs.styles = {"Caption": ass_style(style, width, height, band)}
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


def change_frames(script: str, rate: Fraction, frames: int) -> list[int]:
    """The frames at which the caption on screen changes (and frame 0), as ffmpeg's ``ass`` filter
    sees them: an event shows on frame ``n`` when its start <= ``now`` < its end, ``now`` being
    the frame's time in whole milliseconds (the script's times as libass reads them: centiseconds)."""
    events = pysubs2.SSAFile.from_string(script).events
    times = np.array([t for e in events for t in (e.start, e.end)], dtype=np.int64)
    now = (np.arange(frames) * (rate.denominator / rate.numerator) * 1000).astype(np.int64)
    at = np.searchsorted(now, times, side="left")
    return sorted({0, *(int(n) for n in at if n < frames)})


def _any_of(frames: Sequence[int]) -> str:
    """``select`` expression true on ``frames``: a balanced sum, as ffmpeg's parser refuses deep nesting."""
    if len(frames) == 1:
        return f"eq(n\\,{frames[0]})"
    half = len(frames) // 2
    return f"({_any_of(frames[:half])}+{_any_of(frames[half:])})"


def burn_filter(
    path: Path, words: Sequence[Word], style: CaptionStyle, width: int, height: int, rate: Fraction,
    frames: int,
) -> str:
    """Write the captions of clip-relative ``words`` to ``path``; return the encoder's ``-vf`` graph
    that burns them into ``frames`` frames of ``width`` x ``height`` at ``rate``.

    libass draws onto a transparent strip (:func:`caption_band`) only on the frames where the
    caption changes; each frame is cut into the rows above, the strip's and the rows below, the
    strip laid over its rows, and the three stacked again. The frame's copies go through
    ffmpeg's frame pool, where laying the strip on the whole frame would make overlay allocate a
    fresh frame each time (page faults that cost more than the blending).
    """
    band = caption_band(style, width, height)
    script = ass_document(caption_cues(words, style, width, height), style, width, height, band)
    path.write_text(script, encoding="utf-8")
    seconds = frames / float(rate) + 1  # the strip's source must end, or select would wait on it forever
    # A strip after the last frame too: overlay holds a frame until it knows the next strip's time.
    # libass draws each strip twice, over black and over white: where the two differ, the caption
    # covers less. That difference gives the coverage (alpha), and with it the caption's own
    # colour, so ``overlay`` blends straight alpha with its SIMD rows. (The ``ass`` filter's own
    # alpha output would square the opacity of a translucent box or shadow.)
    select = _any_of([*change_frames(script, rate, frames), frames])
    canvas = (
        f"color=c=black:s={width}x{band.height}:r={rate_str(rate)}:d={seconds:.3f},format=yuv420p,"
        f"select='{select}',split[k0][k1];[k0]{ass_filter(path)},split[z0][z1];"
        f"[k1]lutyuv=y=235:u=240:v=240,{ass_filter(path)},split[w0][w1];"
        "[z0][w0]lut2=c0=255-(y-x)*255/219[a];"
        "[z1][w1]lut2=c0='16+(x-16)*219/max(219-(y-x)\\,1)':c1='128+(x-128)*112/max(112-(y-x)\\,1)'"
        ":c2='128+(x-128)*112/max(112-(y-x)\\,1)'[p];"
        "[p][a]mergeplanes=0x00010210:yuva420p"
    )
    rows = [(y, h) for y, h in ((0, band.y), (band.y, band.height), (band.y + band.height,
                                                                     height - band.y - band.height)) if h > 0]
    overlay = "overlay=0:0:eof_action=repeat:shortest=1:format=yuv420"
    if len(rows) == 1:
        return f"null[m];{canvas}[cap];[m][cap]{overlay}"
    names = [f"[r{i}]" for i in range(len(rows))]
    graph = [f"split={len(rows)}{''.join(names)}"]
    stack = []
    for name, (y, h) in zip(names, rows, strict=True):
        out = f"[c{name[2:-1]}]"
        graph.append(f"{name}crop={width}:{h}:0:{y}{out}")
        if y == band.y:
            graph.append(f"{canvas}[cap]")
            graph.append(f"{out}[cap]{overlay}[o]")
            out = "[o]"
        stack.append(out)
    graph.append(f"{''.join(stack)}vstack=inputs={len(rows)}")
    return ";".join(graph)


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
