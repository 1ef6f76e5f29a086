"""diarize: who speaks when, and every word of the transcript given its speaker.

The turns are usually computed beside Whisper: transcribe starts diarization on its spool as soon
as the decode is complete (:func:`diarize_beside`), and this stage awaits them. Either way they are
stored here, keyed by the media's content hash, the diarize settings and the job's speaker count;
a resumed job whose words were stored but whose turns were not decodes the audio again and
diarizes it here. Words are then attached to turns without splitting a word at a boundary.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from functools import partial
from pathlib import Path

from montaged.config import DiarizeConfig
from montaged.diarize import check_speakers
from montaged.diarize.assign import assign_speakers
from montaged.diarize.worker import DiarizerPool, diarize_in_process
from montaged.keys import param_key
from montaged.model import SpeakerTurn
from montaged.stages.audio_graph import PCM_NAME, decode_to_pcm, remove_spool
from montaged.stages.context import JobContext, Resources
from montaged.stages.contract import Progress
from montaged.stages.results import Turns


def diarize_key(ctx: JobContext, res: Resources) -> str:
    return param_key(ctx.need_media().content_hash, "diarize",
                     res.settings.diarize.model_dump(exclude={"threads", "device"}), ctx.option("speakers"))


async def diarize_wanted(ctx: JobContext, res: Resources) -> bool:
    """Diarization is on and its result for this media and these settings is not stored yet."""
    if res.settings.diarize.backend == "none":
        return False
    return await res.store.get_result("diarize", diarize_key(ctx, res)) is None


def diarize_beside(ctx: JobContext, res: Resources, pcm: Path, mark: Callable[[str], None]) -> None:
    """Start diarizing a complete spool beside whatever the job does next (transcribe calls this
    as soon as the decode is done; this stage awaits ``ctx.diarizing``). The work owns ``pcm``."""
    assert ctx.side is not None, "only a job the pipeline runs has side tasks"
    speakers = check_speakers(ctx.option("speakers"))
    ctx.diarizing = ctx.side.start(partial(_diarize, pcm, res.settings.diarize, speakers, res.diarizer, mark))


async def _diarize(
    pcm: Path, cfg: DiarizeConfig, speakers: int | None, pool: DiarizerPool | None,
    mark: Callable[[str], None],
) -> list[SpeakerTurn]:
    try:
        mark("diarize_started")
        turns = await diarize_in_process(str(pcm), cfg, speakers, pool=pool)
        mark("diarized")
        return turns
    finally:
        remove_spool(pcm)


async def diarize_stage(ctx: JobContext, res: Resources, progress: Progress) -> None:
    s = res.settings
    heard = ctx.need_heard()
    key = diarize_key(ctx, res)
    pending, ctx.diarizing = ctx.diarizing, None
    turns: list[SpeakerTurn] = []
    if s.diarize.backend == "none":
        pass
    elif (hit := await res.store.get_result("diarize", key)) is not None:
        turns = [SpeakerTurn.from_dict(t) for t in hit["turns"]]
        ctx.cached.add("diarize")
    else:
        if pending is not None:
            turns = await pending.wait()
        else:  # not started beside Whisper (its words were stored): from the source again
            speakers = check_speakers(ctx.option("speakers"))
            pcm = await decode_to_pcm(ctx.job.spec, s, res.work_dir / ctx.id / PCM_NAME)
            turns = await _diarize(pcm, s.diarize, speakers, res.diarizer, lambda name: None)
        await ctx.lease.put_result("diarize", key, {"turns": [t.to_dict() for t in turns]})
    transcript = heard.transcript
    if turns:
        transcript = dataclasses.replace(transcript, words=assign_speakers(transcript.words, turns))
    elif s.diarize.backend != "none":
        ctx.notes.append("diarization found no speech turns; clips carry no speaker labels")
    ctx.results.turns = Turns(key, tuple(turns), transcript)
