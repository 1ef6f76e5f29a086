"""Confidence calibration: map each engine's raw word confidence to P(word is correct).

Whisper's word probabilities and a cloud engine's confidences live on different scales (Whisper's
tiny model says 0.3 for words it gets right; a cloud model may say 0.99 for words it gets wrong),
so ROVER's ``(1-α)·C(w)`` term would compare apples with pears. Two sources of tables:

**Agreement (the default, FuseConfig.calibration = "agreement").** Fitted per job, per engine,
from the job itself, so no table is ever used on an engine it was not fitted on:

1. after alignment, each word of engine A in a slot every other engine heard is *confirmed* when
   another engine said the same (normalised) word there;
2. isotonic regression (pool-adjacent-violators) of confirmed on A's raw confidence, read at 11
   knots and shrunk toward A's raw confidence as :func:`fit_table` does (20 pseudo-words: a
   short job keeps the engine's own ranking of its words; shrinking toward A's mean
   confirmation rate instead flattened a 14-word job and let the worse engine's words win);
3. divided by its value at A's highest confidence in the job (capped at 1). Why: A's word is
   confirmed only when A is right *and* the other engine heard it too, so
   ``P(confirmed | c) = P(A right | c) · recall(other)``. Raw confirmation rates would punish
   the better engine for the worse one's misses. Reading ``recall(other)`` off A's most
   confident words (taken to be right) removes that factor: those become 1 and the rest say
   how much less often A's other words hold up. Between two engines whose top words
   both score 1, FuseConfig.engine_order breaks the tie.

An engine with fewer than :data:`MIN_AGREEMENT_WORDS` comparable words, or none confirmed, keeps
its raw confidences (the note on the fused transcript says so).

**Fitted tables (FuseConfig.calibration_file).** For an engine you have labelled data for, a
table fitted against reference transcripts replaces the agreement estimate for that engine:

1. align the hypothesis words with the reference (Levenshtein on words normalised as for WER,
   montaged/asr/wer.py); a word is *correct* when it is aligned to an equal reference word;
2. fit isotonic regression of correct∈{0,1} on the raw confidence;
3. read it at 11 knots and shrink each knot toward the identity in proportion to how few words
   fell near it (``prior_words`` = 20: a knot moves halfway to the data only with 20 labelled
   words within ±0.1), so sparse data cannot produce a table of hard 0s and 1s; made monotone.

Applying a table is linear interpolation between knots. No table ships with Montage: a table is
only as good as the engine, model and audio it was fitted on. Tables are keyed ``engine/model``
(then ``engine``) and written by ``python -m montaged.asr.calibrate fit``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from montaged.asr.wer import normalize as wer_normalize
from montaged.errors import ConfigError
from montaged.model import Transcript, Word

KNOTS: tuple[float, ...] = tuple(round(k / 10, 1) for k in range(11))


def normalize(text: str) -> str:
    """Matching form of one engine word: WER normalisation (case, punctuation, "Mr." → "mister",
    digits spelled out) joined by spaces, so "30" and "thirty" are the same word to ROVER."""
    return " ".join(wer_normalize(text)) or text.strip().lower()


@dataclass(frozen=True)
class CalibrationTable:
    """Piecewise-linear, non-decreasing map from raw confidence to P(correct)."""

    xs: tuple[float, ...]
    ys: tuple[float, ...]
    words: int = 0  # how many labelled words it was fitted on (0 = identity / hand-made)

    def __call__(self, confidence: float) -> float:
        return float(np.interp(min(1.0, max(0.0, confidence)), self.xs, self.ys))


IDENTITY = CalibrationTable(KNOTS, KNOTS)

MIN_AGREEMENT_WORDS = 8
"""Fewer comparable words than this (both engines heard the audio) and agreement says nothing."""


def _pav(y: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Pool-adjacent-violators: the non-decreasing sequence closest to ``y`` in weighted L2."""
    vals: list[float] = []
    wts: list[float] = []
    counts: list[int] = []
    for yi, wi in zip(y.tolist(), w.tolist(), strict=True):
        vals.append(yi)
        wts.append(wi)
        counts.append(1)
        while len(vals) > 1 and vals[-2] > vals[-1]:
            v2, w2, c2 = vals.pop(), wts.pop(), counts.pop()
            total = wts[-1] + w2
            vals[-1] = (vals[-1] * wts[-1] + v2 * w2) / total
            wts[-1] = total
            counts[-1] += c2
    return np.repeat(np.asarray(vals), counts)


