"""render: each clip decoded, cropped along its path, piped through a FIFO into the encoder.

Once per profile of the job (``options.profiles``); a profile that makes a reel (its own
``reel`` table or the job's ``reel`` option) joins the clips into one file instead.

Clips appear under their final names only when complete (the renderer writes ``.stem.part.mp4``
and renames). A resumed job skips clips already finished and removes what an interrupted render
left behind, so the output folder never holds a duplicate or a truncated clip.
"""

from __future__ import annotations

import dataclasses
import glob
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import structlog

from montaged.config import CaptionStyle, QualityLimits, ReelConfig, Settings
from montaged.errors import MediaError
from montaged.media.source_file import opened_for_stage
from montaged.model import RenderedClip
from montaged.options import job_profiles
from montaged.render import quality
from montaged.render.captions import resolve_style
from montaged.render.encode import render_clip
from montaged.render.reel import ordered, reel_for
from montaged.render.reel_encode import render_reel
from montaged.stages.context import JobContext, Resources
from montaged.stages.contract import Progress
from montaged.stages.results import Rendered

log = structlog.get_logger(__name__)


def output_dir(ctx: JobContext, res: Resources) -> Path:
    return Path(ctx.job.spec.output_dir) if ctx.job.spec.output_dir else res.settings.paths.outputs()


def _safe(name: str, fallback: str) -> str:
    """A name fit for a file name (a source's stem, a profile's key)."""
    return re.sub(r"[^\w.-]+", "_", name)[:60].strip("._") or fallback


def clip_stem(ctx: JobContext, index: int, profile: str | None = None) -> str:
    """``talk-5d1c0ffe-01``; with ``profile`` (a job of several profiles) ``talk-5d1c0ffe-01-square``."""
    tail = f"-{_safe(profile, 'profile')}" if profile else ""
    return f"{_safe(ctx.source.stem, 'clip')}-{ctx.id[:8]}-{index + 1:02d}{tail}"


def reel_stem(ctx: JobContext, profile: str | None = None) -> str:
    """``talk-5d1c0ffe-reel``; with ``profile`` (a job of several profiles) ``talk-5d1c0ffe-reel-square``."""
    tail = f"-{_safe(profile, 'profile')}" if profile else ""
    return f"{_safe(ctx.source.stem, 'clip')}-{ctx.id[:8]}-reel{tail}"


@dataclass(frozen=True)
class _Output:
    """One file the stage writes: a clip of one profile, or one profile's reel of all the clips."""

    profile: str
    stem: str
    clip: int | None  # position in the selection; None for a reel
    reel: ReelConfig | None
    weight: int  # its share of the stage's progress, in clips


def _outputs(ctx: JobContext, s: Settings, clips: int, has_video: bool) -> list[_Output]:
    """Every file of the job, profile by profile: a profile that makes a reel (its own ``reel`` or
    the job's option) writes the reel instead of its clips."""
    names = job_profiles(ctx.job.spec.profile, ctx.job.spec.options)
    out: list[_Output] = []
    for name in names:
        suffix = name if len(names) > 1 else None
        reel = reel_for(ctx.option("reel"), s.profiles[name])
        if reel is not None and not has_video:
            ctx.notes.append(f"{name}: an audio-only source has no picture to join into a reel;"
                             " its clips are rendered one by one")
            reel = None
        if reel is not None and clips:
            out.append(_Output(name, reel_stem(ctx, suffix), None, reel, clips))
        else:
            out += [_Output(name, clip_stem(ctx, i, suffix), i, None, 1) for i in range(clips)]
    return out


def _finished(out: Path, stem: str, job_id: str) -> RenderedClip | None:
    """The clip a previous attempt of this job completed, if its files are all there."""
    video, sidecar, srt = out / f"{stem}.mp4", out / f"{stem}.json", out / f"{stem}.srt"
    if not (video.exists() and sidecar.exists() and srt.exists() and (out / f"{stem}.vtt").exists()):
        return None
    try:
        doc = json.loads(sidecar.read_text())
    except (OSError, ValueError):
        return None
    if doc.get("job_id") != job_id:
        return None
    rendered = doc.get("rendered")
    return RenderedClip.from_dict(rendered) if isinstance(rendered, dict) else None


def _clean_leftovers(out: Path, stem: str, attempt: int) -> None:
    # The clip goes first: a crash halfway through this never leaves a clip without its sidecar.
    # The .tmp names are what write_atomic leaves when the process dies mid-write.
    for name in (f"{stem}.mp4", f".{stem}.part.mp4", f"{stem}.json", f"{stem}.srt", f"{stem}.vtt",
                 f".{stem}.json.tmp", f".{stem}.srt.tmp", f".{stem}.vtt.tmp"):
        (out / name).unlink(missing_ok=True)
    # Parts of earlier attempts only: a later attempt's belongs to whoever holds the job now.
    for part in out.glob(f".{glob.escape(stem)}.a*.part.mp4"):
        tag = part.name.removeprefix(f".{stem}.a").removesuffix(".part.mp4")
        if tag.isdigit() and int(tag) < attempt:
            part.unlink(missing_ok=True)


