"""What each stage hands to the later ones: one frozen record per stage, set once.

A stage reads earlier results through :class:`~montaged.stages.context.JobContext`'s ``need_*``
accessors and sets its own field of :class:`StageResults`. A result that is also stored
(transcribe, diarize, select, frame) carries the key it is stored under, so a later stage's key
can start from it: change an earlier stage's parameters and every later stored result misses.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from montaged.model import ClipPlan, CropPlan, MediaInfo, RenderedClip, SpeakerTurn, Transcript
from montaged.select.features import AudioFeatureTrack


@dataclass(frozen=True)
class Heard:
    """transcribe: the words (both ears fused, or one with notes) and the audio feature track."""

    key: str
    transcript: Transcript
    features: AudioFeatureTrack

    def to_dict(self) -> dict[str, Any]:
        return {"transcript": self.transcript.to_dict(), "features": self.features.to_dict()}

    @classmethod
    def from_dict(cls, key: str, d: dict[str, Any]) -> Heard:
        return cls(key, Transcript.from_dict(d["transcript"]), AudioFeatureTrack.from_dict(d["features"]))


@dataclass(frozen=True)
class Turns:
    """diarize: who speaks when (empty when diarization is off or found no speech turns), and the
    transcript with each word given its speaker."""

    key: str
    turns: tuple[SpeakerTurn, ...]
    transcript: Transcript


@dataclass(frozen=True)
class Selection:
    """select: the clips to make (time order) and every ranked moment, picked or not (previews)."""

    key: str
    clips: tuple[ClipPlan, ...]
    candidates: tuple[dict[str, Any], ...] = ()


@dataclass(frozen=True)
class Framing:
    """frame: one crop path per clip; None where the renderer centre-crops or draws an audiogram.
    ``crops`` are the job's first profile's; ``by_profile`` holds every profile's (profiles of one
    aspect share theirs)."""

    crops: tuple[CropPlan | None, ...]
    by_profile: dict[str, tuple[CropPlan | None, ...]] = field(default_factory=dict)

    def crops_for(self, profile: str) -> tuple[CropPlan | None, ...]:
        return self.by_profile.get(profile, self.crops)


@dataclass(frozen=True)
class Rendered:
    """render: the finished clips, in clip order."""

    clips: tuple[RenderedClip, ...]


@dataclass
class StageResults:
    """Every stage's result for one job; None until that stage has run."""

    media: MediaInfo | None = None  # probe
    heard: Heard | None = None  # transcribe
    turns: Turns | None = None  # diarize
    selection: Selection | None = None  # select
    framing: Framing | None = None  # frame
    rendered: Rendered | None = None  # render
