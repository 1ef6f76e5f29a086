"""Selection: sentence splitting, clip boundaries, scoring sanity, reasons, determinism, speed."""

from __future__ import annotations

import base64
import dataclasses
import itertools
import random
import time
from pathlib import Path

import numpy as np
import pytest

from montaged.config import SelectConfig
from montaged.errors import ConfigError
from montaged.media.audio import iter_audio_chunks
from montaged.model import AudioChunk, ClipPlan, SpeakerTurn, Transcript, Word
from montaged.select import WEIGHTS, AudioFeatureTrack, rank_clips, select_clips, split_sentences
from montaged.select.candidates import cut_times, enumerate_windows
from montaged.select.choose import choose_top
from montaged.select.reasons import HYGIENE, MIN_CONTRIBUTION, PHRASES

GENERIC = (
    "we looked at the numbers from last year and found a steady pattern in how people use the tool",
    "the team spent a few weeks on the design before anyone wrote code for the first version",
    "most of the work happened in small steps with reviews every day and a short meeting on friday",
    "after the launch we watched the dashboards and answered questions from the support group",
    "there were some rough edges in the setup guide that we fixed during the second month",
    "people asked for better export options so we added two formats and a simple settings page",
    "the budget stayed close to the plan and the schedule slipped by about one week overall",
    "our partners tested the beta and sent notes that helped us clean up the menus and labels",
)


def talk(
    sentences: list[str], *, gap: float = 0.45, word: float = 0.33, speakers: list[str | None] | None = None
) -> Transcript:
    """Words timed at ~3 words/s (typical talk pace), a pause between sentences."""
    words, t = [], 0.5
    for i, sentence in enumerate(sentences):
        spk = speakers[i] if speakers else None
        for token in sentence.split():
            d = word * (0.6 + 0.1 * min(len(token), 8))
            words.append(Word(token, round(t, 3), round(t + d, 3), 0.9, spk))
            t += d + 0.04
        t += gap
    return Transcript(tuple(words), "en", "whisper", "base", t + 0.5)


