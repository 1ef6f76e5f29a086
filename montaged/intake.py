"""The one front door for new jobs: every source (socket, hot folder, Redis, CLI) submits here.

Every entry, whatever its source, passes one validation (:meth:`Submitter.check`): bounded,
well-typed fields (valid UTF-8, no NUL or control characters, lengths within what a filesystem
takes, options a plain JSON object of bounded depth and size), then the file itself (absolute,
an existing readable regular file inside the configured input roots after resolving symlinks)
and the profile. A refusal is a :class:`SubmitError` naming the field or file and what to do;
a source ends that one entry with it (dead letter, ``failed/``, an error reply). The job is
stored with the file's identity (device, inode, size, mtime), so the stages can refuse a file
swapped after submission (:mod:`montaged.media.source_file`). A source acknowledges its own
input only after ``submit`` returned; ``StoreUnavailable`` means "try again later", never "drop".
"""

from __future__ import annotations

import errno
import json
import math
import os
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import anyio
import structlog

from montaged import options as job_options
from montaged.control import protocol as p
from montaged.control.protocol import EventKind
from montaged.errors import MediaError, MontageError, StoreUnavailable
from montaged.events import EventBus
from montaged.media.source_file import SourceFile, identity_of, is_utf8, open_source, shown
from montaged.model import Job, JobEvent, JobSpec, MediaIdentity
from montaged.store import JobStore

log = structlog.get_logger(__name__)

MAX_PATH_BYTES = 4095
"""Longest path accepted (Linux PATH_MAX less the terminating NUL)."""
MAX_NAME_BYTES = 255
"""Longest single path component (NAME_MAX of common filesystems)."""
MAX_WORD = 128
"""Longest profile name, origin, or options key."""
MAX_OPTIONS_BYTES = 64 << 10
"""Largest ``options`` object, as compact JSON."""
MAX_OPTIONS_DEPTH = 8
"""Deepest nesting of ``options`` (objects and lists inside it)."""
MAX_OPTIONS_INT = 2**63 - 1
"""Integers in ``options`` must fit 64 bits (both stores keep them exactly)."""
ORIGINS = frozenset({"socket", "hotfolder", "redis", "cli"})
RESERVED_OPTIONS = {"hotfolder": "hotfolder", "redis": "redis"}
"""Option keys written by one source (where the job came from); no other origin may set them."""


class SubmitError(MontageError):
    """A submission was refused; the message says what to change."""

    code = "bad_submission"


def _clip(text: str, n: int = 80) -> str:
    """A bounded, printable rendering of a refused value for messages."""
    text = shown(text) if not is_utf8(text) else text
    return repr(text[:n] + ("…" if len(text) > n else ""))


def check_text(value: Any, field: str, *, limit: int = MAX_WORD) -> str:
    """A short field: a string, valid UTF-8, without NUL or control characters, at most ``limit``."""
    if not isinstance(value, str):
        raise SubmitError(f"{field}: must be a string (got {type(value).__name__})")
    if not is_utf8(value):
        raise SubmitError(f"{field}: {_clip(value)} is not valid UTF-8 text")
    if len(value.encode()) > limit:
        raise SubmitError(f"{field}: longer than {limit} bytes ({_clip(value)})")
    if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in value):
        raise SubmitError(f"{field}: {_clip(value)} holds NUL or control characters; send plain text")
    return value


def check_path_text(value: Any, field: str = "path") -> str:
    """A path field as text: absolute, valid UTF-8, no NUL or control characters, within the
    lengths a Linux filesystem takes. ``~`` is not expanded: it would mean the daemon's home."""
    if not isinstance(value, str):
        raise SubmitError(f"{field}: must be a string (got {type(value).__name__})")
    if not value.strip():
        raise SubmitError(f"{field}: is empty; give the absolute path of a media file")
    raw = os.fsencode(value) if not is_utf8(value) else value.encode()
    if b"\0" in raw:
        raise SubmitError(f"{field}: {_clip(value)} holds a NUL byte; no file name can contain one")
    if not is_utf8(value):
        raise SubmitError(f"{shown(value)[:MAX_PATH_BYTES]}: the name is not valid UTF-8; rename the file"
                          " (or its folder) to a UTF-8 name and submit it again")
    if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in value):
        raise SubmitError(f"{field}: {_clip(value)} holds control characters (newline, tab…);"
                          " rename the file to a plain name")
    if len(raw) > MAX_PATH_BYTES:
        raise SubmitError(f"{field}: {_clip(value)} is {len(raw)} bytes long, more than a path may be"
                          f" ({MAX_PATH_BYTES}); use a shorter path")
    if (longest := max((len(p) for p in raw.split(b"/")), default=0)) > MAX_NAME_BYTES:
        raise SubmitError(f"{field}: {_clip(value)} has a name of {longest} bytes, more than a file name"
                          f" may be ({MAX_NAME_BYTES}); shorten it")
    if value.startswith("~"):
        raise SubmitError(f"{value}: not an absolute path ('~' is not expanded by the daemon);"
                          " give the full path of the file")
    if not value.startswith("/"):
        raise SubmitError(f"{value}: not an absolute path; give the full path of the file")
    return value


