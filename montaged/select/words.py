"""Per-word arrays every window feature is summed from (prefix sums make a window O(1)).

Built once per talk, O(words + frames): tokens and their lexical classes, fillers, inverse
document frequency, speaker codes, and, when audio features exist, each word's loudness and
pitch relative to the talk (pitch relative to its own speaker, so a high voice in an interview is
not mistaken for emphasis).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from montaged.model import Word
from montaged.select import lexicon as lx
from montaged.select.features import AudioFeatureTrack, semitones
from montaged.select.sentences import Sentence

F64 = npt.NDArray[np.float64]
B = npt.NDArray[np.bool_]

PROMINENCE_Z = 1.0  # a word this many talk-SDs above the talk's loudness or its speaker's pitch
HAPAX_WEIGHT = 0.5  # a content word said once in the whole talk: as often an ASR slip as a topic


def csum(x: npt.ArrayLike) -> F64:
    """Prefix sums with a leading zero: ``c[b] - c[a]`` sums ``x[a:b]``."""
    a = np.asarray(x, dtype=np.float64)
    out = np.zeros(len(a) + 1)
    np.cumsum(a, out=out[1:])
    return out


@dataclass(frozen=True)
class WordTable:
    tokens: list[str]
    starts: F64
    ends: F64
    content: B
    filler: B
    idf: F64  # 0 for non-content words
    direct: B  # direct address ("you", "imagine")
    number: B
    claim: B
    speaker: npt.NDArray[np.int64]  # -1 unknown
    speaker_names: list[str]
    energy_z: F64  # word loudness vs the talk's voiced frames (NaN without audio)
    pitch_z: F64  # word pitch vs its speaker's words (NaN unvoiced or without audio)
    prominent: B  # content word with energy or pitch above PROMINENCE_Z


def _fillers(tokens: list[str], texts: list[str]) -> B:
    """Disfluencies: um/uh always; like/basically… and "you know"/"I mean" only when comma-marked."""
    n = len(tokens)
    out = np.zeros(n, bool)
    for k, tok in enumerate(tokens):
        raw = texts[k].rstrip()
        comma = raw.endswith(",")
        prev_comma = k > 0 and texts[k - 1].rstrip().endswith(",")
        if tok in lx.FILLERS or (tok in lx.SOFT_FILLERS and comma and (prev_comma or k == 0)):
            out[k] = True
        elif comma and k > 0 and (tokens[k - 1], tok) in (("you", "know"), ("i", "mean")):
            out[k - 1 : k + 1] = True
        elif tok and k > 0 and tok == tokens[k - 1] and tok not in ("that", "had"):  # "the the"
            out[k] = True
    return out


def build_word_table(
    words: Sequence[Word], sentences: Sequence[Sentence], track: AudioFeatureTrack | None
) -> WordTable:
    n = len(words)
    texts = [w.text for w in words]
    tokens = [lx.norm(t) for t in texts]
    starts = np.fromiter((w.start for w in words), float, n)
    ends = np.fromiter((w.end for w in words), float, n)
    content = np.fromiter((lx.is_content(t) for t in tokens), bool, n)

    # IDF over sentences (documents): words spread across the whole talk weigh little.
    df: Counter[str] = Counter()
    for s in sentences:
        df.update({tokens[k] for k in range(s.first, s.last + 1) if content[k]})
    tf = Counter(t for t, c in zip(tokens, content, strict=True) if c)
    n_docs = max(1, len(sentences))
    idf_of = {
        t: np.log((n_docs + 1) / (d + 1)) * (HAPAX_WEIGHT if tf[t] == 1 else 1.0) for t, d in df.items()
    }
    idf = np.fromiter(
        (idf_of.get(t, 0.0) if c else 0.0 for t, c in zip(tokens, content, strict=True)), float, n
    )

    names: list[str] = []
    codes = np.full(n, -1, np.int64)
    index: dict[str, int] = {}
    for k, w in enumerate(words):
        if w.speaker is not None:
            if w.speaker not in index:
                index[w.speaker] = len(names)
                names.append(w.speaker)
            codes[k] = index[w.speaker]

    energy_z = np.full(n, np.nan)
    pitch_z = np.full(n, np.nan)
    if track is not None and len(track) and n:
        stats = track.talk_stats()
        fa = track.frame_index(starts)
        fb = np.minimum(np.maximum(track.frame_index(ends), fa + 1), len(track))
        fa = np.minimum(fa, fb - 1).clip(0)
        ce = csum(track.energy_db)
        energy_z = ((ce[fb] - ce[fa]) / np.maximum(fb - fa, 1) - stats.energy_mean_db) / stats.energy_std_db
        covered = (ends >= (track.t0 or 0.0)) & (starts <= track.times[-1] + track.hop)
        energy_z = np.where(covered, energy_z, np.nan)  # words outside the analysed audio: unknown
        voiced = track.voiced()
        st = np.where(voiced, semitones(np.where(voiced, track.f0, 100.0)), 0.0)
        cv, cs = csum(voiced), csum(st)
        nv = cv[fb] - cv[fa]
        with np.errstate(invalid="ignore", divide="ignore"):
            word_st = np.where((nv > 0) & covered, (cs[fb] - cs[fa]) / nv, np.nan)
        for code in np.unique(codes):
            sel = (codes == code) & np.isfinite(word_st)
            if sel.sum() >= 2:
                med = float(np.median(word_st[sel]))
                sd = max(float(np.std(word_st[sel])), 0.5)  # 0.5 st floor: a monotone voice is not all peaks
                pitch_z[sel] = (word_st[sel] - med) / sd
    with np.errstate(invalid="ignore"):
        prominent = content & ((energy_z > PROMINENCE_Z) | (pitch_z > PROMINENCE_Z))
    return WordTable(
        tokens=tokens,
        starts=starts,
        ends=ends,
        content=content,
        filler=_fillers(tokens, texts),
        idf=idf,
        direct=np.fromiter((t in lx.DIRECT_ADDRESS for t in tokens), bool, n),
        number=np.fromiter((lx.is_number(t) for t in tokens), bool, n),
        claim=np.fromiter((t in lx.STRONG_CLAIMS for t in tokens), bool, n),
        speaker=codes,
        speaker_names=names,
        energy_z=energy_z,
        pitch_z=pitch_z,
        prominent=prominent,
    )
