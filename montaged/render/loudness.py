"""Clip loudness to a target (EBU R128): measured in-process, corrected by one gain in the encode.

The clip's range is decoded with PyAV into the stereo 48 kHz the clip will carry (the same
downmix and rate the encoder's ``-ac 2 -ar 48000`` gives), and measured in numpy to ITU-R
BS.1770-4: K-weighted, gated integrated loudness, the EBU Tech 3342 loudness range and the true
peak (4x oversampled). The encoder then applies one linear gain (``volume``); only where that gain
would lift the true peak over the ceiling does a look-ahead limiter (``alimiter``, at 48 kHz) hold
the peaks down. This replaces a separate ffmpeg analysis pass and ffmpeg's ``loudnorm``, which
resamples to 192 kHz both when measuring and when applying: the same figures for a fraction of
the CPU. The clip as written is measured the same way for the sidecar.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio.to_thread
import av
import av.error
import numpy as np
import numpy.typing as npt
from scipy import signal

from montaged.config import ProfileConfig
from montaged.errors import RenderError

RATE = 48000
"""Clips' sound is stereo at 48 kHz; it is measured as that."""
CODEC_HEADROOM_DB = 0.6
"""The limiter aims this far under the ceiling: AAC's reconstruction overshoots the PCM it was
given by a few tenths of a dB at the true-peak level, and the ceiling is for the clip as written."""
SILENT_LUFS = -70.0
"""BS.1770's absolute gate: a range with no block louder than this is silence (left as it is)."""
PEAK_SEARCH_DB = 6.0
"""True peak is searched (oversampled) only in 10 ms stretches whose sample peak lies within this
of the range's highest sample: an inter-sample peak 6 dB over the samples around it takes a
near-Nyquist square wave, not sound from a microphone."""
LIMIT_ATTACK_MS = 5.0
"""Look-ahead of the limiter: long enough to turn a peak down smoothly, short enough to be inaudible."""
LIMIT_RELEASE_MS = 50.0
_BLOCK = 0.4  # s, BS.1770 gating block
_STEP = 0.1  # s, 75 % overlap
_LRA_BLOCK = 3.0  # s, EBU Tech 3342 short-term block
_PEAK_CHUNK = 480  # samples, 10 ms at 48 kHz
_INTERP = signal.firwin(48, 0.25, window="hann") * 4  # 4x interpolator, 12 taps a phase (BS.1770 annex 2)
_PAD = len(_INTERP) // 4


@dataclass(frozen=True)
class Loudness:
    """One measurement of a stretch of sound."""

    integrated: float  # LUFS
    true_peak: float  # dBTP
    lra: float  # LU
    overshoot: float = 0.0  # dB: how far true peaks rise over the samples near the loudest peaks

    def to_dict(self) -> dict[str, float]:
        return {
            "integrated_lufs": round(self.integrated, 2),
            "true_peak_dbtp": round(self.true_peak, 2),
            "lra": round(self.lra, 2),
        }


def _k_weighting(rate: int) -> npt.NDArray[np.float64]:
    """BS.1770's two biquads (high shelf, then high pass) for ``rate``, as second-order sections
    (coefficients from the standard's analog prototypes, as libebur128 derives them)."""
    f0, gain, q = 1681.974450955533, 3.999843853973347, 0.7071752369554196
    k = math.tan(math.pi * f0 / rate)
    vh = 10 ** (gain / 20)
    vb = vh**0.4996667741545416
    a0 = 1 + k / q + k * k
    shelf = [
        (vh + vb * k / q + k * k) / a0,
        2 * (k * k - vh) / a0,
        (vh - vb * k / q + k * k) / a0,
        1.0,
        2 * (k * k - 1) / a0,
        (1 - k / q + k * k) / a0,
    ]
    f0, q = 38.13547087602444, 0.5003270373238773
    k = math.tan(math.pi * f0 / rate)
    a0 = 1 + k / q + k * k
    highpass = [1.0, -2.0, 1.0, 1.0, 2 * (k * k - 1) / a0, (1 - k / q + k * k) / a0]
    return np.array([shelf, highpass])


_SOS = _k_weighting(RATE)


def _lufs(power: npt.NDArray[np.float64] | float) -> Any:
    with np.errstate(divide="ignore"):
        return -0.691 + 10 * np.log10(power)