async def render_stage(ctx: JobContext, res: Resources, progress: Progress) -> None:
    s = res.settings
    media = ctx.need_media()
    transcript = ctx.need_transcript()
    clips, framing = ctx.need_selection().clips, ctx.need_framing()
    out = output_dir(ctx, res)
    outputs = _outputs(ctx, s, len(clips), media.has_video)
    several = len({o.profile for o in outputs}) > 1
    done: dict[int, float] = {}
    results: dict[int, RenderedClip] = {}
    total = max(1, sum(o.weight for o in outputs))

    def report() -> None:
        progress(sum(fraction * outputs[k].weight for k, fraction in done.items()) / total)

    async def one(k: int) -> None:
        o = outputs[k]
        if (prior := await anyio.to_thread.run_sync(_finished, out, o.stem, ctx.id)) is not None:
            results[k] = prior
            done[k] = 1.0
            report()
            return
        await ctx.lease.check()  # files cannot be fenced: never clean up for a job taken over
        await anyio.to_thread.run_sync(_clean_leftovers, out, o.stem, ctx.lease.token)

        def on_progress(fraction: float) -> None:
            done[k] = fraction
            report()

        profile = s.profiles[o.profile]
        captions_name, captions = _captions(ctx, s, o.profile)
        crops = framing.crops_for(o.profile)
        extra = _sidecar_extra(ctx, o.profile, captions_name)
        async with res.render_slots:
            if o.reel is not None:
                crop_of = {c.index: crops[i] if i < len(crops) else None for i, c in enumerate(clips)}
                plans = ordered(clips, o.reel.order)
                clip = await render_reel(
                    source=source, info=media, plans=plans, crops=[crop_of[p.index] for p in plans],
                    profile=profile, reel=o.reel, encoder=res.encoder, out_dir=out, stem=o.stem,
                    attempt=ctx.lease.token, before_publish=ctx.lease.check, words=transcript.words,
                    ffmpeg=s.render.ffmpeg, extra_sidecar=extra, on_progress=on_progress, captions=captions,
                )
            else:
                assert o.clip is not None
                clip = await render_clip(
                    source=source, info=media, plan=clips[o.clip],
                    crop=crops[o.clip] if o.clip < len(crops) else None, profile=profile,
                    encoder=res.encoder, out_dir=out, stem=o.stem, attempt=ctx.lease.token,
                    before_publish=ctx.lease.check, words=transcript.words, ffmpeg=s.render.ffmpeg,
                    extra_sidecar=extra, on_progress=on_progress, captions=captions,
                    audiogram_cfg=s.render.audiogram,
                )
        clip = dataclasses.replace(clip, profile=o.profile)
        sidecar = out / f"{o.stem}.json"
        clip = await anyio.to_thread.run_sync(_record_rendered, sidecar, clip, s.render.quality)
        if clip.quality is not None:
            quality.observe(clip.quality)
            if clip.quality["warnings"]:
                what = "reel" if o.clip is None else f"clip {o.clip + 1}"
                what += f" ({o.profile})" if several else ""
                ctx.notes.append(f"{what}: quality: " + "; ".join(clip.quality["warnings"]))
        results[k] = clip
        done[k] = 1.0
        report()

    with opened_for_stage(ctx.job.spec, s.paths.input_roots) as source:  # the file as submitted
        async with anyio.create_task_group() as tg:
            for k in range(len(outputs)):
                tg.start_soon(one, k)
    ctx.results.rendered = Rendered(tuple(results[k] for k in sorted(results)))


def _captions(ctx: JobContext, s: Settings, profile: str | None = None) -> tuple[str, CaptionStyle | None]:
    """The caption style the job asked for (``options.captions``), else its profile's."""
    name = ctx.option("captions", s.profiles[profile or ctx.job.spec.profile].captions)
    try:
        return str(name), resolve_style(s.render.caption_styles, name)
    except ValueError as e:
        raise MediaError(f"options.{e}") from None


def _sidecar_extra(ctx: JobContext, profile: str, captions: str) -> dict[str, object]:
    return {
        "job_id": ctx.id,
        "profile": profile,
        "notes": list(dict.fromkeys(ctx.notes)),
        "captions": {"style": captions},
    }


def _record_rendered(sidecar: Path, clip: RenderedClip, limits: QualityLimits) -> RenderedClip:
    """Add the clip's quality and the render record to the sidecar, so a resumed job can trust
    the finished clip; return the clip with its quality."""
    from montaged.render.sidecar import write_atomic

    doc = json.loads(sidecar.read_text())
    doc["quality"] = quality.assess(doc, limits)
    clip = dataclasses.replace(clip, quality=doc["quality"], reel=_reel_summary(doc))
    doc["rendered"] = clip.to_dict()
    write_atomic(sidecar, json.dumps(doc, indent=2, ensure_ascii=False) + "\n")
    return clip


def _reel_summary(doc: dict[str, Any]) -> dict[str, Any] | None:
    """What the job's record keeps of a reel's sidecar: its settings and each clip's source range
    and place (``montagectl show`` lists them); None for a clip."""
    reel = doc.get("reel") if doc.get("kind") == "reel" else None
    if not isinstance(reel, dict):
        return None
    return {
        **{k: reel.get(k) for k in ("order", "transition", "seconds", "duration")},
        "clips": [{"index": c["clip"]["index"], "start": c["clip"]["start"], "end": c["clip"]["end"],
                   "place_start": c["place"]["start"], "place_end": c["place"]["end"]}
                  for c in reel.get("clips") or []],
    }
