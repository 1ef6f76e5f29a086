"""ROVER (Fiscus 1997): fuse N timed transcripts into one by alignment and voting.

1. **Alignment.** Each transcript is a linear word transition network. The first (the most
   accurate engine, FuseConfig.engine_order) is the base; every further one is aligned to the
   network built so far by dynamic programming, giving *correspondence sets* (CS): one arc per
   system per slot, a NULL arc where a system said nothing. Costs are SCTK's time-mediated ones
   (``sclite -T``): correct = |Δstart| + |Δend|, substitution = the same + ε, insertion or
   deletion = the word's duration, NULL against nothing = 0.001. A CS is a set of parallel
   alternatives, so a word's cost against it is the cheapest over its arcs (SCTK ``net_dp.c``).
2. **Calibration.** Every engine's confidences are mapped to P(correct) (calibrate.py): by a
   table fitted on that engine's output when FuseConfig.calibration_file has one, else from how
   often the other engines confirm its words in this very network (``agreement``), else raw.
3. **Voting.** Per CS, for each word type w: score = α·N(w)/Ns + (1−α)·C(w), N = how many
   systems said it, C = their mean calibrated confidence. A NULL arc is not a fixed vote for
   silence: its C is the engine's own calibrated confidence in the region (the mean of its
   nearest words before and after), so a word only one engine heard survives only when that
   engine is surer of it than the other engine is of what it heard around it. Ties go to the
   word of the most accurate engine. With two engines the frequency term can only tie, so
   calibrated confidence and the tie-break decide.
4. **Two engines: the less reliable one is refused.** With no third voice to break a
   disagreement, a word-by-word vote mixes both engines' errors: on the real phone call the
   worse engine's confident wrong words won slots the better engine had right (fused WER 0.173
   against 0.148 for the better engine alone). So each engine's *reliability* is measured on
   the contested slots (where the engines say different things and both heard the audio): the
   mean calibrated confidence of its words there (:func:`reliability`), i.e. how sure it is,
   on the agreement scale, of exactly the words that decide the vote. When one engine's is
   lower, its arcs do not vote wherever the other heard the audio (they still fill what the
   other never heard), and a note says so. On every real recording with a reference, the more
   reliable engine by this measure was the one with the lower WER.

Words are matched in a normalised form (case and punctuation dropped) but printed in the
display form of the best engine that said them; every slot keeps its own timings, so repeated
words ("the the") stay two words at their own times.
"""

from __future__ import annotations

import bisect
import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from montaged.asr.calibrate import IDENTITY, CalibrationTable, Calibrator, agreement_table, normalize
from montaged.config import FuseConfig
from montaged.model import Transcript, Word

NULL_NULL = 0.001  # SCTK: inserting/deleting a NULL arc costs almost nothing
INS_DEL, SUB = 3.0, 4.0  # SCTK's classic word costs (correct 0), scaled by FuseConfig.word_cost_seconds
MIN_WORD_COST = 0.01  # zero-length words (they happen) would otherwise insert for free
_SUB, _DEL, _INS = 0, 1, 2


@dataclass
class CorrespondenceSet:
    """One slot of the network: ``arcs[k]`` is system k's word there, or None (a NULL arc)."""

    arcs: list[Word | None]
    norms: list[str | None] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.norms:
            self.norms = [None if w is None else normalize(w.text) for w in self.arcs]

    @property
    def start(self) -> float:
        return min(w.start for w in self.arcs if w is not None)

    @property
    def end(self) -> float:
        return max(w.end for w in self.arcs if w is not None)


def _dur(w: Word) -> float:
    return max(w.end - w.start, MIN_WORD_COST)


