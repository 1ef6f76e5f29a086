"""Overlap-aware turns: the segmentation model's frames, named by the clustered speakers.

The embedding pipeline (VAD, 1.5 s CAM++ windows, clustering) knows *who* each voice is across
the recording but gives one speaker per frame, with boundaries as coarse as its windows. The
powerset segmentation model (:mod:`montaged.diarize.segmentation`) knows, per 17 ms frame,
how many voices talk and which of its *local* speakers they are, but only within a 10 s chunk.
Joined, as pyannote's own pipeline joins them (its "reconstruction" step):

1. In each chunk, each local speaker is tied to the clustered speaker it co-occurs with most
   while it talks alone (one-to-one per chunk, Hungarian assignment); a local speaker with less
   than :data:`MIN_SUPPORT` seconds of such agreement stays unnamed.
2. Every 10 ms frame averages, over the chunks that see it (Hamming-weighted: a chunk's edges
   have the least context), the number of voices and each named speaker's activity.
3. A frame gets its rounded voice count of speakers, the most active first. A frame with voices
   but no named activity keeps the one-speaker label, if it has one.

When the job fixed the speaker count and the clustering found exactly one speaker fewer (a
voice that only ever talks over another wins no window's vote), the most active unnamed local
speaker of each chunk is that missing speaker: the count says someone is there, and with one
missing there is no doubt which. With two or more missing, unnamed voices stay unnamed.

Overlapped speech thus carries every speaker in it, and turns start and end on the model's
frames instead of where 1.5 s window votes flip.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
from scipy.optimize import linear_sum_assignment

from montaged.diarize.segmentation import ChunkActivity
from montaged.diarize.turns import FRAME, relabel
from montaged.model import SpeakerTurn

MIN_SUPPORT = 0.2
"""Seconds a local speaker must talk alone, inside one clustered speaker's turns, to be named
after them: less is a boundary sliver, not evidence of who the voice is."""


class Overlap(NamedTuple):
    """A stretch where two or more speakers talk at once."""

    start: float
    end: float
    speakers: tuple[str, ...]


def exclusive_labels(turns: Sequence[SpeakerTurn], labels: Sequence[str], frames: int) -> np.ndarray:
    """Index into ``labels`` of the speaker of each 10 ms frame, -1 where nobody talks
    (a later turn wins where turns overlap)."""
    index = {s: i for i, s in enumerate(labels)}
    out = np.full(frames, -1, dtype=np.int64)
    for t in turns:
        out[round(t.start / FRAME) : round(t.end / FRAME)] = index[t.speaker]
    return out


def _chunk_frames(act: ChunkActivity, c: int, frames: int) -> tuple[np.ndarray, np.ndarray]:
    """Grid frames chunk ``c`` covers, and for each the index of the chunk's nearest model frame."""
    start = float(act.starts[c])
    n = act.active.shape[1]
    a = max(0, int(np.ceil(start / FRAME)))
    b = min(frames, int(np.floor((start + n * act.frame_step) / FRAME)))
    grid = np.arange(a, b)
    local = np.rint(((grid + 0.5) * FRAME - start - act.frame_duration / 2) / act.frame_step)
    return grid, np.clip(local.astype(np.int64), 0, n - 1)


def name_local_speakers(
    act: ChunkActivity, exclusive: np.ndarray, speakers: int, *, missing: bool = False
) -> list[dict[int, int]]:
    """Per chunk, local speaker → clustered speaker index (step 1 of the module docstring);
    with ``missing``, the chunk's most active unnamed one → index ``speakers`` (the missing one)."""
    frames = len(exclusive)
    times = act.frame_times()
    least = MIN_SUPPORT / act.frame_step
    out = []
    for c, local in enumerate(act.active):
        idx = np.clip(((act.starts[c] + times) / FRAME).astype(np.int64), 0, frames - 1)
        named = exclusive[idx]
        alone = (local.sum(axis=1) == 1) & (named >= 0)
        co = np.zeros((local.shape[1], speakers))
        for k in range(local.shape[1]):
            mine = alone & local[:, k]
            co[k] = np.bincount(named[mine], minlength=speakers)[:speakers]
        rows, cols = linear_sum_assignment(co, maximize=True)
        names = {int(k): int(g) for k, g in zip(rows, cols, strict=True) if co[k, g] >= least}
        if missing:
            talk = local.sum(axis=0)
            unnamed = [k for k in range(local.shape[1]) if k not in names and talk[k] >= least]
            if unnamed:
                names[max(unnamed, key=lambda k: talk[k])] = speakers
        out.append(names)
    return out


