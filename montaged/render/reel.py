"""A reel: a job's clips joined into one file, with a cross-fade or a dip to black between each two.

The reel is cut like a clip: each clip's range is decoded once, framed along its own crop path,
and its frames go straight into the one encoder through the FIFO; across a transition two clips
are decoded at once and their frames blended (``cv2.addWeighted`` on the raw YUV planes). The
sound comes from the source too, one ranged input per clip, normalised per clip like a clip's and
joined by ``acrossfade`` inside the same encode. No clip is encoded twice and nothing is written
but the reel and its sidecars.

Timeline: clip ``i`` has ``F_i`` frames and each transition overlaps two clips by ``K`` frames,
so the reel is ``sum(F_i) - (n - 1) * K`` frames long and clip ``i`` starts at reel frame
``sum(F_j for j < i) - i * K``. A cross-fade mixes the two linearly over the overlap (the sound
with equal power); a dip fades the first to black and silence by the middle of the overlap and
the second up from there.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import structlog

from montaged.config import ProfileConfig, ReelConfig
from montaged.errors import RenderError
from montaged.media.ffmpeg import base_argv, rate_str, with_progress
from montaged.model import ClipPlan, Word
from montaged.render.extract import ExtractSpec, output_frames, write_all
from montaged.render.sidecar import clip_words

log = structlog.get_logger(__name__)

BLACK_Y, BLACK_UV = 16, 128
"""Black in limited-range YUV (what the encoder is told the frames are)."""
AUDIO_FORMAT = "aformat=sample_fmts=fltp:sample_rates=48000:channel_layouts=stereo"
"""Every clip's sound in one format: acrossfade joins only equal formats."""


def reel_for(option: Any, profile: ProfileConfig) -> ReelConfig | None:
    """The reel a job asks of ``profile``: its ``reel`` option (true, false or settings) over the
    profile's own ``reel`` table; None: separate clips."""
    if option is False or (option is None and profile.reel is None):
        return None
    base = profile.reel or ReelConfig()
    if isinstance(option, dict):
        return ReelConfig.model_validate({**base.model_dump(), **option})
    return base


def ordered(plans: Sequence[ClipPlan], order: str) -> list[ClipPlan]:
    """The clips in reel order: as they happen in the source, or the best first."""
    if order == "score":
        return sorted(plans, key=lambda p: (-p.score, p.start))
    return sorted(plans, key=lambda p: p.start)


