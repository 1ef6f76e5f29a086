"""Render one clip: extractor thread → named FIFO → ffmpeg encoder → ``stem.mp4`` + sidecars.

No intermediate files: frames go from PyAV through a FIFO in a private temp dir straight into
the encoder, which takes the audio from the source itself. The part file, the sidecars and the
final name appear in that order (render/publish.py), so nothing partial ever sits under a final
name. Both FIFO ends live in one task group: if the encoder dies the writer is cancelled (and sees
EPIPE), if the extractor fails the encoder is stopped.
"""

from __future__ import annotations

import errno
import math
import os
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from functools import partial
from pathlib import Path
from typing import Any

import anyio
import anyio.from_thread
import anyio.to_thread
import structlog

from montaged import metrics
from montaged.config import AudiogramConfig, CaptionStyle, ProfileConfig
from montaged.errors import DiskFullError, MontageError, RenderError, first_leaf
from montaged.media.encoders import EncoderChoice, encoder_args
from montaged.media.ffmpeg import FFmpegRun, Progress, encode_argv, ffmpeg_process
from montaged.model import ClipPlan, CropBox, CropPlan, MediaInfo, RenderedClip, Word
from montaged.render import audiogram, fidelity, loudness
from montaged.render.captions import burn_filter, clip_relative
from montaged.render.croppath import centre_box
from montaged.render.extract import ExtractSpec, extract_to_fd, video_phase
from montaged.render.publish import publishing
from montaged.render.sidecar import clip_words, sidecar_dict, srt_text, vtt_text

log = structlog.get_logger(__name__)

FIFO_OPEN_POLL = 0.02
"""Seconds between tries to open the FIFO's write end while ffmpeg has not opened the read end."""
PIPE_BYTES = 1 << 20
"""Ask for a 1 MiB pipe buffer (Linux default 64 KiB; 1 MiB is the unprivileged maximum)."""


def output_rate(profile_fps: float | None, source_fps: float) -> Fraction:
    """Output frame rate as a fraction; NTSC-style rates (29.97...) snap to n*1000/1001."""
    fps = profile_fps or source_fps or 30.0
    ntsc = fps * 1.001
    if abs(ntsc - round(ntsc)) < 0.002 and abs(fps - round(fps)) > 0.002:
        return Fraction(round(ntsc) * 1000, 1001)
    return Fraction(fps).limit_denominator(1000)


def even(v: int) -> int:
    return max(2, v - v % 2)


async def _open_fifo_writer(fifo: Path, run: FFmpegRun) -> int | None:
    """Open the write end without blocking the loop; ``None`` if ffmpeg exits before reading.

    A plain ``open()`` would block a thread forever if the reader never comes; O_NONBLOCK fails
    with ENXIO until a reader exists, so we poll, checking the encoder is still alive.
    """
    while True:
        try:
            fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
            break
        except OSError as e:
            if e.errno != errno.ENXIO:
                raise
        if run.proc.returncode is not None:
            return None
        await anyio.sleep(FIFO_OPEN_POLL)
    os.set_blocking(fd, True)
    try:
        import fcntl

        fcntl.fcntl(fd, getattr(fcntl, "F_SETPIPE_SZ", 1031), PIPE_BYTES)
    except OSError as e:  # /proc/sys/fs/pipe-max-size lowered: the default buffer still works
        log.debug("pipe buffer not enlarged", error=str(e))
    return fd


FrameFeed = Callable[[int, Callable[[], None]], int]
"""Writes raw frames into a file descriptor (the FIFO), calling its second argument between
frames (so a cancelled job stops the thread); returns the frames written. Runs in a thread."""


async def encode_fifo(
    fifo: Path, feed: FrameFeed, argv: list[str], on_progress: Callable[[Progress], None]
) -> int:
    """Run the encoder and ``feed`` together; return frames written. Raises the first real failure."""
    written = 0
    async with ffmpeg_process(argv, on_progress=on_progress) as run:
        try:
            async with anyio.create_task_group() as tg:

                async def writer() -> None:
                    nonlocal written
                    fd = await _open_fifo_writer(fifo, run)
                    if fd is None:
                        return  # ffmpeg died first; run.check() reports why
                    try:
                        written = await anyio.to_thread.run_sync(feed, fd, anyio.from_thread.check_cancelled)
                    finally:
                        os.close(fd)  # EOF for the encoder

                tg.start_soon(writer)
                await run.check()
        except BaseExceptionGroup as eg:
            raise first_leaf(eg, DiskFullError, MontageError, Exception) or eg from None
    return written


def _extract(spec: ExtractSpec, fd: int, check_cancelled: Callable[[], None]) -> int:
    return extract_to_fd(spec, fd, check_cancelled=check_cancelled)


