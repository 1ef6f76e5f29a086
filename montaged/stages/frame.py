"""frame: a smoothed crop path per selected clip (faces, motion, active speaker), in worker processes.

Vision runs only on the selected ranges, so its cost grows with the output, not the input. A job
with several profiles is framed once per distinct aspect (:func:`framing_group`).
"""

from __future__ import annotations

from montaged.config import ProfileConfig
from montaged.frame.worker import plan_crops_in_process
from montaged.keys import param_key
from montaged.media.source_file import opened_for_stage
from montaged.model import CropPlan
from montaged.options import job_profiles
from montaged.stages.context import JobContext, Resources
from montaged.stages.contract import Progress
from montaged.stages.results import Framing, Selection


def framing_group(profile: ProfileConfig) -> tuple[str, float | None, float]:
    """What a crop path depends on in a profile: its aspect, its frame rate (the path's clock) and
    the shape of a split pane; profiles alike in these share one framing."""
    return profile.aspect, profile.fps, round(profile.width / profile.height, 4)


async def frame_stage(ctx: JobContext, res: Resources, progress: Progress) -> None:
    s = res.settings
    selection = ctx.need_selection()
    names = job_profiles(ctx.job.spec.profile, ctx.job.spec.options)
    if not s.frame.enabled or not ctx.need_media().has_video:
        # the renderer centre-crops (or draws an audiogram)
        none = tuple(None for _ in selection.clips)
        ctx.results.framing = Framing(none, dict.fromkeys(names, none))
        return
    groups: dict[tuple[str, float | None, float], list[str]] = {}
    for name in names:  # one framing per distinct aspect, shared by the profiles of that aspect
        groups.setdefault(framing_group(s.profiles[name]), []).append(name)
    by_profile: dict[str, tuple[CropPlan | None, ...]] = {}
    for done, members in enumerate(groups.values()):
        crops = await _frame(ctx, res, s.profiles[members[0]], selection)
        by_profile.update(dict.fromkeys(members, crops))
        progress((done + 1) / len(groups))
    ctx.results.framing = Framing(by_profile[names[0]], by_profile)


async def _frame(ctx: JobContext, res: Resources, profile: ProfileConfig,
                 selection: Selection) -> tuple[CropPlan | None, ...]:
    """The crop paths of ``profile``'s aspect: stored, or planned now and stored."""
    s = res.settings
    key = param_key(selection.key, s.frame.model_dump(exclude={"workers"}), profile.model_dump())
    if (hit := await res.store.get_result("frame", key)) is not None:
        ctx.cached.add("frame")
        return tuple(CropPlan.from_dict(c) for c in hit["crops"])
    with opened_for_stage(ctx.job.spec, s.paths.input_roots) as source:  # the file as submitted
        plans = await plan_crops_in_process(
            source, ctx.need_media(), selection.clips, profile, s.frame, ctx.need_turns().turns,
            workers=res.frame_workers, job_id=ctx.id,
        )
    await ctx.lease.put_result("frame", key, {"crops": [c.to_dict() for c in plans]})
    return tuple(plans)
