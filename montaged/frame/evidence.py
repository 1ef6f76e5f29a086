"""A clip's evidence for the talk's identities (identity.py): face embeddings and talking votes.

Runs in the framing worker right after the clip's analysis, where the chips cut out while
decoding (analyse.py) are still at hand; they are dropped afterwards, so the analysis that travels
back for planning stays small.

- Embeddings: each track embeds at most ``CHIPS_PER_TRACK`` of its chips, those with the highest
  detector score (a frontal, sharp face); the track's embedding is their mean, and a person's is
  the chip-weighted mean over their tracks.
- Votes: at each sample inside exactly one speaker label's turns (overlapped speech says nothing
  about who is who), the visible person whose mouth moves most (speaker.mouth_activity, smoothed
  over five samples) gets the vote, if their mouth moves more than ``ACTIVE``. The module doc of
  speaker.py gives the scale: 0.4-0.9 px while talking, 0.0 ± 0.05 px for a still face, so 0.15 is
  three standard deviations of stillness.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from montaged.frame.analyse import ClipAnalysis
from montaged.frame.embed import embedder
from montaged.frame.identity import ClipFaces
from montaged.frame.speaker import activity_matrix
from montaged.frame.tracks import Track
from montaged.model import SpeakerTurn

CHIPS_PER_TRACK = 3
"""Chips embedded per track: the ResNet is the costly part (0.1-0.3 s a chip on one core)."""
ACTIVE = 0.15
"""Mouth activity (px of a 64 px patch) above which a face counts as talking (see module doc)."""


def embed_tracks(tracks: Sequence[Track]) -> None:
    """Set each track's ``embedding`` from its best chips, then drop every chip."""
    model = None
    for t in tracks:
        chips = sorted((o for o in t.obs if o.chip is not None), key=lambda o: -o.det.score)
        chosen = [o.chip for o in chips[:CHIPS_PER_TRACK] if o.chip is not None]
        if chosen:
            model = model or embedder()
            t.embedding = model.embed(chosen).mean(axis=0)
        for o in t.obs:
            o.chip = None


def _person_embedding(tracks: Sequence[Track], who: int) -> np.ndarray | None:
    parts = [(t.embedding, len(t.obs)) for t in tracks if t.identity == who and t.embedding is not None]
    if not parts:
        return None
    return np.average([e for e, _ in parts], axis=0, weights=[n for _, n in parts])


def clip_faces(an: ClipAnalysis, clip: int, turns: Sequence[SpeakerTurn]) -> ClipFaces:
    """The clip's people, embeddings and talking votes (embeds the tracks first if needed)."""
    if any(o.chip is not None for t in an.tracks for o in t.obs):
        embed_tracks(an.tracks)
    people = sorted({t.identity for t in an.tracks})
    spans = []
    for p in people:
        mine = [t for t in an.tracks if t.identity == p]
        first = min(an.times[t.first] for t in mine)
        last = max(an.times[t.last] for t in mine)
        spans.append((an.start + float(first), an.start + float(last)))
    votes: dict[str, list[int]] = {}
    heard: dict[str, int] = {}
    if people and len(an.times):
        act = activity_matrix(an.tracks, len(an.times), people, 2)
        media_t = an.start + an.times
        labels = np.full(len(media_t), "", dtype=object)
        count = np.zeros(len(media_t), dtype=int)
        for s in turns:
            inside = (media_t >= s.start) & (media_t < s.end)
            count += inside
            labels[inside] = s.speaker
        for i in np.flatnonzero(count == 1):
            seen = np.isfinite(act[:, i])
            if not seen.any():
                continue
            label = str(labels[i])
            heard[label] = heard.get(label, 0) + 1
            row = votes.setdefault(label, [0] * len(people))
            best = int(np.argmax(np.where(seen, act[:, i], -np.inf)))
            if act[best, i] > ACTIVE:
                row[best] += 1
    return ClipFaces(
        clip=clip,
        people=tuple(people),
        embeddings=tuple(_person_embedding(an.tracks, p) for p in people),
        spans=tuple(spans),
        votes={k: tuple(v) for k, v in votes.items()},
        heard=heard,
    )


def relabel(an: ClipAnalysis, faces: dict[int, int]) -> None:
    """Give the clip's tracks their talk face numbers (identity.TalkIdentity.faces of this clip)."""
    for t in an.tracks:
        t.identity = faces.get(t.identity, t.identity)
