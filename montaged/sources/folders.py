"""The hot folder's sub-folders, and moving an ended job's original into done/ or failed/.

With ``after = "move"`` a taken file waits in ``processing/`` while its job runs; when the job
ends, :func:`on_job_finished` renames it into ``done/`` or ``failed/`` (with a ``.error.txt``
saying why). It is called for every ended job (from the daemon's job events and from the hot
folder's own sweep of ``processing/``) and never raises for one job's file.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import anyio
import anyio.to_thread
import structlog

from montaged.config import HotFolderConfig
from montaged.media.source_file import shown
from montaged.metrics import INTAKE_ERRORS
from montaged.model import TERMINAL_STATES, Job, JobState
from montaged.sources import error_code, move_into
from montaged.sources.dropoptions import move_along

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class Folder:
    watched: Path
    processing: Path
    done: Path
    failed: Path


def resolve_folders(cfg: HotFolderConfig) -> list[Folder]:
    def under(base: Path, sub: Path) -> Path:
        return (sub if sub.is_absolute() else base / sub).resolve()

    out = []
    for raw in cfg.paths:
        w = raw.expanduser().resolve()
        out.append(Folder(w, under(w, cfg.processing_dir), under(w, cfg.done_dir), under(w, cfg.failed_dir)))
    return out


async def on_job_finished(cfg: HotFolderConfig, job: Job) -> None:
    """With ``after = "move"``, move an ended job's file from processing/ to done/ or failed/.

    Never raises for one job's file: a folder that cannot be written, a file system error, a job
    record of an unexpected shape are logged with a code and counted, and the file stays in
    processing/, where the next sweep (every ``rescan_seconds``) tries again.
    """
    try:
        await _move_finished(cfg, job)
    except Exception as e:
        INTAKE_ERRORS.labels(task="hotfolder_results", code=error_code(e)).inc()
        log.error("hot folder original not moved; the next sweep retries", code=error_code(e), job_id=job.id,
                  source=shown(str(job.spec.source)), error=f"{type(e).__name__}: {str(e)[:300]}")


async def _move_finished(cfg: HotFolderConfig, job: Job) -> None:
    if cfg.after != "move" or job.state not in TERMINAL_STATES:
        return
    src = Path(job.spec.source)
    folders = await anyio.to_thread.run_sync(resolve_folders, cfg)
    folder = next((f for f in folders if src.parent == f.processing), None)
    if folder is None:
        return  # not a file this hot folder moved
    if job.state == JobState.DONE:
        target, note = folder.done, None
    else:
        why = (f"{job.error_class}: {job.error_message} (stage {job.error_stage})"
               if job.state == JobState.FAILED else "cancelled")
        target, note = folder.failed, f"job {job.id} {job.state}: {why}"
    moved = await anyio.to_thread.run_sync(move_into, src, target, note)
    await anyio.to_thread.run_sync(move_along, src, target)  # its options file, if it had one
    if moved is not None:
        log.info("hot folder original moved", job_id=job.id, to=shown(moved), state=str(job.state))
