"""Clip loudness: real recordings made quiet or loud, rendered, and measured with ffmpeg's ebur128.

ebur128 is a different meter from the loudnorm analysis the renderer uses, so the check does not
grade the code with its own ruler.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import anyio
import pytest

from montaged.config import ProfileConfig
from montaged.media.encoders import EncoderChoice, encoder_args
from montaged.media.probe import probe_media
from montaged.model import ClipPlan
from montaged.render.encode import render_clip
from montaged.render.loudness import Loudness, loudnorm_filter, parse_measurement

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
    log = ('[Parsed_loudnorm_1 @ 0x1]\n{\n\t"input_i" : "-inf",\n\t"input_tp" : "-inf",'
           '\n\t"input_lra" : "0.00",\n\t"input_thresh" : "-inf",\n\t"target_offset" : "inf"\n}\n')
    assert parse_measurement(log) is None
    with pytest.raises(ValueError, match="no loudnorm measurement"):
        parse_measurement("ffmpeg said nothing useful")


def test_filter_keeps_loudnorm_linear() -> None:
    f = loudnorm_filter(Loudness(-30.0, -12.0, 18.5, -40.0, 0.2), target=-14.0, true_peak=-1.0)
    assert "linear=true" in f and "measured_I=-30.00" in f and f.endswith("aresample=48000")
    assert "LRA=20" in f  # a target range above the measured one, else loudnorm goes dynamic
