"""Cut streamed audio into Whisper windows at silences, and transcribe them in parallel.

Whisper's encoder always looks at 30 s, so windows should be as long as allowed; a cut inside a
word garbles it, so they end in silences found by faster-whisper's bundled Silero VAD. Only
the open window is held in memory (at most ``window_seconds`` plus one chunk).

Each window *owns* the media time between its two cuts. When no silence can be found (a
30 s run of unbroken speech or music) the cut falls at the quietest moment and both windows
overlap it by ``HARD_CUT_OVERLAP``: a word straddling the cut is then heard whole by both, and
:func:`splice` joins the two word lists where their texts agree, so it is kept once.
"""

from __future__ import annotations

import dataclasses
import math
from collections import Counter
from collections.abc import AsyncIterable, Callable
from dataclasses import dataclass

import anyio
import numpy as np
import structlog
from faster_whisper.vad import VadOptions, get_speech_timestamps

from montaged.asr.whisper_pool import WhisperPool, WindowWords
from montaged.config import WhisperConfig
from montaged.model import AudioChunk, Transcript, Word

log = structlog.get_logger(__name__)

SR = AudioChunk.SAMPLE_RATE
HARD_CUT_OVERLAP = 1.0  # seconds each side of a cut made inside speech
# Short silences count: 150 ms between phrases is a clean place to cut. Small padding keeps
# such gaps visible (faster-whisper's defaults, 2 s / 400 ms, are for dropping long silences).
WINDOW_VAD = VadOptions(min_silence_duration_ms=150, speech_pad_ms=100)


@dataclass(frozen=True, eq=False)
class Window:
    """Audio handed to one worker; words whose midpoint is outside ``[own_start, own_end)`` are
    another window's."""

    index: int
    offset: float  # media time of samples[0]
    end: float  # media time just after the last sample
    samples: np.ndarray  # emptied once transcribed, so finished windows hold no audio
    own_start: float
    own_end: float  # math.inf for the last window
    speech: bool  # False: the VAD heard nothing, so Whisper is not asked (it would hallucinate)
    hard_cut: bool = False


