"""Where a render's files appear: the encoder's part file, the sidecars, then the final name.

The encoder writes ``.stem.aN.part.mp4`` (N: the job's attempt, so a stale holder of a job taken
over never writes or deletes the current holder's part); the sidecars are written next and the
file is renamed last, so nothing partial ever sits under a final name. The FIFO lives in a private
temporary folder (mode 0700, marked for the next start's debris sweep) that goes when the render
ends, whatever way it ends. Clips (render/encode.py) and reels (render/reel_encode.py) share this.
"""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import anyio

from montaged import debris
from montaged.errors import DiskFullError, RenderError
from montaged.render.sidecar import write_sidecars

CLEANUP_SECONDS = 10.0
DISK_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


def part_path(out_dir: Path, stem: str, attempt: int) -> Path:
    """Where attempt ``attempt`` of a job encodes ``stem`` before renaming it."""
    return out_dir / f".{stem}.a{attempt}.part.mp4"


def disk_full(path: Path, e: OSError) -> DiskFullError:
    return DiskFullError(f"{path}: disk full ({e.strerror}); free space in {path.parent} and retry the job")


@dataclass
class Publication:
    """One render's files: ``part`` for the encoder, ``tmp`` for the FIFO and captions script."""

    final: Path
    part: Path
    json_path: Path
    srt_path: Path
    vtt_path: Path
    tmp: Path
    published: bool = False
    sidecars: bool = False

    @property
    def fifo(self) -> Path:
        return self.tmp / "video.yuv"

    async def publish(self, doc: dict[str, Any], srt: str, vtt: str,
                      before_publish: Callable[[], Awaitable[None]] | None) -> None:
        """Sidecars, then the final name. ``before_publish`` may raise to stop (the job's claim was
        lost: the current holder's files stay untouched)."""
        if before_publish is not None:
            await before_publish()
        self.sidecars = True
        texts = {self.srt_path: srt, self.vtt_path: vtt}
        await anyio.to_thread.run_sync(write_sidecars, self.json_path, doc, texts)
        os.replace(self.part, self.final)
        self.published = True


@asynccontextmanager
async def publishing(out_dir: Path, stem: str, attempt: int, what: str) -> AsyncIterator[Publication]:
    """The files of ``stem`` in ``out_dir`` (created if missing) and the FIFO's folder; on leaving
    without :meth:`Publication.publish`, the part file and our sidecars go. An OSError becomes a
    DiskFullError (the filesystem is full) or a RenderError naming the ``what`` ("clip", "reel")."""
    final = out_dir / f"{stem}.mp4"
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        if e.errno in DISK_FULL_ERRNOS:
            raise disk_full(out_dir, e) from e
        raise RenderError(f"{out_dir}: cannot create the output folder ({e.strerror})") from e
    tmp = Path(tempfile.mkdtemp(prefix=debris.fifo_prefix()))  # 0700, marked: the next start finds it
    pub = Publication(final, part_path(out_dir, stem, attempt), out_dir / f"{stem}.json",
                      out_dir / f"{stem}.srt", out_dir / f"{stem}.vtt", tmp)
    try:
        os.mkfifo(pub.fifo, 0o600)
        yield pub
    except OSError as e:
        if e.errno in DISK_FULL_ERRNOS:
            raise disk_full(final, e) from e
        raise RenderError(f"{final}: cannot write the {what} ({e.strerror})") from e
    finally:
        with anyio.move_on_after(CLEANUP_SECONDS, shield=True):
            if not pub.published:
                pub.part.unlink(missing_ok=True)
                if pub.sidecars:  # ours, describing a file that never got its final name
                    for path in (pub.json_path, pub.srt_path, pub.vtt_path):
                        path.unlink(missing_ok=True)
            await anyio.to_thread.run_sync(partial(shutil.rmtree, tmp, ignore_errors=True))