def _block_powers(power_sum: npt.NDArray[np.float64], block: float, rate: int) -> npt.NDArray[np.float64]:
    """Mean power of each ``block``-second block, one every 100 ms (complete blocks only)."""
    step = round(_STEP * rate)
    per = round(block / _STEP)
    segments = len(power_sum) // step
    if segments < per:
        return np.zeros(0)
    seg = power_sum[: segments * step].reshape(segments, step).sum(axis=1)
    csum = np.concatenate([[0.0], np.cumsum(seg)])
    return np.asarray((csum[per:] - csum[:-per]) / (per * step))


def _gated_mean(blocks: npt.NDArray[np.float64], relative_lu: float) -> tuple[float, npt.NDArray[np.float64]]:
    """Mean power over the blocks past the absolute and the relative gate, and those blocks."""
    loud = blocks[_lufs(blocks) > SILENT_LUFS]
    if not len(loud):
        return 0.0, loud
    threshold = _lufs(loud.mean()) + relative_lu
    kept = loud[_lufs(loud) > threshold]
    return (float(kept.mean()) if len(kept) else 0.0), kept


def _true_peak(x: npt.NDArray[np.float32]) -> tuple[float, float]:
    """(true peak, overshoot) in dB: the 4x-oversampled peak, and how far oversampling rose over
    the sample peak in the stretches searched (the margin a sample-peak limiter must leave)."""
    chunks = x.shape[1] // _PEAK_CHUNK
    if chunks == 0:
        peak = float(np.abs(x).max(initial=0.0))
        return 20 * math.log10(peak) if peak > 0 else -math.inf, 0.0
    body = np.abs(x[:, : chunks * _PEAK_CHUNK]).reshape(x.shape[0], chunks, _PEAK_CHUNK).max(axis=(0, 2))
    tail = float(np.abs(x[:, chunks * _PEAK_CHUNK :]).max(initial=0.0))
    sample_peak = max(float(body.max()), tail)
    if sample_peak <= 0:
        return -math.inf, 0.0
    near = np.flatnonzero(body >= sample_peak * 10 ** (-PEAK_SEARCH_DB / 20))
    padded = np.pad(x, ((0, 0), (_PAD, _PAD)))
    idx = near[:, None] * _PEAK_CHUNK + np.arange(_PEAK_CHUNK + 2 * _PAD)[None, :]
    stretches = padded[:, idx]  # (channels, stretches, samples with context)
    delay = (len(_INTERP) - 1) // 2  # the interpolator's group delay, in output samples
    up = signal.upfirdn(_INTERP, stretches, up=4, axis=2)[
        :, :, 4 * _PAD + delay : 4 * (_PAD + _PEAK_CHUNK) + delay
    ]
    true_peaks = np.abs(up).max(axis=(0, 2))
    peak = max(float(true_peaks.max()), sample_peak)
    overshoot = float(np.max(20 * np.log10(np.maximum(true_peaks, 1e-12) / np.maximum(body[near], 1e-12))))
    return 20 * math.log10(peak), max(0.0, overshoot)


def measure_pcm(x: npt.NDArray[np.float32], rate: int = RATE) -> Loudness | None:
    """BS.1770 loudness of ``x`` (channels x samples, floats in [-1, 1]); ``None`` if it is silent.

    Every channel weighs 1 (front left/right; the clips are stereo).
    """
    if x.ndim != 2 or x.shape[1] == 0:
        return None
    sos = _SOS if rate == RATE else _k_weighting(rate)
    weighted = signal.sosfilt(sos, x.astype(np.float64), axis=1)
    power_sum = np.einsum("ij,ij->j", weighted, weighted)
    blocks = _block_powers(power_sum, _BLOCK, rate)
    mean, _ = _gated_mean(blocks, -10.0)
    if mean <= 0:
        return None
    short = _block_powers(power_sum, _LRA_BLOCK, rate)
    _, kept = _gated_mean(short, -20.0)
    lra = 0.0
    if len(kept) > 1:
        low, high = np.percentile(_lufs(kept), [10, 95])
        lra = float(high - low)
    true_peak, overshoot = _true_peak(x)
    return Loudness(float(_lufs(mean)), true_peak, lra, overshoot)


