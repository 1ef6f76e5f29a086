"""select: the best non-overlapping moments of the talk, each with its score breakdown and reason."""

from __future__ import annotations

from typing import Any

import anyio.to_thread

from montaged.config import SelectConfig
from montaged.errors import MediaError
from montaged.model import ClipPlan
from montaged.select import rank_clips
from montaged.select.ranges import parse_ranges, requested_clips
from montaged.stages.context import JobContext, Resources, param_key


class NothingToClipError(MediaError):
    """The media holds no speech to cut clips from."""

    code = "no_speech"


def _max_clips(ctx: JobContext, default: int) -> int:
    value = ctx.option("max_clips", default)
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= 100:
        raise MediaError(f"options.max_clips: must be a whole number from 1 to 100 (got {value!r})")
    return value


def _job_bounds(ctx: JobContext, cfg: SelectConfig) -> SelectConfig:
    """The select settings with the job's own clip length bounds (``options.min_seconds`` and
    ``max_seconds``), which must still make a range with the configured other bound."""
    bounds = {k: float(ctx.option(k)) for k in ("min_seconds", "max_seconds") if ctx.option(k) is not None}
    cfg = cfg.model_copy(update=bounds)
    if cfg.min_seconds > cfg.max_seconds:
        raise MediaError(f"options.min_seconds/max_seconds: clips from {cfg.min_seconds:g} to"
                         f" {cfg.max_seconds:g} s is no range (the other bound comes from select.*);"
                         " give both options")
    return cfg


def candidate_rows(clips: list[ClipPlan], ranked: list[ClipPlan]) -> list[dict[str, Any]]:
    """Every ranked moment as a row for previews: its rank (1 = best), its range and why, and
    ``clip``, the clip number (1-based, time order) it became, or None when it was not picked."""
    picked = {(c.start, c.end): c.index for c in clips}
    rows = []
    for plan in ranked:
        index = picked.get((plan.start, plan.end))
        rows.append({**plan.to_dict(), "rank": plan.index + 1, "clip": None if index is None else index + 1})
    return rows


async def select_stage(ctx: JobContext, res: Resources) -> None:
    if ctx.option("ranges") is not None:  # a re-cut: the ranges asked for, not the ranked ones
        ranges = parse_ranges(ctx.option("ranges"), ctx.need_media().duration)
        origin = ctx.option("recut_of")
        ctx.clips = requested_clips(ctx.need_transcript(), ranges, exact=ctx.option("exact") is True,
                                    origin=origin if isinstance(origin, dict) else None)
        # the frame stage keys its cached crop paths on this: the ranges decide the clips here
        ctx.keys["select"] = param_key(ctx.keys["transcribe"], "ranges",
                                       [(c.start, c.end) for c in ctx.clips])
        res.progress(ctx, "select", 1.0)
        return
    cfg = _job_bounds(ctx, res.settings.select)
    max_clips = _max_clips(ctx, cfg.max_clips)
    key = ctx.keys["select"] = param_key(ctx.keys["transcribe"], cfg.model_dump(), max_clips)
    hit = await res.store.get_result("select", key)
    if hit is not None and "candidates" in hit:  # results stored before candidates were kept: redo
        ctx.clips = [ClipPlan.from_dict(c) for c in hit["clips"]]
        ctx.candidates = list(hit["candidates"])
        ctx.cached.add("select")
    else:
        transcript = ctx.need_transcript()
        if not transcript.words:
            raise NothingToClipError(
                f"{ctx.source}: no speech was recognised, so there is nothing to clip; check that the"
                " audio track holds speech in the configured language (whisper.language)"
            )
        ctx.clips, ranked = await anyio.to_thread.run_sync(
            lambda: rank_clips(transcript, ctx.features, cfg, turns=ctx.turns, max_clips=max_clips)
        )
        ctx.candidates = candidate_rows(ctx.clips, ranked)
        await ctx.lease.put_result("select", key, {"clips": [c.to_dict() for c in ctx.clips],
                                                   "candidates": ctx.candidates})
    res.progress(ctx, "select", 1.0)