class Windower:
    """Incremental window cutter: ``feed(chunk)`` and ``flush()`` yield finished windows."""

    def __init__(self, max_seconds: float = 30.0, *, vad: VadOptions = WINDOW_VAD) -> None:
        if not 5 < max_seconds <= 30:
            raise ValueError(f"whisper.window_seconds must be in (5, 30] (got {max_seconds})")
        self.max_n = int(max_seconds * SR)
        self.ov_n = int(HARD_CUT_OVERLAP * SR)
        self.vad = vad
        self._buf = np.zeros(0, dtype=np.float32)
        self._buf_start = 0  # media sample index of _buf[0]
        self._own_start = 0  # media sample index where the next window's ownership begins
        self._next_index = 0
        self._expected: int | None = None  # media sample index the next chunk should start at

    def feed(self, chunk: AudioChunk) -> list[Window]:
        samples = _as_float32(chunk.samples)
        start = round(chunk.start * SR)
        if self._expected is None:
            self._buf_start = self._own_start = start
        elif start > self._expected:  # a gap in the stream (decoder skipped): keep time right
            samples = np.concatenate([np.zeros(start - self._expected, np.float32), samples])
        elif start < self._expected:  # overlapping chunk: drop what we already have
            samples = samples[self._expected - start :]
        self._expected = max(start, self._expected or start) + len(samples)
        self._buf = np.concatenate([self._buf, samples]) if len(self._buf) else samples
        out = []
        while len(self._buf) > self.max_n:
            out.append(self._cut())
        return out

    def flush(self) -> list[Window]:
        """The rest of the stream as a last window (none when nothing is left)."""
        out = []
        while len(self._buf) > self.max_n:
            out.append(self._cut())
        own = self._own_start - self._buf_start
        if len(self._buf) > own:
            speech = _speech(self._buf, self.vad)
            has = any(s["end"] > own for s in speech)
            out.append(self._emit(len(self._buf), math.inf, has, keep_from=len(self._buf)))
        return out

    def _cut(self) -> Window:
        buf, own = self._buf, self._own_start - self._buf_start
        speech = _speech(buf, self.vad)
        lo = own + self.max_n // 4
        if not any(s["end"] > own and s["start"] < self.max_n for s in speech):
            return self._emit(self.max_n, self.max_n, False, keep_from=self.max_n)
        cut = _silence_cut(speech, own, len(buf), lo=own + self.max_n // 2, hi=self.max_n, min_gap=SR // 2)
        if cut is None:
            cut = _silence_cut(speech, own, len(buf), lo=lo, hi=self.max_n, min_gap=0)
        if cut is not None:
            has = any(s["start"] < cut and s["end"] > own for s in speech)
            return self._emit(cut, cut, has, keep_from=cut)
        # Unbroken speech: cut at the quietest 20 ms, leaving room for the overlap after it.
        hi = self.max_n - self.ov_n
        cut = _quietest(buf, max(own + self.ov_n, hi - self.max_n // 2), hi)
        return self._emit(cut + self.ov_n, cut, True, keep_from=cut - self.ov_n, hard=True)

    def _emit(self, upto: int, own_end: float, speech: bool, *, keep_from: int, hard: bool = False) -> Window:
        bs = self._buf_start
        win = Window(
            index=self._next_index,
            offset=bs / SR,
            end=(bs + upto) / SR,
            samples=self._buf[:upto].copy(),
            own_start=self._own_start / SR,
            own_end=own_end if math.isinf(own_end) else (bs + own_end) / SR,
            speech=speech,
            hard_cut=hard,
        )
        self._next_index += 1
        if not math.isinf(own_end):
            self._own_start = bs + int(own_end)
        self._buf = self._buf[keep_from:]
        self._buf_start = bs + keep_from
        return win


def _as_float32(samples: np.ndarray) -> np.ndarray:
    a = np.asarray(samples)
    if a.dtype == np.int16:
        return (a.astype(np.float32) / 32768.0).ravel()
    return a.astype(np.float32, copy=False).ravel()


def _speech(buf: np.ndarray, vad: VadOptions) -> list[dict[str, int]]:
    if len(buf) == 0:
        return []
    spans: list[dict[str, int]] = get_speech_timestamps(buf, vad, sampling_rate=SR)
    return spans


def _silence_cut(
    speech: list[dict[str, int]], own: int, n: int, *, lo: int, hi: int, min_gap: int
) -> int | None:
    """Midpoint of the latest silence of at least ``min_gap`` samples whose cut lies in [lo, hi].

    ``own``..``n`` is the buffer span looked at; the silence after the last speech runs to ``n``.
    """
    best = None
    bounds = [own, *(s["end"] for s in speech)]
    starts = [*(s["start"] for s in speech), None]
    for gap_start, gap_end in zip(bounds, starts, strict=True):
        end = gap_end if gap_end is not None else n
        if end - gap_start < max(min_gap, 1):
            continue
        cut = min((gap_start + end) // 2, hi)
        if cut < gap_start or not lo <= cut <= hi:
            continue
        best = cut if best is None else max(best, cut)
    return best


def _quietest(buf: np.ndarray, lo: int, hi: int, frame: int = SR // 50) -> int:
    lo = max(0, min(lo, hi - frame))
    seg = buf[lo:hi]
    n = len(seg) // frame
    if n == 0:
        return hi
    energy = np.square(seg[: n * frame].reshape(n, frame)).mean(axis=1)
    return lo + int(np.argmin(energy)) * frame + frame // 2


def _mid(w: Word) -> float:
    return (w.start + w.end) / 2


def _clamped(words: list[Word], win: Window) -> list[Word]:
    """Words moved inside the audio the window was given (Whisper may overshoot its end)."""
    out = []
    for w in words:
        start = min(max(w.start, win.offset), win.end)
        end = min(max(w.end, start), win.end)
        out.append(w if (start, end) == (w.start, w.end) else dataclasses.replace(w, start=start, end=end))
    return out


def _key(w: Word) -> str:
    return "".join(ch for ch in w.text.lower() if ch.isalnum())


def splice(before: list[Word], after: list[Word], *, cut: float, lo: float, hi: float) -> list[Word]:
    """Join two windows that both heard ``[lo, hi]`` around a cut made inside speech.

    Near its start a window's first word soaks up the leading audio, and near its end a window
    hears a truncated phrase, so neither timing alone says where a straddling word belongs.
    Instead the words both windows heard in the overlap are aligned by text (longest common
    subsequence) and the two are joined at the matched word nearest the cut. Without a match,
    each side keeps the words whose midpoint is on its side of the cut.
    """
    tail = [i for i, w in enumerate(before) if _mid(w) >= lo]
    head = [j for j, w in enumerate(after) if _mid(w) <= hi]
    a, b = [_key(before[i]) for i in tail], [_key(after[j]) for j in head]
    # LCS table over the (short) overlap: a couple of seconds, so a few words each side.
    table = [[0] * (len(b) + 1) for _ in range(len(a) + 1)]
    for x in range(len(a) - 1, -1, -1):
        for y in range(len(b) - 1, -1, -1):
            table[x][y] = (
                table[x + 1][y + 1] + 1 if a[x] and a[x] == b[y] else max(table[x + 1][y], table[x][y + 1])
            )
    pairs, x, y = [], 0, 0
    while x < len(a) and y < len(b):
        if a[x] and a[x] == b[y]:
            pairs.append((tail[x], head[y]))
            x, y = x + 1, y + 1
        elif table[x + 1][y] >= table[x][y + 1]:
            x += 1
        else:
            y += 1
    if not pairs:
        return [w for w in before if _mid(w) < cut] + [w for w in after if _mid(w) >= cut]
    i, j = min(pairs, key=lambda p: abs((_mid(before[p[0]]) + _mid(after[p[1]])) / 2 - cut))
    return before[: i + 1] + after[j + 1 :]


def merge_windows(done: list[tuple[Window, list[Word]]]) -> list[Word]:
    """Words of consecutive windows (in window order) as one time-ordered list, each word once."""
    out: list[Word] = []
    prev: Window | None = None
    for win, words in done:
        words = _clamped(words, win)
        if prev is not None and prev.hard_cut and prev.index == win.index - 1:
            out = splice(out, words, cut=win.own_start, lo=win.offset, hi=prev.end)
        else:
            out.extend(w for w in words if _mid(w) >= win.own_start)
        prev = win
    out.sort(key=lambda w: (w.start, w.end))
    return out


async def transcribe_stream(
    chunks: AsyncIterable[AudioChunk],
    *,
    pool: WhisperPool,
    cfg: WhisperConfig,
    duration: float | None,
    on_progress: Callable[[float], None] | None = None,
    vad: VadOptions = WINDOW_VAD,
) -> Transcript:
    """Transcribe a stream of audio chunks (e.g. a ``MemoryObjectReceiveStream``) with ``pool``.

    Windows go to the pool as soon as they are cut, at most two per worker in flight; reading
    ``chunks`` pauses while that many are outstanding, which pushes back on the decoder.
    ``on_progress`` gets the share of ``duration`` transcribed so far (0..1). ``vad`` tunes where
    windows may be cut (tests use a long minimum silence to force cuts inside speech).
    """
    windower = Windower(cfg.window_seconds, vad=vad)
    results: dict[int, tuple[Window, WindowWords | None]] = {}
    limit = anyio.Semaphore(max(2, 2 * pool.workers))
    done = 0.0
    last_end = 0.0

    def progress(win: Window) -> None:
        nonlocal done
        own_end = win.end if math.isinf(win.own_end) else win.own_end
        done += max(0.0, own_end - win.own_start)
        if on_progress is not None and duration:
            on_progress(min(1.0, done / duration))

    async def run(win: Window) -> None:
        try:
            res = await pool.transcribe_window(win.samples, win.offset, cfg.language)
            results[win.index] = (_drop_samples(win), res)
            progress(win)
        finally:
            limit.release()

    async def dispatch(tg: anyio.abc.TaskGroup, wins: list[Window]) -> None:
        nonlocal last_end
        for win in wins:
            last_end = max(last_end, win.end)
            log.debug(
                "window", index=win.index, start=win.offset, end=win.end, speech=win.speech, hard=win.hard_cut
            )
            if not win.speech:
                results[win.index] = (_drop_samples(win), None)
                progress(win)
                continue
            await limit.acquire()
            tg.start_soon(run, win)

    async with anyio.create_task_group() as tg:
        async for chunk in chunks:
            await dispatch(tg, await anyio.to_thread.run_sync(windower.feed, chunk))
        await dispatch(tg, await anyio.to_thread.run_sync(windower.flush))

    languages: Counter[str] = Counter()
    finished: list[tuple[Window, list[Word]]] = []
    for i in sorted(results):
        win, res = results[i]
        finished.append((win, [] if res is None else res.words))
        if res is not None:
            languages[res.language] += len(res.words)
    words = merge_windows(finished)
    language = cfg.language or (languages.most_common(1)[0][0] if languages else "en")
    if on_progress is not None:
        on_progress(1.0)
    return Transcript(
        words=tuple(words),
        language=language,
        engine="whisper",
        model=pool.model_name,
        duration=duration if duration is not None else last_end,
    )


def _drop_samples(win: Window) -> Window:
    """Keep a window's bookkeeping but free its audio once it has been transcribed."""
    return dataclasses.replace(win, samples=win.samples[:0])
