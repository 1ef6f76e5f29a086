"""Audiogram clips for audio-only input (podcasts): cover, moving waveform, speaker label, captions.

One ffmpeg run draws and encodes the whole picture from the sound itself (``showwaves``), so there
is no extractor and no FIFO: a plain background, the cover image (the file's embedded art, else the
configured image, else none) scaled into a square, the waveform in the colour of the clip's main
speaker, and the burned captions plus a speaker label per turn from the same ASS script. The sound
goes through the same loudness filter as a video clip's.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from functools import partial
from pathlib import Path

import anyio
import pysubs2

from montaged.config import AudiogramConfig, CaptionStyle
from montaged.media.ffmpeg import Progress, base_argv, ffmpeg_process, rate_str, with_progress
from montaged.model import Word
from montaged.render.captions import ass_document, ass_filter, caption_cues

COVER_SIDE = (0.55, 0.38)
"""The cover square's side: at most this share of the width and of the height."""
TOP = 0.10
"""Cover top edge, as a share of the height."""
WAVE_HEIGHT = 0.10
"""Waveform band height, as a share of the height; it sits just under the cover."""


@dataclass(frozen=True)
class Layout:
    cover_side: int
    cover_x: int
    cover_y: int
    wave_y: int
    wave_h: int
    label_y: int


