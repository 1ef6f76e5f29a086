"""Clip edges trimmed to the sound: no more than the lead-in and tail of silence at either end.

An engine's word times are where it *thinks* a word is. Whisper in particular often starts the
first word of a segment at the segment's start, up to half a second before anyone speaks (jfk.flac:
"And" at 0.00 s, the voice at 0.36 s), and may let a last word run on into the pause. Cut at
such times, a clip opens (or closes) on more silence than ``lead_in_seconds`` (``tail_seconds``).

So each word's padded cut (candidates.cut_times) is moved inward where the audio says the word
is still silent: the clip starts ``lead_in`` before the word's first *sounding* frame, and ends
``tail`` after its last, never past the word's middle (the word stays in the clip) and never
outward (audio only ever removes silence an engine put inside a word, so a cut never moves into
the neighbouring word). A frame sounds when its energy is 12 dB over the talk's noise floor (the
10th percentile of frame energies) and within 40 dB of the loudest frame, the rule
frame/speaker.voice_activity uses; in noise louder than that nothing moves.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from montaged.select.features import SILENCE_DB, AudioFeatureTrack

F64 = npt.NDArray[np.float64]

OVER_FLOOR_DB = 12.0
UNDER_PEAK_DB = 40.0


def sounding(features: AudioFeatureTrack) -> npt.NDArray[np.bool_]:
    """Frames loud enough to be speech (see module doc); all False for a silent track."""
    e = np.asarray(features.energy_db, dtype=np.float64)
    live = e > SILENCE_DB + 1.0
    if not live.any():
        return np.zeros(len(e), bool)
    floor, peak = float(np.percentile(e[live], 10)), float(e.max())
    return np.asarray(e > max(floor + OVER_FLOOR_DB, peak - UNDER_PEAK_DB))


def trim_to_sound(
    start_at: F64,
    end_at: F64,
    starts: F64,
    ends: F64,
    features: AudioFeatureTrack | None,
    *,
    lead_in: float,
    tail: float,
) -> tuple[F64, F64]:
    """``start_at``/``end_at`` (per word, from cut_times) moved inward to the word's sound."""
    if features is None or len(features) == 0 or len(starts) == 0:
        return start_at, end_at
    loud = sounding(features)
    if not loud.any():
        return start_at, end_at
    n, half = len(loud), features.hop / 2
    centres = features.times
    idx = np.arange(n)
    # next_loud[f]: first sounding frame at or after f (n if none); prev_loud: last at or before.
    next_loud = np.minimum.accumulate(np.where(loud, idx, n)[::-1])[::-1]
    prev_loud = np.maximum.accumulate(np.where(loud, idx, -1))
    mid = (starts + ends) / 2.0
    # The first frame centred inside each word, and the last.
    f0 = np.clip(features.frame_index(starts), 0, n - 1)
    f1 = np.clip(features.frame_index(ends) - 1, 0, n - 1)
    on_i, off_i = next_loud[f0], prev_loud[f1]
    has_on = (on_i < n) & (on_i <= f1)
    has_off = (off_i >= 0) & (off_i >= f0)
    onset = np.where(has_on, centres[np.minimum(on_i, n - 1)] - half, starts)
    offset = np.where(has_off, centres[np.maximum(off_i, 0)] + half, ends)
    new_start = np.fmax(start_at, np.minimum(onset, mid) - lead_in)
    new_end = np.fmin(end_at, np.maximum(offset, mid) + tail)
    # NaN (no cut outside every word at that side) stays NaN.
    return np.where(np.isnan(start_at), np.nan, new_start), np.where(np.isnan(end_at), np.nan, new_end)
