"""The stages of one job, in order. Each is ``async def stage(ctx, res) -> None``.

A stage first looks for its stored result (keyed by the media's content hash and the parameters
that produce it) and only computes when there is none: that is how a restarted daemon resumes at
the first missing stage, and how the same media submitted again costs nothing.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from montaged.stages.context import JobContext, Resources
from montaged.stages.diarize import diarize_stage
from montaged.stages.frame import frame_stage
from montaged.stages.probe import probe_stage
from montaged.stages.render import render_stage
from montaged.stages.select import select_stage
from montaged.stages.transcribe import transcribe_stage

StageFn = Callable[[JobContext, Resources], Awaitable[None]]

STAGE_FUNCS: dict[str, StageFn] = {
    "probe": probe_stage,
    "transcribe": transcribe_stage,
    "diarize": diarize_stage,
    "select": select_stage,
    "frame": frame_stage,
    "render": render_stage,
}

# share of a job's wall time each stage takes on a typical talk (for overall progress and ETA)
STAGE_WEIGHTS: dict[str, float] = {
    "probe": 0.02, "transcribe": 0.55, "diarize": 0.03, "select": 0.02, "frame": 0.13, "render": 0.25,
}
