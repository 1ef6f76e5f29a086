"""ffmpeg as a child process: argv builders, progress, stopping, and errors that carry its words.

- Commands are argv lists (never a shell), launched with ``start_new_session=True`` so a
  Ctrl-C on the daemon's terminal does not reach ffmpeg before the daemon decides to stop it.
- Stopping is terminate → wait(timeout) → kill (frigate ``util/ffmpeg.py``).
- The last 100 stderr lines are kept and attached to the error (frigate ``log.py`` LogPipe):
  "exit status 1" alone tells an operator nothing.
- Progress comes from ``-progress pipe:2 -nostats``: ``key=value`` blocks on stderr, kept apart
  from the log lines so the tail holds only what ffmpeg had to say.
"""

from __future__ import annotations

import re
import signal
import subprocess
from collections import deque
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import anyio
import structlog
from anyio.abc import Process

from montaged.errors import DiskFullError, RenderError, leaf_errors

log = structlog.get_logger(__name__)

STDERR_LINES = 100
STOP_TIMEOUT = 5.0
"""Seconds ffmpeg gets after SIGTERM to finish its file before SIGKILL."""
_PROGRESS_LINE = re.compile(r"^([a-z_0-9]+)=\s*(\S*)\s*$")  # "speed=   0x" pads with spaces
_DISK_FULL = ("No space left on device", "Disk quota exceeded", "File too large")


@dataclass(frozen=True)
class Progress:
    """One ``-progress`` block: frames written and output time so far."""

    frame: int
    out_seconds: float
    done: bool


def base_argv(ffmpeg: str = "ffmpeg") -> list[str]:
    """Quiet, non-interactive ffmpeg that overwrites its output (outputs are private temp names)."""
    return [ffmpeg, "-hide_banner", "-nostdin", "-loglevel", "error", "-y"]


def with_progress(argv: Sequence[str]) -> list[str]:
    """Insert ``-progress pipe:2 -nostats`` as global options right after the executable."""
    if not argv:
        raise ValueError("empty argv")
    if "-progress" in argv:
        return list(argv)
    return [argv[0], "-progress", "pipe:2", "-nostats", *argv[1:]]


def rate_str(rate: Fraction) -> str:
    return f"{rate.numerator}/{rate.denominator}"


def encode_argv(
    *,
    ffmpeg: str,
    fifo: Path,
    width: int,
    height: int,
    rate: Fraction,
    frames: int,
    video_args: Sequence[str],
    out: Path,
    source: Path | None = None,
    start: float = 0.0,
    audio_bitrate: str = "128k",
    video_filter: str | None = None,
    audio_filter: str | None = None,
) -> list[str]:
    """Encode raw yuv420p frames from ``fifo`` plus (optionally) the audio of ``source``.

    The audio is cut by ffmpeg itself (``-ss``/``-t`` on the input: sample-accurate, since audio
    is decoded) to exactly the length of the ``frames`` video frames, so both tracks end together.
    ``video_filter`` (burned captions) and ``audio_filter`` (loudness) run inside this one encode.
    """
    seconds = frames / rate
    argv = [
        *base_argv(ffmpeg),
        "-f", "rawvideo", "-pix_fmt", "yuv420p", "-s", f"{width}x{height}",
        "-framerate", rate_str(rate), "-i", str(fifo),
    ]  # fmt: skip
    if source is not None:
        argv += ["-ss", f"{start:.6f}", "-t", f"{float(seconds):.6f}", "-i", str(source)]
    argv += ["-map", "0:v:0"]
    if video_filter:
        argv += ["-vf", video_filter]
    if source is not None:
        argv += ["-map", "1:a:0", "-c:a", "aac", "-b:a", audio_bitrate, "-ac", "2", "-ar", "48000"]
        if audio_filter:
            argv += ["-af", audio_filter]
    argv += [
        *video_args, "-pix_fmt", "yuv420p",
        "-movflags", "+faststart", "-f", "mp4", str(out),
    ]  # fmt: skip
    return with_progress(argv)


def encoder_probe_argv(ffmpeg: str, video_args: Sequence[str]) -> list[str]:
    """A 0.2 s test-pattern encode to nowhere: proves the encoder really opens on this machine."""
    return [
        *base_argv(ffmpeg),
        "-f", "lavfi", "-i", "testsrc=size=256x256:rate=25:duration=0.2",
        *video_args, "-pix_fmt", "yuv420p", "-f", "null", "-",
    ]  # fmt: skip