class _Aligner:
    """Banded time-mediated DP of one new word sequence against the network so far."""

    def __init__(self, network: list[CorrespondenceSet], hyp: Sequence[Word], cfg: FuseConfig) -> None:
        self.net, self.hyp, self.eps = network, hyp, cfg.substitution_epsilon
        self.word = cfg.word_cost_seconds
        self.hyp_norm = [normalize(w.text) for w in hyp]
        self.ins_cost = [INS_DEL * self.word + _dur(w) for w in hyp]
        self.del_cost = [
            NULL_NULL
            if any(a is None for a in cs.arcs)
            else INS_DEL * self.word + min(_dur(a) for a in cs.arcs if a is not None)
            for cs in network
        ]
        self.lo, self.hi = self._band(cfg.align_window_seconds)

    def _band(self, window: float) -> tuple[list[int], list[int]]:
        """Columns row i may use: hyp words far before slot i must be consumed, far after must not."""
        n, m = len(self.net), len(self.hyp)
        ends, running = [], float("-inf")
        for w in self.hyp:
            running = max(running, w.end)
            ends.append(running)
        starts = [w.start for w in self.hyp]
        lo, hi = [0] * (n + 1), [m] * (n + 1)
        for i in range(n + 1):
            anchor = self.net[max(i - 1, 0)]
            lo[i] = 0 if i == 0 else bisect.bisect_left(ends, anchor.start - window)
            hi[i] = m if i == n else bisect.bisect_right(starts, (anchor.end if i else anchor.start) + window)
        for i in range(1, n + 1):
            lo[i] = max(lo[i], lo[i - 1])
            hi[i] = max(hi[i], hi[i - 1])
        for i in range(n - 1, -1, -1):
            hi[i] = max(hi[i], lo[i + 1])
        for i in range(n + 1):
            lo[i] = min(lo[i], hi[i])
        return lo, hi

    def _sub(self, cs: CorrespondenceSet, j: int) -> float:
        w, norm = self.hyp[j], self.hyp_norm[j]
        best = float("inf")
        for arc, arc_norm in zip(cs.arcs, cs.norms, strict=True):
            if arc is None:
                d = self.ins_cost[j]  # against the NULL alternative = inserting w there
            else:
                d = abs(arc.start - w.start) + abs(arc.end - w.end)
                if arc_norm != norm:
                    d += SUB * self.word + self.eps
            best = min(best, d)
        return best

    def run(self) -> list[tuple[int, int, int]]:
        """Edit path as (op, cs index, hyp index), in order."""
        n, lo, hi = len(self.net), self.lo, self.hi
        inf = float("inf")
        cost: list[list[float]] = []
        back: list[list[int]] = []
        for i in range(n + 1):
            row_c = [inf] * (hi[i] - lo[i] + 1)
            row_b = [-1] * len(row_c)
            for j in range(lo[i], hi[i] + 1):
                best, op = (0.0, -1) if i == 0 and j == 0 else (inf, -1)
                if i > 0:
                    pl, ph, prev = lo[i - 1], hi[i - 1], cost[i - 1]
                    if j > 0 and pl <= j - 1 <= ph:
                        c = prev[j - 1 - pl] + self._sub(self.net[i - 1], j - 1)
                        if c < best:
                            best, op = c, _SUB
                    if pl <= j <= ph:
                        c = prev[j - pl] + self.del_cost[i - 1]
                        if c < best:
                            best, op = c, _DEL
                if j > lo[i]:
                    c = row_c[j - 1 - lo[i]] + self.ins_cost[j - 1]
                    if c < best:
                        best, op = c, _INS
                row_c[j - lo[i]], row_b[j - lo[i]] = best, op
            cost.append(row_c)
            back.append(row_b)
        path = []
        i, j = n, len(self.hyp)
        while i > 0 or j > 0:
            op = back[i][j - lo[i]]
            if op == _SUB:
                i, j = i - 1, j - 1
            elif op == _DEL:
                i -= 1
            elif op == _INS:
                j -= 1
            else:  # unreachable: the band is connected by construction
                raise RuntimeError(f"rover: broken alignment band at ({i}, {j})")
            path.append((op, i, j))
        path.reverse()
        return path


def align(hyps: Sequence[Sequence[Word]], cfg: FuseConfig) -> list[CorrespondenceSet]:
    """Build the word transition network of ``hyps`` (base first), merging one at a time."""
    network: list[CorrespondenceSet] = []
    for k, hyp in enumerate(hyps):
        words = sorted(hyp, key=lambda w: (w.start, w.end))
        if not network:
            network = [CorrespondenceSet([None] * k + [w]) for w in words]
            continue
        if not words:
            for cs in network:
                cs.arcs.append(None)
                cs.norms.append(None)
            continue
        merged: list[CorrespondenceSet] = []
        run: list[CorrespondenceSet] = []  # insertions/deletions since the last aligned pair
        for op, i, j in _Aligner(network, words, cfg).run():
            if op == _INS:
                run.append(CorrespondenceSet([None] * k + [words[j]]))
                continue
            cs = network[i]
            cs.arcs.append(words[j] if op == _SUB else None)
            cs.norms.append(normalize(words[j].text) if op == _SUB else None)
            if op == _DEL:
                run.append(cs)
                continue
            # Between two aligned pairs the DP's order of insertions vs deletions is arbitrary
            # (equal cost); put those slots in time order so the output reads forward.
            merged += sorted(run, key=lambda c: c.start)
            run = []
            merged.append(cs)
        network = merged + sorted(run, key=lambda c: c.start)
    return network


