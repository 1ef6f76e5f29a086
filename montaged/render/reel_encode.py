"""Render a reel: every clip cut and framed as for a clip, blended at the joins, encoded once.

Files as for a clip (render/publish.py): the part file, the sidecars (JSON, SRT, WebVTT on the
reel's clock), the final name last. The JSON sidecar's ``reel`` lists each clip's source range
and its place in the reel.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import anyio
import structlog

from montaged import metrics
from montaged.config import CaptionStyle, ProfileConfig, ReelConfig
from montaged.errors import RenderError
from montaged.media.encoders import EncoderChoice
from montaged.media.ffmpeg import Progress
from montaged.model import ClipPlan, CropPlan, MediaInfo, RenderedClip, Word
from montaged.render import loudness
from montaged.render.captions import ass_filter, write_ass
from montaged.render.encode import ClipCut, cut_clip, encode_fifo, even, output_rate, with_preset
from montaged.render.publish import publishing
from montaged.render.reel import ReelTimeline, reel_argv, reel_entries, reel_to_fd, reel_words
from montaged.render.sidecar import (
    SIDECAR_VERSION,
    clip_words,
    montage_version,
    sidecar_dict,
    srt_text,
    vtt_text,
)

log = structlog.get_logger(__name__)

REEL_INDEX = -1
"""The reel's ``index`` among a job's rendered files: it is no one clip."""
CLIP_KEYS = ("planned_range", "score", "reason", "features", "text", "speakers", "crop", "crop_path")
"""What each clip's entry in the reel's sidecar keeps of a clip sidecar."""


async def render_reel(
    *,
    source: Path,
    info: MediaInfo,
    plans: Sequence[ClipPlan],
    crops: Sequence[CropPlan | None],
    profile: ProfileConfig,
    reel: ReelConfig,
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
) -> RenderedClip:
    """Join ``plans`` (already in reel order, ``crops`` alike) into ``out_dir/stem.mp4``.

    Args:
        source: the media file (already probed into ``info``); it must have a picture.
        plans: the clips, in the order they play in the reel.
        crops: the frame stage's crop plan of each clip (``None``: centre crop).
        profile: output size, frame rate, quality and loudness (each clip normalised on its own).
        reel: the transition and its length (``order`` was applied by the caller).
        Others as :func:`montaged.render.encode.render_clip`.

    Raises:
        RenderError: no clips, no picture, or ffmpeg failed (with its last stderr lines).
        DiskFullError: the output filesystem is full.
        MediaError: the source stopped decoding.
    """
    if not plans:
        raise RenderError(f"{source}: a reel needs at least one clip; the selection found none")
    if not info.has_video:
        raise RenderError(f"{source}: has no picture to join into a reel; render its clips one by one")
    t0 = time.perf_counter()
    width, height = even(profile.width), even(profile.height)
    rate = output_rate(profile.fps, info.fps)
    cuts = [await cut_clip(source=source, info=info, plan=p, crop=c, width=width, height=height, rate=rate)
            for p, c in zip(plans, crops, strict=True)]
    specs = [c.spec for c in cuts]
    timeline = ReelTimeline.of([s.frames for s in specs], reel.seconds, rate)
    seconds = timeline.seconds(timeline.total)
    notes = []
    if len(plans) > 1 and timeline.seconds(timeline.overlap) < reel.seconds - 0.5 / float(rate):
        notes.append(f"transitions shortened to {timeline.seconds(timeline.overlap):.2f} s: the shortest"
                     f" clip is {timeline.seconds(min(timeline.frames)):.2f} s long")

    def progress(p: Progress) -> None:
        if on_progress is not None:
            on_progress(min(1.0, max(0.0, p.out_seconds / seconds)) if not p.done else 1.0)

    audio_in: list[loudness.Loudness | None] = []
    if info.has_audio:
        for spec in specs:  # each clip is normalised on its own, as it would be alone
            audio_in.append(await loudness.measure_range(ffmpeg, source, spec.start,
                                                         float(spec.frames / rate), profile))
    on_reel = reel_words(words, specs, timeline)
    async with publishing(out_dir, stem, attempt, "reel") as pub:
        ass = pub.tmp / "captions.ass" if captions is not None and on_reel else None
        if ass is not None and captions is not None:
            await anyio.to_thread.run_sync(write_ass, ass, on_reel, captions, width, height)
        argv = reel_argv(
            ffmpeg=ffmpeg, fifo=pub.fifo, specs=specs, timeline=timeline, transition=reel.transition,
            video_args=with_preset(encoder, profile.preset).video_args(profile.crf), out=pub.part,
            source=source if info.has_audio else None,
            audio_filters=[loudness.profile_filter(m, profile) for m in audio_in],
            audio_bitrate=profile.audio_bitrate, video_filter=ass_filter(ass) if ass is not None else None,
        )
        feed = partial(reel_to_fd, specs, timeline, reel.transition)
        written = await encode_fifo(pub.fifo, feed, argv, progress)
        if written != timeline.total:
            raise RenderError(f"{source}: the reel got {written} of {timeline.total} frames")
        t_encoded = time.perf_counter()
        audio_out = None
        if any(m is not None for m in audio_in) and profile.loudness is not None:
            audio_out = await loudness.measure(ffmpeg, pub.part, 0.0, seconds, target=profile.loudness,
                                               true_peak=profile.true_peak)
        doc = _reel_doc(info=info, plans=plans, cuts=cuts, words=words, timeline=timeline, reel=reel,
                        encoder=encoder, width=width, height=height, on_reel=on_reel)
        doc["timings"] = {"render_seconds": round(t_encoded - t0, 3),
                          "fps": round(timeline.total / (t_encoded - t0), 2)}
        doc["loudness"] = _loudness_entry(profile, audio_in, audio_out)
        doc.update(extra_sidecar or {})
        # the job's notes and the reel's own
        doc["notes"] = list(dict.fromkeys([*(extra_sidecar or {}).get("notes", []), *notes]))
        await pub.publish(doc, srt_text(on_reel, 0.0), vtt_text(on_reel, 0.0), before_publish)
    elapsed = time.perf_counter() - t0
    metrics.CLIPS.labels(encoder=encoder.name).inc()
    log.info("reel rendered", path=str(pub.final), clips=len(plans), frames=timeline.total,
             transition=reel.transition, seconds=round(elapsed, 3))
    return RenderedClip(index=REEL_INDEX, path=str(pub.final), sidecar_path=str(pub.json_path),
                        srt_path=str(pub.srt_path), start=0.0, end=seconds, encoder=encoder.name, width=width,
                        height=height, frames=timeline.total, seconds=elapsed)


def _reel_doc(*, info: MediaInfo, plans: Sequence[ClipPlan], cuts: Sequence[ClipCut], words: Sequence[Word],
              timeline: ReelTimeline, reel: ReelConfig, encoder: EncoderChoice, width: int, height: int,
              on_reel: Sequence[Word]) -> dict[str, Any]:
    """The reel's sidecar: the source, each clip's range and place, the reel's words and output."""
    clip_docs = []
    for plan, cut in zip(plans, cuts, strict=True):
        end = cut.spec.start + float(cut.spec.frames / timeline.rate)
        one = sidecar_dict(info=info, plan=plan, start=cut.spec.start, end=end, crop=cut.crop,
                           words=clip_words(words, cut.spec.start, end), encoder=encoder.name,
                           hardware=encoder.hardware, width=width, height=height, fps=float(timeline.rate),
                           frames=cut.spec.frames, timings={})
        one["crop"]["confidence"] = cut.framing_confidence
        clip_docs.append({"source": one["source"], **{k: one[k] for k in CLIP_KEYS}})
    total = timeline.seconds(timeline.total)
    return {
        "sidecar_version": SIDECAR_VERSION,
        "montage_version": montage_version(),
        "kind": "reel",
        "source": clip_docs[0]["source"],
        "reel": {
            "order": reel.order,
            "transition": reel.transition,
            "seconds": timeline.seconds(timeline.overlap),  # as cut: whole frames (asked: reel.seconds)
            "asked_seconds": reel.seconds,
            "duration": total,
            "frames": timeline.total,
            "clips": reel_entries(plans, [c.spec for c in cuts], timeline, clip_docs),
        },
        "words": [w.to_dict() for w in on_reel],  # reel seconds
        "output": {"width": width, "height": height, "fps": float(timeline.rate), "frames": timeline.total},
        "encoder": {"name": encoder.name, "hardware": encoder.hardware},
    }


def _loudness_entry(profile: ProfileConfig, audio_in: Sequence[loudness.Loudness | None],
                    audio_out: loudness.Loudness | None) -> dict[str, Any] | None:
    """As a clip's, with each clip's own measurement (each was brought to the target on its own)."""
    if profile.loudness is None:
        return None
    return {
        "target_lufs": profile.loudness,
        "true_peak_limit_dbtp": profile.true_peak,
        "input": None,
        "inputs": [m.to_dict() if m is not None else None for m in audio_in],
        "output": audio_out.to_dict() if audio_out is not None else None,
    }