@dataclass(frozen=True)
class ReelTimeline:
    """Where each clip sits in the reel, in output frames."""

    frames: tuple[int, ...]  # each clip's own length
    overlap: int  # frames each transition overlaps two clips by
    rate: Fraction

    @classmethod
    def of(cls, frames: Sequence[int], seconds: float, rate: Fraction) -> ReelTimeline:
        """Transitions of ``seconds`` (at least one frame), shortened where a clip is too short
        to hold one at each end."""
        overlap = max(1, round(seconds * rate)) if len(frames) > 1 else 0
        if len(frames) > 1:
            overlap = min(overlap, min(frames) // 2)
        return cls(tuple(frames), overlap, rate)

    @property
    def total(self) -> int:
        return sum(self.frames) - (len(self.frames) - 1) * self.overlap

    def places(self) -> list[tuple[int, int]]:
        """(first frame, end frame) of each clip in the reel; neighbours share ``overlap`` frames."""
        out, at = [], 0
        for n in self.frames:
            out.append((at, at + n))
            at += n - self.overlap
        return out

    def seconds(self, frame: int) -> float:
        return float(frame / self.rate)


def gains(transition: str, progress: float) -> tuple[float, float]:
    """Weights of the outgoing and the incoming clip ``progress`` (0..1) through a transition."""
    if transition == "dip":
        return max(0.0, 1.0 - 2.0 * progress), max(0.0, 2.0 * progress - 1.0)
    return 1.0 - progress, progress


def blend(a: np.ndarray, b: np.ndarray, transition: str, progress: float, luma: int, out: np.ndarray) -> None:
    """Frame ``progress`` through a transition from raw yuv420p ``a`` to ``b``, into ``out``; the
    weight neither clip has goes to black (the dip)."""
    ga, gb = gains(transition, progress)
    rest = 1.0 - ga - gb
    cv2.addWeighted(a[:luma], ga, b[:luma], gb, BLACK_Y * rest, dst=out[:luma])
    cv2.addWeighted(a[luma:], ga, b[luma:], gb, BLACK_UV * rest, dst=out[luma:])


def _next(frames: Generator[np.ndarray, None, None], spec: ExtractSpec) -> np.ndarray:
    try:
        return next(frames)
    except StopIteration:
        raise RenderError(f"{spec.source}: the clip from {spec.start:.2f} s ended early") from None


def reel_to_fd(
    specs: Sequence[ExtractSpec], timeline: ReelTimeline, transition: str, fd: int,
    check_cancelled: Callable[[], None] | None = None,
) -> int:
    """Write the reel's frames to ``fd``: each clip's own frames, and across each transition the
    blend of the outgoing clip's last and the incoming clip's first ``overlap`` frames. Returns
    the frames written; a reader that went away ends it quietly (the encoder's error is reported)."""
    k = timeline.overlap
    width, height = specs[0].width, specs[0].height
    luma = width * height
    mixed = np.empty(luma * 3 // 2, dtype=np.uint8)
    written = 0
    outgoing: Generator[np.ndarray, None, None] | None = None
    try:
        for i, spec in enumerate(specs):
            incoming = output_frames(spec, check_cancelled=check_cancelled)
            try:
                if outgoing is not None:
                    for j in range(k):
                        a = _next(outgoing, specs[i - 1])
                        b = _next(incoming, spec)
                        blend(a, b, transition, (j + 0.5) / k, luma, mixed)
                        write_all(fd, mixed)
                        written += 1
                    outgoing.close()
                    outgoing = None
                alone = spec.frames - (k if i > 0 else 0) - (k if i < len(specs) - 1 else 0)
                for _ in range(alone):
                    write_all(fd, _next(incoming, spec))
                    written += 1
            except BaseException:
                incoming.close()
                raise
            outgoing = incoming
    except BrokenPipeError:
        log.info("encoder stopped reading the reel", frames=written)
    finally:
        if outgoing is not None:
            outgoing.close()
    return written


def audio_graph(seconds: Sequence[float], timeline: ReelTimeline, transition: str,
                filters: Sequence[str | None]) -> str:
    """``-filter_complex`` joining input ``i + 1``'s sound (clip ``i``, ``seconds[i]`` long, with its
    own loudness filter) into ``[reel_audio]`` with a transition of the overlap's length at each join."""
    fade = timeline.seconds(timeline.overlap)
    last = len(seconds) - 1
    chains = []
    for i, (length, own) in enumerate(zip(seconds, filters, strict=True)):
        steps = [own] if own else []
        steps.append(AUDIO_FORMAT)
        if transition == "dip" and last:
            if i > 0:
                steps.append(f"afade=t=in:st={fade / 2:.6f}:d={fade / 2:.6f}")
            if i < last:
                steps.append(f"afade=t=out:st={length - fade:.6f}:d={fade / 2:.6f}")
        chains.append(f"[{i + 1}:a:0]{','.join(steps)}[c{i}]")
    if not last:
        return f"{chains[0].removesuffix('[c0]')}[reel_audio]"
    # a dip's fades already silence each side of the join: the overlap is their plain sum
    curves = "c1=nofade:c2=nofade" if transition == "dip" else "c1=qsin:c2=qsin"
    joined = "c0"
    for i in range(1, last + 1):
        out = "reel_audio" if i == last else f"j{i}"
        chains.append(f"[{joined}][c{i}]acrossfade=d={fade:.6f}:{curves}[{out}]")
        joined = out
    return ";".join(chains)


def reel_argv(
    *, ffmpeg: str, fifo: Path, specs: Sequence[ExtractSpec], timeline: ReelTimeline, transition: str,
    video_args: Sequence[str], out: Path, source: Path | None, audio_filters: Sequence[str | None],
    audio_bitrate: str, video_filter: str | None,
) -> list[str]:
    """One encode of the reel: raw frames from ``fifo``, and (``source`` set) each clip's sound
    from the source, cut by ffmpeg to exactly its frames' length and joined by :func:`audio_graph`."""
    first = specs[0]
    argv = [
        *base_argv(ffmpeg),
        "-f", "rawvideo", "-pix_fmt", "yuv420p", "-s", f"{first.width}x{first.height}",
        "-framerate", rate_str(timeline.rate), "-i", str(fifo),
    ]  # fmt: skip
    lengths = [float(s.frames / timeline.rate) for s in specs]
    if source is not None:
        for spec, length in zip(specs, lengths, strict=True):
            argv += ["-ss", f"{spec.start:.6f}", "-t", f"{length:.6f}", "-vn", "-sn", "-dn",
                     "-i", str(source)]
        argv += ["-filter_complex", audio_graph(lengths, timeline, transition, audio_filters)]
    argv += ["-map", "0:v:0"]
    if video_filter:
        argv += ["-vf", video_filter]
    if source is not None:
        argv += ["-map", "[reel_audio]", "-c:a", "aac", "-b:a", audio_bitrate, "-ac", "2", "-ar", "48000"]
    # no -frames:v: ffmpeg before 6 ends every stream of a file when one reaches its frame limit,
    # cutting the sound's tail; the FIFO carries exactly the reel's frames anyway
    argv += [*video_args, "-pix_fmt", "yuv420p", "-movflags", "+faststart", "-f", "mp4", str(out)]
    return with_progress(argv)


def reel_words(words: Sequence[Word], specs: Sequence[ExtractSpec], timeline: ReelTimeline) -> list[Word]:
    """The transcript's words on the reel's clock: each clip's words moved to where the clip sits,
    each transition's overlap split at its middle between the two clips."""
    out: list[Word] = []
    half = timeline.seconds(timeline.overlap) / 2
    places = timeline.places()
    last = len(specs) - 1
    for i, (spec, (first, end)) in enumerate(zip(specs, places, strict=True)):
        shift = timeline.seconds(first) - spec.start
        lo = timeline.seconds(first) + (half if i > 0 else 0.0)
        hi = timeline.seconds(end) - (half if i < last else 0.0)
        for w in clip_words(words, spec.start, spec.start + float(spec.frames / timeline.rate)):
            s, e = w.start + shift, w.end + shift
            if lo <= (s + e) / 2 < hi:
                s, e = max(lo, s), min(hi, e)
                out.append(Word(w.text, s, max(s, e), w.confidence, w.speaker, w.source))
    return out


def reel_entries(plans: Sequence[ClipPlan], specs: Sequence[ExtractSpec], timeline: ReelTimeline,
                 clip_docs: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The sidecar's ``reel.clips``: each clip's source range and its place in the reel, with the
    clip's own record (score, reason, text, speakers, crop) in a clip sidecar's shape, so a reader
    of clip sidecars (the editor exports) reads these too."""
    entries = []
    for plan, spec, (first, end), doc in zip(plans, specs, timeline.places(), clip_docs, strict=True):
        seconds = float(spec.frames / timeline.rate)
        entries.append({
            **doc,
            "clip": {"index": plan.index, "start": spec.start, "end": spec.start + seconds,
                     "duration": seconds},
            "place": {"start": timeline.seconds(first), "end": timeline.seconds(end),
                      "first_frame": first, "frames": spec.frames},
        })
    return entries
