"""Job sources besides the control socket: the hot folder and the Redis stream.

Both hand every job to :class:`montaged.intake.Submitter` and acknowledge their own input (move
the file, XACK the entry) only after ``submit`` returned, i.e. once the job is in the store.
This module holds what they share: back-off, and the file primitives of the hot folder (identity
of a file's content, hashing that notices a write, rename without overwriting).
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat
import threading
from pathlib import Path
from typing import NamedTuple

import structlog

from montaged.media.source_file import shown

log = structlog.get_logger(__name__)

HASH_BLOCK = 4 << 20
"""Read size when hashing (into one reused buffer)."""
HASH_CHECK_BYTES = 64 << 20
"""While hashing, look this often whether the file changed (or the hash is no longer wanted)."""


class Sig(NamedTuple):
    """What must stay the same for a file to count as settled (a new inode = a new file)."""

    dev: int
    ino: int
    size: int
    mtime_ns: int


def free_name(folder: Path, name: str) -> Path:
    """``folder/name``, or ``folder/stem.2.ext`` … when that is taken (nothing is overwritten)."""
    candidate = folder / name
    stem, suffix = Path(name).stem, Path(name).suffix
    n = 2
    while os.path.lexists(candidate):
        candidate = folder / f"{stem}.{n}{suffix}"
        n += 1
    return candidate


def file_sig(st: os.stat_result) -> Sig:
    return Sig(st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def stat_regular(path: Path) -> Sig | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return file_sig(st) if stat.S_ISREG(st.st_mode) else None


def hash_file(path: Path, expect: Sig, cancel: threading.Event | None = None) -> str | None:
    """``sha256:<hex>`` of the file, as ``probe.content_hash`` writes it; None when the file is not
    (or stopped being) ``expect`` while it was read, or ``cancel`` was set."""
    digest = hashlib.sha256()
    buf = bytearray(HASH_BLOCK)
    view = memoryview(buf)
    with path.open("rb", buffering=0) as f:
        if file_sig(os.fstat(f.fileno())) != expect:
            return None
        unchecked = 0
        while n := f.readinto(buf):
            digest.update(view[:n])
            unchecked += n
            if unchecked >= HASH_CHECK_BYTES:
                unchecked = 0
                if (cancel is not None and cancel.is_set()) or file_sig(os.fstat(f.fileno())) != expect:
                    return None
        if file_sig(os.fstat(f.fileno())) != expect:
            return None
    return f"sha256:{digest.hexdigest()}"


def openable(path: Path) -> bool:
    """True when the file opens and reads (Windows/SMB writers hold it locked until done)."""
    try:
        with path.open("rb") as f:
            f.read(1)
    except OSError:
        return False
    return True


def move_into(src: Path, folder: Path, note: str | None = None) -> Path | None:
    """Rename ``src`` into ``folder`` under a free name; None when ``src`` is gone.

    OSError when it cannot be moved (the folder is not writable, another filesystem...). The
    note goes to ``<name>.error.txt`` as UTF-8 text (bytes of a name that are not UTF-8 appear
    as ``\\xNN``); a note that cannot be written is logged, the move stands.
    """
    folder.mkdir(parents=True, exist_ok=True)
    dst = free_name(folder, src.name)
    try:
        os.rename(src, dst)
    except FileNotFoundError:
        return None
    if note:
        text = note.rstrip().encode("utf-8", "backslashreplace").decode("utf-8") + "\n"
        try:
            dst.with_name(dst.name + ".error.txt").write_text(text, encoding="utf-8")
        except OSError as e:
            log.error("error note not written", code="note_not_written", path=shown(dst), error=e.strerror)
    return dst


def error_code(e: BaseException) -> str:
    """A short stable code for a contained error (the errno name for OS errors)."""
    if isinstance(e, OSError) and e.errno is not None:
        return f"os_{errno.errorcode.get(e.errno, e.errno)}".lower()
    return str(getattr(e, "code", "")) or type(e).__name__.lower()
