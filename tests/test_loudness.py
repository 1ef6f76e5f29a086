"""Clip loudness: real recordings made quiet or loud, rendered, and measured with ffmpeg's ebur128.

ebur128 is a different meter from the renderer's own (numpy, BS.1770), so the check does not grade
the code with its own ruler.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import anyio
import numpy as np
import pytest

from montaged.config import ProfileConfig
from montaged.media.encoders import EncoderChoice, encoder_args
from montaged.media.probe import probe_media
from montaged.model import ClipPlan
from montaged.render.encode import render_clip
from montaged.render.loudness import Loudness, gain_filter, measure_file, measure_pcm

pytestmark = pytest.mark.anyio
TOLERANCE_LU = 1.0


def _ebur128(ffmpeg: str, path: Path) -> tuple[float, float]:
    """(integrated LUFS, true peak dBTP) of ``path``'s sound."""
    res = subprocess.run(
        [ffmpeg, "-hide_banner", "-nostats", "-i", str(path), "-map", "0:a:0",
         "-af", "ebur128=peak=true", "-f", "null", "-"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    summary = res.stderr[res.stderr.rfind("Summary:") :]
    integrated = float(re.search(r"I:\s+(-?[\d.]+) LUFS", summary).group(1))  # type: ignore[union-attr]
    peak = float(re.search(r"Peak:\s+(-?[\d.]+|-inf) dBFS", summary).group(1))  # type: ignore[union-attr]
    return integrated, peak


def _with_gain(ffmpeg: str, src: Path, gain_db: float, out: Path) -> Path:
    subprocess.run(
        [ffmpeg, "-hide_banner", "-loglevel", "error", "-y", "-i", str(src), "-map", "0:v:0", "-map", "0:a:0",
         "-c:v", "copy", "-af", f"volume={gain_db}dB", "-c:a", "aac", "-b:a", "192k", str(out)],
        check=True,
    )  # fmt: skip
    return out


CASES = {
    # name: (real recording, gain applied to it, profile target LUFS, true-peak ceiling dBTP)
    # quiet and peaky: the gain it needs would push its peaks over the ceiling (limiter path)
    "quiet": ("sadtalker_WDA_KatieHill_000.mp4", -18.0, -14.0, -1.0),
    # loud and already over 0 dBTP: a plain linear cut
    "loud": ("visualvoice_noisy_restaurant.mp4", 6.0, -14.0, -1.0),
    # a broadcast-style profile on a quiet two-speaker interview
    "broadcast": ("visualvoice_interview_2spk.mp4", -6.0, -23.0, -2.0),
}


@pytest.mark.parametrize("case", sorted(CASES))
async def test_clip_meets_loudness_target(case: str, media_dir: Path, tmp_path: Path, ffmpeg: str) -> None:
    name, gain, target, ceiling = CASES[case]
    src = _with_gain(ffmpeg, media_dir / "video" / name, gain, tmp_path / f"{case}.mp4")
    before, before_peak = _ebur128(ffmpeg, src)
    profile = ProfileConfig(width=160, height=284, crf=35, loudness=target, true_peak=ceiling)
    info = probe_media(src)
    clip = await render_clip(
        source=src, info=info, plan=ClipPlan(0, 0.5, min(info.duration, 8.5), 1.0, {}, "", ""), crop=None,
        profile=profile, encoder=EncoderChoice("libx264", False, encoder_args("libx264", "ultrafast")),
        out_dir=tmp_path / "out", stem=case, words=[], ffmpeg=ffmpeg,
    )
    after, peak = _ebur128(ffmpeg, Path(clip.path))
    print(f"{case}: input {before:.1f} LUFS / {before_peak:.1f} dBTP ->"
          f" clip {after:.1f} LUFS / {peak:.1f} dBTP (target {target}, ceiling {ceiling})")
    assert abs(after - target) <= TOLERANCE_LU, f"clip is {after} LUFS, target {target}"
    assert peak <= ceiling, f"clip true peak {peak} dBTP over the {ceiling} dBTP ceiling"
    doc = json.loads(Path(clip.sidecar_path).read_text())["loudness"]
    assert doc["target_lufs"] == target and abs(doc["output"]["integrated_lufs"] - after) < 0.5


async def test_loudness_none_keeps_the_level(media_dir: Path, tmp_path: Path, ffmpeg: str) -> None:
    src = media_dir / "video" / "visualvoice_interview_2spk.mp4"
    profile = ProfileConfig(width=160, height=284, crf=35, loudness="none")  # type: ignore[arg-type]
    assert profile.loudness is None
    clip = await render_clip(
        source=src, info=probe_media(src), plan=ClipPlan(0, 0.0, 8.0, 1.0, {}, "", ""), crop=None,
        profile=profile, encoder=EncoderChoice("libx264", False, encoder_args("libx264", "ultrafast")),
        out_dir=tmp_path, stem="raw", words=[], ffmpeg=ffmpeg,
    )
    ref = tmp_path / "ref.mp4"
    await anyio.run_process([ffmpeg, "-hide_banner", "-loglevel", "error", "-t", "8", "-i", str(src),
                             "-vn", str(ref)])
    assert abs(_ebur128(ffmpeg, Path(clip.path))[0] - _ebur128(ffmpeg, ref)[0]) < 0.5


def test_silence_is_not_normalised() -> None:
    assert measure_pcm(np.zeros((2, 48000 * 3), np.float32)) is None
    assert measure_pcm(np.full((2, 48000 * 3), 1e-5, np.float32)) is None  # -100 dBFS: under the gate
    assert measure_pcm(np.zeros((2, 0), np.float32)) is None


def test_sine_reads_as_the_standard_says() -> None:
    # BS.1770-4's calibration: a 997 Hz sine of -20 dBFS peak in both channels reads -20.0 LUFS
    # (each channel's mean square is half the peak's, two channels add, K-weighting adds 0.691 dB there)
    t = np.arange(48000 * 5) / 48000
    tone = (10 ** (-20 / 20) * np.sin(2 * np.pi * 997 * t)).astype(np.float32)
    m = measure_pcm(np.stack([tone, tone]))
    assert m is not None
    assert abs(m.integrated - (-20.0)) < 0.1 and abs(m.true_peak - (-20.0)) < 0.1 and m.lra < 0.1


def test_true_peak_finds_what_lies_between_samples() -> None:
    # a sine at fs/4 sampled 45 degrees off its crest: every sample is 0.707 of the peak (-3 dB)
    n = np.arange(48000)
    tone = np.sin(np.pi / 2 * n + np.pi / 4).astype(np.float32) * 0.5
    m = measure_pcm(np.stack([tone, tone]))
    assert m is not None
    assert abs(m.true_peak - 20 * np.log10(0.5)) < 0.3, m.true_peak
    assert m.overshoot > 2.5  # what a sample-peak limiter would miss


@pytest.mark.parametrize("name", ["sadtalker_WDA_KatieHill_000.mp4", "visualvoice_noisy_restaurant.mp4",
                                  "visualvoice_interview_2spk.mp4"])
def test_meter_agrees_with_ffmpeg_ebur128(name: str, media_dir: Path, ffmpeg: str, tmp_path: Path) -> None:
    src = media_dir / "video" / name
    ref = tmp_path / "range.wav"
    subprocess.run([ffmpeg, "-hide_banner", "-loglevel", "error", "-ss", "1", "-t", "6", "-i", str(src),
                    "-map", "0:a:0", "-ac", "2", "-ar", "48000", "-c:a", "pcm_f32le", str(ref)], check=True)
    integrated, peak = _ebur128(ffmpeg, ref)
    m = measure_file(src, 1.0, 6.0)
    assert m is not None
    # 0.1 LU: the two meters implement one standard; the rest is where each cuts the range
    assert abs(m.integrated - integrated) < 0.1, (m.integrated, integrated)
    assert abs(m.true_peak - peak) < 0.2, (m.true_peak, peak)  # both interpolate 4x, with different filters


def test_gain_is_linear_unless_the_peaks_need_a_limiter() -> None:
    quiet_low_peaks = Loudness(-30.0, -20.0, 5.0, 0.2)
    f = gain_filter(quiet_low_peaks, target=-14.0, true_peak=-1.0)
    assert "volume=16.00dB" in f and "alimiter" not in f and "loudnorm" not in f
    peaky = Loudness(-30.0, -6.0, 18.5, 0.5)  # +16 dB would put its peaks at +10 dBTP
    f = gain_filter(peaky, target=-14.0, true_peak=-1.0)
    limit = 10 ** ((-1.0 - 0.6 - 0.5) / 20)  # the ceiling, less the codec's headroom and the overshoot
    assert "volume=16.00dB" in f and f"alimiter=limit={limit:.4f}" in f and "latency=1" in f
