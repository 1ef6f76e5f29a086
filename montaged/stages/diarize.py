"""diarize: give every word of the transcript a speaker.

The turns themselves were computed during ``transcribe`` (the diarizer runs beside Whisper on the
same decoded audio); this stage attaches them to words without splitting a word at a boundary.
"""

from __future__ import annotations

import dataclasses

from montaged.diarize.assign import assign_speakers
from montaged.stages.context import JobContext, Resources


async def diarize_stage(ctx: JobContext, res: Resources) -> None:
    transcript = ctx.need_transcript()
    if ctx.turns:
        words = assign_speakers(transcript.words, ctx.turns)
        ctx.transcript = dataclasses.replace(transcript, words=words)
    elif res.settings.diarize.backend != "none":
        ctx.notes.append("diarization found no speech turns; clips carry no speaker labels")
    res.progress(ctx, "diarize", 1.0)
