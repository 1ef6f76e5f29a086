"""select: the best non-overlapping moments of the talk, each with its score breakdown and reason."""

from __future__ import annotations

from typing import Any

import anyio.to_thread

from montaged.config import SelectConfig
from montaged.errors import MediaError
from montaged.keys import param_key
from montaged.model import ClipPlan
from montaged.options import EDGES
from montaged.select import rank_clips
from montaged.select.ranges import parse_ranges, requested_clips
from montaged.stages.context import JobContext, Resources
from montaged.stages.contract import Progress
from montaged.stages.results import Selection


class NothingToClipError(MediaError):
    """The media holds no speech to cut clips from."""

    code = "no_speech"


def _exact(value: Any) -> bool | str:
    """``options.exact`` as ranges take it: True, "start", "end", else False (snap both edges)."""
    return value if value is True or value in EDGES else False


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


async def select_stage(ctx: JobContext, res: Resources, progress: Progress) -> None:
    heard, turns = ctx.need_heard(), ctx.need_turns()
    transcript = ctx.need_transcript()
    if ctx.option("ranges") is not None:  # a re-cut: the ranges asked for, not the ranked ones
        ranges = parse_ranges(ctx.option("ranges"), ctx.need_media().duration)
        origin = ctx.option("recut_of")
        clips = requested_clips(transcript, ranges, exact=_exact(ctx.option("exact")),
                                origin=origin if isinstance(origin, dict) else None)
        # the frame stage keys its cached crop paths on this: the ranges decide the clips here
        key = param_key(heard.key, turns.key, "ranges", [(c.start, c.end) for c in clips])
        ctx.results.selection = Selection(key, tuple(clips))
        return
    cfg = _job_bounds(ctx, res.settings.select)
    max_clips = _max_clips(ctx, cfg.max_clips)
    key = param_key(heard.key, turns.key, cfg.model_dump(), max_clips)
    if (hit := await res.store.get_result("select", key)) is not None:
        ctx.results.selection = Selection(key, tuple(ClipPlan.from_dict(c) for c in hit["clips"]),
                                          tuple(hit["candidates"]))
        ctx.cached.add("select")
        return
    if not transcript.words:
        raise NothingToClipError(
            f"{ctx.source}: no speech was recognised, so there is nothing to clip; check that the"
            " audio track holds speech in the configured language (whisper.language)"
        )
    picked, ranked = await anyio.to_thread.run_sync(
        lambda: rank_clips(transcript, heard.features, cfg, turns=turns.turns, max_clips=max_clips)
    )
    selection = Selection(key, tuple(picked), tuple(candidate_rows(picked, ranked)))
    await ctx.lease.put_result("select", key, {"clips": [c.to_dict() for c in selection.clips],
                                               "candidates": list(selection.candidates)})
    ctx.results.selection = selection