def decode_range(source: Path, start: float, seconds: float) -> npt.NDArray[np.float32]:
    """``seconds`` of ``source``'s first audio stream from ``start`` (media time, as ffmpeg's
    input ``-ss`` counts it), as stereo 48 kHz float samples (channels x samples).

    Raises:
        RenderError: the audio cannot be opened or stops decoding.
    """
    want = round(seconds * RATE)
    parts: list[npt.NDArray[np.float32]] = []
    try:
        with av.open(str(source), metadata_errors="ignore") as container:
            if not container.streams.audio:
                raise RenderError(f"{source}: no audio stream to measure the loudness of")
            stream = container.streams.audio[0]
            origin = container.start_time / av.time_base if container.start_time is not None else 0.0
            if start > 0 and stream.time_base is not None:
                container.seek(int((start + origin) / stream.time_base), stream=stream, backward=True)
            resampler = av.AudioResampler(format="fltp", layout="stereo", rate=RATE)
            first: float | None = None
            have = 0
            for frame in container.decode(stream):
                if first is None:
                    first = (frame.time - origin) if frame.time is not None else start
                for out in resampler.resample(frame):
                    parts.append(out.to_ndarray().astype(np.float32, copy=False))
                    have += parts[-1].shape[1]
                if first is not None and have - (start - first) * RATE >= want:
                    break
            else:
                parts += [out.to_ndarray().astype(np.float32, copy=False) for out in resampler.resample(None)]
    except av.error.FFmpegError as e:
        raise RenderError(f"{source}: cannot decode the sound to measure its loudness ({e})") from e
    if not parts:
        return np.zeros((2, 0), np.float32)
    pcm = np.concatenate(parts, axis=1)
    skip = max(0, round((start - (first or 0.0)) * RATE))
    return np.ascontiguousarray(pcm[:, skip : skip + want], dtype=np.float32)


def measure_file(source: Path, start: float, seconds: float) -> Loudness | None:
    """Loudness of ``seconds`` of ``source``'s sound from ``start``; ``None`` if silent."""
    return measure_pcm(decode_range(source, start, seconds))


async def measure(
    ffmpeg: str, source: Path, start: float, seconds: float, *, target: float = -14.0, true_peak: float = -1.0
) -> Loudness | None:
    """Loudness of ``seconds`` of ``source``'s first audio stream from ``start``; ``None`` if silent.

    Runs in a worker thread (decoding and numpy release the GIL). ``ffmpeg``, ``target`` and
    ``true_peak`` do not change the measurement (they shaped ffmpeg's analysis pass, which this
    replaced); they stay so callers need not change.

    Raises:
        RenderError: the audio could not be read.
    """
    del ffmpeg, target, true_peak
    return await anyio.to_thread.run_sync(measure_file, source, start, seconds)


def gain_filter(measured: Loudness, *, target: float, true_peak: float) -> str:
    """The encoder's audio filter: ``measured`` brought to ``target`` LUFS under ``true_peak`` dBTP.

    One linear gain; where it would lift the true peak over the ceiling (less the codec's
    headroom), a 48 kHz look-ahead limiter holds the samples under the ceiling less the overshoot
    measured between samples, so the true peak stays under it too.
    """
    gain = target - measured.integrated
    ceiling = max(-9.0, true_peak - CODEC_HEADROOM_DB)
    chain = f"aformat=sample_fmts=fltp:sample_rates={RATE}:channel_layouts=stereo,volume={gain:.2f}dB"
    if measured.true_peak + gain <= ceiling:
        return chain
    limit = 10 ** ((ceiling - measured.overshoot) / 20)
    return (
        f"{chain},alimiter=limit={max(0.0625, limit):.4f}:attack={LIMIT_ATTACK_MS}"
        f":release={LIMIT_RELEASE_MS}:level=0:latency=1"
    )


async def measure_range(
    ffmpeg: str, path: Path, start: float, seconds: float, profile: ProfileConfig
) -> Loudness | None:
    """The range's loudness when the profile normalises it; ``None`` when it does not or it is silent."""
    if profile.loudness is None:
        return None
    return await measure(ffmpeg, path, start, seconds)


def profile_filter(measured: Loudness | None, profile: ProfileConfig) -> str | None:
    """The encoder's audio filter for ``profile``; ``None``: leave the sound as it is."""
    if measured is None or profile.loudness is None:
        return None
    return gain_filter(measured, target=profile.loudness, true_peak=profile.true_peak)


def sidecar_entry(
    profile: ProfileConfig, audio_in: Loudness | None, audio_out: Loudness | None
) -> dict[str, Any] | None:
    """The sidecar's ``loudness`` object: target, the source range as measured, the clip as written."""
    if profile.loudness is None:
        return None
    return {
        "target_lufs": profile.loudness,
        "true_peak_limit_dbtp": profile.true_peak,
        "input": audio_in.to_dict() if audio_in is not None else None,
        "output": audio_out.to_dict() if audio_out is not None else None,
    }
