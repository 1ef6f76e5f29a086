"""Audio features for selection: pitch, energy and voicing on tones, real speech and espeak speech."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from conftest import unavailable

from montaged.media.audio import iter_audio_chunks
from montaged.model import AudioChunk
from montaged.select.features import WINDOW, AudioFeatureTrack

RATE = AudioChunk.SAMPLE_RATE


def _tone(freq: float, seconds: float, amp: float = 0.3) -> np.ndarray:
    t = np.arange(int(seconds * RATE)) / RATE
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def _chunks(x: np.ndarray, size: int, start: float = 0.0) -> list[AudioChunk]:
    return [AudioChunk(start + i / RATE, x[i : i + size]) for i in range(0, len(x), size)]


def _track(path: Path) -> AudioFeatureTrack:
    return AudioFeatureTrack.from_chunks(iter_audio_chunks(path, 5.0))


@pytest.fixture(scope="module")
def espeak(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    exe = shutil.which("espeak-ng")
    if exe is None:
        unavailable("espeak-ng is not installed (make test installs it)")
    assert exe is not None
    folder = tmp_path_factory.mktemp("espeak")

    def say(name: str, text: str, *args: str) -> Path:
        out = folder / f"{name}.wav"
        subprocess.run([exe, "-v", "en-us", *args, "-w", str(out), text], check=True, capture_output=True)
        return out

    return say


@pytest.mark.parametrize("freq", [85.0, 120.0, 200.0, 310.0, 390.0])
def test_tone_pitch_is_exact(freq: float) -> None:
    track = AudioFeatureTrack.from_chunks(_chunks(_tone(freq, 2.0), 12_345))
    voiced = track.voiced()
    # A steady tone is voiced throughout except the zero-padded first/last half window
    # (measured 0.987–1.0 over 80–400 Hz); 0.9 leaves room for the edges.
    assert voiced.mean() > 0.9
    # YIN with parabolic interpolation: measured error < 0.05 %; 1 % (1/6 semitone) is the margin.
    assert np.median(track.f0[voiced]) == pytest.approx(freq, rel=0.01)


def test_chunking_does_not_change_frames() -> None:
    rng = np.random.default_rng(7)
    x = np.concatenate(
        [_tone(150, 1.5), 0.05 * rng.standard_normal(RATE).astype(np.float32), _tone(220, 1.0)]
    )
    whole = AudioFeatureTrack.from_chunks([AudioChunk(0.0, x)])
    for size in (80_000, 5_003, 640, 337):  # 337: odd and under a window, carried over every call
        parts = AudioFeatureTrack.from_chunks(_chunks(x, size))
        assert len(parts) == len(whole)
        np.testing.assert_allclose(parts.energy_db, whole.energy_db, atol=1e-4)
        np.testing.assert_allclose(parts.f0, whole.f0, atol=1e-3)


def test_frame_grid_and_gaps() -> None:
    hop = 0.04
    x = _tone(200, 2.0)
    # One frame per hop, centred on t0 + k * hop, covering the audio: ceil(2.0 / 0.04) = 50.
    plain = AudioFeatureTrack.from_chunks([AudioChunk(3.0, x)], hop)
    assert len(plain) == 50 and plain.times[0] == pytest.approx(3.0)
    # Lost audio between chunks is analysed exactly as zeros would be, without allocating them.
    gap = 7.3
    zeros = np.zeros(int(gap * RATE), np.float32)
    with_gap = AudioFeatureTrack.from_chunks([AudioChunk(0.0, x), AudioChunk(2.0 + gap, x)], hop)
    filled = AudioFeatureTrack.from_chunks([AudioChunk(0.0, np.concatenate([x, zeros, x]))], hop)
    assert len(with_gap) == len(filled)
    np.testing.assert_allclose(with_gap.energy_db, filled.energy_db, atol=1e-4)
    np.testing.assert_allclose(with_gap.f0, filled.f0, atol=1e-3)
    # Audio repeated by an overlapping chunk is dropped, not analysed twice.
    overlap = AudioFeatureTrack.from_chunks([AudioChunk(0.0, x[:20_000]), AudioChunk(1.0, x[16_000:])], hop)
    np.testing.assert_allclose(overlap.energy_db, plain.energy_db, atol=1e-4)


def test_bad_input_is_named() -> None:
    with pytest.raises(ValueError, match="hop_seconds"):
        AudioFeatureTrack(0.2)
    with pytest.raises(ValueError, match="1-D mono"):
        AudioFeatureTrack().add(AudioChunk(0.0, np.zeros((10, 2), np.float32)))
    with pytest.raises(ValueError, match="version"):
        AudioFeatureTrack.from_dict({"version": 99})
    stored = AudioFeatureTrack.from_chunks([AudioChunk(0.0, _tone(100, 1.0))]).to_dict()
    stored["f0"] = stored["f0"][:8]
    with pytest.raises(ValueError, match="'f0'"):
        AudioFeatureTrack.from_dict(stored)


def test_round_trip_is_compact() -> None:
    x = np.concatenate([_tone(130, 1.0, 0.05), _tone(260, 1.0, 0.5)])
    track = AudioFeatureTrack.from_chunks([AudioChunk(1.5, x)])
    stored = json.loads(json.dumps(track.to_dict()))
    back = AudioFeatureTrack.from_dict(stored)
    assert len(back) == len(track) and back.t0 == track.t0 and back.hop == track.hop
    # float16: 11-bit mantissa, so 0.05 dB at -50 dB and 0.25 Hz at 260 Hz.
    np.testing.assert_allclose(back.energy_db, track.energy_db, atol=0.05)
    np.testing.assert_allclose(back.f0, track.f0, atol=0.25)
    np.testing.assert_allclose(back.periodicity, track.periodicity, atol=1 / 255)
    # 5 bytes a frame, base64 ×4/3 → under 7 characters a frame: a 2-hour talk at 40 ms is ~1.2 MB.
    size = sum(len(v) for v in stored.values() if isinstance(v, str))
    assert size <= 7 * len(track) + 16


def test_memory_stays_per_hop() -> None:
    """Ten minutes fed in 5 s chunks: three float32 per hop, never the samples."""
    track = AudioFeatureTrack()
    rng = np.random.default_rng(1)
    for i in range(120):
        track.add(AudioChunk(i * 5.0, (0.1 * rng.standard_normal(5 * RATE)).astype(np.float32)))
        # The carry-over buffer holds less than one window plus one hop of samples.
        assert len(track._buf) < WINDOW + track.hop_samples
    track.finish()
    assert len(track) == 15_000
    # Capacity doubles, so at most 2 × 12 bytes a frame (+ the last window): ≤ 2 × 180 kB here;
    # a two-hour talk scales linearly to ≤ 4.4 MB against ~220 MB of float32 samples.
    assert track.nbytes <= 2 * 12 * len(track) + 4 * (WINDOW + track.hop_samples)


def test_summary_finds_loud_lively_stretch() -> None:
    """A flat quiet tone then a louder gliding tone: the second range has the energy and the pitch."""
    t = np.arange(3 * RATE) / RATE
    glide = 0.5 * np.sin(2 * np.pi * (150 * t + 25 * t**2))  # 150 → 300 Hz over 3 s: one octave
    x = np.concatenate([_tone(150, 3.0, 0.05), glide.astype(np.float32)])
    track = AudioFeatureTrack.from_chunks([AudioChunk(0.0, x)])
    quiet, loud = track.summary(0.2, 2.8), track.summary(3.2, 5.8)
    assert loud.energy_mean_db - quiet.energy_mean_db == pytest.approx(20.0, abs=1.0)  # 0.5/0.05 = 20 dB
    assert quiet.pitch_range_st < 0.5
    # The glide spans 12 st over 3 s; the 10–90 % range of 2.6 s of it spans about 8 st.
    assert 6.0 < loud.pitch_range_st < 11.0
    # Peaks: voiced frames 1.5 talk-SD over the talk's mean. Here the two halves sit at the mean
    # ± 1 SD, so none qualifies; a short burst in a quiet talk does.
    assert loud.energy_peaks == quiet.energy_peaks == 0
    burst = np.concatenate([_tone(150, 4.0, 0.05), _tone(150, 0.6, 0.5), _tone(150, 2.0, 0.05)])
    burst_track = AudioFeatureTrack.from_chunks([AudioChunk(0.0, burst)])
    assert burst_track.summary(3.5, 5.0).energy_peaks >= 10  # 0.6 s of 40 ms frames = 15, less edges
    assert burst_track.summary(0.5, 3.5).energy_peaks == 0
    with pytest.raises(ValueError, match="ends before"):
        track.summary(2.0, 1.0)


def test_pitch_on_real_speech(media_dir: Path) -> None:
    """JFK (jfk.flac): f0 within the speech range, agreeing with a slow independent estimate."""
    path = media_dir / "audio" / "jfk.flac"
    track = _track(path)
    voiced = track.voiced()
    # Speech with pauses is partly voiced (measured 0.38); outside 0.15–0.9 voicing detection broke.
    assert 0.15 < voiced.mean() < 0.9
    f0 = track.f0[voiced]
    assert np.all((f0 >= 76) & (f0 <= 420))  # the search range 80–400 Hz ± 5 %
    # Oratorical male voice; measured median 247 Hz, confirmed by the spectrum's harmonic spacing.
    assert 150 < np.median(f0) < 350
    # Independent estimate: plain autocorrelation over a 100 ms window at each voiced frame.
    x = np.concatenate([c.samples for c in iter_audio_chunks(path, 5.0)]).astype(np.float64)
    errors = []
    for k in np.flatnonzero(voiced):
        c = round(float(track.times[k]) * RATE)
        seg = x[max(0, c - 800) : c + 800]
        seg = seg - seg.mean()
        ac = np.correlate(seg, seg, "full")[len(seg) - 1 :] / (len(seg) - np.arange(len(seg)))
        lag = int(np.argmax(ac[40:201])) + 40
        errors.append(abs(12 * np.log2(track.f0[k] / (RATE / lag))))
    # Measured: 94 % of frames agree within 1 semitone (the rest: onsets, glides in 100 ms).
    assert np.mean(np.array(errors) < 1.0) > 0.8


def test_espeak_pitch_and_intonation(espeak) -> None:  # type: ignore[no-untyped-def]
    text = "The quick brown fox jumps over the lazy dog near the river bank."
    low, high = _track(espeak("p20", text, "-p", "20")), _track(espeak("p80", text, "-p", "80"))
    low_f0, high_f0 = np.median(low.f0[low.voiced()]), np.median(high.f0[high.voiced()])
    assert 80 <= low_f0 < high_f0 <= 400
    assert high_f0 / low_f0 > 1.3  # measured 139/84 = 1.65 for espeak's -p 80 against -p 20

    # A question read with lively intonation against a statement read flat (SSML prosody range).
    question = "Have you ever wondered why your code runs slowly on a Monday morning?"
    statement = "The code runs slowly on a Monday morning."
    lively = _track(espeak("lively", f'<speak><prosody range="x-high">{question}</prosody></speak>', "-m"))
    flat = _track(espeak("flat", f'<speak><prosody range="x-low">{statement}</prosody></speak>', "-m"))
    lively_s, flat_s = lively.summary(0, 99), flat.summary(0, 99)
    # Measured pitch range (10–90 %) about 6 st lively against 1 st flat; demand 2 st between them.
    assert lively_s.pitch_range_st > flat_s.pitch_range_st + 2.0
    assert lively_s.pitch_std_st > flat_s.pitch_std_st
