"""frame: a smoothed crop path per selected clip (faces, motion, active speaker), in worker processes.

Vision runs only on the selected ranges, so its cost grows with the output, not the input.
"""

from __future__ import annotations

from montaged.frame.worker import plan_crops_in_process
from montaged.media.source_file import opened_for_stage
from montaged.model import CropPlan
from montaged.stages.context import JobContext, Resources, param_key


async def frame_stage(ctx: JobContext, res: Resources) -> None:
    s = res.settings
    profile = s.profiles[ctx.job.spec.profile]
    key = ctx.keys["frame"] = param_key(ctx.keys["select"], s.frame.model_dump(exclude={"workers"}),
                                        profile.model_dump())
    if not s.frame.enabled or not ctx.need_media().has_video:
        ctx.crops = [None] * len(ctx.clips)  # the renderer centre-crops (or draws an audiogram)
        res.progress(ctx, "frame", 1.0)
        return
    if (hit := await res.store.get_result("frame", key)) is not None:
        ctx.crops = [CropPlan.from_dict(c) for c in hit["crops"]]
        ctx.cached.add("frame")
    else:
        with opened_for_stage(ctx.job.spec, s.paths.input_roots) as source:  # the file as submitted
            plans = await plan_crops_in_process(
                source, ctx.need_media(), ctx.clips, profile, s.frame, ctx.turns,
                workers=res.frame_workers, job_id=ctx.id,
            )
        ctx.crops = list(plans)
        await ctx.lease.put_result("frame", key, {"crops": [c.to_dict() for c in plans]})
    res.progress(ctx, "frame", 1.0)
