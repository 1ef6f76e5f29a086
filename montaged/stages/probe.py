"""probe: what is this file (streams, duration, size, rotation) and its content hash."""

from __future__ import annotations

import anyio.to_thread

from montaged.media.probe import probe_media
from montaged.stages.context import JobContext, Resources


async def probe_stage(ctx: JobContext, res: Resources) -> None:
    # Always re-probed (it reads the file header and hashes it): the file may have changed
    # since the job was submitted, and every later cache key starts from this hash.
    info = await anyio.to_thread.run_sync(lambda: probe_media(ctx.source, need_video=True, need_audio=True))
    ctx.media = info
    ctx.keys["probe"] = info.content_hash
    if ctx.job.content_hash != info.content_hash:
        await res.store.set_content_hash(ctx.id, info.content_hash)
    await res.store.put_result("probe", info.content_hash, info.to_dict())
    res.progress(ctx, "probe", 1.0)
