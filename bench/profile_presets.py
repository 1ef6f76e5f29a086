"""The draft / social / master profiles: encode speed (CPU and wall seconds), size and SSIM of one
real clip each, plus what burned captions and loudness normalisation add to the render.

Input: the 2-speaker TV interview of ../shared/media (real faces and speech), looped to
``--seconds``. Each profile renders it through the real renderer (``render_clip``: extractor,
FIFO, encoder) with captions off, so SSIM (ffmpeg ``ssim``) compares like with like: the clip
against the same centre crop of the source scaled to the profile's size. The last two rows
render the ``social`` profile again with captions and loudness both off and both on (caption
words: the JFK fixture's timed words repeated over the clip; their text does not change the cost).

    .venv/bin/python bench/profile_presets.py [--seconds 30] [--rows draft,social,master,cost]
"""

from __future__ import annotations

import argparse
import json
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import anyio

ROOT = Path(__file__).resolve().parents[1]
sys.path.append(str(ROOT / "tests"))  # media.py finds the recordings

from media import for_script  # noqa: E402

from montaged.config import CaptionStyle, ProfileConfig, Settings  # noqa: E402
from montaged.media.encoders import EncoderChoice, encoder_args  # noqa: E402
from montaged.media.probe import probe_media  # noqa: E402
from montaged.model import ClipPlan, Word  # noqa: E402
from montaged.render.encode import render_clip  # noqa: E402


def _input(seconds: float, out: Path) -> Path:
    rel = "video/visualvoice_interview_2spk.mp4"
    src = for_script(rel) / rel
    subprocess.run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", "-stream_loop", "-1",
                    "-i", str(src), "-t", str(seconds), "-c:v", "libx264", "-preset", "veryfast",
                    "-crf", "18", "-c:a", "aac", str(out)], check=True)  # fmt: skip
    return out


def _words(seconds: float) -> list[Word]:
    doc = json.loads((ROOT / "tests" / "data" / "deepgram" / "jfk.json").read_text())
    base = [Word(w["punctuated_word"], w["start"], w["end"], w["confidence"]) for w in doc["words"]]
    out, shift = [], 0.0
    while shift < seconds:
        out += [Word(w.text, w.start + shift, w.end + shift, w.confidence)
                for w in base if w.end + shift < seconds]
        shift += 11.0
    return out


def _ssim(clip: Path, source: Path, width: int, height: int) -> float:
    crop = f"crop=ih*{width}/{height}:ih,scale={width}:{height}:flags=lanczos"
    res = subprocess.run(
        ["ffmpeg", "-hide_banner", "-nostats", "-i", str(clip), "-i", str(source), "-lavfi",
         f"[1:v]{crop}[ref];[0:v][ref]ssim", "-f", "null", "-"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    m = re.search(r"All:([\d.]+)", res.stderr)
    return float(m.group(1)) if m else float("nan")


def _cpu() -> float:
    """CPU seconds of this process (the extractor) and its finished children (ffmpeg): a busy
    machine stretches wall time, much less CPU time."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--rows", default="draft,social,master,cost",
                    help="which rows: any of draft, social, master, cost (the captions + loudness pair)")
    args = ap.parse_args()
    settings = Settings()
    with tempfile.TemporaryDirectory(prefix="montage-presets-") as tmp:
        src = _input(args.seconds, Path(tmp) / "talk.mp4")
        info = probe_media(src)
        plan = ClipPlan(0, 0.0, info.duration, 1.0, {}, "", "")
        words = _words(info.duration)
        runs: list[tuple[str, ProfileConfig, CaptionStyle | None]] = [
            (n, settings.profiles[n].model_copy(update={"captions": "none"}), None)
            for n in ("draft", "social", "master") if n in args.rows.split(",")
        ]
        social = settings.profiles["social"]
        if "cost" in args.rows.split(","):
            runs += [("social, no captions, no loudness", social.model_copy(update={"loudness": None}), None),
                     ("social, captions + loudness", social, settings.render.caption_styles[social.captions])]
        print(f"input: {info.duration:.1f} s, {info.width}x{info.height}; libx264; wall seconds on this host")
        print(f"{'profile':<34} {'size':>9} {'CPU s':>7} {'wall s':>7} {'x realtime':>10} {'kB':>7}"
              f" {'kbit/s':>7} {'SSIM':>7}")
        for i, (name, profile, style) in enumerate(runs):
            encoder = EncoderChoice("libx264", False, encoder_args("libx264", settings.render.preset))
            t0, cpu0 = time.perf_counter(), _cpu()
            clip = await render_clip(source=src, info=info, plan=plan, crop=None, profile=profile,
                                     encoder=encoder, out_dir=Path(tmp), stem=f"c{i}", words=words,
                                     captions=style)
            wall, cpu = time.perf_counter() - t0, _cpu() - cpu0
            size = Path(clip.path).stat().st_size
            ssim = _ssim(Path(clip.path), src, clip.width, clip.height) if style is None else float("nan")
            print(f"{name:<34} {clip.width}x{clip.height:<4} {cpu:7.2f} {wall:7.2f}"
                  f" {info.duration / wall:10.2f} {size / 1000:7.0f}"
                  f" {size * 8 / 1000 / info.duration:7.0f} {ssim:7.4f}")


if __name__ == "__main__":
    anyio.run(main)
