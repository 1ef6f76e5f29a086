"""One-line human reasons, built from the features that contributed most to a clip's score."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import numpy as np

from montaged.select.score import HOOK_SECONDS, QUESTION_HOOK_SECONDS, Scored
from montaged.select.sentences import Sentence
from montaged.select.words import WordTable

MIN_CONTRIBUTION = 0.01  # weight × value below this is noise, not a reason
MAX_PARTS = 3
# Hygiene features hold for most good clips (a clean start, a sane length), so they explain little;
# they are named only when no distinctive feature stands out.
HYGIENE = frozenset({"completeness", "length", "filler", "dead_air"})

PHRASES = {
    "salience": "high lexical salience",
    "completeness": "self-contained: clean start and a natural end",
    "question_answer": "asks a question and answers it",
    "exchange": "holds a whole exchange between speakers",
    "pitch_variation": "lively pitch variation",
    "energy": "energetic, dynamic delivery",
    "emphasis": "strong emphasis",
    "speech_rate": "brisk, engaged pace",
    "onset_energy": "starts strong and loud",
    "length": "comfortable length",
    "filler": "few fillers",
    "dead_air": "no dead air",
}


def _quote(words: Sequence[str]) -> str:
    return ", ".join(f"‘{w}’" for w in words)


def _hook(wt: WordTable, sentences: Sequence[Sentence], sent: int, a: int, b: int) -> str:
    hb = a
    while hb + 1 <= b and wt.starts[hb + 1] < wt.starts[a] + HOOK_SECONDS:
        hb += 1
    tokens = wt.tokens[a : hb + 1]
    parts = []
    s = sentences[sent]
    if s.question and s.end - s.start <= QUESTION_HOOK_SECONDS:
        parts.append("opens with a question")
    for mask, text in (
        (wt.direct, "addresses the viewer"),
        (wt.number, "a number"),
        (wt.claim, "a strong claim"),
    ):
        hits = [t for t, m in zip(tokens, mask[a : hb + 1], strict=True) if m]
        if hits:
            parts.append(f"{text} ({_quote(hits[:1])})")
    return "hook: " + ", ".join(parts) if parts else "strong opening"


def _top_terms(wt: WordTable, a: int, b: int, k: int = 2) -> list[str]:
    weight: dict[str, float] = defaultdict(float)
    for i in range(a, b + 1):
        if wt.idf[i] > 0:
            weight[wt.tokens[i]] += float(wt.idf[i])
    return [t for t, _ in sorted(weight.items(), key=lambda kv: (-kv[1], kv[0]))[:k]]


def _emphasised(wt: WordTable, a: int, b: int, k: int = 2) -> list[str]:
    idx = [i for i in range(a, b + 1) if wt.prominent[i]]
    peak = {i: float(np.nanmax([wt.energy_z[i], wt.pitch_z[i]])) for i in idx}
    out: list[str] = []
    for i in sorted(idx, key=lambda i: (-peak[i], i)):
        if wt.tokens[i] not in out:
            out.append(wt.tokens[i])
        if len(out) == k:
            break
    return out


def explain(scored: Scored, j: int, wt: WordTable, sentences: Sequence[Sentence], first_sentence: int) -> str:
    """Reason for window ``j``: its strongest positive contributions, most important first."""
    contrib = {name: scored.weights.get(name, 0.0) * float(v[j]) for name, v in scored.features.items()}
    ranked = [n for n, c in sorted(contrib.items(), key=lambda kv: (-kv[1], kv[0])) if c >= MIN_CONTRIBUTION]
    top = [n for n in ranked if n not in HYGIENE] or ranked
    a, b = int(scored.word_first[j]), int(scored.word_last[j])
    parts = []
    for name in top[:MAX_PARTS]:
        if name == "hook":
            parts.append(_hook(wt, sentences, first_sentence, a, b))
        elif name == "salience" and (terms := _top_terms(wt, a, b)):
            parts.append(f"{PHRASES[name]} ({_quote(terms)})")
        elif name == "emphasis" and (words := _emphasised(wt, a, b)):
            parts.append(f"{PHRASES[name]} on {_quote(words)}")
        else:
            parts.append(PHRASES.get(name, name.replace("_", " ")))
    return "; ".join(parts) if parts else "no standout feature; best remaining moment by overall score"
