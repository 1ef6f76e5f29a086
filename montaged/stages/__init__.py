"""The stages of one job, in order: :func:`default_stages` is the list the daemon runs.

A stage first looks for its stored result (keyed by the media's content hash and the parameters
that produce it) and only computes when there is none: that is how a restarted daemon resumes at
the first missing stage, and how the same media submitted again costs nothing. probe always runs
(the file may have changed since it was submitted; every later key starts from its hash), and
render finds the clips an earlier attempt finished on disk. The contract is
:mod:`montaged.stages.contract`.
"""

from __future__ import annotations

from montaged.model import STAGES
from montaged.stages.context import Resources
from montaged.stages.contract import Stage
from montaged.stages.diarize import diarize_stage
from montaged.stages.frame import frame_stage
from montaged.stages.probe import probe_stage
from montaged.stages.render import render_stage
from montaged.stages.select import select_stage
from montaged.stages.transcribe import transcribe_stage


def _whisper_slots(res: Resources) -> int:
    return res.whisper.workers


def _vision_slots(res: Resources) -> int:
    return res.frame_workers.workers if res.frame_workers is not None else 1


def _render_slots(res: Resources) -> int:
    return int(res.render_slots.total_tokens)


def default_stages() -> list[Stage[Resources]]:
    """The daemon's stages. Weights are each stage's share of a typical talk's wall time (overall
    progress and ETA). transcribe, frame and render hand their work to pools sized from the cores:
    they take one job per pool slot, so a short job never leaves slots idle while the next one
    waits in the queue; the pool still caps the CPU they use."""
    stages: list[Stage[Resources]] = [
        Stage("probe", probe_stage, weight=0.02),
        Stage("transcribe", transcribe_stage, ("probe",), 0.55, _whisper_slots),
        Stage("diarize", diarize_stage, ("probe", "transcribe"), 0.03),
        Stage("select", select_stage, ("probe", "transcribe", "diarize"), 0.02),
        Stage("frame", frame_stage, ("probe", "diarize", "select"), 0.13, _vision_slots),
        Stage("render", render_stage, ("probe", "diarize", "select", "frame"), 0.25, _render_slots),
    ]
    assert [s.name for s in stages] == list(STAGES), "the stored stage names are model.STAGES"
    return stages