def with_preset(encoder: EncoderChoice, preset: str | None) -> EncoderChoice:
    """The encoder with the profile's own libx264 preset, if it names one (NVENC keeps its own)."""
    if preset is None or encoder.name != "libx264":
        return encoder
    return EncoderChoice(encoder.name, encoder.hardware, encoder_args("libx264", preset))


@dataclass(frozen=True)
class ClipCut:
    """Where one clip is cut and how it is framed, frame-exact, ready for the extractor."""

    spec: ExtractSpec
    crop: CropPlan  # the frame stage's plan, or the centre crop / audiogram standing in for it
    # the framer's confidence, or None where no framing ran (a centre crop, an audiogram): a
    # stand-in plan must not read as a confident one in the sidecar, quality and metrics
    framing_confidence: float | None
    end: float  # media seconds where the range ends (the spec's frames fill it to half a frame)


async def cut_clip(
    *, source: Path, info: MediaInfo, plan: ClipPlan, crop: CropPlan | None, width: int, height: int,
    rate: Fraction,
) -> ClipCut:
    """The frames of ``plan`` at ``rate``, clamped to the media, and the crop they are cut along.

    Raises:
        RenderError: the range holds no frame (the selection is wrong).
    """
    start = max(0.0, plan.start)
    end = min(plan.end, info.duration) if info.duration > 0 else plan.end
    if info.fps > 0 and abs(float(rate) - info.fps) < 1e-3 * info.fps:
        # Same rate as the source: start on a source frame (moves ≤ half a frame), so each source
        # frame becomes one output frame and picture and sound are cut at the same instant.
        phase = await anyio.to_thread.run_sync(video_phase, source)
        start = max(0.0, phase + math.floor((start - phase) * rate + 0.5) / rate)
        end = phase + math.floor((end - phase) * rate + 0.5) / rate
    frames = round((end - start) * rate)
    if frames < 1:
        raise RenderError(
            f"{source}: clip {plan.index} range {plan.start:.2f}-{plan.end:.2f} s holds no frame "
            f"(media is {info.duration:.2f} s long); the selection is wrong"
        )
    dw, dh = info.display_size
    framing_confidence = crop.confidence if crop is not None and info.has_video else None
    if not info.has_video:
        crop = CropPlan(plan.index, "audiogram", (), notes=("audio-only input: audiogram",))
    elif crop is None:
        box = centre_box(dw, dh, width / height)
        crop = CropPlan(plan.index, "crop", (CropBox(0.0, *box),), notes=("no crop plan: centre crop",))
    spec = ExtractSpec(
        source=source, start=start, frames=frames, rate=rate, width=width, height=height,
        layout=crop.layout, path=crop.path, second_path=crop.second_path, rotation=info.rotation,
    )
    return ClipCut(spec, crop, framing_confidence, end)


