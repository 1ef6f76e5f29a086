"""Frozen records passed between stages and stored as JSON.

Every record has ``to_dict``/``from_dict`` so the store, the control socket and the sidecar JSON
all speak the same shapes (DESIGN.md "Contracts worth keeping stable").
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Self

from montaged.control.protocol import EventKind


class JobState(enum.StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"


TERMINAL_STATES = frozenset({JobState.DONE, JobState.FAILED, JobState.CANCELLED})

# Stage order of one job. A restarted daemon resumes at the first stage with no stored result.
STAGES: tuple[str, ...] = ("probe", "transcribe", "diarize", "select", "frame", "render")


class Record:
    """Mixin: plain-JSON round trip for frozen dataclasses (nested records and tuples included)."""

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = dataclasses.asdict(self)  # type: ignore[call-overload]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Self:
        names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        return cls(**{k: v for k, v in data.items() if k in names})


@dataclass(frozen=True)
class StreamInfo(Record):
    index: int
    kind: str  # "audio" | "video" | other
    codec: str
    width: int | None = None
    height: int | None = None
    fps: float | None = None
    sample_rate: int | None = None
    channels: int | None = None


@dataclass(frozen=True)
class MediaInfo(Record):
    """What the probe learned about one input file."""

    path: str
    content_hash: str
    size_bytes: int
    duration: float
    container: str
    has_audio: bool
    has_video: bool
    width: int = 0
    height: int = 0
    fps: float = 0.0
    rotation: int = 0
    video_codec: str | None = None
    audio_codec: str | None = None
    audio_sample_rate: int | None = None
    audio_channels: int | None = None
    streams: tuple[StreamInfo, ...] = ()

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Self:
        d = dict(data)
        d["streams"] = tuple(StreamInfo.from_dict(s) for s in d.get("streams", ()))
        return super().from_dict(d)

    @property
    def display_size(self) -> tuple[int, int]:
        """Width and height as shown, after applying rotation metadata."""
        if self.rotation % 180:
            return self.height, self.width
        return self.width, self.height


@dataclass(frozen=True)
class Word(Record):
    """One timed word. Times are seconds of media time."""

    text: str
    start: float
    end: float
    confidence: float
    speaker: str | None = None
    source: str = "whisper"
    speakers: tuple[str, ...] = ()
    """Everyone heard in the word (overlapped speech has several), ``speaker`` first; empty
    without diarization. ``speaker`` alone is who the word is attributed to."""

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Self:
        d = dict(data)
        d["speakers"] = tuple(d.get("speakers", ()))
        return super().from_dict(d)


def speakers_of(words: Iterable[Word]) -> tuple[str, ...]:
    """Everyone heard in these words, in order of first appearance: a word's main speaker, then
    the others overlapped speech carries."""
    heard = (s for w in words for s in (w.speakers or ((w.speaker,) if w.speaker is not None else ())))
    return tuple(dict.fromkeys(heard))


@dataclass(frozen=True)
class Transcript(Record):
    words: tuple[Word, ...]
    language: str
    engine: str  # "whisper" | "deepgram" | "rover"
    model: str
    duration: float
    notes: tuple[str, ...] = ()  # e.g. why the cloud ear was not used

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Self:
        d = dict(data)
        d["words"] = tuple(Word.from_dict(w) for w in d.get("words", ()))
        d["notes"] = tuple(d.get("notes", ()))
        return super().from_dict(d)

    @property
    def text(self) -> str:
        return " ".join(w.text for w in self.words)


@dataclass(frozen=True)
class SpeakerTurn(Record):
    """One speaker talking from ``start`` to ``end``; turns of different speakers overlap where
    they talk at once (``montaged.diarize.overlap.overlaps`` lists those stretches)."""

    start: float
    end: float
    speaker: str


@dataclass(frozen=True)
class ClipPlan(Record):
    """A selected moment: a time range on sentence boundaries, with why it was picked."""

    index: int
    start: float
    end: float
    score: float
    features: dict[str, float]
    reason: str
    text: str
    speakers: tuple[str, ...] = ()

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Self:
        d = dict(data)
        d["speakers"] = tuple(d.get("speakers", ()))
        return super().from_dict(d)


@dataclass(frozen=True)
class CropBox(Record):
    """Crop rectangle in source-video pixels at ``t`` seconds from the clip start."""

    t: float
    x: int
    y: int
    w: int
    h: int


@dataclass(frozen=True)
class CropPlan(Record):
    """How one clip is framed: a crop path, or a layout other than a single crop."""

    clip_index: int
    layout: str  # "crop" | "split" | "letterbox"
    path: tuple[CropBox, ...]
    second_path: tuple[CropBox, ...] = ()  # lower pane of a split screen
    confidence: float = 1.0
    notes: tuple[str, ...] = ()
    face_confidence: float | None = None  # mean detector score of the faces seen (frame/onscreen.py)
    speaker_in_crop: float | None = None  # share of samples with the active speaker's face in the crop
    identity: dict[str, Any] | None = None  # talk-wide faces and speaker → face map (frame/identity.py)
    wide: tuple[tuple[float, float], ...] = ()  # clip-time stretches framed wide for overlap (frame/wide.py)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Self:
        d = dict(data)
        d["path"] = tuple(CropBox.from_dict(b) for b in d.get("path", ()))
        d["second_path"] = tuple(CropBox.from_dict(b) for b in d.get("second_path", ()))
        d["notes"] = tuple(d.get("notes", ()))
        d["wide"] = tuple((float(a), float(b)) for a, b in d.get("wide", ()))
        return super().from_dict(d)


@dataclass(frozen=True)
class RenderedClip(Record):
    index: int
    path: str
    sidecar_path: str
    srt_path: str
    start: float
    end: float
    encoder: str
    width: int
    height: int
    frames: int
    seconds: float  # wall time spent rendering
    quality: dict[str, Any] | None = None  # montaged.render.quality.assess: measures, warnings, flags
    profile: str | None = None  # the profile it was rendered with (a job may have several)
    # a reel (index -1, start/end on the reel's clock): order, transition, seconds and each clip's
    # index, source range and place in the reel (render/reel_encode.py)
    reel: dict[str, Any] | None = None


@dataclass(frozen=True)
class MediaIdentity(Record):
    """Which file a job was submitted for. A rename keeps all four; a file put in its place (or
    written to since) changes at least one, so a stage can tell it is not the file that was checked."""

    device: int
    inode: int
    size: int
    mtime_ns: int

    @classmethod
    def parse(cls, data: Any) -> MediaIdentity | None:
        """The identity stored in a spec, or None for specs stored before it was recorded."""
        if not isinstance(data, dict):
            return None
        values = [data.get(f.name) for f in dataclasses.fields(cls)]
        ints = [v for v in values if isinstance(v, int) and not isinstance(v, bool)]
        return cls(*ints) if len(ints) == len(values) else None


@dataclass(frozen=True)
class JobSpec(Record):
    """What a client asks for: one input file and how to cut it."""

    source: str
    profile: str = "vertical"
    origin: str = "socket"  # socket | hotfolder | redis | cli
    options: dict[str, Any] = field(default_factory=dict)  # e.g. {"speakers": 2, "max_clips": 3}
    output_dir: str | None = None
    media: MediaIdentity | None = None  # recorded at submit; stages refuse a file that differs

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Self:
        d = dict(data)
        d["media"] = MediaIdentity.parse(d.get("media"))
        return super().from_dict(d)


@dataclass(frozen=True)
class Job(Record):
    id: str
    spec: JobSpec
    state: JobState
    stage: str | None
    progress: float
    created_at: float
    updated_at: float
    attempts: int = 0
    content_hash: str | None = None
    error_class: str | None = None
    error_message: str | None = None
    error_stage: str | None = None
    stopped_at: str | None = None  # stage a graceful shutdown interrupted
    result: dict[str, Any] = field(default_factory=dict)  # clips, notes, cost
    worker: str | None = None

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Self:
        d = dict(data)
        d["spec"] = JobSpec.from_dict(d["spec"])
        d["state"] = JobState(d["state"])
        return super().from_dict(d)


@dataclass(frozen=True)
class JobEvent(Record):
    """One event of one job (``job_id`` is "" for daemon-wide kinds); ``data`` is the payload that
    control/protocol.py defines for ``kind``."""

    job_id: str
    kind: EventKind
    at: float
    data: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Self:
        d = dict(data)
        d["kind"] = EventKind(d["kind"])
        return super().from_dict(d)


@dataclass(frozen=True, eq=False)
class AudioChunk:
    """A run of decoded audio: 16 kHz mono float32 samples starting at ``start`` seconds."""

    start: float
    samples: Any  # numpy.ndarray[float32], 1-D; typed loosely so model.py needs no numpy import

    SAMPLE_RATE = 16_000

    @property
    def end(self) -> float:
        return self.start + len(self.samples) / self.SAMPLE_RATE
