"""The one front door for new jobs: every source (socket, hot folder, Redis, CLI) submits here.

It checks the path (exists, readable regular file, inside the configured input roots after
resolving symlinks) and the profile, stores the job durably, records the event and wakes the
pipeline. A source acknowledges its own input only after ``submit`` returned.
"""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import anyio
import structlog

from montaged.errors import MontageError
from montaged.events import EventBus
from montaged.model import Job, JobEvent, JobSpec
from montaged.store import JobStore

log = structlog.get_logger(__name__)


class SubmitError(MontageError):
    """A submission was refused; the message says what to change."""

    code = "bad_submission"


def check_source(path: str | Path, roots: Iterable[Path]) -> Path:
    """Resolve ``path`` and return it, or raise SubmitError saying what is wrong and what to do."""
    raw = Path(path).expanduser()
    if not raw.is_absolute():
        raise SubmitError(f"{path}: not an absolute path; give the full path of the file")
    try:
        resolved = raw.resolve(strict=True)
    except FileNotFoundError:
        raise SubmitError(f"{path}: no such file; check the path") from None
    except (OSError, RuntimeError) as e:
        raise SubmitError(f"{path}: cannot be resolved ({e}); check symlinks on the path") from None
    try:
        st = resolved.stat()
    except PermissionError:
        raise SubmitError(f"{path}: permission denied; let the montage user read it") from None
    if not stat.S_ISREG(st.st_mode):
        raise SubmitError(f"{path}: not a regular file; submit a media file")
    if not os.access(resolved, os.R_OK):
        raise SubmitError(f"{path}: not readable by the daemon's user; fix its permissions (chmod/chgrp)")
    allowed = [Path(r).expanduser().resolve() for r in roots]
    if not any(resolved.is_relative_to(root) for root in allowed):
        shown = ", ".join(str(r) for r in allowed) or "(none configured)"
        raise SubmitError(
            f"{path}: resolves to {resolved}, outside the input roots ({shown});"
            " move it under one of them or add its folder to paths.input_roots"
        )
    return resolved


class Submitter:
    """Validates and stores new jobs, then tells the pipeline and every subscriber."""

    def __init__(
        self,
        store: JobStore,
        bus: EventBus,
        *,
        input_roots: Iterable[Path],
        profiles: Iterable[str],
        wake: anyio.Event | None = None,
    ) -> None:
        self.store = store
        self.bus = bus
        self.input_roots = list(input_roots)
        self.profiles = set(profiles)
        self._wake = wake
        self.paused = False

    def set_wake(self, wake: anyio.Event) -> None:
        self._wake = wake

    def check(self, spec: JobSpec) -> JobSpec:
        """Return the spec with its source resolved, or raise SubmitError."""
        if spec.profile not in self.profiles:
            known = ", ".join(sorted(self.profiles))
            raise SubmitError(f"profile {spec.profile!r} is not configured; use one of: {known}")
        if not isinstance(spec.options, dict):
            raise SubmitError("options must be a JSON object")
        source = check_source(spec.source, self.input_roots)
        return JobSpec(
            source=str(source),
            profile=spec.profile,
            origin=spec.origin,
            options=dict(spec.options),
            output_dir=spec.output_dir,
        )

    async def submit(self, spec: JobSpec, *, content_hash: str | None = None) -> Job:
        checked = await anyio.to_thread.run_sync(self.check, spec)
        job = await self.store.submit(checked, content_hash=content_hash)
        # the store recorded job.submitted in the same transaction; tell the live subscribers
        self.announce(job.id, "job.submitted", {"source": checked.source, "origin": checked.origin,
                                                "profile": checked.profile, "job": job.to_dict()})
        log.info("job submitted", job_id=job.id, source=checked.source, origin=checked.origin)
        self.poke()
        return job

    def poke(self) -> None:
        """Wake the claim loop now instead of at its next poll."""
        if self._wake is not None:
            self._wake.set()

    def announce(self, job_id: str, kind: str, data: dict[str, Any] | None = None) -> None:
        """Publish an event the store already recorded (or one too frequent to record)."""
        self.bus.publish(JobEvent(job_id=job_id, kind=kind, at=time.time(), data=data or {}))

    async def emit(self, job_id: str, kind: str, data: dict[str, Any] | None = None) -> None:
        """Record an event in the store and publish it."""
        event = await self.store.add_event(job_id, kind, data or {})
        self.bus.publish(event)
