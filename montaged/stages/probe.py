"""probe: what is this file (streams, duration, size, rotation) and its content hash."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import anyio.to_thread

from montaged.media.probe import NoVideoStreamError, probe_media
from montaged.media.source_file import opened_for_stage
from montaged.model import MediaInfo
from montaged.stages.context import JobContext, Resources
from montaged.stages.contract import Progress


def _probe(source: Path) -> MediaInfo:
    """The file's streams, video checked as far as it decodes; audio-only files are welcome
    (a podcast: its clips are audiograms)."""
    try:
        return probe_media(source, need_video=True, need_audio=True)
    except NoVideoStreamError:
        return probe_media(source, need_video=False, need_audio=True)


async def probe_stage(ctx: JobContext, res: Resources, progress: Progress) -> None:
    # Always re-probed (it reads the file header and hashes it): the file may have changed
    # since the job was submitted, and every later cache key starts from this hash.
    with opened_for_stage(ctx.job.spec, res.settings.paths.input_roots) as source:  # as submitted
        info = await anyio.to_thread.run_sync(_probe, source)
    info = dataclasses.replace(info, path=ctx.job.spec.source)
    ctx.results.media = info
    if ctx.job.content_hash != info.content_hash:
        await ctx.lease.set_content_hash(info.content_hash)
