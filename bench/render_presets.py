"""libx264 presets for the render stage: CPU, size and quality on real 1080x1920 clip frames.

Why ``render.preset`` defaults to ``ultrafast-deblock``: the render stage's encoder was the
largest single cost of the pipeline benchmark, and x264's slower presets mostly buy bytes, not
quality, on upscaled vertical crops. This measures it instead of asserting it.

Frames: two 20 s scenes of the benchmark talk (bench/_talk.py; built if missing), cropped and
scaled to 1080x1920 by the renderer's own extractor (montaged.render.extract), written once as
raw yuv420p. Each candidate encodes the same frames with the flags the renderer would use
(``encoder_args``) at the profile's CRF; printed per candidate and scene: CPU seconds of the
encoder (user+sys, so a busy machine distorts it less than wall time), wall seconds, size, and
SSIM/PSNR against the raw frames.

    .venv/bin/python bench/render_presets.py [--crf 23] [--seconds 20] [--presets a,b,...]
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != BENCH] + [str(BENCH)]

from _talk import build_talk  # noqa: E402

from montaged.media.encoders import encoder_args  # noqa: E402
from montaged.model import CropBox  # noqa: E402
from montaged.render.extract import ExtractSpec, extract_to_fd  # noqa: E402

W, H, FPS = 1080, 1920, 30
SCENES = {"cuts: stage, interview, Hamilton": 280.0, "restaurant (textured), Hamilton": 185.0}
DEFAULT = "veryfast,superfast,ultrafast,ultrafast-deblock"


def raw_frames(talk: Path, start: float, seconds: float, out: Path) -> None:
    """The renderer's own centre crop of ``talk`` from ``start``, as raw yuv420p in ``out``."""
    box = CropBox(0.0, (1920 - 608) // 2, 0, 608, 1080)
    spec = ExtractSpec(source=talk, start=start, frames=round(seconds * FPS), rate=Fraction(FPS),
                       width=W, height=H, path=(box,))
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        extract_to_fd(spec, fd)
    finally:
        os.close(fd)


def children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def encode(raw: Path, preset: str, crf: int, out: Path) -> tuple[float, float]:
    """CPU and wall seconds of one encode with the renderer's libx264 flags."""
    argv = ["ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin", "-y",
            "-f", "rawvideo", "-pix_fmt", "yuv420p", "-s", f"{W}x{H}", "-framerate", str(FPS),
            "-i", str(raw), *encoder_args("libx264", preset), "-crf", str(crf),
            "-pix_fmt", "yuv420p", str(out)]  # fmt: skip
    c, t = children_cpu(), time.perf_counter()
    subprocess.run(argv, check=True)
    return children_cpu() - c, time.perf_counter() - t


def quality(raw: Path, encoded: Path) -> tuple[float, float]:
    """(SSIM, PSNR dB) of ``encoded`` against the raw frames."""
    argv = ["ffmpeg", "-hide_banner", "-nostdin", "-f", "rawvideo", "-pix_fmt", "yuv420p", "-s", f"{W}x{H}",
            "-framerate", str(FPS), "-i", str(raw), "-i", str(encoded),
            "-lavfi", "[1:v][0:v]ssim;[1:v][0:v]psnr", "-f", "null", "-"]  # fmt: skip
    err = subprocess.run(argv, check=True, capture_output=True, text=True).stderr
    ssim = re.search(r"SSIM .*All:([0-9.]+)", err)
    psnr = re.search(r"PSNR .*average:([0-9.]+)", err)
    if not (ssim and psnr):
        raise SystemExit(f"ffmpeg printed no SSIM/PSNR:\n{err[-2000:]}")
    return float(ssim.group(1)), float(psnr.group(1))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--crf", type=int, default=23, help="quality (the profiles' default: 23)")
    p.add_argument("--seconds", type=float, default=20.0, help="length of each scene")
    p.add_argument("--presets", default=DEFAULT, help=f"comma-separated (default {DEFAULT})")
    args = p.parse_args()
    talk, _ = build_talk(10.0)
    presets = [x.strip() for x in args.presets.split(",") if x.strip()]
    print(f"{W}x{H}@{FPS}, {args.seconds:g} s per scene, CRF {args.crf}; "
          f"load average {os.getloadavg()[0]:.2f}")
    print(f"{'scene':<36}{'preset':<19}{'CPU s':>7}{'wall s':>8}{'ms/frame':>10}{'MB':>7}"
          f"{'SSIM':>8}{'PSNR':>7}")
    with tempfile.TemporaryDirectory(prefix="montage-presets-") as tmp:
        for scene, start in SCENES.items():
            raw = Path(tmp) / "frames.yuv"
            raw_frames(talk, start, args.seconds, raw)
            frames = round(args.seconds * FPS)
            for preset in presets:
                out = Path(tmp) / f"{preset}.mp4"
                cpu, wall = encode(raw, preset, args.crf, out)
                ssim, psnr = quality(raw, out)
                print(f"{scene:<36}{preset:<19}{cpu:7.1f}{wall:8.1f}{1000 * cpu / frames:10.1f}"
                      f"{out.stat().st_size / 1e6:7.1f}{ssim:8.4f}{psnr:7.1f}", flush=True)
    print(f"load average after {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
