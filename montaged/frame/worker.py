"""Run :func:`~montaged.frame.plan.plan_crop` in worker processes, off the event loop.

Vision is CPU-bound and holds the GIL in places (PyAV frame conversion, numpy glue), so it runs in
a :class:`~montaged.procpool.ProcPool`: a fresh interpreter per worker (no forked locks or threads),
each loading OpenCV and the detector once; a worker that dies fails (after one retry) only its
clip, with ``worker_died``, and is replaced. Each worker gets ``threads`` threads for OpenCV and OpenMP
(libfacedetection uses libgomp, whose idle threads spin; on a 2-core machine shared with
Whisper, one busy thread per worker is what keeps the other stages moving).

A job's clips are framed in two rounds, so that a person and a speaker are the same across the
whole talk (identity.py): first every clip is analysed (faces, embeddings, mouths) and reports its
evidence; the daemon's process joins the evidence into talk faces and a speaker → face map; then
every clip's crop is planned from its analysis with that map.

Use :class:`FrameWorkers` as an async context manager to keep one pool for the daemon's life, or
call :func:`plan_crops_in_process` with none and it makes (and closes) its own.
"""

from __future__ import annotations

import os
import pickle
import time
from collections.abc import Sequence
from pathlib import Path

import anyio
import structlog

from montaged.config import FrameConfig, ProfileConfig
from montaged.frame.identity import ClipFaces, TalkIdentity, identify_talk
from montaged.model import ClipPlan, CropPlan, MediaInfo, SpeakerTurn
from montaged.procpool import STOP_TIMEOUT, PooledModel, ProcPool
from montaged.resources_plan import usable_cores, vision_size

log = structlog.get_logger(__name__)


def _init_worker(threads: int) -> None:
    """Pool initializer: cap threads before OpenCV or libgomp start theirs."""
    os.environ["OMP_NUM_THREADS"] = str(threads)
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    import cv2

    from montaged.logging import setup_worker

    setup_worker()

    cv2.setNumThreads(threads)


def _plan_one(
    source: Path,
    info: MediaInfo,
    clip: ClipPlan,
    profile: ProfileConfig,
    cfg: FrameConfig,
    turns: Sequence[SpeakerTurn],
) -> tuple[CropPlan, float]:
    """Worker-side: the plan and the CPU seconds it took (for the vision-cost metric)."""
    from montaged.frame.plan import plan_crop

    t0 = time.process_time()
    plan = plan_crop(source, info, clip, profile, cfg, turns)
    return plan, time.process_time() - t0


def _analyse_one(
    source: Path, info: MediaInfo, clip: ClipPlan, cfg: FrameConfig, turns: Sequence[SpeakerTurn]
) -> tuple[ClipFaces, bytes, float]:
    """Worker-side, first round: the clip's evidence for the talk's identities, its analysis
    (pickled here, so the daemon's process never loads OpenCV to carry it) and the CPU seconds."""
    from montaged.frame.analyse import analyse_clip
    from montaged.frame.evidence import clip_faces

    t0 = time.process_time()
    an = analyse_clip(source, info, clip.start, clip.end, cfg)
    faces = clip_faces(an, clip.index, turns)
    return faces, pickle.dumps(an, protocol=pickle.HIGHEST_PROTOCOL), time.process_time() - t0


def _plan_analysed(
    analysis: bytes,
    clip: ClipPlan,
    profile: ProfileConfig,
    cfg: FrameConfig,
    turns: Sequence[SpeakerTurn],
    talk: TalkIdentity,
    position: int,
) -> tuple[CropPlan, float]:
    """Worker-side, second round: the crop plan from the first round's analysis, with the tracks
    renumbered to talk faces and the talk's speaker → face map."""
    from montaged.frame.evidence import relabel
    from montaged.frame.plan import build_plan

    t0 = time.process_time()
    an = pickle.loads(analysis)
    relabel(an, talk.faces[position])
    plan = build_plan(
        an, clip.index, profile, cfg, turns, speakers=talk.mapping(), identity=talk.sidecar(position)
    )
    return plan, time.process_time() - t0


