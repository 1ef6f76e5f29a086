"""What a job carries between stages, and the long-lived resources every job shares."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio

from montaged.asr.budget import Budget
from montaged.asr.cache import TranscriptCache
from montaged.asr.whisper_pool import WhisperPool
from montaged.config import Secrets, Settings
from montaged.diarize.worker import DiarizerPool
from montaged.frame.worker import FrameWorkers
from montaged.media.encoders import EncoderChoice
from montaged.model import Job, MediaInfo, RenderedClip, SpeakerTurn, Transcript
from montaged.procpool import PoolHealth
from montaged.stages.background import Pending, SideTasks
from montaged.stages.results import Framing, Heard, Selection, StageResults, Turns
from montaged.store import JobStore
from montaged.store.lease import JobLease


@dataclass
class Resources:
    """Shared by every job of one process: pools load their models once, the encoder is probed once."""

    settings: Settings
    store: JobStore
    whisper: WhisperPool
    cache: TranscriptCache
    budget: Budget
    frame_workers: FrameWorkers | None
    encoder: EncoderChoice
    secrets: Secrets
    render_slots: anyio.CapacityLimiter
    work_dir: Path
    diarizer: DiarizerPool | None = None  # None: each diarization starts its own process

    def pool_health(self) -> list[PoolHealth]:
        """Every worker pool's health (``healthy`` is False while a dead worker is replaced)."""
        pools = [self.whisper, self.frame_workers, self.diarizer]
        return [p.health() for p in pools if p is not None]

    async def job_cost(self, job_id: str) -> float:
        """Cloud money this job has spent (settled, its ``job:`` ledger row)."""
        rows = await self.store.spend(self.budget.caps, job_id=job_id)
        return sum(r.spent for r in rows if r.period.startswith("job:"))


@dataclass
class JobContext:
    """One job's working set as it moves through the stages (stored results also live in the store).

    ``lease`` is the job's claim: stages write their results through it (``ctx.lease.put_result``),
    so a stale holder's writes are refused once another worker has taken the job over.
    ``side`` runs work a stage starts for a later one (the pipeline gives every job its own);
    ``diarizing`` is such work: the turns transcribe started, which the diarize stage awaits.
    """

    job: Job
    lease: JobLease
    results: StageResults = field(default_factory=StageResults)
    side: SideTasks | None = None
    diarizing: Pending[list[SpeakerTurn]] | None = None
    cached: set[str] = field(default_factory=set)
    stage_seconds: dict[str, float] = field(default_factory=dict)
    timeline: dict[str, dict[str, float]] = field(default_factory=dict)  # within-stage milestones
    notes: list[str] = field(default_factory=list)
    cost: float = 0.0
    started_at: float = field(default_factory=time.time)
    cancelled: bool = False
    scope: anyio.CancelScope | None = None

    @property
    def id(self) -> str:
        return self.job.id

    @property
    def source(self) -> Path:
        return Path(self.job.spec.source)

    def option(self, name: str, default: Any = None) -> Any:
        return self.job.spec.options.get(name, default)

    def need_media(self) -> MediaInfo:
        assert self.results.media is not None, "probe must run first"
        return self.results.media

    def need_heard(self) -> Heard:
        assert self.results.heard is not None, "transcribe must run first"
        return self.results.heard

    def need_transcript(self) -> Transcript:
        """The words, each with its speaker once diarize has run."""
        if self.results.turns is not None:
            return self.results.turns.transcript
        return self.need_heard().transcript

    def need_turns(self) -> Turns:
        assert self.results.turns is not None, "diarize must run first"
        return self.results.turns

    def need_selection(self) -> Selection:
        assert self.results.selection is not None, "select must run first"
        return self.results.selection

    def need_framing(self) -> Framing:
        assert self.results.framing is not None, "frame must run first"
        return self.results.framing

    def rendered(self) -> tuple[RenderedClip, ...]:
        """The finished clips; none for a job that stopped before render (a preview)."""
        return self.results.rendered.clips if self.results.rendered is not None else ()
