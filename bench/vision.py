"""Vision cost of the frame stage: milliseconds per second of output, and its share of a talk.

Input: a 10-minute 1080p30 "talk" built from real faces: the framing truth scenes (moving speaker,
two-person dialogue, scene cut; see tests/framing_truth.py) re-encoded once at 30 fps with libx264
veryfast (B-frames, like a real export), then looped to 10 minutes without re-encoding. Five 45 s
clips spread over it are framed, as the pipeline would after selection.

Printed:
- per-part time of one clip (decode, detect, mouth, motion, scenes, audio, refine, track);
- CPU ms per output second (sum over workers);
- wall ms per output second with the default pool (one worker per 2 cores) and with 2 workers;
- the issue's budget: vision wall time / talk duration <= 0.05.

Timings on a shared 2-core machine vary by ±30% or more; the load average is printed with them.

Usage: .venv/bin/python bench/vision.py [--media ../shared/media] [--work /tmp/montage-vision]
       [--clips 5] [--clip-seconds 45] [--talk-seconds 600]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
os.environ.setdefault("OMP_NUM_THREADS", "1")  # before yuface loads libgomp in this process

import anyio  # noqa: E402
import structlog  # noqa: E402
from media import MEDIA, for_script  # noqa: E402

from montaged.config import FrameConfig, ProfileConfig  # noqa: E402
from montaged.frame.analyse import analyse_clip  # noqa: E402
from montaged.frame.worker import FrameWorkers, plan_crops_in_process  # noqa: E402
from montaged.media.probe import probe_media  # noqa: E402
from montaged.model import ClipPlan, MediaInfo  # noqa: E402
from montaged.resources_plan import usable_cores, vision_size  # noqa: E402

BUDGET = 0.05


def build_talk(media: Path, work: Path, seconds: float) -> Path:
    from framing_truth import build_all

    talk = work / f"talk-{int(seconds)}s.mp4"
    if talk.exists():
        return talk
    scenes = build_all(media, work / "truth")
    parts = [scenes[k].video for k in ("dialogue", "moving", "cut")]
    listing = work / "parts.txt"
    listing.write_text("".join(f"file '{p}'\n" for p in parts))
    base = work / "talk-base.mp4"
    subprocess.run(
        ["ffmpeg", "-hide_banner", "-loglevel", "error", "-y",
         "-f", "concat", "-safe", "0", "-i", str(listing), "-vf", "fps=30",
         "-c:v", "libx264", "-preset", "veryfast", "-crf", "23", "-g", "60",
         "-c:a", "aac", "-b:a", "96k", str(base)],
        check=True,
    )  # fmt: skip
    subprocess.run(
        ["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", "-stream_loop", "-1", "-i", str(base),
         "-t", str(seconds), "-c", "copy", str(talk)],
        check=True,
    )  # fmt: skip
    return talk


def clips_for(duration: float, n: int, length: float) -> list[ClipPlan]:
    gap = (duration - n * length) / (n + 1)
    return [
        ClipPlan(i, gap + i * (length + gap), gap + i * (length + gap) + length, 1.0, {}, "bench", "")
        for i in range(n)
    ]


async def run_pool(
    talk: Path, info: MediaInfo, clips: list[ClipPlan], cfg: FrameConfig, workers: int
) -> tuple[float, float]:
    """Wall seconds and summed worker CPU seconds to frame ``clips`` with ``workers`` processes."""
    profile = ProfileConfig.model_validate({})
    async with FrameWorkers(workers, threads=max(1, usable_cores() // workers)) as pool:
        await pool.plan(
            talk, info, ClipPlan(99, 0.0, 0.5, 1.0, {}, "warm-up", ""), profile, cfg
        )  # spawn + imports
        cpu = 0.0
        t0 = time.perf_counter()

        async def one(c: ClipPlan) -> None:
            nonlocal cpu
            _, spent = await pool.plan(talk, info, c, profile, cfg)
            cpu += spent  # after the await: "cpu += await ..." would read cpu before it

        async with anyio.create_task_group() as tg:
            for c in clips:
                tg.start_soon(one, c)
        return time.perf_counter() - t0, cpu


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--media", type=Path, default=MEDIA)
    ap.add_argument("--work", type=Path, default=Path("/tmp/montage-vision"))
    ap.add_argument("--clips", type=int, default=5)
    ap.add_argument("--clip-seconds", type=float, default=45.0)
    ap.add_argument("--talk-seconds", type=float, default=600.0)
    ap.add_argument("--analysis-width", type=int, default=None)
    ap.add_argument("--sample-fps", type=float, default=None)
    args = ap.parse_args()
    for_script(root=args.media)
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(30))
    args.work.mkdir(parents=True, exist_ok=True)
    talk = build_talk(args.media, args.work, args.talk_seconds)
    info = probe_media(talk)
    over = {k: v for k, v in (("analysis_width", args.analysis_width), ("sample_fps", args.sample_fps)) if v}
    cfg = FrameConfig.model_validate(over)
    clips = clips_for(info.duration, args.clips, args.clip_seconds)
    out_s = sum(c.end - c.start for c in clips)
    print(f"talk: {talk.name} {info.width}x{info.height}@{info.fps:g} {info.duration:.0f} s; "
          f"{len(clips)} clips x {args.clip_seconds:g} s = {out_s:.0f} s of output")  # fmt: skip
    print(f"frame config: detector={cfg.detector} sample_fps={cfg.sample_fps:g} "
          f"analysis_width={cfg.analysis_width} skip_nonref={cfg.skip_nonref}; "
          f"cores={os.cpu_count()} load={os.getloadavg()[0]:.2f}")  # fmt: skip

    import cv2

    cv2.setNumThreads(1)
    t0, c0 = time.perf_counter(), time.process_time()
    an = analyse_clip(talk, info, clips[0].start, clips[0].end, cfg)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    parts = "  ".join(f"{k} {1000 * v / an.duration:.0f}" for k, v in an.timings.items())
    print(f"one clip in-process, 1 OpenCV thread: {1000 * wall / an.duration:.0f} ms wall, "
          f"{1000 * cpu / an.duration:.0f} ms CPU per output s; {len(an.times)} samples")  # fmt: skip
    print(f"  parts (ms per output s): {parts}")

    rows = []
    for workers in sorted({vision_size(cfg, usable_cores())[0], 2}):
        wall, cpu = anyio.run(run_pool, talk, info, clips, cfg, workers)
        rows.append((workers, wall, cpu))
        ratio = wall / info.duration
        print(f"pool of {workers}: wall {wall:.1f} s = {1000 * wall / out_s:.0f} ms per output s; "
              f"CPU {1000 * cpu / out_s:.0f} ms per output s; vision/talk = {ratio:.3f} "
              f"({'within' if ratio <= BUDGET else 'OVER'} the {BUDGET} budget)")  # fmt: skip
    cpu_ratio = min(r[2] for r in rows) / info.duration / (os.cpu_count() or 2)
    print(f"CPU-seconds / (talk x cores) = {cpu_ratio:.3f}: the share of the machine framing takes")
    print(f"load after: {os.getloadavg()[0]:.2f} (timings are noisy on a shared machine)")

    # Also usable as a library check: one call through the public entry point.
    plans = anyio.run(plan_crops_in_process, talk, info, clips[:1], ProfileConfig.model_validate({}), cfg)
    print(f"plan_crops_in_process: clip {plans[0].clip_index} {plans[0].layout}, {len(plans[0].path)} knots, "
          f"confidence {plans[0].confidence}")  # fmt: skip


if __name__ == "__main__":
    main()
