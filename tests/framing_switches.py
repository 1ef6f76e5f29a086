"""Speaker-switch test material with known truth, composed from real recordings.

Four real talking-head recordings (video-retalking face1/2/3, SadTalker's reference video) sit
on one 1920x1080 canvas at known places, all visible all the time, and take turns with their own
recorded sound (so a mouth moves exactly while its voice is heard; whoever is not talking is a
still frame of themselves swaying a few pixels, as in framing_truth.py):

- A and B side by side: both faces fit one 9:16 crop, so their switches are *close* ones
  (two people visible at once, one speaking);
- C far right and D in the lower row: switches to and from them are *far* ones;
- D's picture jumps 510 px to the right mid-turn, with no scene cut (a hard position jump);
- two interjections (0.55 s and 0.6 s) the crop must *not* follow, pauses of 0 to 0.35 s
  between turns, one change with no pause at all.

Truth per output frame: the face of whoever holds the floor (the sustained turn; during an
interjection, the sustained speaker before it). In a pause between two sustained turns either
of the two faces counts. Boxes are the union of the source's detections (framing_truth.Source),
so "inside" is judged conservatively.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from framing_metrics import inside
from framing_truth import FPS, Box, Source, _background, _face_box, _times, _Writer, pose

VERSION = 1
"""Bump when the scene changes so a persistent cache is rebuilt."""
HOLD = 1.5
"""Turns shorter than this are interjections (frame.speaker_min_hold_seconds)."""
SECONDS = 32.5
TURNS: tuple[tuple[str, float, float], ...] = (
    ("A", 0.0, 3.0),
    ("B", 3.3, 6.0),  # close: A and B share a crop
    ("C", 6.25, 9.5),  # far
    ("A", 9.85, 10.4),  # interjection
    ("C", 10.6, 13.0),
    ("D", 13.0, 16.0),  # no pause at all
    ("B", 16.3, 19.0),
    ("A", 19.25, 22.0),  # close
    ("D", 22.3, 26.0),  # D's picture jumps at JUMP_AT
    ("C", 26.3, 28.6),
    ("B", 28.85, 29.45),  # interjection
    ("C", 29.6, 32.0),
)
PLACES = {"A": (100, 80), "B": (440, 90), "C": (1400, 80), "D": (930, 560)}
JUMP_AT, JUMPED = 24.0, (1440, 560)


@dataclass(frozen=True)
class Event:
    t: float
    """When the new face must be framed: the first word of a new sustained turn, or a jump."""
    speaker: str
    kind: str
    """``close`` (old and new face fit one crop), ``far``, or ``jump``."""
    since: float
    """Start of the pause before it (the old speaker's last word), where the crop may already
    switch without losing anyone who talks."""


@dataclass(frozen=True)
class SwitchScene:
    video: Path
    duration: float
    fps: int
    turns: tuple[tuple[str, float, float], ...]
    frames: list[dict[str, Box]]
    """Per output frame: each person's face box."""
    ok: list[list[str]]
    """Per output frame: who may be framed (the floor; both sides in a pause)."""
    events: list[Event]


def _place(who: str, t: float) -> tuple[int, int]:
    if who == "D" and t >= JUMP_AT:
        return JUMPED
    return PLACES[who]


def sustained() -> list[tuple[str, float, float]]:
    return [u for u in TURNS if u[2] - u[1] >= HOLD]


def _floor(t: float) -> list[str]:
    runs = sustained()
    for who, a, b in runs:
        if a <= t < b:
            return [who]
    before = [u for u in runs if u[2] <= t]
    after = [u for u in runs if u[1] > t]
    talking = next((u for u in TURNS if u[1] <= t < u[2]), None)
    if talking is not None and before:
        return [before[-1][0]]  # an interjection: the floor stays
    return sorted({u[0] for u in (before[-1:] + after[:1])})


def _events() -> list[Event]:
    out = []
    runs = sustained()
    for (p, _, pe), (q, qs, _) in itertools.pairwise(runs):
        if p != q:
            out.append(Event(qs, q, "close" if {p, q} == {"A", "B"} else "far", pe))
    out.append(Event(JUMP_AT, "D", "jump", JUMP_AT))
    return sorted(out, key=lambda e: e.t)


def build(media_dir: Path, out_dir: Path) -> SwitchScene:
    """Compose the scene (or load it from ``out_dir``); about a minute of CPU the first time."""
    out_dir.mkdir(parents=True, exist_ok=True)
    index = out_dir / f"switches-v{VERSION}.json"
    if index.exists():
        return load(index)
    video = media_dir / "video"
    src = {
        "A": Source(video / "videoretalking_face1.mp4"),
        "B": Source(video / "videoretalking_face2.mp4"),
        "C": Source(video / "videoretalking_face3.mp4"),
        "D": Source(video / "sadtalker_WDA_KatieHill_000.mp4"),
    }
    bg = _background(src["B"].frames[0], (0.74, 0.0, 1.0, 0.26))
    from framing_truth import AUDIO_RATE, TILE

    sound = np.zeros(int(SECONDS * AUDIO_RATE), np.float32)
    played = dict.fromkeys(src, 0.0)
    for who, a, b in TURNS:
        chunk = src[who].sound(played[who], played[who] + b - a)
        played[who] += b - a
        i0 = int(a * AUDIO_RATE)
        sound[i0 : i0 + len(chunk)] = chunk[: len(sound) - i0]
    clock = dict.fromkeys(src, 0.0)
    held = {k: s.frame(0) for k, s in src.items()}
    wr = _Writer(out_dir / "switches.mp4")
    frames, ok = [], []
    for t in _times(SECONDS):
        talking = next((u[0] for u in TURNS if u[1] <= t < u[2]), None)
        canvas = bg.copy()
        boxes = {}
        for k in ("A", "B", "C", "D"):
            x, y = _place(k, t)
            phase = {"A": 0.0, "B": 1.7, "C": 0.9, "D": 2.4}[k]
            tile, dx, dy = pose(src[k], k == talking, k, t, clock, held, phase)
            canvas[y + dy : y + dy + TILE, x + dx : x + dx + TILE] = tile
            boxes[k] = _face_box(src[k], x + dx, y + dy)
        wr.add(canvas)
        frames.append(boxes)
        ok.append(_floor(t))
    wr.close(sound)
    scene = SwitchScene(wr.path, SECONDS, FPS, TURNS, frames, ok, _events())
    index.write_text(
        json.dumps(
            {
                "video": str(scene.video),
                "frames": frames,
                "ok": ok,
                "events": [asdict(e) for e in scene.events],
            }
        )
    )
    return scene


def load(index: Path) -> SwitchScene:
    data = json.loads(index.read_text())
    frames = [{k: (b[0], b[1], b[2], b[3]) for k, b in f.items()} for f in data["frames"]]
    events = [Event(**e) for e in data["events"]]
    return SwitchScene(Path(data["video"]), SECONDS, FPS, TURNS, frames, data["ok"], events)


@dataclass(frozen=True)
class SwitchScore:
    inside: float
    """Share of frames whose floor speaker's face is fully inside the crop."""
    out_frames: list[int]
    """Per event: frames from its time until the new face is inside the crop."""
    delays: list[float]
    """Per event: seconds from its time to the first frame from which the new face stays inside
    (negative: the crop switched in the pause before the first word)."""
    early_frames: list[int]
    """Per event: frames before the pause in which the crop already left the old speaker."""

    def rows(self, events: list[Event]) -> list[str]:
        out = []
        for e, n, d, early in zip(events, self.out_frames, self.delays, self.early_frames, strict=True):
            out.append(
                f"{e.t:6.2f}s {e.kind:5s} → {e.speaker}: out {n} frames, delay {d:+.2f} s, early {early}"
            )
        return out


def score(scene: SwitchScene, boxes: np.ndarray) -> SwitchScore:
    """Score per-frame crop boxes (framing_metrics.per_frame) against the scene's truth."""
    hits = sum(
        any(inside(boxes[i], scene.frames[i][k]) for k in scene.ok[i]) for i in range(len(scene.frames))
    )
    fps = scene.fps
    outs, delays, earlies = [], [], []
    for e in scene.events:
        i0 = round(e.t * fps)
        n = 0
        while i0 + n < len(boxes) and not inside(boxes[i0 + n], scene.frames[i0 + n][e.speaker]):
            n += 1
        outs.append(n)
        # The first frame, searching back from where the face is first in, from which it stays in.
        first_in = i0 + n
        j = first_in
        lo = round(e.since * fps)
        while j - 1 >= lo and inside(boxes[j - 1], scene.frames[j - 1][e.speaker]):
            j -= 1
        delays.append((j - i0) / fps)
        # Frames before the pause in which the crop had already dropped the previous speaker.
        prev = _floor(max(e.since - 1e-3, 0.0))
        early = 0
        k = lo - 1
        while k >= 0 and k >= lo - fps and not any(inside(boxes[k], scene.frames[k][p]) for p in prev):
            early += 1
            k -= 1
        earlies.append(early if e.kind != "jump" else 0)
    return SwitchScore(hits / len(scene.frames), outs, delays, earlies)