def check_options(options: Any) -> dict[str, Any]:
    """``options`` as a plain JSON object either store keeps exactly, or SubmitError."""
    if not isinstance(options, dict):
        raise SubmitError(f"options: must be a JSON object like {{\"max_clips\": 3}}"
                          f" (got {type(options).__name__})")
    _check_value(options, "options", 1)
    size = len(json.dumps(options, separators=(",", ":")))
    if size > MAX_OPTIONS_BYTES:
        raise SubmitError(f"options: {size} bytes, more than {MAX_OPTIONS_BYTES}; send only the options")
    return options


def _check_value(value: Any, where: str, depth: int) -> None:
    if isinstance(value, dict | list) and depth > MAX_OPTIONS_DEPTH:
        raise SubmitError(f"{where}: nested deeper than {MAX_OPTIONS_DEPTH} levels; flatten the options")
    if isinstance(value, dict):
        for key, item in value.items():
            check_text(key, f"{where}: key", limit=MAX_WORD)
            _check_value(item, f"{where}.{key}", depth + 1)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _check_value(item, f"{where}[{i}]", depth + 1)
    elif isinstance(value, str):
        if not is_utf8(value) or "\0" in value:
            raise SubmitError(f"{where}: {_clip(value)} is not valid UTF-8 text or holds a NUL")
        if len(value) > MAX_OPTIONS_BYTES:
            raise SubmitError(f"{where}: a string of {len(value)} characters; options are small values")
    elif isinstance(value, bool) or value is None:
        return
    elif isinstance(value, int):
        if abs(value) > MAX_OPTIONS_INT:
            raise SubmitError(f"{where}: {str(value)[:20]}… does not fit 64 bits")
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise SubmitError(f"{where}: {value} is not a finite number")
    else:
        raise SubmitError(f"{where}: {type(value).__name__} is not a JSON value")


def screen(spec: JobSpec) -> None:
    """The checks that need no filesystem: every field's type, encoding and bounds."""
    check_path_text(spec.source, "path")
    check_text(spec.profile, "profile")
    if spec.origin not in ORIGINS:
        raise SubmitError(f"origin {_clip(str(spec.origin))} is not one of {', '.join(sorted(ORIGINS))}")
    check_options(spec.options)
    for key, owner in RESERVED_OPTIONS.items():
        if key in spec.options and spec.origin != owner:
            raise SubmitError(f"options.{key} is recorded by the {owner} intake; remove it")
    if found := job_options.problems(spec.options):
        raise SubmitError("; ".join(found))
    if spec.output_dir is not None:
        check_path_text(spec.output_dir, "output_dir")


def check_source(path: str | Path, roots: Iterable[Path]) -> tuple[Path, MediaIdentity]:
    """Resolve ``path``, open what it names and return where it lies and its identity; or raise
    SubmitError saying what is wrong and what to do."""
    text = check_path_text(str(path))
    try:
        resolved = Path(text).resolve(strict=True)
    except FileNotFoundError:
        raise SubmitError(f"{text}: no such file; check the path") from None
    except NotADirectoryError:
        raise SubmitError(f"{text}: no such file (a part of the path is not a folder);"
                          " check the path") from None
    except PermissionError:
        raise SubmitError(f"{text}: permission denied on a folder of the path; let the montage user"
                          " search it (chmod +x)") from None
    except (OSError, RuntimeError, ValueError) as e:  # symlink loops, names too long for this filesystem
        why = e.strerror if isinstance(e, OSError) and e.strerror else str(e) or type(e).__name__
        if isinstance(e, OSError) and e.errno == errno.ELOOP:
            why = "a symlink loop"
        raise SubmitError(f"{text}: cannot be resolved ({why}); check symlinks on the path") from None
    allowed = [Path(r).expanduser().resolve() for r in roots]
    if not any(resolved.is_relative_to(root) for root in allowed):
        shown_roots = ", ".join(shown(r) for r in allowed) or "(none configured)"
        raise SubmitError(
            f"{text}: resolves to {shown(resolved)}, outside the input roots ({shown_roots});"
            " move it under one of them or add its folder to paths.input_roots"
        )
    try:
        with open_source(SourceFile(resolved, None, tuple(allowed))) as opened:
            identity = identity_of(opened.stat)
    except MediaError as e:
        message = str(e)
        if "not a regular file" in message or "directory" in message:
            message = f"{text}: not a regular file; submit a media file"
        elif "permission denied" in message:
            message = f"{text}: permission denied; let the montage user read it"
        raise SubmitError(message) from None
    return resolved, identity