def fit_table(
    confidences: Sequence[float], correct: Sequence[bool], *, prior_words: float = 20.0, radius: float = 0.1
) -> CalibrationTable:
    """Isotonic fit of P(correct | confidence), read at :data:`KNOTS` and shrunk toward identity."""
    if len(confidences) != len(correct):
        raise ValueError(f"fit_table: {len(confidences)} confidences but {len(correct)} labels")
    if not confidences:
        return IDENTITY
    conf = np.clip(np.asarray(confidences, dtype=float), 0.0, 1.0)
    # Words with equal confidence are one point (their share correct, weighted by their count):
    # PAV over raw ties would order them by label and interpolation would pick one at random.
    x, inverse, counts = np.unique(conf, return_inverse=True, return_counts=True)
    share = np.bincount(inverse, weights=np.asarray(correct, dtype=float)) / counts
    fitted = _pav(share, counts.astype(float))
    knots = np.asarray(KNOTS)
    at_knots = np.interp(knots, x, fitted)
    x = conf
    near = np.array([np.count_nonzero(np.abs(x - k) <= radius) for k in knots], dtype=float)
    ys = (near * at_knots + prior_words * knots) / (near + prior_words)
    ys = np.maximum.accumulate(ys)
    return CalibrationTable(KNOTS, tuple(round(float(v), 4) for v in ys), words=len(x))


def agreement_table(
    confidences: Sequence[float], confirmed: Sequence[bool], *, prior_words: float = 20.0
) -> CalibrationTable | None:
    """P(correct | raw confidence) of one engine from how often the other engines confirm its
    words (see the module doc); None when the data cannot say (too few words, none confirmed)."""
    if len(confidences) < MIN_AGREEMENT_WORDS or not any(confirmed):
        return None
    fitted = fit_table(confidences, confirmed, prior_words=prior_words)
    top = fitted(max(confidences))
    if top <= 0:
        return None
    ys = tuple(round(min(1.0, y / top), 4) for y in fitted.ys)
    return CalibrationTable(fitted.xs, ys, words=len(confidences))


def align_labels(hyp: Sequence[str], ref: Sequence[str]) -> list[bool]:
    """For each hypothesis word: is it aligned (Levenshtein) to an equal reference word?"""
    n, m = len(hyp), len(ref)
    cost = np.zeros((n + 1, m + 1), dtype=np.int32)
    cost[:, 0] = np.arange(n + 1)
    cost[0, :] = np.arange(m + 1)
    for i in range(1, n + 1):
        for j in range(1, m + 1):
            cost[i, j] = min(
                cost[i - 1, j - 1] + (hyp[i - 1] != ref[j - 1]), cost[i - 1, j] + 1, cost[i, j - 1] + 1
            )
    labels = [False] * n
    i, j = n, m
    while i > 0 and j > 0:
        if cost[i, j] == cost[i - 1, j - 1] + (hyp[i - 1] != ref[j - 1]):
            labels[i - 1] = hyp[i - 1] == ref[j - 1]
            i, j = i - 1, j - 1
        elif cost[i, j] == cost[i - 1, j] + 1:
            i -= 1
        else:
            j -= 1
    return labels


