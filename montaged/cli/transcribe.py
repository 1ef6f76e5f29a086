"""``montaged transcribe FILE``: one file through probe → audio → Whisper pool, printed.

Uses the same cache as the daemon (the embedded store, plus Redis when configured), so a file
the daemon already transcribed prints at once, and vice versa.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import anyio
import structlog
from rich.progress import Progress, TaskID

from montaged.asr.cache import TranscriptCache, whisper_key
from montaged.asr.formats import FORMATS, render
from montaged.asr.whisper_pool import WhisperPool
from montaged.asr.windows import transcribe_stream
from montaged.config import Settings, load
from montaged.errors import MontageError
from montaged.logging import keep_stdout_clean
from montaged.model import AudioChunk, Transcript

log = structlog.get_logger(__name__)


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "transcribe",
        help="transcribe one file with local Whisper and print it",
        description="Transcribe FILE with local Whisper (cached by content) and print the transcript.",
    )
    p.add_argument("file", type=Path, metavar="FILE")
    p.add_argument("--format", "-f", choices=FORMATS, default="txt", help="output format (default txt)")
    p.add_argument("--model", "-m", help="Whisper model (default: whisper.model from the config)")
    p.add_argument("--beam", type=int, choices=range(1, 11), metavar="N", help="beam width (default: config)")
    p.add_argument("--language", help="spoken language code, or 'auto' to detect it")
    p.add_argument("--output", "-o", type=Path, help="write here instead of standard output")
    p.add_argument(
        "--no-cache", action="store_true", help="transcribe again even when a cached result exists"
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    keep_stdout_clean()
    try:
        settings = load(args.config)
        updates: dict[str, object] = {}
        if args.model:
            updates["model"] = args.model
        if args.beam:
            updates["beam_size"] = args.beam
        if args.language:
            updates["language"] = None if args.language == "auto" else args.language
        if updates:
            settings.whisper = settings.whisper.model_validate(settings.whisper.model_dump() | updates)
        transcript = anyio.run(_transcribe, args.file, settings, not args.no_cache)
    except MontageError as e:
        print(f"montaged transcribe: {e}", file=sys.stderr)
        return 1
    text = render(transcript, args.format)
    if args.output:
        args.output.write_text(text)
    else:
        sys.stdout.write(text)
    return 0


async def _transcribe(path: Path, settings: Settings, use_cache: bool) -> Transcript:
    from montaged.media.probe import probe_media
    from montaged.store import open_store

    info = await anyio.to_thread.run_sync(lambda: probe_media(path, need_video=False))
    settings.paths.state_dir.mkdir(parents=True, exist_ok=True)
    store = open_store(settings.store_url(), connect_timeout=settings.store.connect_timeout_seconds)
    try:
        await store.migrate()
        async with TranscriptCache(store, settings.cache) as cache:
            key = whisper_key(info.content_hash, settings.whisper)
            if use_cache and (hit := await cache.get(key)) is not None:
                print(f"(cached transcript, model {hit.model})", file=sys.stderr)
                return hit
            started = time.perf_counter()
            transcript = await _run_whisper(path, info.duration, settings)
            seconds = time.perf_counter() - started
            print(
                f"({len(transcript.words)} words, {info.duration:.1f} s of audio in {seconds:.1f} s,"
                f" RTF {seconds / max(info.duration, 1e-9):.3f}, model {transcript.model})",
                file=sys.stderr,
            )
            await cache.put(key, transcript)
            return transcript
    finally:
        await store.close()


async def _run_whisper(path: Path, duration: float, settings: Settings) -> Transcript:
    from montaged.media.audio import stream_audio

    send, recv = anyio.create_memory_object_stream[AudioChunk](settings.audio.queue_chunks)
    async with (
        WhisperPool(settings.whisper, settings.paths.models()) as pool,
        anyio.create_task_group() as tg,
    ):
        tg.start_soon(stream_audio, path, settings.audio.chunk_seconds, send)
        with ProgressBar(duration) as bar, recv:
            transcript = await transcribe_stream(
                recv, pool=pool, cfg=settings.whisper, duration=duration, on_progress=bar
            )
    return transcript


class ProgressBar:
    """A rich progress bar on stderr when it is a terminal; otherwise nothing."""

    def __init__(self, duration: float) -> None:
        self.duration = duration
        self._progress: Progress | None = None
        self._task: TaskID | None = None

    def __enter__(self) -> ProgressBar:
        if sys.stderr.isatty():
            from rich.console import Console
            from rich.progress import BarColumn, TextColumn, TimeRemainingColumn

            self._progress = Progress(
                TextColumn("transcribing"),
                BarColumn(),
                TextColumn("{task.percentage:>3.0f}%"),
                TimeRemainingColumn(),
                console=Console(stderr=True),
                transient=True,
            )
            self._progress.start()
            self._task = self._progress.add_task("whisper", total=1.0)
        return self

    def __call__(self, fraction: float) -> None:
        if self._progress is not None and self._task is not None:
            self._progress.update(self._task, completed=fraction)

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.stop()
