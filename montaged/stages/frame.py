"""frame: a smoothed crop path per selected clip (faces, motion, active speaker), in worker processes.

Vision runs only on the selected ranges, so its cost grows with the output, not the input.
"""

from __future__ import annotations

from montaged.frame.worker import plan_crops_in_process
from montaged.media.source_file import opened_for_stage
from montaged.model import CropPlan
from montaged.stages.context import JobContext, Resources, param_key
from montaged.stages.contract import Progress
from montaged.stages.results import Framing


async def frame_stage(ctx: JobContext, res: Resources, progress: Progress) -> None:
    s = res.settings
    profile = s.profiles[ctx.job.spec.profile]
    selection = ctx.need_selection()
    if not s.frame.enabled or not ctx.need_media().has_video:
        # the renderer centre-crops (or draws an audiogram)
        ctx.results.framing = Framing(tuple(None for _ in selection.clips))
        return
    key = param_key(selection.key, s.frame.model_dump(exclude={"workers"}), profile.model_dump())
    if (hit := await res.store.get_result("frame", key)) is not None:
        ctx.results.framing = Framing(tuple(CropPlan.from_dict(c) for c in hit["crops"]))
        ctx.cached.add("frame")
        return
    with opened_for_stage(ctx.job.spec, s.paths.input_roots) as source:  # the file as submitted
        plans = await plan_crops_in_process(
            source, ctx.need_media(), selection.clips, profile, s.frame, ctx.need_turns().turns,
            workers=res.frame_workers, job_id=ctx.id,
        )
    await ctx.lease.put_result("frame", key, {"crops": [c.to_dict() for c in plans]})
    ctx.results.framing = Framing(tuple(plans))