def labelled_words(pairs: Iterable[tuple[Sequence[Word], str]]) -> tuple[list[float], list[bool]]:
    """Raw confidences and correct/incorrect labels of the hypothesis words in ``pairs``.

    Words are normalised as for WER; a word is correct when every token it normalises to is
    aligned to an equal reference token. Words with no token (bare punctuation) are left out.
    """
    confs: list[float] = []
    labels: list[bool] = []
    for words, reference in pairs:
        owner: list[int] = []
        hyp: list[str] = []
        for i, w in enumerate(words):
            toks = wer_normalize(w.text)
            hyp += toks
            owner += [i] * len(toks)
        ok = align_labels(hyp, wer_normalize(reference))
        correct: dict[int, bool] = {}
        for i, good in zip(owner, ok, strict=True):
            correct[i] = correct.get(i, True) and good
        for i in sorted(correct):
            confs.append(words[i].confidence)
            labels.append(correct[i])
    return confs, labels


class Calibrator:
    """Chooses and applies the table of each engine/model before ROVER votes."""

    def __init__(self, tables: Mapping[str, CalibrationTable] | None = None) -> None:
        """``tables``: ``engine/model`` or ``engine`` → table fitted on that engine's output."""
        self.tables = dict(tables or {})

    @classmethod
    def from_file(cls, path: Path | None) -> Calibrator:
        """The tables in ``path`` (FuseConfig.calibration_file); none when ``path`` is None."""
        return cls(load_tables(path) if path is not None else {})

    def fitted(self, engine: str, model: str) -> CalibrationTable | None:
        """The table fitted for this engine/model (then engine), or None."""
        return self.tables.get(f"{engine}/{model}") or self.tables.get(engine)

    def table_for(self, engine: str, model: str) -> CalibrationTable:
        return self.fitted(engine, model) or IDENTITY

    def apply(self, transcript: Transcript) -> Transcript:
        """The same transcript with calibrated word confidences."""
        table = self.table_for(transcript.engine, transcript.model)
        if table is IDENTITY:
            return transcript
        words = tuple(dataclasses.replace(w, confidence=table(w.confidence)) for w in transcript.words)
        return dataclasses.replace(transcript, words=words)


def load_tables(path: Path) -> dict[str, CalibrationTable]:
    """Read ``{"engine/model": {"xs": [...], "ys": [...]}}``; errors name the file and the key."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise ConfigError(f"fuse.calibration_file: cannot read {path}: {e}") from e
    tables = {}
    for key, item in data.items():
        try:
            xs, ys = tuple(map(float, item["xs"])), tuple(map(float, item["ys"]))
        except (KeyError, TypeError, ValueError) as e:
            raise ConfigError(f"fuse.calibration_file: {path}: table {key!r} needs xs and ys lists") from e
        if len(xs) != len(ys) or len(xs) < 2 or list(xs) != sorted(xs) or list(ys) != sorted(ys):
            raise ConfigError(
                f"fuse.calibration_file: {path}: table {key!r} must have ≥2 increasing xs and "
                "non-decreasing ys of equal length"
            )
        tables[key] = CalibrationTable(xs, ys, int(item.get("words", 0)))
    return tables


def dump_tables(tables: Mapping[str, CalibrationTable]) -> str:
    return json.dumps({k: {"xs": t.xs, "ys": t.ys, "words": t.words} for k, t in tables.items()}, indent=1)


def _main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m montaged.asr.calibrate", description=__doc__.split("\n")[0]
    )
    sub = parser.add_subparsers(dest="cmd", required=True)
    fit = sub.add_parser("fit", help="fit one engine's table from transcripts and reference texts")
    fit.add_argument("--engine", required=True, help="table key, e.g. whisper/base or deepgram/nova-3")
    fit.add_argument(
        "pairs", nargs="+", metavar="TRANSCRIPT.json=REFERENCE.txt", help="Transcript JSON and its reference"
    )
    args = parser.parse_args(argv)
    pairs = []
    for item in args.pairs:
        hyp, sep, ref = item.partition("=")
        if not sep:
            parser.error(f"{item!r}: expected TRANSCRIPT.json=REFERENCE.txt")
        words = Transcript.from_dict(json.loads(Path(hyp).read_text())).words
        pairs.append((words, Path(ref).read_text()))
    confs, labels = labelled_words(pairs)
    print(dump_tables({args.engine: fit_table(confs, labels)}))
    return 0


if __name__ == "__main__":
    sys.exit(_main())
