"""transcribe: the job's words and audio features, from one decode heard by every ear at once.

The audio graph (decode → fan-out → Whisper / Deepgram / features / spool) is
:mod:`montaged.stages.audio_graph`; this stage looks for its stored result, runs the graph when
there is none, and starts diarization on the graph's spool as soon as the decode is complete, so
it runs beside Whisper. The diarize stage awaits those turns and stores them.
"""

from __future__ import annotations

import time

import structlog

from montaged.asr.ears import Hearing
from montaged.config import Settings
from montaged.keys import param_key
from montaged.stages.audio_graph import hear_source
from montaged.stages.context import JobContext, Resources
from montaged.stages.contract import Progress
from montaged.stages.diarize import diarize_beside, diarize_wanted
from montaged.stages.results import Heard

log = structlog.get_logger(__name__)


def job_settings(ctx: JobContext, settings: Settings) -> Settings:
    """The settings this job hears with: its own spoken language (``options.language``) for both
    ears, so the transcript, its cache keys and this stage's key all follow it."""
    language = ctx.option("language")
    if language is None:
        return settings
    return settings.model_copy(update={
        "whisper": settings.whisper.model_copy(update={"language": str(language).split("-")[0]}),
        "deepgram": settings.deepgram.model_copy(update={"language": str(language)}),
    })


def transcribe_key(ctx: JobContext, res: Resources) -> str:
    s = job_settings(ctx, res.settings)
    deepgram = s.deepgram.model_dump(exclude={"timeout_seconds", "max_retries", "keepalive_seconds"})
    return param_key(
        ctx.need_media().content_hash, res.whisper.model_name, s.whisper.model_dump(exclude={"workers"}),
        deepgram if s.deepgram.enabled else None, s.fuse.model_dump(), s.select.feature_hop_seconds,
    )


async def transcribe_stage(ctx: JobContext, res: Resources, progress: Progress) -> None:
    key = transcribe_key(ctx, res)
    if (hit := await res.store.get_result("transcribe", key)) is not None:
        heard = Heard.from_dict(key, hit)
        ctx.cached.add("transcribe")
        res.cache.count(hit=True)
    else:
        heard = await _hear(ctx, res, key, progress)
    ctx.results.heard = heard
    ctx.notes.extend(heard.transcript.notes)


async def _hear(ctx: JobContext, res: Resources, key: str, progress: Progress) -> Heard:
    s = job_settings(ctx, res.settings)
    t0 = time.perf_counter()
    # seconds from the stage start: shows what overlapped (diarization marks it from beside)
    timeline = ctx.timeline["transcribe"] = {}

    def mark(name: str) -> None:
        timeline[name] = round(time.perf_counter() - t0, 3)

    beside = ctx.side is not None and await diarize_wanted(ctx, res)
    ears = Hearing(
        job_id=ctx.id, media=ctx.need_media(), settings=s, pool=res.whisper,
        cache=res.cache.for_job(ctx.lease), budget=res.budget.for_claim(ctx.lease.fence),
        secrets=res.secrets, on_progress=progress,
    )  # fmt: skip
    transcript, features = await hear_source(
        ctx.job.spec, ears, work_dir=res.work_dir / ctx.id, mark=mark,
        on_pcm=(lambda pcm: diarize_beside(ctx, res, pcm, mark)) if beside else None,
    )  # fmt: skip
    heard = Heard(key, transcript, features)
    await ctx.lease.put_result("transcribe", key, heard.to_dict())
    log.info("heard", job_id=ctx.id, stage="transcribe", words=len(transcript.words),
             engine=transcript.engine)
    return heard
