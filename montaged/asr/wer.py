"""Word error rate with the normalisation that makes engines comparable.

Reference transcripts and engines disagree on case, punctuation and digits ("thirty" vs "30"),
which are not recognition errors; both sides are normalised the same way before aligning:
lower case, punctuation stripped (apostrophes inside words kept), hyphens split words, a few
symbols and abbreviations spoken ("%" → "percent", "Mr." → "mister"), and integers spelled out
(years as "nineteen sixty one").
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_ONES = [
    "zero",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "ten",
    "eleven",
    "twelve",
    "thirteen",
    "fourteen",
    "fifteen",
    "sixteen",
    "seventeen",
    "eighteen",
    "nineteen",
]
_TENS = ["_", "_", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"]
_SYMBOLS = {"%": " percent ", "&": " and ", "+": " plus ", "@": " at ", "$": " dollars "}
_SCALES = frozenset({"hundred", "thousand", "million", "billion"})
_NUMBER_WORDS = frozenset(_ONES) | frozenset(_TENS[2:])
_SPOKEN = {
    "mr": "mister", "mrs": "missus", "dr": "doctor", "vs": "versus", "ok": "okay", "st": "saint",
    # British → American spellings of common words (engines and references disagree freely).
    "travelling": "traveling", "travelled": "traveled", "harbour": "harbor", "colour": "color",
    "favourite": "favorite", "centre": "center", "theatre": "theater", "neighbour": "neighbor",
    "organise": "organize", "recognise": "recognize", "realise": "realize", "honour": "honor",
    "behaviour": "behavior", "labour": "labor", "programme": "program", "grey": "gray",
}  # fmt: skip
_TOKEN = re.compile(r"[a-z0-9]+(?:'[a-z0-9]+)*")


def _under_1000(n: int) -> list[str]:
    out: list[str] = []
    if n >= 100:
        out += [_ONES[n // 100], "hundred"]
        n %= 100
        if n == 0:
            return out
    if n < 20:
        out.append(_ONES[n])
    else:
        out.append(_TENS[n // 10])
        if n % 10:
            out.append(_ONES[n % 10])
    return out


def _cardinal(n: int) -> list[str]:
    if n < 1000:
        return _under_1000(n)
    out: list[str] = []
    for value, name in ((10**9, "billion"), (10**6, "million"), (1000, "thousand")):
        if n >= value:
            out += [*_cardinal(n // value), name]
            n %= value
    return out + (_under_1000(n) if n else [])


def spell_number(n: int) -> list[str]:
    """English words for a non-negative integer: 30 → thirty, 1961 → nineteen sixty one (4-digit
    numbers between 1100 and 2099 read as years), 2005 → two thousand five."""
    if 1100 <= n <= 2099 and n % 100 and not 2000 <= n <= 2009:
        hi, lo = divmod(n, 100)
        return _under_1000(hi) + (["oh", _ONES[lo]] if lo < 10 else _under_1000(lo))
    return _cardinal(n)


def normalize(text: str) -> list[str]:
    """Words of ``text`` as compared for WER."""
    t = text.lower().replace("’", "'")
    for sym, spoken in _SYMBOLS.items():
        t = t.replace(sym, spoken)
    t = re.sub(r"(?<=\d),(?=\d{3})", "", t)  # 1,000 → 1000
    t = re.sub(r"[-–—/_]", " ", t)
    words: list[str] = []
    for tok in _TOKEN.findall(t):
        if tok.isdigit() and len(tok) <= 12:
            words += spell_number(int(tok))
        else:
            words.append(_SPOKEN.get(tok, tok))
    # "one hundred and twelve" and "112" are the same number: drop the British "and".
    return [
        w
        for i, w in enumerate(words)
        if not (
            w == "and"
            and 0 < i < len(words) - 1
            and words[i - 1] in _SCALES
            and words[i + 1] in _NUMBER_WORDS
        )
    ]


@dataclass(frozen=True)
class WerResult:
    substitutions: int
    deletions: int
    insertions: int
    reference_words: int

    @property
    def errors(self) -> int:
        return self.substitutions + self.deletions + self.insertions

    @property
    def wer(self) -> float:
        if self.reference_words == 0:
            return 0.0 if self.errors == 0 else 1.0
        return self.errors / self.reference_words


def align(reference: list[str], hypothesis: list[str]) -> WerResult:
    """Levenshtein alignment of word lists, counting each kind of error."""
    n, m = len(reference), len(hypothesis)
    # cost, subs, dels, ins per cell; rolling rows keep memory O(m).
    prev = [(j, 0, 0, j) for j in range(m + 1)]
    for i in range(1, n + 1):
        cur = [(i, 0, i, 0)]
        for j in range(1, m + 1):
            if reference[i - 1] == hypothesis[j - 1]:
                best = prev[j - 1]
            else:
                c, s, d, ins = prev[j - 1]
                best = (c + 1, s + 1, d, ins)
            c, s, d, ins = prev[j]
            if c + 1 < best[0]:
                best = (c + 1, s, d + 1, ins)
            c, s, d, ins = cur[j - 1]
            if c + 1 < best[0]:
                best = (c + 1, s, d, ins + 1)
            cur.append(best)
        prev = cur
    _, s, d, ins = prev[m]
    return WerResult(s, d, ins, n)


def wer_details(reference: str, hypothesis: str) -> WerResult:
    return align(normalize(reference), normalize(hypothesis))


def wer(reference: str, hypothesis: str) -> float:
    """Word error rate of ``hypothesis`` against ``reference`` after :func:`normalize`."""
    return wer_details(reference, hypothesis).wer
