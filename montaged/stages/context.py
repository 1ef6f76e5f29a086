"""What a job carries between stages, and the long-lived resources every job shares."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
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
from montaged.model import ClipPlan, CropPlan, Job, MediaInfo, RenderedClip, SpeakerTurn, Transcript
from montaged.procpool import PoolHealth
from montaged.select.features import AudioFeatureTrack
from montaged.store import JobStore
from montaged.store.lease import JobLease

ProgressFn = Callable[["JobContext", str, float], None]


def param_key(*parts: Any) -> str:
    """A short stable hash of the parameters that produce a stage result."""
    blob = json.dumps(parts, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


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
    progress: ProgressFn
    work_dir: Path
    diarizer: DiarizerPool | None = None  # None: each diarization starts its own process

    def pool_health(self) -> list[PoolHealth]:
        """Every worker pool's health (``healthy`` is False while a dead worker is replaced)."""
        pools = [self.whisper, self.frame_workers, self.diarizer]
        return [p.health() for p in pools if p is not None]


@dataclass
class JobContext:
    """One job's working set as it moves through the stages (results also live in the store).

    ``lease`` is the job's claim: stages write their results through it (``ctx.lease.put_result``),
    so a stale holder's writes are refused once another worker has taken the job over.
    """

    job: Job
    lease: JobLease
    media: MediaInfo | None = None
    transcript: Transcript | None = None
    features: AudioFeatureTrack | None = None
    turns: list[SpeakerTurn] = field(default_factory=list)
    clips: list[ClipPlan] = field(default_factory=list)
    candidates: list[dict[str, Any]] = field(default_factory=list)  # select's ranking, for previews
    crops: list[CropPlan | None] = field(default_factory=list)
    rendered: list[RenderedClip] = field(default_factory=list)
    keys: dict[str, str] = field(default_factory=dict)
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
        assert self.media is not None, "probe must run first"
        return self.media

    def need_transcript(self) -> Transcript:
        assert self.transcript is not None, "transcribe must run first"
        return self.transcript
