"""Caption cue rules and the transcript formats (pure functions over words)."""

from __future__ import annotations

import json
import re

from montaged.asr import formats
from montaged.asr.formats import cues, to_json, to_srt, to_txt, to_vtt, wrap
from montaged.model import Transcript, Word


def words_from(text: str, start: float = 0.0, step: float = 0.3, speaker: str | None = None) -> list[Word]:
    out = []
    t = start
    for tok in text.split():
        out.append(Word(tok, round(t, 3), round(t + step * 0.8, 3), 0.9, speaker))
        t += step
    return out


def test_wrap_balances_two_lines_and_refuses_three() -> None:
    ws = [
        "the",
        "quick",
        "brown",
        "fox",
        "jumps",
        "over",
        "the",
        "lazy",
        "dog",
        "and",
        "keeps",
        "on",
        "running",
    ]
    lines = wrap(ws)
    assert lines is not None and len(lines) == 2
    assert all(len(x) <= 42 for x in lines)
    assert abs(len(lines[0]) - len(lines[1])) <= 8  # balanced, not 42 + leftovers
    assert wrap(("word " * 30).split()) is None


def test_cues_respect_line_length_lines_and_duration() -> None:
    text = " ".join(f"word{i}" for i in range(120))  # no punctuation: only the limits split it
    cs = cues(words_from(text))
    assert len(cs) > 5
    for c in cs:
        assert 1 <= len(c.lines) <= 2
        assert all(len(line) <= 42 for line in c.lines)
        assert c.end - c.start <= 6.0 + 1e-9
    assert " ".join(" ".join(c.lines) for c in cs) == text  # nothing lost or duplicated


def test_cues_break_at_sentence_end_pause_and_speaker() -> None:
    ws = words_from("Hello there. How are")
    ws += words_from("you today", start=ws[-1].end + 1.5)  # a 1.5 s pause
    cs = cues(ws)
    assert [c.text for c in cs] == ["Hello there.", "How are", "you today"]
    assert cues(words_from("Mr. Smith arrived"))[0].text == "Mr. Smith arrived"  # not a sentence end

    a = words_from("I agree with that", speaker="A")
    b = words_from("me too", start=a[-1].end + 0.1, speaker="B")
    cs = cues(a + b)
    assert [c.text for c in cs] == ["A: I agree with that", "B: me too"]
    assert [c.speaker for c in cs] == ["A", "B"]


def test_short_cue_is_held_but_never_overlaps_the_next() -> None:
    ws = [Word("Yes.", 1.0, 1.2, 0.9), Word("Right", 1.5, 1.8, 0.9)]
    cs = cues(ws)
    assert cs[0].end == 1.5  # held from 1.2 towards 1 s, stopped by the next cue
    assert cs[1].end == 2.5  # last cue held a full second


def test_srt_format_and_clip_offset() -> None:
    ws = [Word("Before", 9.0, 9.5, 0.9), Word("Inside", 10.2, 10.6, 0.9), Word("clip.", 10.6, 11.0, 0.9)]
    srt = to_srt(ws, offset=-10.0)
    assert srt == "1\n00:00:00,200 --> 00:00:01,200\nInside clip.\n"  # 0.8 s held to 1 s
    long = to_srt([Word("Late", 3725.5, 3726.75, 0.9)])
    assert "01:02:05,500 --> 01:02:06,750" in long


def test_vtt_uses_voice_spans_and_escapes() -> None:
    ws = words_from("<b>fish & chips</b>", speaker="Dana")
    vtt = to_vtt(ws)
    assert vtt.startswith("WEBVTT\n\n")
    assert "<v Dana>&lt;b&gt;fish &amp; chips&lt;/b&gt;" in vtt
    assert re.search(r"00:00:00\.000 --> 00:00:0\d\.\d{3}", vtt)


def test_json_round_trips_the_word_contract() -> None:
    t = Transcript(
        words=(Word("Hi", 0.1234567, 0.5, 0.87654, "S1", "whisper"), Word("there.", 0.5, 0.9, 0.5)),
        language="en",
        engine="whisper",
        model="tiny.en",
        duration=1.0,
        notes=("no cloud key",),
    )
    data = json.loads(to_json(t))
    assert data["words"][0] == {
        "text": "Hi",
        "start": 0.123,
        "end": 0.5,
        "confidence": 0.8765,
        "speaker": "S1",
        "source": "whisper",
    }
    back = Transcript.from_dict(data)
    assert back.text == "Hi there." and back.model == "tiny.en" and back.notes == ("no cloud key",)
    empty = Transcript((), "en", "whisper", "tiny.en", 0.0)
    assert json.loads(to_json(empty))["words"] == []


def test_txt_paragraphs_by_speaker_and_pause() -> None:
    a = words_from("Welcome back everyone.", speaker="A")
    b = words_from("Thanks for having me.", start=a[-1].end + 0.2, speaker="B")
    c = words_from("So tell me.", start=b[-1].end + 3.0, speaker="B")
    t = Transcript(tuple(a + b + c), "en", "whisper", "base", 10.0)
    assert to_txt(t) == "A: Welcome back everyone.\n\nB: Thanks for having me.\n\nB: So tell me.\n"
    assert formats.render(t, "txt") == to_txt(t)