def classify_failure(argv: Sequence[str], returncode: int | None, tail: Sequence[str]) -> RenderError:
    """Turn an ffmpeg exit into the error a user can act on, with ffmpeg's own last words."""
    text = "\n".join(tail)
    out = argv[-1] if argv else "?"
    if any(s in text for s in _DISK_FULL) or returncode == -signal.SIGXFSZ:
        return DiskFullError(
            f"{out}: disk full or file size limit reached while encoding; free space in that folder "
            f"(or raise the limit) and retry.\nffmpeg said:\n{text or '(nothing)'}"
        )
    how = (
        f"was killed by signal {-returncode}"
        if returncode is not None and returncode < 0
        else (f"exited with status {returncode}")
    )
    return RenderError(f"ffmpeg {how} while writing {out}; its last output follows.\n{text or '(nothing)'}")


class FFmpegRun:
    """A running ffmpeg: its stderr tail, its progress, and a polite way to stop it."""

    def __init__(self, proc: Process, argv: Sequence[str], on_progress: Callable[[Progress], None] | None):
        self.proc = proc
        self.argv = list(argv)
        self.tail: deque[str] = deque(maxlen=STDERR_LINES)
        self._on_progress = on_progress
        self._block: dict[str, str] = {}
        self._drained = anyio.Event()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _line(self, line: str) -> None:
        line = line.rstrip()
        if not line:
            return
        m = _PROGRESS_LINE.match(line)
        if m is None:
            self.tail.append(line)
            return
        key, value = m.groups()
        self._block[key] = value
        if key == "progress":
            block, self._block = self._block, {}
            if self._on_progress is not None:
                us = block.get("out_time_us", "") or block.get("out_time_ms", "")
                frame = block.get("frame", "0")
                self._on_progress(
                    Progress(
                        frame=int(frame) if frame.isdigit() else 0,
                        out_seconds=int(us) / 1e6 if us.lstrip("-").isdigit() else 0.0,
                        done=value == "end",
                    )
                )

    async def pump_stderr(self) -> None:
        """Read stderr to EOF, splitting lines; must run for the whole life of the process."""
        assert self.proc.stderr is not None
        pending = b""
        try:
            async for data in self.proc.stderr:
                pending += data
                *lines, pending = re.split(rb"[\r\n]", pending)
                for raw in lines:
                    self._line(raw.decode("utf-8", "replace"))
            if pending:
                self._line(pending.decode("utf-8", "replace"))
        except (anyio.EndOfStream, anyio.ClosedResourceError, anyio.BrokenResourceError):
            pass  # the process went away; whatever it said is in the tail already
        finally:
            self._drained.set()

    async def wait(self) -> int:
        """Wait for exit and for stderr to be read to the end; return the exit status."""
        rc = await self.proc.wait()
        await self._drained.wait()
        return rc

    async def check(self) -> None:
        """Wait; raise :class:`RenderError` (or :class:`DiskFullError`) unless ffmpeg succeeded."""
        rc = await self.wait()
        if rc != 0:
            raise classify_failure(self.argv, rc, list(self.tail))

    async def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """terminate → wait(timeout) → kill. A no-op once the process has exited."""
        if self.proc.returncode is not None:
            return
        try:
            self.proc.terminate()
        except ProcessLookupError:
            return
        with anyio.move_on_after(timeout):
            await self.proc.wait()
            return
        log.warning("ffmpeg ignored SIGTERM; killing", pid=self.pid)
        try:
            self.proc.kill()
        except ProcessLookupError:
            return
        await self.proc.wait()


@asynccontextmanager
async def ffmpeg_process(
    argv: Sequence[str],
    *,
    on_progress: Callable[[Progress], None] | None = None,
    stop_timeout: float = STOP_TIMEOUT,
) -> AsyncIterator[FFmpegRun]:
    """Start ``argv``; on leaving the block ffmpeg is stopped (if still running) and reaped.

    The stderr pump runs in its own task group; cleanup runs shielded, so a cancelled job still
    leaves no ffmpeg behind.
    """
    try:
        proc = await anyio.open_process(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
    except FileNotFoundError as e:
        raise RenderError(f"ffmpeg not found ({argv[0]}); install ffmpeg or set render.ffmpeg") from e
    run = FFmpegRun(proc, argv, on_progress)
    log.debug("ffmpeg started", pid=proc.pid, argv=" ".join(argv))
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(run.pump_stderr)
            try:
                yield run
            finally:
                with anyio.move_on_after(stop_timeout + 2, shield=True):
                    await run.stop(stop_timeout)
    except BaseExceptionGroup as eg:
        # The pump never raises, so a lone exception is the caller's own: hand it back unwrapped.
        if len(leaves := leaf_errors(eg)) == 1:
            raise leaves[0] from None
        raise
    finally:
        with anyio.move_on_after(2, shield=True):
            await proc.aclose()