def reconstruct(
    act: ChunkActivity, exclusive: np.ndarray, speakers: int, *, missing: bool = False
) -> np.ndarray:
    """``(frames, speakers)`` booleans (one more column with ``missing``): who talks in each
    10 ms frame (steps 2 and 3)."""
    frames = len(exclusive)
    names = name_local_speakers(act, exclusive, speakers, missing=missing)
    speakers += int(missing)
    weight = np.hamming(act.active.shape[1] + 2)[1:-1]  # no zero weight at the very edges
    total = np.zeros(frames)
    voices = np.zeros(frames)
    level = np.zeros((frames, speakers))
    for c, local in enumerate(act.active):
        grid, near = _chunk_frames(act, c, frames)
        w = weight[near]
        total[grid] += w
        voices[grid] += w * local[near].sum(axis=1)
        for k, g in names[c].items():
            level[grid, g] += w * local[near, k]
    seen = total > 0
    count = np.zeros(frames, dtype=np.int64)
    count[seen] = np.floor(voices[seen] / total[seen] + 0.5).astype(np.int64)
    level[seen] /= total[seen, None]
    rank = np.argsort(np.argsort(-level, axis=1, kind="stable"), axis=1)
    talk = (rank < np.minimum(count, speakers)[:, None]) & (level > 0)
    # Voices the model heard but could not name: the one-speaker label, where there is one.
    fill = (count > 0) & ~talk.any(axis=1) & (exclusive >= 0)
    talk[np.flatnonzero(fill), exclusive[fill]] = True
    # Where no chunk's frames reach (the last few tens of milliseconds, past the model's last
    # frame), keep the one-speaker labels.
    rest = ~seen & (exclusive >= 0)
    talk[np.flatnonzero(rest), exclusive[rest]] = True
    return talk


def grid_turns(talk: np.ndarray, labels: Sequence[str]) -> list[tuple[float, float, str]]:
    """Turns ``(start, end, label)`` of each speaker's runs of frames."""
    out: list[tuple[float, float, str]] = []
    for g, label in enumerate(labels):
        edges = np.diff(np.concatenate([[0], talk[:, g].astype(np.int8), [0]]))
        for a, b in zip(np.flatnonzero(edges == 1), np.flatnonzero(edges == -1), strict=True):
            out.append((float(a) * FRAME, float(b) * FRAME, label))
    return out


def overlap_aware(
    turns: Sequence[SpeakerTurn], act: ChunkActivity, duration: float, *, speakers: int | None = None
) -> list[SpeakerTurn]:
    """One-speaker-at-a-time ``turns`` redrawn from segmentation ``act`` (module docstring).

    Args:
        turns: the clustered turns; their labels name the speakers.
        act: segmentation of the same audio.
        duration: seconds of audio.
        speakers: the job's fixed speaker count, if any (a single missing speaker is recovered).
    """
    if not turns:
        return []
    labels = list(dict.fromkeys(t.speaker for t in turns))
    frames = int(np.ceil(duration / FRAME))
    exclusive = exclusive_labels(turns, labels, frames)
    missing = speakers is not None and speakers == len(labels) + 1
    talk = reconstruct(act, exclusive, len(labels), missing=missing)
    return relabel(grid_turns(talk, [*labels, "missing"] if missing else labels))


def overlaps(turns: Sequence[SpeakerTurn]) -> list[Overlap]:
    """Stretches where two or more speakers' turns overlap, with who is in each (time order).

    What framing reads to choose a split or wider layout during real overlap.
    """
    events = sorted([(t.start, 1, t.speaker) for t in turns] + [(t.end, -1, t.speaker) for t in turns])
    active: dict[str, int] = {}
    out: list[Overlap] = []
    for i, (at, delta, speaker) in enumerate(events):
        active[speaker] = active.get(speaker, 0) + delta
        following = events[i + 1][0] if i + 1 < len(events) else at
        who = tuple(sorted(s for s, n in active.items() if n > 0))
        if following <= at or len(who) < 2:
            continue
        if out and out[-1].end == at and out[-1].speakers == who:
            out[-1] = Overlap(out[-1].start, following, who)
        else:
            out.append(Overlap(at, following, who))
    return out
