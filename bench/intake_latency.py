"""Hot folder pick-up latency: time from the moment a drop has settled to its job being stored.

"Settled" is the file's last write (its mtime) plus ``settle_seconds``: the earliest moment the
hot folder may take it (a negative latency would mean a file taken too early). Latency is the
``job.submitted`` event's time minus that moment, so it covers noticing the change, the final
stat, the open check, the rest of the hash (hashing starts while the file settles) and the store
transaction. Each drop is written like a copy (several writes with pauses shorter than the settle
time) with unique content, into a real hot folder on a real SQLite store.

Rounds: one drop at a time with small files, one at a time with large files, twenty small drops
at once, and the first round again with polling (``force_polling``, as on NFS/SMB mounts).

    .venv/bin/python bench/intake_latency.py [--drops 20] [--settle 1.0] [--large-mb 256] [--dir /tmp]
"""

from __future__ import annotations

import argparse
import functools
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import anyio
import anyio.abc

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from montaged.config import HotFolderConfig, LogConfig  # noqa: E402
from montaged.events import EventBus  # noqa: E402
from montaged.gate import IntakeGate  # noqa: E402
from montaged.intake import Submitter  # noqa: E402
from montaged.logging import setup as setup_logging  # noqa: E402
from montaged.sources.hotfolder import run_hotfolder  # noqa: E402
from montaged.store import open_store  # noqa: E402

PIECES = 4


def write_drop(path: Path, size: int, pause: float, seed: int) -> float:
    """Write ``size`` bytes in PIECES writes; return the settle reference (mtime of the last write)."""
    block = os.urandom(1 << 20)
    piece = max(1, size // PIECES)
    with path.open("wb") as f:
        f.write(seed.to_bytes(8, "little"))
        written = 8
        for i in range(PIECES):
            end = size if i == PIECES - 1 else written + piece
            while written < end:
                n = min(len(block), end - written)
                f.write(block[:n])
                written += n
            f.flush()
            if i < PIECES - 1:
                time.sleep(pause)
    return path.stat().st_mtime


async def measure(base: Path, *, drops: int, size: int, settle: float, polling: bool,
                  burst: bool, seed: int) -> list[float]:
    folder = base / "in"
    folder.mkdir(parents=True)
    store = open_store(f"sqlite:///{base / 'montage.db'}")
    await store.migrate()
    bus = EventBus()
    submitter = Submitter(store, bus, input_roots=[base], profiles=["vertical"])
    cfg = HotFolderConfig(paths=[folder], settle_seconds=settle, force_polling=polling)
    submitted: dict[str, float] = {}
    got = anyio.Event()
    latencies = []
    pause = settle / 4

    async def collect(*, task_status: anyio.abc.TaskStatus[None]) -> None:
        nonlocal got
        async with bus.subscribe() as events:
            task_status.started()
            async for ev in events:
                if ev.kind == "job.submitted":
                    submitted[ev.data["source"]] = ev.at
                    got.set()

    async def wait_for(paths: list[Path]) -> None:
        nonlocal got
        with anyio.fail_after(settle * 10 + 60):
            while not all(str(p.resolve()) in submitted for p in paths):
                await got.wait()
                got = anyio.Event()

    try:
        async with anyio.create_task_group() as tg:
            await tg.start(collect)
            await tg.start(lambda task_status: run_hotfolder(cfg, submitter, gate=IntakeGate(),
                                                             task_status=task_status))
            if burst:
                paths = [folder / f"drop{i:03d}.mp4" for i in range(drops)]
                refs = await anyio.to_thread.run_sync(
                    lambda: [write_drop(p, size, 0.0, seed + i) for i, p in enumerate(paths)])
                await wait_for(paths)
                latencies = [submitted[str(p.resolve())] - (r + settle)
                             for p, r in zip(paths, refs, strict=True)]
            else:
                for i in range(drops):
                    p = folder / f"drop{i:03d}.mp4"
                    ref = await anyio.to_thread.run_sync(write_drop, p, size, pause, seed + i)
                    await wait_for([p])
                    latencies.append(submitted[str(p.resolve())] - (ref + settle))
                    p.unlink()  # keep the disk small for large drops
            tg.cancel_scope.cancel()
    finally:
        await store.close()
    return latencies


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--drops", type=int, default=20)
    ap.add_argument("--settle", type=float, default=1.0)
    ap.add_argument("--small-mb", type=float, default=2.0)
    ap.add_argument("--large-mb", type=float, default=256.0)
    ap.add_argument("--dir", type=Path, default=None, help="where the hot folder lives (default: a temp dir)")
    args = ap.parse_args()
    setup_logging(LogConfig(level="warning", format="console"))
    small, large = int(args.small_mb * 2**20), int(args.large_mb * 2**20)
    rounds = [
        ("one at a time", small, False, False),
        ("one at a time", large, False, False),
        (f"{args.drops} at once", small, False, True),
        ("one at a time, polling", small, True, False),
    ]
    print(f"hot folder pick-up latency after settling (settle_seconds={args.settle},"
          f" {args.drops} drops each)")
    print(f"{'round':<26} {'size':>9} {'min ms':>8} {'p50 ms':>8} {'p95 ms':>8} {'max ms':>8}")
    for n, (name, size, polling, burst) in enumerate(rounds):
        with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
            run = functools.partial(measure, Path(tmp), drops=args.drops, size=size, settle=args.settle,
                                    polling=polling, burst=burst, seed=n * 1000)
            lat = anyio.run(run)
        ms = [x * 1000 for x in lat]
        print(f"{name:<26} {size / 2**20:>7.0f}MB {min(ms):>8.0f} {statistics.median(ms):>8.0f}"
              f" {pct(ms, 0.95):>8.0f} {max(ms):>8.0f}")


if __name__ == "__main__":
    main()
