"""Pick the video encoder once at start-up by really opening it, and say which one won.

``ffmpeg -encoders`` lists h264_nvenc on machines with no usable NVENC (no GPU, or a datacenter
GPU without the engine, e.g. A100/H100), so being listed proves nothing: we run a 0.2 s encode
with each candidate and keep the first that succeeds. NVENC flags live here as named presets
(frigate ``ffmpeg_presets.py``), never spread through argv code.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass

import structlog

from montaged import metrics
from montaged.errors import RenderError
from montaged.media.ffmpeg import encoder_probe_argv

log = structlog.get_logger(__name__)

PROBE_TIMEOUT = 30.0
"""Seconds one trial encode may take; a CUDA context can take a few seconds to come up."""

# Video codec flags per encoder, without the quality value (added per profile by quality_args).
# NVENC: p4 = "medium (default)" of the p1-p7 SDK presets, tune hq, VBR with a constant-quality
# target and no bitrate cap (-b:v 0), so -cq plays the role x264's -crf plays.
PRESETS: dict[str, tuple[str, ...]] = {
    "h264_nvenc": ("-c:v", "h264_nvenc", "-preset", "p4", "-tune", "hq", "-rc", "vbr", "-b:v", "0",
                   "-spatial-aq", "1", "-profile:v", "high"),
    "hevc_nvenc": ("-c:v", "hevc_nvenc", "-preset", "p4", "-tune", "hq", "-rc", "vbr", "-b:v", "0",
                   "-spatial-aq", "1", "-tag:v", "hvc1"),
    "libx264": ("-c:v", "libx264", "-profile:v", "high"),
}  # fmt: skip
QUALITY_FLAG = {"h264_nvenc": "-cq", "hevc_nvenc": "-cq", "libx264": "-crf"}
X264_PRESETS = (
    "ultrafast",
    "superfast",
    "veryfast",
    "faster",
    "fast",
    "medium",
    "slow",
    "slower",
    "veryslow",
)
X264_TUNED: dict[str, tuple[str, ...]] = {
    # x264's ultrafast with CABAC and the in-loop deblocking filter (default strength) turned
    # back on; ultrafast drops both, and they cost little of its time. On 1080x1920 crops of
    # 1080p talks at CRF 23 it matched or beat veryfast's SSIM and PSNR with 0.4x veryfast's
    # CPU, for about 1.75x the bytes; plain ultrafast lost up to 0.003 SSIM (blocking on flat
    # walls) at 2.4x the bytes. Measured in docs/performance.md.
    "ultrafast-deblock": ("-preset", "ultrafast", "-x264-params", "cabac=1:deblock=0,0"),
}
AUTO_ORDER = ("h264_nvenc", "hevc_nvenc", "libx264")
DEFAULT_X264_PRESET = "ultrafast-deblock"  # config.RenderConfig.preset's default


@dataclass(frozen=True)
class EncoderChoice:
    """The encoder every render uses, with its codec flags (quality excluded)."""

    name: str
    hardware: bool
    args: tuple[str, ...]

    def video_args(self, quality: int) -> list[str]:
        """Codec flags plus the constant-quality value (x264 ``-crf`` / NVENC ``-cq``, 0-51)."""
        return [*self.args, QUALITY_FLAG[self.name], str(quality)]


def encoder_args(name: str, x264_preset: str = DEFAULT_X264_PRESET) -> tuple[str, ...]:
    if name not in PRESETS:
        raise RenderError(f"render.encoder: unknown encoder {name!r}; use one of auto, {', '.join(PRESETS)}")
    if name == "libx264":
        if x264_preset in X264_TUNED:
            return (*PRESETS[name], *X264_TUNED[x264_preset])
        if x264_preset not in X264_PRESETS:
            raise RenderError(
                f"render.preset: {x264_preset!r} is not a libx264 preset "
                f"({', '.join((*X264_TUNED, *X264_PRESETS))})"
            )
        return (*PRESETS[name], "-preset", x264_preset)
    return PRESETS[name]


def try_encoder(name: str, *, ffmpeg: str = "ffmpeg", x264_preset: str = DEFAULT_X264_PRESET) -> str | None:
    """Run the trial encode; ``None`` when it worked, else ffmpeg's last words (why it did not)."""
    choice = EncoderChoice(name, name != "libx264", encoder_args(name, x264_preset))
    argv = encoder_probe_argv(ffmpeg, choice.video_args(23))
    try:
        done = subprocess.run(argv, capture_output=True, timeout=PROBE_TIMEOUT, check=False)
    except FileNotFoundError:
        raise RenderError(f"ffmpeg not found ({ffmpeg}); install ffmpeg or set render.ffmpeg") from None
    except subprocess.TimeoutExpired:
        return f"trial encode took longer than {PROBE_TIMEOUT:.0f} s"
    if done.returncode == 0:
        return None
    lines = done.stderr.decode("utf-8", "replace").strip().splitlines()
    return "\n".join(lines[-10:]) or f"exit status {done.returncode}"


def select_encoder(
    preference: str = "auto", ffmpeg: str = "ffmpeg", *, x264_preset: str = DEFAULT_X264_PRESET
) -> EncoderChoice:
    """Open the preferred encoder (``auto``: h264_nvenc, then hevc_nvenc, then libx264).

    An explicit choice that fails raises :class:`RenderError` with ffmpeg's reason instead of
    silently falling back: the operator asked for it and should learn it does not work. The
    choice is logged and exported as the ``montage_encoder`` info metric.
    """
    candidates = AUTO_ORDER if preference == "auto" else (preference,)
    reasons: dict[str, str] = {}
    for name in candidates:
        why = try_encoder(name, ffmpeg=ffmpeg, x264_preset=x264_preset)
        if why is None:
            choice = EncoderChoice(name, name != "libx264", encoder_args(name, x264_preset))
            metrics.ENCODER.info({"name": name, "hardware": str(choice.hardware).lower()})
            log.info("encoder selected", encoder=name, hardware=choice.hardware, passed_over=sorted(reasons))
            return choice
        reasons[name] = why
        log.info("encoder unavailable", encoder=name, reason=why.replace("\n", " | "))
    detail = "\n".join(f"{n}: {r}" for n, r in reasons.items())
    if preference != "auto":
        raise RenderError(
            f'render.encoder = {preference!r} does not open on this machine; set render.encoder = "auto" '
            f"(falls back to libx264) or fix the driver/ffmpeg build.\n{detail}"
        )
    raise RenderError(
        f"no video encoder opens with {ffmpeg} (tried {', '.join(candidates)}); install an ffmpeg with "
        f"libx264 or set render.ffmpeg.\n{detail}"
    )