class Submitter:
    """Validates and stores new jobs, then tells the pipeline and every subscriber.

    Args:
        store: where jobs are stored.
        bus: live events for subscribers.
        input_roots: submitted files must resolve inside one of these.
        profiles: the configured profile names.
        on_submitted: called after each stored job (the pipeline's ``poke``: the claim loop looks
            at once instead of at its next poll).
        output_roots: a job's own ``output_dir`` must lie inside one of these (or an input
            root); None leaves that check to the caller (the socket checks it itself).
    """

    def __init__(
        self,
        store: JobStore,
        bus: EventBus,
        *,
        input_roots: Iterable[Path],
        profiles: Iterable[str],
        on_submitted: Callable[[], None] | None = None,
        output_roots: Iterable[Path] | None = None,
    ) -> None:
        self.store = store
        self.bus = bus
        self.input_roots = list(input_roots)
        self.profiles = set(profiles)
        self.output_roots = None if output_roots is None else list(output_roots)
        self._on_submitted = on_submitted

    def check(self, spec: JobSpec) -> JobSpec:
        """Return the spec with its source resolved and its identity recorded, or raise SubmitError."""
        screen(spec)
        if spec.profile not in self.profiles:
            known = ", ".join(sorted(self.profiles))
            raise SubmitError(f"profile {_clip(spec.profile)} is not configured; use one of: {known}")
        wanted = job_options.job_profiles(spec.profile, spec.options)
        if unknown := [p for p in wanted if p not in self.profiles]:
            known = ", ".join(sorted(self.profiles))
            raise SubmitError(f"options.profiles: {', '.join(map(repr, unknown))} not configured;"
                              f" use some of: {known} (got {spec.options['profiles']!r})")
        source, identity = check_source(spec.source, self.input_roots)
        return JobSpec(
            source=str(source),
            profile=spec.profile,
            origin=spec.origin,
            options=dict(spec.options),
            output_dir=self._check_output_dir(spec.output_dir),
            media=identity,
        )

    def _check_output_dir(self, value: str | None) -> str | None:
        if value is None or self.output_roots is None:
            return value
        if not Path(value).is_absolute():
            raise SubmitError(f"output_dir {_clip(value)}: give an absolute path")
        resolved = Path(value).resolve()
        allowed = [Path(a).expanduser().resolve() for a in (*self.output_roots, *self.input_roots)]
        if not any(resolved.is_relative_to(a) for a in allowed):
            raise SubmitError(f"output_dir {_clip(value)} is outside the output folder and the input roots;"
                              " choose a folder under one of them")
        return str(resolved)

    async def submit(self, spec: JobSpec, *, content_hash: str | None = None) -> Job:
        """Check and store one job. SubmitError: this entry is refused (a store that cannot hold
        it included); StoreUnavailable: try again later, nothing was stored."""
        checked = await anyio.to_thread.run_sync(self.check, spec)
        try:
            job = await self.store.submit(checked, content_hash=content_hash)
        except StoreUnavailable:
            raise
        except Exception as e:  # the store refused this one job: it fails alone, the daemon goes on
            log.error("store refused a submission", code="store_refused", source=checked.source,
                      origin=checked.origin, error=f"{type(e).__name__}: {str(e)[:300]}")
            raise SubmitError(f"{checked.source}: the store refused the job ({type(e).__name__});"
                              " the daemon's log has the details") from e
        # the store recorded job.submitted in the same transaction; tell the live subscribers
        self.announce(job.id, EventKind.JOB_SUBMITTED, p.submitted(job))
        log.info("job submitted", job_id=job.id, source=checked.source, origin=checked.origin)
        if self._on_submitted is not None:
            self._on_submitted()
        return job

    def announce(self, job_id: str, kind: EventKind, data: Mapping[str, Any] | None = None) -> None:
        """Publish an event the store already recorded (or one too frequent to record)."""
        self.bus.publish(JobEvent(job_id=job_id, kind=kind, at=time.time(), data=dict(data or {})))

    async def emit(self, job_id: str, kind: EventKind, data: Mapping[str, Any] | None = None) -> None:
        """Record an event in the store and publish it."""
        event = await self.store.add_event(job_id, kind, data or {})
        self.bus.publish(event)
