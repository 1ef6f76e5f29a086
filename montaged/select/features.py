"""Compact per-hop audio features (energy, pitch, voicing), built incrementally from audio chunks.

Selection runs on audio and transcript only, before any vision work, so the audio side must be
cheap to keep for a whole talk: three small floats per hop (default 40 ms, 25 frames/s), i.e.
about 2 MB of float32 for a two-hour input and half that when stored (float16/uint8, base64).
Samples are never kept beyond one analysis window.

Pitch is YIN (de Cheveigné & Kawahara 2002): the cumulative-mean-normalised difference function
is computed for a whole batch of frames at once through one FFT cross-correlation, and f0 is the
first dip under a threshold, refined by parabolic interpolation. Search range 80–400 Hz covers
adult speech (typical male 85–180 Hz, female 165–255 Hz, with headroom for excited speech).
"""

from __future__ import annotations

import base64
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from montaged.model import AudioChunk

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]

RATE = AudioChunk.SAMPLE_RATE
FMIN, FMAX = 80.0, 400.0
MIN_LAG = int(RATE // FMAX)  # 40 samples
MAX_LAG = int(np.ceil(RATE / FMIN))  # 200 samples
WINDOW = 640  # 40 ms: the YIN integration window (440 samples) plus the longest lag
INTEGRATION = WINDOW - MAX_LAG
NFFT = 1024  # >= WINDOW, so the circular correlation never wraps for lags <= MAX_LAG
YIN_THRESHOLD = 0.15  # the paper's recommended absolute threshold for the first dip
VOICED_PERIODICITY = 0.7  # 1 - d'(tau) at or above this is treated as voiced in summaries
SILENCE_DB = -100.0  # energy written for frames of lost audio and digital silence
FORMAT_VERSION = 1


def _b64(a: npt.NDArray[Any]) -> str:
    return base64.b64encode(np.ascontiguousarray(a).tobytes()).decode("ascii")


def _unb64(s: str, dtype: type, n: int, name: str) -> npt.NDArray[Any]:
    a: npt.NDArray[Any] = np.frombuffer(base64.b64decode(s), dtype=dtype)
    if len(a) != n:
        raise ValueError(f"audio feature track: field {name!r} holds {len(a)} frames, expected {n}")
    return a


def yin_frames(frames: npt.NDArray[np.float32]) -> tuple[F32, F32]:
    """f0 (Hz, 0 when unvoiced) and periodicity (1 - d'(tau), 0..1) for each row of ``frames``.

    ``frames`` is ``(n, WINDOW)``; everything is batched so a 5 s chunk costs one FFT call.
    """
    n = frames.shape[0]
    if n == 0:
        return np.zeros(0, np.float32), np.zeros(0, np.float32)
    x = frames.astype(np.float64)
    x -= x.mean(axis=1, keepdims=True)  # DC offset would bias the difference function
    head = np.zeros((n, NFFT))
    head[:, :INTEGRATION] = x[:, :INTEGRATION]
    spec = np.conj(np.fft.rfft(head, NFFT)) * np.fft.rfft(x, NFFT)
    r = np.fft.irfft(spec, NFFT)[:, : MAX_LAG + 1]  # r[tau] = sum_j x[j] x[j + tau]
    sq = np.concatenate([np.zeros((n, 1)), np.cumsum(x * x, axis=1)], axis=1)
    lags = np.arange(MAX_LAG + 1)
    e_tau = sq[:, lags + INTEGRATION] - sq[:, lags]
    d = np.maximum(e_tau[:, :1] + e_tau - 2.0 * r, 0.0)
    cum = np.cumsum(d[:, 1:], axis=1)
    cmnd = np.ones_like(d)
    with np.errstate(divide="ignore", invalid="ignore"):
        cmnd[:, 1:] = np.where(cum > 0, d[:, 1:] * lags[1:] / cum, 1.0)
    c = cmnd[:, MIN_LAG : MAX_LAG + 1]
    # First local minimum under the threshold (avoids octave errors), else the global minimum.
    inner = np.zeros_like(c, dtype=bool)
    inner[:, 1:-1] = (c[:, 1:-1] <= c[:, :-2]) & (c[:, 1:-1] <= c[:, 2:])
    dips = inner & (c < YIN_THRESHOLD)
    has_dip = dips.any(axis=1)
    idx = np.where(has_dip, dips.argmax(axis=1), c.argmin(axis=1))
    rows = np.arange(n)
    best = c[rows, idx]
    # Parabolic interpolation around the chosen lag for sub-sample precision.
    i0 = np.clip(idx, 1, c.shape[1] - 2)
    a, b, cc = c[rows, i0 - 1], c[rows, i0], c[rows, i0 + 1]
    denom = a - 2 * b + cc
    with np.errstate(divide="ignore", invalid="ignore"):
        shift = np.where(np.abs(denom) > 1e-12, 0.5 * (a - cc) / denom, 0.0)
    shift = np.where(idx == i0, np.clip(shift, -0.5, 0.5), 0.0)
    tau = MIN_LAG + idx + shift
    periodicity = np.clip(1.0 - best, 0.0, 1.0)
    energy = sq[:, -1]
    f0 = np.where((periodicity >= 1.0 - 2 * YIN_THRESHOLD) & (energy > 1e-8), RATE / tau, 0.0)
    f0 = np.where((f0 >= FMIN * 0.95) & (f0 <= FMAX * 1.05), f0, 0.0)
    return f0.astype(np.float32), periodicity.astype(np.float32)


@dataclass(frozen=True)
class TalkStats:
    """Whole-talk reference values every range summary is normalised against."""

    energy_mean_db: float  # mean energy of voiced frames
    energy_std_db: float
    pitch_median_st: float  # median f0 of voiced frames, semitones re 100 Hz
    pitch_std_st: float
    voiced_share: float  # voiced frames / all frames


@dataclass(frozen=True)
class RangeSummary:
    """Audio description of one time range (what a clip sounds like)."""

    start: float
    end: float
    energy_mean_db: float
    energy_std_db: float
    energy_peaks: int  # voiced frames more than 1.5 talk-std above the talk's voiced mean
    pitch_median_hz: float
    pitch_range_st: float  # 10th–90th percentile spread of f0, semitones
    pitch_std_st: float
    voiced_share: float


def semitones(f0: npt.ArrayLike) -> F64:
    """Hz → semitones re 100 Hz (log scale: equal musical steps for low and high voices)."""
    out: F64 = 12.0 * np.log2(np.asarray(f0, dtype=np.float64) / 100.0)
    return out


class AudioFeatureTrack:
    """Per-hop energy (dBFS), f0 (Hz, 0 = unvoiced) and periodicity, fed chunk by chunk.

    Args:
        hop_seconds: spacing of frames, 0.02–0.05 s. 40 ms resolves syllables (~150–250 ms)
            for emphasis while keeping a two-hour talk at 180k frames.

    Frame ``k`` is centred on ``t0 + k * hop``; ``t0`` is the first chunk's start. A gap between
    chunks (lost audio) is written as silent, unvoiced frames; an overlap is dropped.
    """

    def __init__(self, hop_seconds: float = 0.04) -> None:
        if not 0.02 <= hop_seconds <= 0.05:
            raise ValueError(f"hop_seconds must be within 0.02–0.05 s (got {hop_seconds})")
        self.hop_samples = round(hop_seconds * RATE)
        self.hop = self.hop_samples / RATE
        self.t0: float | None = None
        self._n = 0
        self._energy = np.zeros(1024, np.float32)
        self._f0 = np.zeros(1024, np.float32)
        self._per = np.zeros(1024, np.float32)
        self._buf = np.zeros(WINDOW // 2, np.float32)  # centre frame 0 on t0: half a window of lead-in
        self._consumed = 0  # samples of media (after t0) that entered the buffer
        self._finished = False

    # -- feeding ---------------------------------------------------------------------------
    def add(self, chunk: AudioChunk) -> None:
        """Analyse one chunk; only the tail shorter than a window is kept for the next one."""
        if self._finished:
            raise RuntimeError("audio feature track: add() after finish()")
        samples = np.asarray(chunk.samples, dtype=np.float32)
        if samples.ndim != 1:
            raise ValueError(
                f"audio chunk at {chunk.start:.2f} s: samples must be 1-D mono (got shape {samples.shape})"
            )
        if self.t0 is None:
            self.t0 = float(chunk.start)
        expected = self.t0 + self._consumed / RATE
        offset = round((chunk.start - expected) * RATE)
        if abs(offset) <= 2:  # chunk starts rounded to the microsecond: not a gap
            offset = 0
        if offset < 0:  # overlap with what we already have: drop the repeated part
            samples = samples[-offset:]
        elif offset > 0:  # lost audio: analyse it as digital silence (exactly as zero samples)
            self._add_silence(offset)
        if len(samples):
            self._buf = np.concatenate([self._buf, samples])
            self._consumed += len(samples)
            self._flush(pad=False)

    def _add_silence(self, count: int) -> None:
        """Like adding ``count`` zero samples, without allocating them for a long gap."""
        head = min(count, WINDOW)  # enough zeros to push every real sample through analysis
        self._buf = np.concatenate([self._buf, np.zeros(head, np.float32)])
        self._consumed += head
        self._flush(pad=False)
        rest = count - head
        if rest <= 0:
            return
        length = len(self._buf) + rest  # the buffer now holds only zeros
        m = max(0, (length - WINDOW) // self.hop_samples + 1)
        self._append(np.full(m, SILENCE_DB, np.float32), None, None)
        self._buf = np.zeros(length - m * self.hop_samples, np.float32)
        self._consumed += rest

    def finish(self) -> AudioFeatureTrack:
        """Analyse the last partial window (zero-padded); no more ``add`` after this."""
        if not self._finished:
            self._flush(pad=True)
            self._buf = np.zeros(0, np.float32)
            self._finished = True
        return self

    @classmethod
    def from_chunks(cls, chunks: Iterable[AudioChunk], hop_seconds: float = 0.04) -> AudioFeatureTrack:
        track = cls(hop_seconds)
        for chunk in chunks:
            track.add(chunk)
        return track.finish()

    def _flush(self, *, pad: bool) -> None:
        buf = self._buf
        if pad:
            # Frames whose centre lies before the end of the audio, windows zero-padded.
            centres = len(buf) - WINDOW // 2
            n = max(0, -(-centres // self.hop_samples))
            tail = max(0, (n - 1) * self.hop_samples + WINDOW - len(buf))
            buf = np.concatenate([buf, np.zeros(tail, np.float32)])
        else:
            n = max(0, (len(buf) - WINDOW) // self.hop_samples + 1)
        if n == 0:
            return
        view = np.lib.stride_tricks.sliding_window_view(buf, WINDOW)[:: self.hop_samples][:n]
        ms = np.mean(np.square(view, dtype=np.float64), axis=1)
        energy = np.maximum(10.0 * np.log10(ms + 1e-12), SILENCE_DB).astype(np.float32)
        f0, per = yin_frames(view)
        self._append(energy, f0, per)
        self._buf = self._buf[n * self.hop_samples :].copy()

    def _append(self, energy: F32, f0: F32 | None, per: F32 | None) -> None:
        m = len(energy)
        if m <= 0:
            return
        if self._n + m > len(self._energy):
            cap = max(2 * len(self._energy), self._n + m)
            for name in ("_energy", "_f0", "_per"):
                grown = np.zeros(cap, np.float32)
                grown[: self._n] = getattr(self, name)[: self._n]
                setattr(self, name, grown)
        self._energy[self._n : self._n + m] = energy
        self._f0[self._n : self._n + m] = 0.0 if f0 is None else f0
        self._per[self._n : self._n + m] = 0.0 if per is None else per
        self._n += m

    # -- reading ---------------------------------------------------------------------------
    def __len__(self) -> int:
        return self._n

    @property
    def energy_db(self) -> F32:
        return self._energy[: self._n]

    @property
    def f0(self) -> F32:
        return self._f0[: self._n]

    @property
    def periodicity(self) -> F32:
        return self._per[: self._n]

    @property
    def nbytes(self) -> int:
        """Memory held by the frame arrays (capacity, not just the filled part)."""
        return int(self._energy.nbytes + self._f0.nbytes + self._per.nbytes + self._buf.nbytes)

    @property
    def times(self) -> F64:
        return (self.t0 or 0.0) + np.arange(self._n, dtype=np.float64) * self.hop

    def voiced(self) -> npt.NDArray[np.bool_]:
        """Frames with a pitch, enough periodicity, and energy above the talk's quiet floor."""
        e = self.energy_db
        if len(e) == 0:
            return np.zeros(0, bool)
        p10, p90 = (float(v) for v in np.percentile(e, [10, 90]))
        # 6 dB over the quietest tenth (pauses: background hum), but never above the loud body of
        # the signal less 12 dB, so a talk with no pauses (or a steady tone) keeps its voiced frames.
        floor = min(p10 + 6.0, p90 - 12.0)
        return (self.f0 > 0) & (self.periodicity >= VOICED_PERIODICITY) & (e > floor)

    def frame_index(self, t: npt.ArrayLike) -> npt.NDArray[np.intp]:
        """Index of the first frame centred at or after time ``t`` (clamped to 0..len)."""
        k = np.ceil((np.asarray(t, dtype=np.float64) - (self.t0 or 0.0)) / self.hop - 1e-9)
        return np.clip(k, 0, self._n).astype(np.intp)

    def talk_stats(self) -> TalkStats:
        v = self.voiced()
        if not v.any():
            e = self.energy_db
            mean = float(e.mean()) if len(e) else SILENCE_DB
            std = float(e.std()) if len(e) else 0.0
            return TalkStats(mean, max(std, 1.0), 0.0, 1.0, 0.0)
        ev = self.energy_db[v].astype(np.float64)
        st = semitones(self.f0[v])
        return TalkStats(
            energy_mean_db=float(ev.mean()),
            energy_std_db=max(float(ev.std()), 1.0),  # 1 dB floor: a flat synthetic tone must not divide by 0
            pitch_median_st=float(np.median(st)),
            pitch_std_st=max(float(st.std()), 0.5),
            voiced_share=float(v.mean()),
        )

    def summary(self, start: float, end: float, stats: TalkStats | None = None) -> RangeSummary:
        """Energy and pitch of ``[start, end)``; peaks counted against ``stats`` (default: this talk)."""
        if end < start:
            raise ValueError(f"summary range ends before it starts ({start:.2f}–{end:.2f} s)")
        stats = stats or self.talk_stats()
        a, b = (int(i) for i in self.frame_index([start, end]))
        v = self.voiced()[a:b]
        e = self.energy_db[a:b].astype(np.float64)
        ev = e[v]
        f0 = self.f0[a:b][v]
        st = semitones(f0) if len(f0) else np.zeros(0)
        return RangeSummary(
            start=start,
            end=end,
            energy_mean_db=float(ev.mean()) if len(ev) else float(e.mean()) if len(e) else SILENCE_DB,
            energy_std_db=float(ev.std()) if len(ev) else 0.0,
            energy_peaks=int(np.sum(ev > stats.energy_mean_db + 1.5 * stats.energy_std_db)),
            pitch_median_hz=float(np.median(f0)) if len(f0) else 0.0,
            pitch_range_st=float(np.percentile(st, 90) - np.percentile(st, 10)) if len(st) else 0.0,
            pitch_std_st=float(st.std()) if len(st) else 0.0,
            voiced_share=float(v.mean()) if len(v) else 0.0,
        )

    # -- storage ---------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Compact JSON: float16 energy and f0 (0.06 dB / 0.25 Hz steps), uint8 periodicity."""
        return {
            "version": FORMAT_VERSION,
            "hop": self.hop,
            "t0": self.t0 or 0.0,
            "frames": self._n,
            "energy_db": _b64(self.energy_db.astype("<f2")),
            "f0": _b64(self.f0.astype("<f2")),
            "periodicity": _b64(np.round(self.periodicity * 255).astype(np.uint8)),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AudioFeatureTrack:
        if data.get("version") != FORMAT_VERSION:
            raise ValueError(
                f"audio feature track: stored format version {data.get('version')!r} is not "
                f"{FORMAT_VERSION}; recompute the select stage"
            )
        try:
            track = cls(float(data["hop"]))
            n = int(data["frames"])
            energy = _unb64(data["energy_db"], np.dtype("<f2").type, n, "energy_db")
            f0 = _unb64(data["f0"], np.dtype("<f2").type, n, "f0")
            per = _unb64(data["periodicity"], np.uint8, n, "periodicity")
        except KeyError as e:
            raise ValueError(f"audio feature track: stored result lacks field {e.args[0]!r}") from e
        track.t0 = float(data["t0"])
        track._append(energy.astype(np.float32), f0.astype(np.float32), (per / 255.0).astype(np.float32))
        track._finished = True
        return track
