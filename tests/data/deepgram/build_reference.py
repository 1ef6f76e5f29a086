"""Build the "much better engine" fixtures: the reference transcript, served at high confidence.

A cloud engine far better than Whisper is simulated at the protocol level: the human reference
transcript of each real recording, in Deepgram's live word shape (``word``, ``punctuated_word``,
``start``, ``end``, ``confidence``), every word at confidence 0.99. Its word error rate is 0 by
construction, so fusing it with Whisper shows whether fusion keeps what the better engine says.

Word times (a reference has none):
- recordings with an STM (pyannote_sample): each segment's words share the segment's span in
  proportion to their length in characters (the STM times are hand-marked turns);
- plain-text references: each reference word takes the times of the word it aligns to in the
  Whisper-base fixture beside this folder (Levenshtein on WER-normalised tokens); words with no
  partner are spread evenly between their aligned neighbours.

Run: ``.venv/bin/python tests/data/deepgram/build_reference.py`` (a second; no model runs).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[2]))

from build_fixtures import MEDIA, RECORDINGS, bare  # noqa: E402

from montaged.asr.calibrate import align_labels  # noqa: E402
from montaged.asr.wer import normalize  # noqa: E402

CONFIDENCE = 0.99


def _spread(words: list[str], start: float, end: float) -> list[tuple[str, float, float]]:
    lengths = [max(len(w), 1) + 1 for w in words]
    total, t, out = sum(lengths), start, []
    for w, n in zip(words, lengths, strict=True):
        d = (end - start) * n / total
        out.append((w, round(t, 3), round(t + d * 0.9, 3)))
        t += d
    return out


def _borrowed(text: str, fixture: list[dict[str, object]]) -> list[tuple[str, float, float]]:
    """Reference words timed by the fixture words they align to (one token per word assumed)."""
    ref = text.split()
    ref_tok = [" ".join(normalize(w)) for w in ref]
    hyp_tok = [" ".join(normalize(str(w["punctuated_word"]))) for w in fixture]
    # align_labels aligns hyp→ref; run it the other way round to label reference words.
    matched = align_labels(ref_tok, hyp_tok)
    times: list[tuple[float, float] | None] = [None] * len(ref)
    j = 0
    for i, ok in enumerate(matched):
        if ok:
            while j < len(hyp_tok) and hyp_tok[j] != ref_tok[i]:
                j += 1
            if j < len(hyp_tok):
                times[i] = (float(fixture[j]["start"]), float(fixture[j]["end"]))  # type: ignore[arg-type]
                j += 1
    out: list[tuple[str, float, float]] = []
    i = 0
    first = float(fixture[0]["start"])  # type: ignore[arg-type]
    last = float(fixture[-1]["end"])  # type: ignore[arg-type]
    while i < len(ref):
        t = times[i]
        if t is not None:
            out.append((ref[i], t[0], t[1]))
            i += 1
            continue
        k = i
        while k < len(ref) and times[k] is None:
            k += 1
        lo = out[-1][2] if out else first
        nxt = times[k] if k < len(ref) else None
        hi = nxt[0] if nxt is not None else last
        out += _spread(ref[i:k], lo, max(hi, lo + 0.1 * (k - i)))
        i = k
    return out


def build(name: str, rel: str) -> dict[str, object]:
    src = MEDIA / rel
    fixture = json.loads((HERE / f"{name}.json").read_text())
    stm = src.with_suffix(".stm")
    words: list[tuple[str, float, float]] = []
    if stm.exists():
        for line in stm.read_text().splitlines():
            parts = line.split(maxsplit=5)
            words += _spread(parts[5].split(), float(parts[3]), float(parts[4]))
    else:
        words = _borrowed(src.with_suffix(".txt").read_text(), fixture["words"])
    return {
        "recording": rel,
        "recording_sha256": fixture["recording_sha256"],
        "duration": fixture["duration"],
        "made_by": "reference transcript at confidence 0.99, times from the STM or the Whisper-base "
        "fixture (build_reference.py); a stand-in for an engine far better than Whisper",
        "words": [
            {"word": bare(w), "start": s, "end": e, "confidence": CONFIDENCE, "punctuated_word": w}
            for w, s, e in words
        ],
    }


def main() -> int:
    for name, rel in RECORDINGS.items():
        (HERE / "reference" / f"{name}.json").write_text(json.dumps(build(name, rel), indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
