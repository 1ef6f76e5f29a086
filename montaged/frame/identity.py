"""One identity per person across the whole talk, and which face each diarized speaker is.

Each clip is analysed on its own (in a worker) and reports a :class:`ClipFaces`: the people it
saw with a face embedding each (embed.py), and, per speaker label, in how many sampled moments of
that label's speech each person was the one whose mouth moved most (evidence.py). This module
joins the clips (numpy and scipy only: it runs in the daemon's own process):

- Faces: average-linkage clustering of all clips' people by embedding distance, merging while the
  two groups are closer than dlib's same-person distance (embed.SAME_PERSON), and never merging two
  people seen at the same time in one clip. A person with no usable embedding (faces too small)
  stays a face of their own.
- Speakers: votes are summed over the whole talk per (label, face) and labels are assigned to faces
  one to one (Hungarian). A label's *confidence* is the share of its sampled speech with a face on
  screen in which its face was the talking one. A label under ``MIN_SPEAKER_SHARE`` maps to no
  face (an off-screen voice): listeners' mouths rarely move above evidence.ACTIVE.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.optimize import linear_sum_assignment

SAME_PERSON = 0.6
"""Same as embed.SAME_PERSON (not imported: that module loads dlib, this one must stay light)."""
MIN_SPEAKER_SHARE = 0.25
"""Least share of a label's on-screen speech its face must be the talking one in, to map at all."""


@dataclass(frozen=True)
class ClipFaces:
    """What one clip contributes to the talk's identities (plain data: crosses processes)."""

    clip: int
    people: tuple[int, ...]
    """The clip's own person numbers (tracks.Track.identity)."""
    embeddings: tuple[np.ndarray | None, ...]
    """Mean face embedding per person (same order), None when none could be made."""
    spans: tuple[tuple[float, float], ...]
    """Media seconds each person was first and last seen."""
    votes: dict[str, tuple[int, ...]] = field(default_factory=dict)
    """Per speaker label: samples of its speech in which each person (same order) was talking."""
    heard: dict[str, int] = field(default_factory=dict)
    """Per speaker label: samples of its speech with at least one face on screen."""


@dataclass(frozen=True)
class SpeakerFace:
    face: int
    confidence: float
    samples: int
    """Sampled moments of the label's speech with a face on screen (the confidence's base)."""


@dataclass(frozen=True)
class TalkIdentity:
    """The talk's faces and speakers."""

    faces: tuple[dict[int, int], ...]
    """Per clip (in the order given): the clip's person number → talk face number."""
    distances: tuple[dict[int, float | None], ...]
    """Per clip: the clip's person number → embedding distance to their talk face's mean."""
    speakers: dict[str, SpeakerFace]
    """Diarization label → talk face, for labels seen talking on screen."""
    count: int
    """Talk faces in all."""

    def mapping(self) -> dict[str, int]:
        return {k: v.face for k, v in self.speakers.items()}

    def sidecar(self, clip: int) -> dict[str, Any]:
        """The clip's part, as plain JSON: its faces and the talk-wide speaker map."""
        return {
            "model": "dlib-resnet-v1",
            "talk_faces": self.count,
            "clip_faces": [
                {"face": self.faces[clip][p], "distance": _round(self.distances[clip][p])}
                for p in sorted(self.faces[clip], key=lambda p: self.faces[clip][p])
            ],
            "speakers": {
                k: {"face": v.face, "confidence": round(v.confidence, 3), "samples": v.samples}
                for k, v in sorted(self.speakers.items())
            },
        }


def _round(d: float | None) -> float | None:
    return None if d is None else round(d, 3)


def _clusters(clips: Sequence[ClipFaces]) -> list[list[tuple[int, int]]]:
    """Groups of (clip position, person position) that are one person."""
    groups: list[list[tuple[int, int]]] = []
    for ci, c in enumerate(clips):
        for pi in range(len(c.people)):
            groups.append([(ci, pi)])

    def emb(n: tuple[int, int]) -> np.ndarray | None:
        return clips[n[0]].embeddings[n[1]]

    def apart(a: tuple[int, int], b: tuple[int, int]) -> bool:
        """Seen at once in one clip: two people whatever they look like."""
        if a[0] != b[0]:
            return False
        (s0, e0), (s1, e1) = clips[a[0]].spans[a[1]], clips[b[0]].spans[b[1]]
        return s0 <= e1 and s1 <= e0

    while True:
        best, pair = SAME_PERSON, None
        for i in range(len(groups)):
            for j in range(i + 1, len(groups)):
                if any(apart(a, b) for a in groups[i] for b in groups[j]):
                    continue
                ds = [
                    float(np.linalg.norm(ea - eb))
                    for a in groups[i]
                    for b in groups[j]
                    if (ea := emb(a)) is not None and (eb := emb(b)) is not None
                ]
                if ds and (d := float(np.mean(ds))) < best:
                    best, pair = d, (i, j)
        if pair is None:
            return groups
        i, j = pair
        groups[i] += groups.pop(j)


def identify_talk(clips: Sequence[ClipFaces]) -> TalkIdentity:
    """Talk faces and the speaker → face map from every clip's evidence (see module doc)."""
    groups = _clusters(clips)
    # Talk faces are numbered in order of first appearance.
    groups.sort(key=lambda g: min((a, clips[a].spans[b][0]) for a, b in g))
    faces: list[dict[int, int]] = [{} for _ in clips]
    distances: list[dict[int, float | None]] = [{} for _ in clips]
    for f, g in enumerate(groups):
        embs = [e for a, b in g if (e := clips[a].embeddings[b]) is not None]
        mean = np.mean(embs, axis=0) if embs else None
        for a, b in g:
            e = clips[a].embeddings[b]
            faces[a][clips[a].people[b]] = f
            distances[a][clips[a].people[b]] = (
                None if e is None or mean is None else float(np.linalg.norm(e - mean))
            )
    labels = sorted({k for c in clips for k in c.heard})
    votes = np.zeros((len(labels), len(groups)))
    heard = np.zeros(len(labels))
    for ci, c in enumerate(clips):
        for label, row in c.votes.items():
            li = labels.index(label)
            heard[li] += c.heard.get(label, 0)
            for pi, n in enumerate(row):
                votes[li, faces[ci][c.people[pi]]] += n
    speakers: dict[str, SpeakerFace] = {}
    if labels and groups:
        share = votes / np.maximum(heard, 1.0)[:, None]
        rows, cols = linear_sum_assignment(-share)
        for r, f in zip(rows, cols, strict=True):
            if share[r, f] >= MIN_SPEAKER_SHARE:
                speakers[labels[r]] = SpeakerFace(int(f), float(share[r, f]), int(heard[r]))
    return TalkIdentity(tuple(faces), tuple(distances), speakers, len(groups))
