"""Errors a user can act on. Each says what went wrong, where, and what to do."""

from __future__ import annotations


class MontageError(Exception):
    """Base for errors reported to users; ``code`` is stable for scripts and the socket."""

    code = "error"


class ConfigError(MontageError):
    code = "bad_config"


class MediaError(MontageError):
    """A per-job input problem: the job fails, the daemon keeps serving."""

    code = "bad_media"


class StoreError(MontageError):
    code = "store"


class StoreUnavailable(StoreError):
    """The database cannot be reached; callers retry with backoff."""

    code = "store_unavailable"


class LeaseLost(StoreError):
    """A write from a claim that is no longer the job's current one: another worker took the job
    over after this one's lease lapsed. Refused, so only the current holder changes the job; the
    stale holder stops its copy and touches nothing more."""

    code = "lease_lost"


class SchemaTooNew(StoreError):
    code = "schema_too_new"


class RenderError(MontageError):
    code = "render"


class DiskFullError(RenderError):
    code = "disk_full"


class ModelError(MontageError):
    code = "model"


class JobCancelled(MontageError):
    code = "cancelled"