def _rank(engines: Sequence[str], order: Sequence[str]) -> list[int]:
    """Position of each system in the accuracy order; unknown engines after, in input order."""
    known = {e: i for i, e in enumerate(order)}
    return [known.get(e, len(order) + k) for k, e in enumerate(engines)]


def _deaf(gaps: Sequence[tuple[float, float]], cs: CorrespondenceSet) -> bool:
    mid = (cs.start + cs.end) / 2
    return any(lo <= mid <= hi for lo, hi in gaps)


def region_confidence(network: Sequence[CorrespondenceSet], k: int) -> list[float]:
    """Per slot: system k's confidence around it, the mean of its nearest words before and after
    (its own word where it has one); 0 where it said nothing at all (no evidence of silence)."""
    n = len(network)
    before: list[float | None] = [None] * n
    after: list[float | None] = [None] * n
    last: float | None = None
    for i, cs in enumerate(network):
        if (w := cs.arcs[k]) is not None:
            last = w.confidence
        before[i] = last
    last = None
    for i in range(n - 1, -1, -1):
        if (w := network[i].arcs[k]) is not None:
            last = w.confidence
        after[i] = last
    out = []
    for b, a in zip(before, after, strict=True):
        near = [c for c in (b, a) if c is not None]
        out.append(sum(near) / len(near) if near else 0.0)
    return out


def contested(cs: CorrespondenceSet, deaf: Sequence[Sequence[tuple[float, float]]]) -> bool:
    """Whether the systems that heard this slot's audio say different things in it."""
    heard = {n for k, n in enumerate(cs.norms) if not (deaf[k] and _deaf(deaf[k], cs))}
    return len(heard) > 1


def reliability(
    network: Sequence[CorrespondenceSet], k: int, deaf: Sequence[Sequence[tuple[float, float]]]
) -> float | None:
    """System k's mean calibrated confidence over its words in contested slots; where it put no
    word in any, its mean region confidence there (:func:`region_confidence`); None when the
    systems never disagree."""
    slots = [i for i, cs in enumerate(network) if contested(cs, deaf)]
    if not slots:
        return None
    words = [w.confidence for i in slots if (w := network[i].arcs[k]) is not None]
    if words:
        return sum(words) / len(words)
    region = region_confidence(network, k)
    return sum(region[i] for i in slots) / len(slots)


def refused_engines(
    network: Sequence[CorrespondenceSet],
    engines: Sequence[str],
    deaf: Sequence[Sequence[tuple[float, float]]],
) -> tuple[list[bool], list[str]]:
    """Which systems sit out the vote (see the module doc, step 4), and notes saying why."""
    refused = [False] * len(engines)
    if len(engines) != 2:  # three or more: word frequency breaks disagreements
        return refused, []
    r = [reliability(network, k, deaf) for k in range(2)]
    if r[0] is None or r[1] is None or r[0] == r[1]:
        return refused, []
    low = 0 if r[0] < r[1] else 1
    refused[low] = True
    note = (
        f"fuse: {engines[low]} refused where {engines[1 - low]} heard the audio: its contested words are "
        f"less reliable ({r[low]:.2f} against {r[1 - low]:.2f} calibrated confidence)"
    )
    return refused, [note]


def vote(
    network: Sequence[CorrespondenceSet],
    engines: Sequence[str],
    cfg: FuseConfig,
    gaps: Sequence[Sequence[tuple[float, float]]] | None = None,
    refused: Sequence[bool] | None = None,
) -> list[Word]:
    """Pick one word (or nothing) per slot by α·N(w)/Ns + (1−α)·C(w); ties to the better engine.

    A NULL arc's C is the system's confidence in the region (:func:`region_confidence`).
    ``gaps[k]``: media spans system k never heard (audio dropped on its way to a cloud engine);
    there its NULL arc is not a vote for silence, so it is left out and Ns shrinks.
    ``refused[k]``: system k votes only in slots no unrefused system heard (:func:`refused_engines`).
    """
    alpha = cfg.alpha
    rank = _rank(engines, cfg.engine_order)
    region = [region_confidence(network, k) for k in range(len(engines))]
    out: list[Word] = []
    for i, cs in enumerate(network):
        groups: dict[str | None, list[int]] = {}
        heard = [not (gaps is not None and gaps[k] and _deaf(gaps[k], cs)) for k in range(len(engines))]
        led = refused is not None and any(h and not r for h, r in zip(heard, refused, strict=True))
        for k, norm in enumerate(cs.norms):
            if norm is None and not heard[k]:
                continue
            if led and refused is not None and refused[k]:
                continue
            groups.setdefault(norm, []).append(k)
        ns = sum(len(v) for v in groups.values())
        best: tuple[float, int, str | None] | None = None
        for norm, systems in groups.items():
            if norm is None:
                conf = sum(region[k][i] for k in systems) / len(systems)
            else:
                conf = sum(w.confidence for k in systems if (w := cs.arcs[k]) is not None) / len(systems)
            score = alpha * len(systems) / ns + (1 - alpha) * conf
            key = (round(score, 9), -min(rank[k] for k in systems), norm)
            if best is None or key[:2] > best[:2]:
                best = key
        assert best is not None
        score, _, norm = best
        if norm is None:
            continue
        systems = sorted(groups[norm], key=lambda k: rank[k])
        shown = cs.arcs[systems[0]]
        assert shown is not None
        speaker = next((w.speaker for k in systems if (w := cs.arcs[k]) is not None and w.speaker), None)
        out.append(
            Word(
                text=shown.text,
                start=shown.start,
                end=shown.end,
                confidence=round(min(1.0, score), 4),
                speaker=speaker,
                source="+".join(engines[k] for k in systems),
            )
        )
    return out


