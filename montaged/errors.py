"""Errors a user can act on. Each says what went wrong, where, and what to do."""

from __future__ import annotations

from typing import TypeVar

E = TypeVar("E", bound=BaseException)


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


def leaf_errors(exc: BaseException) -> list[BaseException]:
    """The errors inside ``exc``, in order: task groups wrap what their tasks raised in (nested)
    exception groups, and what happened is in the leaves. An error that is no group is its own
    only leaf."""
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in leaf_errors(inner)]
    return [exc]


def first_leaf(exc: BaseException, *kinds: type[E]) -> E | None:
    """The first leaf of ``exc`` that is a ``kinds[0]``, else the first that is a ``kinds[1]``…;
    None when no leaf is any of them. The order of ``kinds`` is the order of importance."""
    leaves = leaf_errors(exc)
    for kind in kinds:
        for leaf in leaves:
            if isinstance(leaf, kind):
                return leaf
    return None