async def render_clip(
    *,
    source: Path,
    info: MediaInfo,
    plan: ClipPlan,
    crop: CropPlan | None,
    profile: ProfileConfig,
    encoder: EncoderChoice,
    out_dir: Path,
    stem: str,
    attempt: int = 0,
    before_publish: Callable[[], Awaitable[None]] | None = None,
    words: Sequence[Word],
    ffmpeg: str = "ffmpeg",
    extra_sidecar: dict[str, Any] | None = None,
    on_progress: Callable[[float], None] | None = None,
    captions: CaptionStyle | None = None,
    audiogram_cfg: AudiogramConfig | None = None,
) -> RenderedClip:
    """Render ``plan`` of ``source`` to ``out_dir/stem.mp4`` with ``stem.json``, ``.srt`` and ``.vtt``.

    Args:
        source: the media file (already probed into ``info``).
        info: its probe result (size, rotation, frame rate, duration).
        plan: the time range and why it was chosen; clamped to the media's duration.
        crop: the crop path/layout from the frame stage; ``None`` = centre crop.
        profile: output size, aspect, frame rate (``None`` keeps the source's), quality, loudness.
        encoder: from :func:`~montaged.media.encoders.select_encoder` at start-up.
        out_dir: created if missing; only final names and ``.stem.aN.part.mp4`` are written there.
        stem: file name without extension.
        attempt: the job's attempt (claim token): names the part file, one per attempt.
        before_publish: awaited right before anything is written under a final name; raises
            to stop (the job's claim was lost: the current holder's files stay untouched).
        words: the job's transcript words (media times); those inside the range become captions.
        ffmpeg: ffmpeg executable.
        extra_sidecar: merged into the sidecar JSON top level (job id, profile name...).
        on_progress: called with the fraction done (0..1) as the encoder reports progress.
        captions: the style of the captions burned into the picture; ``None``: none burned.
        audiogram_cfg: cover, colours and background of an audio-only source's clip.

    Raises:
        RenderError: ffmpeg failed (the message carries its last stderr lines).
        DiskFullError: the output filesystem is full (or the file size limit was hit).
        MediaError: the source stopped decoding.
    """
    t0 = time.perf_counter()
    width, height = even(profile.width), even(profile.height)
    rate = output_rate(profile.fps, info.fps)
    cut = await cut_clip(source=source, info=info, plan=plan, crop=crop, width=width, height=height,
                         rate=rate)
    spec, crop, framing_confidence = cut.spec, cut.crop, cut.framing_confidence
    start, end, frames = spec.start, cut.end, spec.frames
    dw, dh = info.display_size
    bound = log.bind(clip=plan.index, stem=stem, encoder=encoder.name)
    seconds = float(frames / rate)

    def progress(p: Progress) -> None:
        if on_progress is not None:
            on_progress(min(1.0, max(0.0, p.out_seconds / seconds)) if not p.done else 1.0)

    in_range = clip_words(words, start, end)
    measure = partial(loudness.measure_range, ffmpeg, seconds=seconds, profile=profile)
    audio_in = await measure(source, start) if info.has_audio else None
    argv_video = with_preset(encoder, profile.preset).video_args(profile.crf)
    argv_audio = loudness.profile_filter(audio_in, profile)
    async with publishing(out_dir, stem, attempt, "clip") as pub:
        part = pub.part
        ass = pub.tmp / "captions.ass" if captions is not None and in_range else None
        if not info.has_video:
            written = await audiogram.encode(
                ffmpeg=ffmpeg, source=source, tmp=pub.tmp, start=start, frames=frames, rate=rate, width=width,
                height=height, words=clip_relative(in_range, start, start + seconds), style=captions,
                cfg=audiogram_cfg or AudiogramConfig(), video_args=argv_video, audio_filter=argv_audio,
                audio_bitrate=profile.audio_bitrate, out=part, on_progress=progress)
        else:
            burn = None
            if ass is not None and captions is not None:
                rel = clip_relative(in_range, start, start + seconds)
                burn = await anyio.to_thread.run_sync(
                    burn_filter, ass, rel, captions, width, height, rate, frames
                )
            argv = encode_argv(
                ffmpeg=ffmpeg,
                fifo=pub.fifo,
                width=width,
                height=height,
                rate=rate,
                frames=frames,
                video_args=argv_video,
                out=part,
                source=source if info.has_audio else None,
                start=start,
                audio_bitrate=profile.audio_bitrate,
                video_filter=burn,
                audio_filter=argv_audio,
            )
            written = await encode_fifo(pub.fifo, partial(_extract, spec), argv, progress)
        if written != frames:
            raise RenderError(f"{source}: extractor wrote {written} of {frames} frames for clip {plan.index}")
        t_encoded = time.perf_counter()
        faithful = None  # SSIM against the cropped source at a few frames, outside the render timing
        if info.has_video:
            faithful = await anyio.to_thread.run_sync(fidelity.measure, spec, (dw, dh), part)
        audio_out = await measure(part, 0.0) if audio_in is not None else None
        doc = sidecar_dict(
            info=info,
            plan=plan,
            start=start,
            end=start + seconds,
            crop=crop,
            words=in_range,
            encoder=encoder.name,
            hardware=encoder.hardware,
            width=width,
            height=height,
            fps=float(rate),
            frames=frames,
            timings={"render_seconds": round(t_encoded - t0, 3), "fps": round(frames / (t_encoded - t0), 2)},
            extra=extra_sidecar,
            loudness=loudness.sidecar_entry(profile, audio_in, audio_out),
        )
        doc["fidelity"] = faithful
        doc["crop"]["confidence"] = framing_confidence
        framed = framing_confidence is not None
        doc["crop"]["face_confidence"] = crop.face_confidence if framed else None
        doc["crop"]["speaker_in_crop"] = crop.speaker_in_crop if framed else None
        await pub.publish(doc, srt_text(in_range, start), vtt_text(in_range, start), before_publish)
    final, json_path, srt_path = pub.final, pub.json_path, pub.srt_path
    elapsed = time.perf_counter() - t0
    metrics.CLIPS.labels(encoder=encoder.name).inc()
    bound.info(
        "clip rendered",
        path=str(final),
        frames=frames,
        seconds=round(elapsed, 3),
        fps=round(frames / elapsed, 1),
    )
    return RenderedClip(
        index=plan.index,
        path=str(final),
        sidecar_path=str(json_path),
        srt_path=str(srt_path),
        start=start,
        end=start + seconds,
        encoder=encoder.name,
        width=width,
        height=height,
        frames=frames,
        seconds=elapsed,
    )
