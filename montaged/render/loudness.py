"""Clip loudness to a target (EBU R128): measure the clip's range once, correct it in the encode.

ffmpeg's ``loudnorm`` in two passes: a first, audio-only pass over the clip's range measures
integrated loudness, loudness range and true peak; the encoder then applies ``loudnorm`` with
those measurements, which is a plain linear gain whenever the target true peak allows it (and
loudnorm's look-ahead limiter where a quiet, peaky clip would clip). Both passes see the same
stereo downmix the clip will carry, so the measurement is of what is heard.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio

from montaged.config import ProfileConfig
from montaged.errors import RenderError

STEREO = "aformat=channel_layouts=stereo"
"""Clips are stereo: a mono source is measured and corrected as the stereo it becomes."""
CODEC_HEADROOM_DB = 0.6
"""The limiter aims this far under the ceiling: AAC's reconstruction overshoots the PCM it was
given by a few tenths of a dB at the true-peak level, and the ceiling is for the clip as written."""
LRA_FLOOR = 11.0
"""Loudness range target of at least this (LU); a wider range than measured keeps loudnorm linear."""


@dataclass(frozen=True)
class Loudness:
    """One measurement of a stretch of sound (loudnorm's ``input_*`` figures)."""

    integrated: float  # LUFS
    true_peak: float  # dBTP
    lra: float  # LU
    threshold: float  # LUFS, the gating threshold
    offset: float  # dB, loudnorm's target offset

    def to_dict(self) -> dict[str, float]:
        return {"integrated_lufs": round(self.integrated, 2), "true_peak_dbtp": round(self.true_peak, 2),
                "lra": round(self.lra, 2)}


def measure_argv(
    ffmpeg: str, source: Path, start: float, seconds: float, *, target: float, true_peak: float
) -> list[str]:
    return [
        ffmpeg, "-hide_banner", "-nostdin", "-nostats", "-loglevel", "info",
        "-ss", f"{start:.6f}", "-t", f"{seconds:.6f}", "-i", str(source),
        "-map", "0:a:0", "-vn", "-sn", "-dn",
        "-af", f"{STEREO},loudnorm=I={target}:TP={true_peak}:LRA={LRA_FLOOR}:print_format=json",
        "-f", "null", "-",
    ]  # fmt: skip


def parse_measurement(stderr: str) -> Loudness | None:
    """loudnorm's JSON block from ffmpeg's log; ``None`` for silence (no gated loudness)."""
    end = stderr.rfind("}")
    begin = stderr.rfind("{", 0, end)
    if begin < 0 or end < 0:
        raise ValueError("no loudnorm measurement in ffmpeg's output")
    doc = json.loads(stderr[begin : end + 1])
    values = {k: float(doc[k]) for k in ("input_i", "input_tp", "input_lra", "input_thresh", "target_offset")}
    if not all(math.isfinite(v) for v in values.values()) or values["input_i"] < -70:
        return None
    return Loudness(values["input_i"], values["input_tp"], values["input_lra"], values["input_thresh"],
                    values["target_offset"])


async def measure(
    ffmpeg: str, source: Path, start: float, seconds: float, *, target: float = -14.0, true_peak: float = -1.0
) -> Loudness | None:
    """Loudness of ``seconds`` of ``source``'s first audio stream from ``start``; ``None`` if silent.

    Raises:
        RenderError: ffmpeg could not read the audio (the message carries its last lines).
    """
    argv = measure_argv(ffmpeg, source, start, seconds, target=target, true_peak=true_peak)
    done = await anyio.run_process(argv, check=False, start_new_session=True)
    text = done.stderr.decode("utf-8", "replace")
    if done.returncode != 0:
        tail = " | ".join(text.strip().splitlines()[-5:])
        raise RenderError(f"{source}: loudness measurement failed (ffmpeg exit {done.returncode}: {tail})")
    try:
        return parse_measurement(text)
    except (ValueError, KeyError) as e:
        raise RenderError(f"{source}: loudness measurement unreadable ({e})") from e


def loudnorm_filter(measured: Loudness, *, target: float, true_peak: float) -> str:
    """The encoder's audio filter: ``measured`` brought to ``target`` LUFS under ``true_peak`` dBTP."""
    lra = min(50.0, max(LRA_FLOOR, math.ceil(measured.lra + 1)))
    tp = max(-9.0, true_peak - CODEC_HEADROOM_DB)
    return (
        f"{STEREO},loudnorm=I={target}:TP={tp:.2f}:LRA={lra}"
        f":measured_I={measured.integrated:.2f}:measured_TP={measured.true_peak:.2f}"
        f":measured_LRA={measured.lra:.2f}:measured_thresh={measured.threshold:.2f}"
        f":offset={measured.offset:.2f}:linear=true:print_format=none"
        ",aresample=48000"  # loudnorm's limiter path runs at 192 kHz
    )


async def measure_range(
    ffmpeg: str, path: Path, start: float, seconds: float, profile: ProfileConfig
) -> Loudness | None:
    """The range's loudness when the profile normalises it; ``None`` when it does not or it is silent."""
    if profile.loudness is None:
        return None
    return await measure(ffmpeg, path, start, seconds, target=profile.loudness, true_peak=profile.true_peak)


def profile_filter(measured: Loudness | None, profile: ProfileConfig) -> str | None:
    """The encoder's audio filter for ``profile``; ``None``: leave the sound as it is."""
    if measured is None or profile.loudness is None:
        return None
    return loudnorm_filter(measured, target=profile.loudness, true_peak=profile.true_peak)


def sidecar_entry(
    profile: ProfileConfig, audio_in: Loudness | None, audio_out: Loudness | None
) -> dict[str, Any] | None:
    """The sidecar's ``loudness`` object: target, the source range as measured, the clip as written."""
    if profile.loudness is None:
        return None
    return {
        "target_lufs": profile.loudness,
        "true_peak_limit_dbtp": profile.true_peak,
        "input": audio_in.to_dict() if audio_in is not None else None,
        "output": audio_out.to_dict() if audio_out is not None else None,
    }
