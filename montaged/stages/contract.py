"""The stage contract: what the pipeline needs to know about a stage, and what a stage is given.

A stage is a name (stored as the job's stage), the earlier stages whose results it reads, its
share of a job's wall time (overall progress), how many jobs it works on at once by default, and
``run(ctx, res, progress)``. ``run`` reads earlier results from ``ctx``, sets its own result on
``ctx.results`` (and stores it through ``ctx.lease``), and reports its own progress (0..1) through
``progress``, which is bound to the job and the stage; the pipeline reports 1.0 when ``run``
returns. The daemon's stages are :func:`montaged.stages.default_stages`; tests pass their own.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Generic, Protocol

from typing_extensions import TypeVar

from montaged.stages.context import JobContext, Resources

Progress = Callable[[float], None]
"""A stage's own progress, 0..1, for the job and stage it was given for."""

LIGHT_STAGE_WORKERS = 2  # probe, diarize, select: short work, a thread each


class Shared(Protocol):
    """What the pipeline itself asks of the resources it hands to every stage."""

    async def job_cost(self, job_id: str) -> float:
        """Cloud money this job has spent so far (its finished record carries it)."""
        ...


R = TypeVar("R", bound=Shared, default=Resources)


def _light(res: object) -> int:
    return LIGHT_STAGE_WORKERS


@dataclass(frozen=True)
class Stage(Generic[R]):
    """One stage of the pipeline.

    Args:
        name: the stage's name, stored as the job's stage and the ``stopped_at`` of a release.
        run: ``async run(ctx, res, progress)``: does the stage's work for one job.
        needs: the earlier stages whose results ``run`` reads; each must come before it.
        weight: its share of a typical job's wall time (the weights of all stages sum to 1).
        workers: jobs it works on at once, from the resources (``daemon.stage_workers`` wins).
    """

    name: str
    run: Callable[[JobContext, R, Progress], Awaitable[None]]
    needs: tuple[str, ...] = ()
    weight: float = 0.0
    workers: Callable[[R], int] = _light


def check_stages(stages: Sequence[Stage[R]]) -> None:
    """Refuse a stage list the pipeline could not run: empty, a name twice, a need not before."""
    if not stages:
        raise ValueError("a pipeline needs at least one stage")
    seen: list[str] = []
    for stage in stages:
        if stage.name in seen:
            raise ValueError(f"stage {stage.name!r} is listed twice")
        missing = [n for n in stage.needs if n not in seen]
        if missing:
            raise ValueError(f"stage {stage.name!r} needs {missing}, which must come before it")
        seen.append(stage.name)
