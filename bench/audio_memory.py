"""Peak memory of the audio decode: a 2-hour file must need no more RAM than a 10-minute one.

Generates a 10-minute AAC file (48 kHz stereo pink noise, like a real talk's soundtrack) and a
2-hour one (the same stream looped by stream copy, so it is two real hours to decode), then
decodes each through ``stream_audio`` into a bounded stream in a fresh subprocess and prints its
peak RSS (``ru_maxrss``), its decode speed and the 2 h / 10 min ratio.

    .venv/bin/python bench/audio_memory.py [--codec aac|opus] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CHILD = """
import json, resource, sys, time
from pathlib import Path
import anyio
from montaged.media.audio import stream_audio
from montaged.model import AudioChunk

async def main(path, queue):
    send, recv = anyio.create_memory_object_stream[AudioChunk](queue)
    peak = 0.0
    async with anyio.create_task_group() as tg:
        tg.start_soon(stream_audio, Path(path), 5.0, send)
        async with recv:
            async for chunk in recv:
                peak = max(peak, float(abs(chunk.samples).max()))
    return peak

t = time.perf_counter()
peak = anyio.run(main, sys.argv[1], int(sys.argv[2]))
print(json.dumps({"maxrss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                  "wall": time.perf_counter() - t, "peak": peak}))
"""

OPEN_ONLY = """
import resource, sys
import av, anyio, numpy  # the same imports as the decode child, so only the open differs
with av.open(sys.argv[1]) as c:
    print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""

CODECS = {
    "aac": ("m4a", ["-ar", "48000", "-ac", "2", "-c:a", "aac", "-b:a", "96k"]),
    "opus": ("ogg", ["-ar", "48000", "-ac", "2", "-c:a", "libopus", "-b:a", "32k"]),
}


def ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", *args], check=True)


def make(folder: Path, codec: str) -> tuple[Path, Path]:
    ext, enc = CODECS[codec]
    short, long = folder / f"10min.{ext}", folder / f"2h.{ext}"
    t = time.perf_counter()
    ffmpeg(
        "-f",
        "lavfi",
        "-i",
        "anoisesrc=color=pink:sample_rate=48000:amplitude=0.3",
        "-t",
        "600",
        *enc,
        str(short),
    )
    ffmpeg("-stream_loop", "11", "-i", str(short), "-c", "copy", str(long))
    print(f"generated {short.name} and {long.name} in {time.perf_counter() - t:.1f} s", flush=True)
    return short, long


def measure(path: Path, queue: int) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, "-c", CHILD, str(path), str(queue)], check=True, capture_output=True, text=True
    )
    result: dict[str, float] = json.loads(out.stdout.strip().splitlines()[-1])
    opened = subprocess.run(
        [sys.executable, "-c", OPEN_ONLY, str(path)], check=True, capture_output=True, text=True
    )
    result["open_kb"] = float(opened.stdout.strip())
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--codec", choices=sorted(CODECS), default="aac")
    ap.add_argument("--queue", type=int, default=8, help="chunks buffered (audio.queue_chunks)")
    ap.add_argument("--keep", type=Path, help="generate into this folder and keep the files")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="montage-bench-") as tmp:
        folder = args.keep or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        short, long = make(folder, args.codec)
        rows = {}
        for label, path, media_s in (("10 min", short, 600.0), ("2 h", long, 7200.0)):
            r = measure(path, args.queue)
            rows[label] = r
            print(
                f"{label:>6}: peak RSS {r['maxrss_kb'] / 1024:7.1f} MiB   decode {r['wall']:6.1f} s "
                f"({media_s / r['wall']:5.0f}x real time)   av.open alone {r['open_kb'] / 1024:6.1f} MiB",
                flush=True,
            )
        ratio = rows["2 h"]["maxrss_kb"] / rows["10 min"]["maxrss_kb"]
        print(f" ratio: {ratio:.3f} (2 h / 10 min peak RSS; budget 1.20)")
        growth = (rows["2 h"]["maxrss_kb"] - rows["10 min"]["maxrss_kb"]) / 1024
        index = (rows["2 h"]["open_kb"] - rows["10 min"]["open_kb"]) / 1024
        print(
            f"growth {growth:+.1f} MiB; opening alone grows {index:+.1f} MiB: the demuxer's packet index (MP4"
            " keeps an entry per packet, Ogg none); the decode itself holds a few chunks."
        )


if __name__ == "__main__":
    main()
