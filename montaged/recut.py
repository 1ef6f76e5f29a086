"""A re-cut: a new job for one range of a finished job's source, from its clip, candidate or times.

The new job runs the same stages; its transcript, speakers and analysis come from the caches the
first job filled (same file, same settings), select cuts the asked-for range instead of ranking,
and the render writes under the new job's names, so the earlier clips stay as they were.
"""

from __future__ import annotations

from typing import Any

from montaged.errors import MontageError
from montaged.model import Job, JobSpec

# options of the first job that do not carry over: they choose moments, and a re-cut names its own
NOT_CARRIED = ("max_clips", "stop_after", "ranges", "exact", "recut_of", "reel")
"""Options of the first job a re-cut leaves out: it renders the one asked-for range, as a clip."""


class RecutError(MontageError):
    """A re-cut request that names no range, or a clip or candidate the job does not have."""

    code = "bad_request"


def _number(options: dict[str, Any], key: str) -> float | None:
    value = options.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise RecutError(f"options.{key}: seconds of the source, 0 or more (got {value!r})")
    return float(value)


def _base(job: Job, options: dict[str, Any]) -> dict[str, Any]:
    """The clip or candidate row the request starts from; {} for times alone."""
    clip, candidate = options.get("clip"), options.get("candidate")
    if clip is not None and candidate is not None:
        raise RecutError("name either options.clip or options.candidate, not both")
    if clip is not None:
        rows = job.result.get("clips") or []
        # a reel's clips count too: the reel lists each one's index and source range
        rows = [*rows, *(c for r in rows for c in (r.get("reel") or {}).get("clips") or [])]
        found = [r for r in rows if isinstance(clip, int) and clip >= 1 and r.get("index") == clip - 1]
        if not found:
            count = len({r.get("index") for r in rows if isinstance(r.get("index"), int) and r["index"] >= 0})
            raise RecutError(f"options.clip: job {job.id} has clips 1 to {count} (got {clip!r});"
                             " `montagectl show ID` lists them")
        return {**found[0], "clip": clip}
    if candidate is not None:
        rows = job.result.get("candidates") or []
        found = [r for r in rows if isinstance(candidate, int) and r.get("rank") == candidate]
        if not found:
            raise RecutError(f"options.candidate: job {job.id} has candidates 1 to {len(rows)} (got"
                             f" {candidate!r}); `montagectl show ID` lists them with their rank")
        return {**found[0], "candidate": candidate}
    return {}


def recut_spec(job: Job, options: dict[str, Any], *, profile: str | None) -> JobSpec:
    """The spec of the re-cut job ``options`` asks for (clip or candidate, start, end, exact,
    captions), on ``job``'s source and output folder."""
    if job.state != "done":
        raise RecutError(f"job {job.id} is {job.state}; re-cut a finished job (a preview counts)")
    base = _base(job, options)
    given_start = _number(options, "start")
    given_end = _number(options, "end")
    start = given_start if given_start is not None else base.get("start")
    end = given_end if given_end is not None else base.get("end")
    if start is None or end is None:
        raise RecutError("name a clip (--clip N), a candidate (--candidate R) or both --start and --end")
    if not start < end:
        raise RecutError(f"the range must end after it starts (got {start:g}-{end:g} s)")
    exact = options.get("exact", False)
    if not isinstance(exact, bool):
        raise RecutError(f"options.exact: true or false (got {exact!r})")
    if not exact:  # an edge carried over from the chosen clip stays where selection put it
        carried_edges = [e for e, given in (("start", given_start), ("end", given_end)) if given is None]
        exact = True if len(carried_edges) == 2 else (carried_edges[0] if carried_edges else False)
    carried = {k: v for k, v in job.spec.options.items() if k not in NOT_CARRIED}
    if profile is not None:  # the profile asked for, not the first job's several
        carried.pop("profiles", None)
    recut_of: dict[str, Any] = {"job_id": job.id}
    for key in ("clip", "candidate", "score", "reason"):
        if base.get(key) is not None:
            recut_of[key] = base[key]
    new = {**carried, "ranges": [[start, end]], "exact": exact, "recut_of": recut_of}
    if options.get("captions") is not None:
        new["captions"] = options["captions"]
    return JobSpec(source=job.spec.source, profile=profile or job.spec.profile, origin="socket",
                   options=new, output_dir=job.spec.output_dir)