def generic_talk(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [rng.choice(GENERIC).capitalize() + "." for _ in range(n)]


def inside_a_word(t: float, words: tuple[Word, ...] | list[Word]) -> Word | None:
    return next((w for w in words if w.start < t < w.end), None)


def check_clips(clips: list[ClipPlan], tr: Transcript, cfg: SelectConfig) -> None:
    """The boundary contract every selection must keep."""
    assert [c.index for c in clips] == list(range(len(clips)))
    assert all(a.end <= b.start for a, b in itertools.pairwise(clips)), "overlap or not in time order"
    for c in clips:
        assert inside_a_word(c.start, tr.words) is None, (c.start, inside_a_word(c.start, tr.words))
        assert inside_a_word(c.end, tr.words) is None, (c.end, inside_a_word(c.end, tr.words))
        whole_talk = len(clips) == 1 and all(c.start <= w.start and w.end <= c.end for w in tr.words)
        if not (whole_talk and cfg.whole_if_short):
            assert cfg.min_seconds - 1e-6 <= c.end - c.start <= cfg.max_seconds + 1e-6, c
        assert c.reason and c.text


# -- sentences -----------------------------------------------------------------------------
def test_sentences_split_on_punctuation_not_abbreviations() -> None:
    tr = talk(["Dr. Smith met Mr. Jones at 3.5 p.m. today.", "Did it work?", "Yes! It did…", "Fine"])
    sents = split_sentences(tr.words)
    texts = [" ".join(w.text for w in tr.words[s.first : s.last + 1]) for s in sents]
    assert texts == ["Dr. Smith met Mr. Jones at 3.5 p.m. today.", "Did it work?", "Yes!", "It did…", "Fine"]
    assert [s.question for s in sents] == [False, True, False, False, False]
    assert all(s.terminal for s in sents)  # the last one ends the transcript


def test_unpunctuated_sentences_split_on_pauses_and_speakers() -> None:
    w = [
        Word("so", 0.0, 0.2, 1), Word("we", 0.25, 0.4, 1), Word("started", 0.45, 0.9, 1),  # 0.8 s pause
        Word("then", 1.7, 1.9, 1), Word("it", 1.95, 2.0, 1), Word("grew", 2.1, 2.4, 1, "A"),
        Word("really", 2.45, 2.8, 1, "B"), Word("fast", 2.85, 3.2, 1, "B"),
    ]  # fmt: skip
    sents = split_sentences(w, pause_seconds=0.8)
    assert [(s.first, s.last) for s in sents] == [(0, 2), (3, 5), (6, 7)]
    assert [s.speaker for s in sents] == [None, "A", "B"]


def test_run_on_sentences_are_split_to_fit() -> None:
    tr = talk([" ".join(["word,"] * 5 + ["word"] * 300)])  # ~100 s without one full stop
    sents = split_sentences(tr.words, max_seconds=30)
    assert len(sents) >= 4
    assert all(s.end - s.start <= 30 for s in sents)
    assert all(s.first == p.last + 1 for p, s in itertools.pairwise(sents))


# -- boundaries ------------------------------------------------------------------------------
def random_words(rng: np.random.Generator) -> tuple[Transcript, SelectConfig]:
    """Word lists with the awkward cases: zero-length and overlapping words, no pauses, long pauses."""
    n = int(rng.integers(1, 400))
    words, t = [], float(rng.uniform(0, 3))
    speaker = None
    for _ in range(n):
        d = float(rng.choice([0.0, rng.uniform(0.05, 0.8)], p=[0.05, 0.95]))
        text = str(rng.choice(["word", "data", "you", "and", "it", "um", "cache", "why"]))
        text += str(rng.choice(["", "", "", "", "", ",", ".", "?", "!"]))
        if rng.random() < 0.03:
            speaker = str(rng.choice(["A", "B", "C"]))
        words.append(Word(text, round(t, 3), round(t + d, 3), 0.9, speaker))
        kind = rng.random()
        if kind < 0.05:
            t += d - float(rng.uniform(0, d + 0.2))  # next word overlaps this one
        elif kind < 0.2:
            t += d  # no gap at all
        elif kind < 0.25:
            t += d + float(rng.uniform(1.0, 6.0))  # long pause
        else:
            t += d + float(rng.uniform(0.0, 0.5))
        t = max(t, 0.0)
    end = max(w.end for w in words)
    duration = end + float(rng.choice([-0.5, 0.0, 0.1, 2.0]))  # sometimes shorter than the words
    lo = float(rng.uniform(2, 20))
    cfg = SelectConfig(
        min_seconds=lo,
        max_seconds=lo + float(rng.uniform(0.5, 40)),
        max_clips=int(rng.integers(1, 8)),
        lead_in_seconds=float(rng.uniform(0, 1)),
        tail_seconds=float(rng.uniform(0, 1)),
        seconds_per_clip=float(rng.uniform(5, 60)),
        whole_if_short=bool(rng.random() < 0.5),
    )
    return Transcript(tuple(words), "en", "whisper", "base", duration), cfg


def test_boundaries_never_inside_a_word_randomized() -> None:
    """Property test (seeded, hypothesis-style): 300 random word lists and configs."""
    rng = np.random.default_rng(20240611)
    chosen = 0
    for _ in range(300):
        tr, cfg = random_words(rng)
        clips = select_clips(tr, None, cfg)
        check_clips(clips, tr, cfg)
        chosen += len(clips)
        # Every candidate, not only the chosen ones, keeps the contract.
        words = sorted(tr.words, key=lambda w: (w.start, w.end))
        starts = np.array([w.start for w in words])
        ends = np.array([max(w.start, w.end) for w in words])
        sents = split_sentences(words, max_seconds=max(cfg.max_seconds - 0.5, 1.0))
        start_at, end_at = cut_times(starts, ends, tr.duration, lead_in=0.3, tail=0.3)
        win = enumerate_windows(
            sents, start_at, end_at, min_seconds=cfg.min_seconds, max_seconds=cfg.max_seconds
        )
        for s, e in zip(win.start, win.end, strict=True):
            assert inside_a_word(float(s), words) is None and inside_a_word(float(e), words) is None
            assert cfg.min_seconds - 1e-6 <= e - s <= cfg.max_seconds + 1e-6
    assert chosen > 100  # the generator must actually exercise selection, not only empty results


def test_pads_are_clamped_to_the_gap_midpoint() -> None:
    w = [Word("a.", 0.0, 1.0, 1), Word("b.", 1.2, 2.0, 1), Word("c.", 5.0, 6.0, 1)]
    starts, ends = np.array([0.0, 1.2, 5.0]), np.array([1.0, 2.0, 6.0])
    start_at, end_at = cut_times(starts, ends, 7.0, lead_in=0.5, tail=0.5)
    assert start_at.tolist() == [0.0, 1.1, 4.5]  # 1.1: midpoint of the 0.2 s gap; 4.5: full lead-in
    assert end_at.tolist() == [1.1, 2.5, 6.5]
    assert len(w) == 3


def test_clips_keep_bounds_and_do_not_overlap() -> None:
    cfg = SelectConfig(min_seconds=20, max_seconds=45, max_clips=6, seconds_per_clip=30)
    tr = talk(generic_talk(120))
    clips = select_clips(tr, None, cfg)
    assert len(clips) == 6
    check_clips(clips, tr, cfg)
    for c in clips:  # the text is exactly the words inside the clip
        assert c.text == " ".join(w.text for w in tr.words if c.start <= w.start and w.end <= c.end)


def test_short_talks_get_fewer_clips() -> None:
    cfg = SelectConfig(min_seconds=20, max_seconds=60, max_clips=5)  # one clip per 90 s of talk
    tr = talk(generic_talk(25))  # ~2.5 minutes
    assert len(select_clips(tr, None, cfg)) == 1
    tiny = talk(["Hello there.", "This is short."])
    whole = select_clips(tiny, None, cfg)
    assert len(whole) == 1 and whole[0].text == "Hello there. This is short."
    assert select_clips(tiny, None, cfg.model_copy(update={"whole_if_short": False})) == []
    assert select_clips(Transcript((), "en", "whisper", "base", 0.0), None, cfg) == []


def test_bad_config_is_named() -> None:
    tr = talk(generic_talk(30))
    with pytest.raises(ConfigError, match=r"select\.min_seconds"):
        select_clips(tr, None, SelectConfig(min_seconds=50, max_seconds=30))
    with pytest.raises(ConfigError, match=r"select\.weights: unknown feature hoook"):
        select_clips(tr, None, SelectConfig(weights={"hoook": 1.0}))
    with pytest.raises(ConfigError, match="max_clips"):
        select_clips(tr, None, SelectConfig(), max_clips=0)


def test_choose_top_greedy() -> None:
    start = np.array([0.0, 10.0, 20.0, 5.0, 30.0])
    end = np.array([20.0, 30.0, 40.0, 25.0, 50.0])
    score = np.array([0.9, 0.8, 0.85, 0.95, 0.1])
    assert choose_top(start, end, score, 5) == [3, 4]  # 3 excludes 0, 1, 2; 4 touches none of it
    assert choose_top(start, end, score, 1) == [3]
    assert choose_top(np.array([0.0, 10.0]), np.array([10.0, 20.0]), np.array([1.0, 1.0]), 2) == [0, 1]


# -- scoring -----------------------------------------------------------------------------------
QA = [
    "Why does a cache make latency so unpredictable?",
    "Because every cache miss sends the request across the network to the database.",
    "That miss costs forty milliseconds while a cache hit costs under one millisecond.",
    "The slowest requests are almost always cache misses on cold keys.",
    "Warming the cache before traffic arrives removes most of that tail latency.",
]
FILLER = [
    "Um, so, like, you know, we, uh, kind of did some stuff there.",
    "And, uh, it was, like, um, you know, okay I guess, um, yeah.",
    "So, uh, we, um, we kind of, like, looked at it, you know.",
    "And then, um, the the thing was, uh, like, fine mostly.",
    "But, um, yeah, uh, you know, it went, like, okay.",
]


def qa_and_filler_talk() -> Transcript:
    body = generic_talk(60, seed=3)
    return talk(body[:15] + QA + body[15:35] + FILLER + body[35:])


def covering(clips: list[ClipPlan], text: str) -> ClipPlan | None:
    return next((c for c in clips if text in c.text), None)


def test_question_answer_and_salience_beat_fillers() -> None:
    tr = qa_and_filler_talk()
    cfg = SelectConfig(min_seconds=15, max_seconds=30)
    best = select_clips(tr, None, cfg, max_clips=1)
    assert len(best) == 1 and QA[0] in best[0].text
    assert best[0].features["question_answer"] > 0.5
    assert "question" in best[0].reason
    # With room for many clips, the filler-laden stretch (if taken at all) scores below the Q→A one.
    many = select_clips(tr, None, cfg.model_copy(update={"seconds_per_clip": 10}), max_clips=20)
    qa, filler = covering(many, QA[1]), covering(many, FILLER[1])
    assert qa is not None
    if filler is not None:
        assert qa.score > filler.score
        assert filler.features["filler"] > qa.features["filler"]
        assert filler.features["salience"] < qa.features["salience"]


def test_dangling_openings_lose_completeness() -> None:
    tr = talk(generic_talk(40, seed=5))
    cfg = SelectConfig(min_seconds=10, max_seconds=20, seconds_per_clip=1)
    clean = select_clips(tr, None, cfg, max_clips=50)
    dangling = talk(["And " + s[0].lower() + s[1:] for s in generic_talk(40, seed=5)])
    hurt = select_clips(dangling, None, cfg, max_clips=50)
    assert max(c.features["completeness"] for c in hurt) <= 0.65 + 1e-9  # 1 − 0.35 for "and"
    assert min(c.features["completeness"] for c in clean) == pytest.approx(1.0)


def test_reasons_reflect_top_features() -> None:
    tr = qa_and_filler_talk()
    cfg = SelectConfig(min_seconds=15, max_seconds=30, seconds_per_clip=10)
    for clip in select_clips(tr, None, cfg, max_clips=8):
        contrib = {k: WEIGHTS[k] * v for k, v in clip.features.items() if k not in HYGIENE}
        top = max(contrib, key=lambda k: (contrib[k], k))
        assert contrib[top] >= MIN_CONTRIBUTION  # these clips all have a distinctive feature
        expected = "hook" if top == "hook" else PHRASES[top]
        first = clip.reason.split(";")[0]
        assert expected in first or (top == "hook" and "opening" in first), (top, clip.reason)


def test_deterministic_and_order_independent() -> None:
    tr = qa_and_filler_talk()
    cfg = SelectConfig(min_seconds=15, max_seconds=40)
    a = select_clips(tr, None, cfg)
    b = select_clips(tr, None, cfg)
    shuffled = list(tr.words)
    random.Random(1).shuffle(shuffled)
    c = select_clips(dataclasses.replace(tr, words=tuple(shuffled)), None, cfg)
    assert a == b == c
    assert [ClipPlan.from_dict(x.to_dict()) for x in a] == a


def synthetic_track(seconds: float, seed: int = 0) -> AudioFeatureTrack:
    """Per-hop features of a long talk without decoding 2 hours of audio (speed test only)."""
    rng = np.random.default_rng(seed)
    n = int(seconds / 0.04)
    voiced = rng.random(n) < 0.5
    energy = np.where(voiced, rng.normal(-20, 5, n), rng.normal(-55, 3, n)).astype("<f2")
    f0 = np.where(voiced, 120 * 2 ** (rng.normal(0, 3, n) / 12), 0).astype("<f2")
    per = np.where(voiced, 230, 40).astype(np.uint8)

    def b64(a: np.ndarray) -> str:
        return base64.b64encode(a.tobytes()).decode()

    return AudioFeatureTrack.from_dict(
        {
            "version": 1,
            "hop": 0.04,
            "t0": 0.0,
            "frames": n,
            "energy_db": b64(energy),
            "f0": b64(f0),
            "periodicity": b64(per),
        }
    )


def test_speed_on_two_hour_transcript() -> None:
    rng = random.Random(2)
    vocab = [f"term{i}" for i in range(3000)] + [
        "the",
        "a",
        "of",
        "and",
        "to",
        "in",
        "we",
        "it",
        "is",
        "that",
        "you",
    ] * 200
    sentences: list[str] = []
    while sum(len(s.split()) for s in sentences) < 20_000:
        words = [rng.choice(vocab) for _ in range(rng.randint(5, 25))]
        sentences.append(" ".join(words) + rng.choice([".", ".", "?", "!"]))
    tr = talk(sentences)
    assert len(tr.words) >= 20_000 and tr.duration > 6000  # ~2 hours at 3 words/s
    track = synthetic_track(tr.duration)
    t0 = time.perf_counter()
    clips = select_clips(tr, track, SelectConfig())
    elapsed = time.perf_counter() - t0
    assert len(clips) == 5
    check_clips(clips, tr, SelectConfig())
    # Measured ~0.2 s on 2 shared cores; 3 s is the brief's "well under a few seconds" with margin.
    assert elapsed < 3.0, elapsed


def test_exchange_on_real_conversation(media_dir: Path) -> None:
    """pyannote_sample.wav: 2 speakers; words from its STM transcript, turns from its RTTM."""
    audio = media_dir / "audio"
    words = []
    for line in (audio / "pyannote_sample.stm").read_text().splitlines():
        _, _, speaker, start, end, *text = line.split()
        s, e = float(start), float(end)
        step = (e - s) / len(text)  # STM has segment times only: spread its words evenly
        words += [Word(t, s + i * step, s + (i + 0.9) * step, 1.0, speaker) for i, t in enumerate(text)]
    turns = []
    for line in (audio / "pyannote_sample.rttm").read_text().splitlines():
        f = line.split()
        turns.append(SpeakerTurn(float(f[3]), float(f[3]) + float(f[4]), f[7]))
    tr = Transcript(tuple(words), "en", "reference", "stm", 30.0)
    track = AudioFeatureTrack.from_chunks(iter_audio_chunks(audio / "pyannote_sample.wav", 5.0))
    cfg = SelectConfig(min_seconds=5, max_seconds=12, seconds_per_clip=5)
    clips = select_clips(tr, track, cfg, turns=turns, max_clips=3)
    check_clips(clips, tr, cfg)
    assert {"exchange", "energy", "pitch_variation", "emphasis", "onset_energy"} <= set(clips[0].features)
    assert any(len(c.speakers) == 2 for c in clips)

    # Raising the exchange weight can only keep or raise the exchange value of the best clip
    # (argmax of s + w·x has x at least that of argmax of s).
    def best(weight: float) -> ClipPlan:
        weighted = cfg.model_copy(update={"weights": {"exchange": weight}})
        return select_clips(tr, track, weighted, turns=turns, max_clips=1)[0]

    plain, strong = best(0.0), best(1.0)
    assert strong.features["exchange"] >= plain.features["exchange"]
    no_pref = select_clips(tr, track, cfg.model_copy(update={"prefer_whole_exchanges": False}), turns=turns)
    assert all("exchange" not in c.features for c in no_pref)


def test_every_word_a_sentence_stays_fast() -> None:
    """20k one-word sentences: ~2.4M windows, strided to the 200k cap (measured 0.4 s)."""
    words = tuple(Word(f"w{i}.", i * 0.35, i * 0.35 + 0.3, 1.0) for i in range(20_000))
    tr = Transcript(words, "en", "whisper", "base", 7000.0)
    t0 = time.perf_counter()
    clips = select_clips(tr, None, SelectConfig())
    assert time.perf_counter() - t0 < 5.0  # 0.4 s measured on 2 shared cores; 10× margin
    assert len(clips) == 5
    check_clips(clips, tr, SelectConfig())


def test_audio_covering_part_of_the_talk() -> None:
    """Audio features for the first minute only (a lost tail): words after it get no audio values."""
    tr = talk(generic_talk(40))
    track = synthetic_track(60.0)
    clips = select_clips(tr, track, SelectConfig(seconds_per_clip=20))
    check_clips(clips, tr, SelectConfig())
    assert all(np.isfinite(list(c.features.values())).all() for c in clips)


def test_clips_end_on_finished_thoughts_not_on_pieces_or_trailing_words() -> None:
    """A sentence that trails off ("… but…") or a piece cut from a run-on never ends a clip, and
    the sentence after either never opens one, while whole sentences that fit exist."""
    sentences = generic_talk(12, seed=3)
    sentences[4] = sentences[4][:-1] + " but…"  # trails off, though an engine put "…" after it
    # one run-on of about 40 s: split into pieces for max_seconds, none of which is complete
    sentences[8] = " ".join(s.rstrip(".").lower() for s in generic_talk(6, seed=9)) + "."
    tr = talk(sentences)
    cfg = SelectConfig(min_seconds=4, max_seconds=14, seconds_per_clip=1, max_clips=10)
    words = sorted(tr.words, key=lambda w: w.start)
    for clip in rank_clips(tr, None, cfg)[1]:
        inside = [i for i, w in enumerate(words) if clip.start <= (w.start + w.end) / 2 < clip.end]
        last, before = words[inside[-1]].text, words[inside[0] - 1].text if inside[0] else "."
        assert last.endswith(".") and last != "but…", clip.text
        assert before.endswith(".") and before != "but…", clip.text


def test_a_run_on_longer_than_any_clip_still_gives_clips() -> None:
    """No whole sentence fits: clips of its pieces beat no clip (the logged fallback)."""
    tr = talk([" ".join(s.rstrip(".").lower() for s in generic_talk(8, seed=2)) + "."])
    assert select_clips(tr, None, SelectConfig(min_seconds=4, max_seconds=10, max_clips=2))


def test_edges_move_in_to_the_sound_when_word_times_start_early() -> None:
    """Whisper often starts a segment's first word at the segment start, before the voice: the
    clip then starts lead_in before the sound, not before the engine's word time. Audio: 0.6 s of
    silence, then 2 s of a voiced tone, then silence; the word is timed from 0.0 s."""
    rate = 16_000
    t = np.arange(int(4.0 * rate)) / rate
    x = np.where((t >= 0.6) & (t < 2.6), 0.3 * np.sin(2 * np.pi * 150 * t), 0.0).astype(np.float32)
    x += np.random.default_rng(0).normal(0, 1e-4, len(x)).astype(np.float32)
    track = AudioFeatureTrack.from_chunks([AudioChunk(0.0, x)])
    words = (Word("Hello", 0.0, 1.5, 0.9), Word("there.", 1.6, 3.4, 0.9))
    tr = Transcript(words, "en", "whisper", "base", 4.0)
    cfg = SelectConfig(min_seconds=1, max_seconds=10, lead_in_seconds=0.25, tail_seconds=0.3)
    (clip,) = select_clips(tr, track, cfg)
    assert clip.start == pytest.approx(0.6 - 0.25, abs=0.05)
    assert clip.end == pytest.approx(2.6 + 0.3, abs=0.05)
    # without audio, the word times are all there is
    (plain,) = select_clips(tr, None, cfg)
    assert plain.start == 0.0 and plain.end == pytest.approx(3.4 + 0.3)