class FrameWorkers(PooledModel):
    """A pool of framing processes, started on the first clip.

    Args:
        workers: processes in the pool (the daemon's sizing plan: ``plan.vision_workers``).
        threads: OpenCV/OpenMP threads per process; default: usable cores // workers, at least 1.
        stop_timeout: seconds a clip being framed gets at close before its process is killed.
    """

    def __init__(
        self, workers: int = 1, threads: int | None = None, *, stop_timeout: float = STOP_TIMEOUT
    ) -> None:
        if workers < 1:
            raise ValueError(f"frame workers must be at least 1 (got {workers})")
        self.workers = workers
        self.threads = threads or max(1, usable_cores() // workers)
        self.pool = ProcPool(
            "vision", workers=workers, initializer=_init_worker, initargs=(self.threads,), warm=False,
            stop_timeout=stop_timeout, hint="; lower frame.workers or frame.analysis_width",
        )  # fmt: skip

    async def plan(
        self,
        source: Path,
        info: MediaInfo,
        clip: ClipPlan,
        profile: ProfileConfig,
        cfg: FrameConfig,
        turns: Sequence[SpeakerTurn] = (),
    ) -> tuple[CropPlan, float]:
        """Plan one clip in a worker; returns the plan and the worker's CPU seconds."""
        return await self.pool.run(_plan_one, source, info, clip, profile, cfg, tuple(turns))

    async def analyse(
        self, source: Path, info: MediaInfo, clip: ClipPlan, cfg: FrameConfig, turns: Sequence[SpeakerTurn]
    ) -> tuple[ClipFaces, bytes, float]:
        """First round for one clip (see module doc): evidence, pickled analysis, CPU seconds."""
        return await self.pool.run(_analyse_one, source, info, clip, cfg, tuple(turns))

    async def plan_analysed(
        self,
        analysis: bytes,
        clip: ClipPlan,
        profile: ProfileConfig,
        cfg: FrameConfig,
        turns: Sequence[SpeakerTurn],
        talk: TalkIdentity,
        position: int,
    ) -> tuple[CropPlan, float]:
        """Second round for the clip at ``position``: its plan and the worker's CPU seconds."""
        return await self.pool.run(_plan_analysed, analysis, clip, profile, cfg, tuple(turns), talk, position)


async def plan_crops_in_process(
    source: Path,
    info: MediaInfo,
    clips: Sequence[ClipPlan],
    profile: ProfileConfig,
    cfg: FrameConfig,
    turns: Sequence[SpeakerTurn] = (),
    *,
    workers: FrameWorkers | None = None,
    job_id: str | None = None,
) -> list[CropPlan]:
    """Crop plans for ``clips`` (same order), computed in parallel worker processes.

    Args:
        source: the input file; only the clips' ranges are decoded.
        info: its probe result (size, rotation, fps).
        clips: the selected clips.
        profile: output aspect and size.
        cfg: framing settings.
        turns: diarization turns in media time (may be empty).
        workers: a pool to use; None makes one for this call (spawn start-up: about a second).
        job_id: bound to the log lines.
    """
    bound = log.bind(job_id=job_id, stage="frame")
    if not clips:
        return []
    if workers is None:
        workers_wanted, _ = vision_size(cfg, usable_cores())
        async with FrameWorkers(min(workers_wanted, len(clips))) as pool:
            return await plan_crops_in_process(
                source, info, clips, profile, cfg, turns, workers=pool, job_id=job_id
            )
    results: list[CropPlan | None] = [None] * len(clips)
    cpu = [0.0] * len(clips)
    t0 = time.perf_counter()
    if not cfg.enabled:
        for i, clip in enumerate(clips):
            results[i], cpu[i] = await workers.plan(source, info, clip, profile, cfg, turns)
    else:
        evidence: list[ClipFaces | None] = [None] * len(clips)
        analyses = [b""] * len(clips)

        async def analyse(i: int, clip: ClipPlan) -> None:
            evidence[i], analyses[i], cpu[i] = await workers.analyse(source, info, clip, cfg, turns)

        async with anyio.create_task_group() as tg:
            for i, clip in enumerate(clips):
                tg.start_soon(analyse, i, clip)
        talk = identify_talk([e for e in evidence if e is not None])
        bound.info(
            "talk identities", faces=talk.count,
            speakers={k: [v.face, round(v.confidence, 2)] for k, v in talk.speakers.items()},
        )  # fmt: skip

        async def one(i: int, clip: ClipPlan) -> None:
            plan, seconds = await workers.plan_analysed(analyses[i], clip, profile, cfg, turns, talk, i)
            results[i], cpu[i], analyses[i] = plan, cpu[i] + seconds, b""
            bound.debug(
                "clip framed", clip=clip.index, layout=plan.layout, knots=len(plan.path),
                confidence=plan.confidence, cpu_s=round(cpu[i], 2), notes=list(plan.notes),
            )  # fmt: skip

        async with anyio.create_task_group() as tg:
            for i, clip in enumerate(clips):
                tg.start_soon(one, i, clip)
    out = [r for r in results if r is not None]
    seconds = sum(c.end - c.start for c in clips)
    bound.info(
        "clips framed",
        clips=len(out),
        layouts=[p.layout for p in out],
        wall_s=round(time.perf_counter() - t0, 2),
        cpu_s=round(sum(cpu), 2),
        ms_per_output_s=round(1000 * sum(cpu) / max(seconds, 1e-9), 1),
    )
    return out
