"""render: each clip decoded, cropped along its path, piped through a FIFO into the encoder.

Clips appear under their final names only when complete (the renderer writes ``.stem.part.mp4``
and renames). A resumed job skips clips already finished and removes what an interrupted render
left behind, so the output folder never holds a duplicate or a truncated clip.
"""

from __future__ import annotations

import dataclasses
import glob
import json
import re
from pathlib import Path

import anyio
import structlog

from montaged.config import CaptionStyle, QualityLimits, Settings
from montaged.errors import MediaError
from montaged.media.source_file import opened_for_stage
from montaged.model import RenderedClip
from montaged.render import quality
from montaged.render.captions import resolve_style
from montaged.render.encode import render_clip
from montaged.stages.context import JobContext, Resources
from montaged.stages.contract import Progress
from montaged.stages.results import Rendered

log = structlog.get_logger(__name__)


def output_dir(ctx: JobContext, res: Resources) -> Path:
    return Path(ctx.job.spec.output_dir) if ctx.job.spec.output_dir else res.settings.paths.outputs()


def clip_stem(ctx: JobContext, index: int) -> str:
    base = re.sub(r"[^\w.-]+", "_", ctx.source.stem)[:60].strip("._") or "clip"
    return f"{base}-{ctx.id[:8]}-{index + 1:02d}"


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
    clips, crops = ctx.need_selection().clips, ctx.need_framing().crops
    profile = s.profiles[ctx.job.spec.profile]
    captions_name, captions = _captions(ctx, s)
    out = output_dir(ctx, res)
    done: dict[int, float] = {}
    results: dict[int, RenderedClip] = {}
    total = max(1, len(clips))

    def report() -> None:
        progress(sum(done.values()) / total)

    async def one(i: int) -> None:
        plan = clips[i]
        stem = clip_stem(ctx, i)
        if (prior := await anyio.to_thread.run_sync(_finished, out, stem, ctx.id)) is not None:
            results[i] = prior
            done[i] = 1.0
            report()
            return
        await ctx.lease.check()  # files cannot be fenced: never clean up for a job taken over
        await anyio.to_thread.run_sync(_clean_leftovers, out, stem, ctx.lease.token)

        def on_progress(fraction: float) -> None:
            done[i] = fraction
            report()

        crop = crops[i] if i < len(crops) else None
        async with res.render_slots:
            clip = await render_clip(
                source=source, info=media, plan=plan, crop=crop, profile=profile, encoder=res.encoder,
                out_dir=out, stem=stem, attempt=ctx.lease.token, before_publish=ctx.lease.check,
                words=transcript.words, ffmpeg=s.render.ffmpeg,
                extra_sidecar=_sidecar_extra(ctx, plan.index, stem, out, captions_name),
                on_progress=on_progress, captions=captions, audiogram_cfg=s.render.audiogram,
            )
        clip = await anyio.to_thread.run_sync(_record_rendered, out / f"{stem}.json", clip, s.render.quality)
        if clip.quality is not None:
            quality.observe(clip.quality)
            if clip.quality["warnings"]:
                ctx.notes.append(f"clip {i + 1}: quality: " + "; ".join(clip.quality["warnings"]))
        results[i] = clip
        done[i] = 1.0
        report()

    with opened_for_stage(ctx.job.spec, s.paths.input_roots) as source:  # the file as submitted
        async with anyio.create_task_group() as tg:
            for i in range(len(clips)):
                tg.start_soon(one, i)
    ctx.results.rendered = Rendered(tuple(results[i] for i in sorted(results)))


def _captions(ctx: JobContext, s: Settings) -> tuple[str, CaptionStyle | None]:
    """The caption style the job asked for (``options.captions``), else its profile's."""
    name = ctx.option("captions", s.profiles[ctx.job.spec.profile].captions)
    try:
        return str(name), resolve_style(s.render.caption_styles, name)
    except ValueError as e:
        raise MediaError(f"options.{e}") from None


def _sidecar_extra(ctx: JobContext, index: int, stem: str, out: Path, captions: str) -> dict[str, object]:
    return {
        "job_id": ctx.id,
        "profile": ctx.job.spec.profile,
        "notes": list(dict.fromkeys(ctx.notes)),
        "captions": {"style": captions},
    }


def _record_rendered(sidecar: Path, clip: RenderedClip, limits: QualityLimits) -> RenderedClip:
    """Add the clip's quality and the render record to the sidecar, so a resumed job can trust
    the finished clip; return the clip with its quality."""
    from montaged.render.sidecar import write_atomic

    doc = json.loads(sidecar.read_text())
    doc["quality"] = quality.assess(doc, limits)
    clip = dataclasses.replace(clip, quality=doc["quality"])
    doc["rendered"] = clip.to_dict()
    write_atomic(sidecar, json.dumps(doc, indent=2, ensure_ascii=False) + "\n")
    return clip