def layout(width: int, height: int) -> Layout:
    side = int(min(width * COVER_SIDE[0], height * COVER_SIDE[1])) // 2 * 2
    cover_y = int(height * TOP) // 2 * 2
    wave_y = (cover_y + side + int(height * 0.03)) // 2 * 2
    wave_h = max(16, int(height * WAVE_HEIGHT) // 2 * 2)
    label_y = wave_y + wave_h + int(height * 0.01)
    return Layout(side, (width - side) // 4 * 2, cover_y, wave_y, wave_h, label_y)


def speaker_colours(words: Sequence[Word], palette: Sequence[str]) -> dict[str | None, str]:
    """A palette colour per speaker, in order of first appearance (no speaker: the first)."""
    out: dict[str | None, str] = {}
    for w in words:
        if w.speaker not in out:
            out[w.speaker] = palette[len(out) % len(palette)]
    return out or {None: palette[0]}


def main_speaker(words: Sequence[Word]) -> str | None:
    """Who speaks longest in the clip."""
    talk: dict[str | None, float] = {}
    for w in words:
        talk[w.speaker] = talk.get(w.speaker, 0.0) + (w.end - w.start)
    return max(talk, key=lambda k: talk[k]) if talk else None


def _label_events(
    words: Sequence[Word], colours: dict[str | None, str], end: float
) -> list[pysubs2.SSAEvent]:
    """One top-centred label per speaker turn, in that speaker's colour."""
    events: list[pysubs2.SSAEvent] = []
    turns: list[tuple[str, float]] = []
    for w in words:
        if w.speaker and (not turns or turns[-1][0] != w.speaker):
            turns.append((w.speaker, w.start))
    for i, (speaker, start) in enumerate(turns):
        stop = turns[i + 1][1] if i + 1 < len(turns) else end
        h = colours[speaker].lstrip("#")
        text = f"{{\\c&H{h[4:6]}{h[2:4]}{h[0:2]}&}}{speaker.replace('{', '(').replace('}', ')')}"
        events.append(pysubs2.SSAEvent(start=round(start * 1000), end=round(stop * 1000), style="Label",
                                       text=text))
    return events


def ass_script(
    words: Sequence[Word], style: CaptionStyle | None, cfg: AudiogramConfig, width: int, height: int,
    end: float,
) -> str:
    """Captions (when a style is given) plus the speaker labels, for clip-relative ``words``."""
    base = style or CaptionStyle()
    subs = pysubs2.SSAFile.from_string(ass_document(caption_cues(words, base, width, height) if style else [],
                                                    base, width, height))
    label = subs.styles["Caption"].copy()
    label.alignment = pysubs2.Alignment(8)
    label.marginv = layout(width, height).label_y
    label.fontsize = round(height * cfg.label_size)
    subs.styles["Label"] = label
    subs.events += _label_events(words, speaker_colours(words, cfg.speaker_colours), end)
    return subs.to_string("ass")


async def cover_image(ffmpeg: str, source: Path, cfg: AudiogramConfig, into: Path) -> Path | None:
    """The file's embedded art written to ``into`` (PNG), else the configured image, else None."""
    done = await anyio.run_process(
        [*base_argv(ffmpeg), "-i", str(source), "-map", "0:v:0", "-frames:v", "1", "-f", "image2", str(into)],
        check=False, start_new_session=True,
    )  # fmt: skip
    if done.returncode == 0 and into.exists() and into.stat().st_size > 0:
        return into
    return cfg.cover if cfg.cover is not None and cfg.cover.is_file() else None


def audiogram_argv(
    *,
    ffmpeg: str,
    source: Path,
    start: float,
    frames: int,
    rate: Fraction,
    width: int,
    height: int,
    cover: Path | None,
    ass: Path,
    wave_colour: str,
    background: str,
    video_args: Sequence[str],
    audio_filter: str | None,
    audio_bitrate: str,
    out: Path,
) -> list[str]:
    """One ffmpeg run: background, cover, waveform of the sound, captions and labels; encoded."""
    seconds = float(frames / rate)
    box = layout(width, height)
    argv = [*base_argv(ffmpeg), "-ss", f"{start:.6f}", "-t", f"{seconds:.6f}", "-i", str(source)]
    if cover is not None:
        argv += ["-loop", "1", "-framerate", rate_str(rate), "-i", str(cover)]
    graph = [
        f"color=c=0x{background.lstrip('#')[:6]}:s={width}x{height}:r={rate_str(rate)}:d={seconds:.6f}[bg]",
        # The loudness filter first: the waveform shows the sound as heard, and both branches of
        # asplit share one format (a mono-only branch would turn the clip's sound mono too).
        f"[0:a:0]{audio_filter or 'anull'},asplit=2[aw][a]",
        f"[aw]showwaves=s={width}x{box.wave_h}:mode=cline:scale=sqrt"
        f":rate={rate_str(rate)}:colors=0x{wave_colour.lstrip('#')[:6]}[wave]",
    ]
    under = "[bg]"
    if cover is not None:
        s = box.cover_side
        graph.append(f"[1:v]scale={s}:{s}:force_original_aspect_ratio=increase,crop={s}:{s},setsar=1[cover]")
        graph.append(f"[bg][cover]overlay=x={box.cover_x}:y={box.cover_y}:shortest=1[withcover]")
        under = "[withcover]"
    graph.append(f"{under}[wave]overlay=x=0:y={box.wave_y}:shortest=1,{ass_filter(ass)},format=yuv420p[v]")
    argv += [
        "-filter_complex", ";".join(graph), "-map", "[v]", "-map", "[a]", "-frames:v", str(frames),
        "-c:a", "aac", "-b:a", audio_bitrate, "-ac", "2", "-ar", "48000",
        *video_args, "-pix_fmt", "yuv420p", "-movflags", "+faststart", "-f", "mp4", str(out),
    ]  # fmt: skip
    return with_progress(argv)


async def encode(
    *,
    ffmpeg: str,
    source: Path,
    tmp: Path,
    start: float,
    frames: int,
    rate: Fraction,
    width: int,
    height: int,
    words: Sequence[Word],
    style: CaptionStyle | None,
    cfg: AudiogramConfig,
    video_args: Sequence[str],
    audio_filter: str | None,
    audio_bitrate: str,
    out: Path,
    on_progress: Callable[[Progress], None],
) -> int:
    """Render the audiogram of ``frames`` frames from ``start`` into ``out``; return the frames.

    ``words`` are clip-relative; ``tmp`` is the render's private folder (cover, ASS script).
    """
    cover = await cover_image(ffmpeg, source, cfg, tmp / "cover.png")
    ass = tmp / "audiogram.ass"
    script = ass_script(words, style, cfg, width, height, float(frames / rate))
    await anyio.to_thread.run_sync(partial(ass.write_text, script, encoding="utf-8"))
    colours = speaker_colours(words, cfg.speaker_colours)
    argv = audiogram_argv(
        ffmpeg=ffmpeg, source=source, start=start, frames=frames, rate=rate, width=width, height=height,
        cover=cover, ass=ass, wave_colour=colours.get(main_speaker(words), cfg.speaker_colours[0]),
        background=cfg.background, video_args=video_args,
        audio_filter=audio_filter, audio_bitrate=audio_bitrate, out=out,
    )
    async with ffmpeg_process(argv, on_progress=on_progress) as run:
        await run.check()
    return frames