def calibrate(
    network: Sequence[CorrespondenceSet],
    transcripts: Sequence[Transcript],
    cfg: FuseConfig,
    calibrator: Calibrator,
    deaf: Sequence[Sequence[tuple[float, float]]],
) -> tuple[list[CorrespondenceSet], list[str]]:
    """The network with every arc's confidence calibrated (see calibrate.py), and notes."""
    tables: list[CalibrationTable] = []
    notes: list[str] = []
    for k, t in enumerate(transcripts):
        fitted = calibrator.fitted(t.engine, t.model)
        if fitted is not None or cfg.calibration == "raw":
            tables.append(fitted or IDENTITY)
            continue
        confs, confirmed = [], []
        for cs in network:
            w = cs.arcs[k]
            if w is None or any(j != k and g and _deaf(g, cs) for j, g in enumerate(deaf)):
                continue
            confs.append(w.confidence)
            confirmed.append(any(j != k and n == cs.norms[k] for j, n in enumerate(cs.norms)))
        table = agreement_table(confs, confirmed)
        if table is None:
            notes.append(
                f"fuse: {t.engine} kept raw confidences ({len(confs)} comparable words, "
                f"{sum(confirmed)} confirmed: too few to calibrate by agreement)"
            )
        tables.append(table or IDENTITY)
    out = [
        CorrespondenceSet(
            [None if w is None else dataclasses.replace(w, confidence=tab(w.confidence))
             for w, tab in zip(cs.arcs, tables, strict=True)],
            list(cs.norms),
        )
        for cs in network
    ]  # fmt: skip
    return out, notes


def fuse(
    transcripts: Sequence[Transcript],
    cfg: FuseConfig,
    *,
    calibrator: Calibrator | None = None,
    gaps: Mapping[str, Sequence[tuple[float, float]]] | None = None,
    refuse: bool = True,
) -> Transcript:
    """ROVER over ``transcripts`` (two or more engines) → Transcript(engine="rover").

    ``calibrator``: fitted tables (default: those in FuseConfig.calibration_file, if any);
    engines without one are calibrated by agreement or kept raw (FuseConfig.calibration).
    ``gaps``: per engine, media spans it never heard (see :func:`vote`).
    ``refuse``: with two engines, the less reliable one sits out (module doc, step 4); False =
    plain ROVER, every slot voted word by word.
    """
    if not transcripts:
        raise ValueError("fuse: no transcripts to fuse")
    calibrator = calibrator if calibrator is not None else Calibrator.from_file(cfg.calibration_file)
    rank = _rank([t.engine for t in transcripts], cfg.engine_order)
    ordered = [t for _, t in sorted(zip(rank, transcripts, strict=True), key=lambda p: p[0])]
    engines = [t.engine for t in ordered]
    deaf = [list((gaps or {}).get(e, ())) for e in engines]
    network, cal_notes = calibrate(align([t.words for t in ordered], cfg), ordered, cfg, calibrator, deaf)
    refused, refusal = refused_engines(network, engines, deaf) if refuse else ([False] * len(engines), [])
    notes = tuple(dict.fromkeys([*(n for t in transcripts for n in t.notes), *cal_notes, *refusal]))
    return Transcript(
        words=tuple(vote(network, engines, cfg, deaf, refused)),
        language=ordered[0].language,
        engine="rover",
        model="+".join(f"{t.engine}/{t.model}" for t in ordered),
        duration=max(t.duration for t in ordered),
        notes=notes,
    )
