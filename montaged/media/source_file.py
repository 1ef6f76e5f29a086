"""Open a job's media as what was submitted, never again as whatever its path names now.

A path is checked at submit, but stages read the file minutes or hours later. Reopening it by
name would follow whatever the name has become: a symlink to a file outside the input roots, or
another file moved into its place. So each stage opens the media here, once:

- ``O_NOFOLLOW``: a symlink in the last component is refused, not followed;
- ``fstat`` of what was opened: a regular file, with the device, inode, size and mtime recorded
  at submit (:class:`~montaged.model.MediaIdentity`);
- where the opened file really lies (the kernel's ``/proc/self/fd/N`` link) is inside the roots;

and the decoders are handed the opened file itself, ``/proc/<pid>/fd/N``: a name for the open
file, not a path that can change (see :func:`opened_for_stage`).
"""

from __future__ import annotations

import errno
import os
import re
import stat
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from montaged.errors import MediaError, MontageError, leaf_errors
from montaged.model import JobSpec, MediaIdentity

FD_DIR = Path("/proc/self/fd")
"""Names an open file by descriptor (Linux); opening it reopens that very file."""


class MediaChanged(MediaError):
    """The file at the job's path is no longer the one that was submitted."""

    code = "media_changed"


class UnreadableSource(MediaError):
    """The job's path cannot be opened as a regular file by the daemon's user."""

    code = "unreadable_media"


def shown(path: str | os.PathLike[str]) -> str:
    """``path`` as valid UTF-8 text for messages and logs: bytes that are not UTF-8 as ``\\xNN``."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def is_utf8(text: str) -> bool:
    """False for strings holding undecodable bytes (surrogate escapes) or lone surrogates."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def identity_of(st: os.stat_result) -> MediaIdentity:
    return MediaIdentity(st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


@dataclass(frozen=True)
class SourceFile:
    """A job's media path and what it must still be when opened (picklable: crosses to workers).

    Args:
        path: the resolved path recorded at submit.
        identity: device, inode, size and mtime at submit; None for jobs stored before it was
            recorded (then only the other checks apply).
        roots: the input roots the opened file must lie in; empty = not checked (tools that
            open a file the user named on the command line).
    """

    path: Path
    identity: MediaIdentity | None = None
    roots: tuple[Path, ...] = ()

    @classmethod
    def of(cls, spec: JobSpec, roots: Iterable[Path]) -> SourceFile:
        return cls(Path(spec.source), spec.media, tuple(Path(r) for r in roots))

    def __str__(self) -> str:
        return shown(self.path)


class OpenedSource:
    """An open, checked media file (``fd``), with its ``fstat`` as checked."""

    def __init__(self, fd: int, path: Path, st: os.stat_result) -> None:
        self.fd = fd
        self.path = path
        self.stat = st

    def pread(self, size: int, offset: int = 0) -> bytes:
        return os.pread(self.fd, size, offset)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> OpenedSource:
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def open_source(source: SourceFile | Path) -> OpenedSource:
    """Open ``source`` and check what was opened (see the module docstring); raise a MediaError
    that names the file and says what to do when it is not what was submitted."""
    src = source if isinstance(source, SourceFile) else SourceFile(Path(source))
    path, name = src.path, str(src)
    if not is_utf8(str(path)):
        raise UnreadableSource(f"{name}: the name is not valid UTF-8; rename the file and submit it again")
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NOCTTY | os.O_NONBLOCK  # a FIFO must not block
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        raise MediaChanged(f"{name}: no longer exists; it was moved or deleted after it was submitted"
                           " (submit it again from where it is now)") from None
    except PermissionError:
        raise UnreadableSource(f"{name}: permission denied; let the montage user read it"
                               " (chmod/chgrp)") from None
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise MediaChanged(f"{name}: is now a symbolic link; a queued file may not be replaced by a"
                               " link (submit the real file again)") from None
        raise UnreadableSource(f"{name}: cannot be opened ({e.strerror}); check the file") from None
    try:
        st = os.fstat(fd)
        _check_opened(src, name, fd, st)
    except BaseException:
        os.close(fd)
        raise
    return OpenedSource(fd, path, st)


def _check_opened(src: SourceFile, name: str, fd: int, st: os.stat_result) -> None:
    if not stat.S_ISREG(st.st_mode):
        kind = "a directory" if stat.S_ISDIR(st.st_mode) else "not a regular file (device, FIFO or socket)"
        refused = MediaChanged if src.identity is not None else UnreadableSource
        raise refused(f"{name}: {kind}; submit a media file instead")
    if src.identity is not None and identity_of(st) != src.identity:
        was, now = src.identity, identity_of(st)
        if (was.device, was.inode) != (now.device, now.inode):
            what = "is another file than the one submitted (it was replaced)"
        else:
            what = (f"has changed since it was submitted ({was.size} bytes then, {now.size} now;"
                    " written to or touched)")
        raise MediaChanged(f"{name}: {what}; a queued file must stay as it was: submit it again to"
                           " process the file as it is now")
    if src.roots:
        real = _opened_path(fd, src.path)
        roots = [Path(r).expanduser().resolve() for r in src.roots]
        if not any(real.is_relative_to(r) for r in roots):
            listed = ", ".join(shown(r) for r in roots)
            raise MediaChanged(f"{name}: now lies at {shown(real)}, outside the input roots ({listed});"
                               " it was moved after it was submitted")


def _opened_path(fd: int, path: Path) -> Path:
    """Where the opened file lies, by the kernel's record of the descriptor (not by its name)."""
    try:
        target = os.readlink(FD_DIR / str(fd))
    except OSError:  # no /proc: the name, with every symlink above it resolved
        return path.resolve()
    if target.endswith(" (deleted)"):
        raise MediaChanged(f"{shown(path)}: was deleted after it was submitted; submit it again")
    return Path(target)


@contextmanager
def opened_for_stage(spec: JobSpec, roots: Iterable[Path]) -> Iterator[Path]:
    """Open a job's media once for a stage and yield a path naming the opened file.

    The path is ``/proc/<daemon pid>/fd/N``: this process and its threads open it like any path,
    and so do its children (pool workers, ffmpeg: same user), all reaching the file that was
    checked, whatever the name on disk has become. It is valid until the block ends. Errors
    raised inside that name it get the file's own name back in their message.
    """
    source = SourceFile.of(spec, roots)
    with open_source(source) as opened:
        alias = f"/proc/{os.getpid()}/fd/{opened.fd}"
        try:
            yield Path(alias)
        except BaseException as e:
            _rename(e, re.compile(re.escape(alias) + r"(?!\d)"), str(source))
            raise


def _rename(e: BaseException, alias: re.Pattern[str], name: str) -> None:
    for leaf in leaf_errors(e):
        if isinstance(leaf, MontageError):
            leaf.args = tuple(alias.sub(name, a) if isinstance(a, str) else a for a in leaf.args)
