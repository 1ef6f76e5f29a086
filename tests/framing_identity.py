"""A composed talk for whole-talk identity: the same people in clips far apart, looking different.

Built from real recordings (tests/framing_truth.py's tiles and their own sound), 42 s at
1920x1080, three parts, each a clip of the talk:

- 0-16 s: a dialogue, video-retalking face1 on the left (speaker S1) and face2 on the right (S2),
  taking turns as in framing_truth.DIALOGUE (the listener a swaying still of themselves).
- 16-26 s: SadTalker's presenter alone in the middle (S3), another background.
- 26-42 s: the same dialogue again with the two *swapped* (face2 left, face1 right), under a warm
  white balance (red up, blue down, as a second camera would): their colour histograms no longer
  match the first part, their faces still do.

Truth: face1 is one person in parts 1 and 3, face2 another, the presenter a third; S1 is face1,
S2 face2, S3 the presenter, everywhere.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from framing_truth import DIALOGUE, FPS, TILE, H, Source, W, _background, _paste, _Writer, pose

from montaged.model import SpeakerTurn

VERSION = 1
PARTS = ((0.0, 16.0), (16.0, 26.0), (26.0, 42.0))
"""The clips: media seconds [start, end)."""
LABEL = {"A": "S1", "B": "S2"}


@dataclass(frozen=True)
class IdentityTalk:
    video: Path
    turns: tuple[SpeakerTurn, ...]
    left: tuple[str, str, str]
    """Who sits left (or alone) in each part: face1, face2 or katie."""


def _warm(tile: np.ndarray) -> np.ndarray:
    out = tile.astype(np.float32) * np.array([0.78, 0.97, 1.18], np.float32)  # BGR
    return np.clip(out, 0, 255).astype(np.uint8)


def _dialogue(
    wr: _Writer, sound: list[np.ndarray], src: dict[str, Source], pos: dict[str, tuple[int, int]],
    bg: np.ndarray, warm: bool,
) -> None:  # fmt: skip
    seconds = 16.0
    clock = {"A": 0.0, "B": 0.0}
    held = {k: s.frame(0) for k, s in src.items()}
    part = np.zeros(int(seconds * 48_000), np.float32)
    for u in DIALOGUE:
        i0 = int(u.start * 48_000)
        start = sum(v.end - v.start for v in DIALOGUE if v.speaker == u.speaker and v.end <= u.start)
        chunk = src[u.speaker].sound(start, start + u.end - u.start)
        part[i0 : i0 + len(chunk)] = chunk[: len(part) - i0]
    sound.append(part)
    for i in range(round(seconds * FPS)):
        t = i / FPS
        talking = next((u.speaker for u in DIALOGUE if u.start <= t < u.end), None)
        canvas = bg.copy()
        for k in ("A", "B"):
            tile, dx, dy = pose(src[k], k == talking, k, t, clock, held, 0.0 if k == "A" else 1.7)
            _paste(canvas, _warm(tile) if warm else tile, pos[k][0] + dx, pos[k][1] + dy)
        wr.add(canvas)


def build(media_dir: Path, out_dir: Path) -> IdentityTalk:
    """Build (or load from ``out_dir``) the composed talk."""
    out_dir.mkdir(parents=True, exist_ok=True)
    index = out_dir / f"identity-v{VERSION}.json"
    video = out_dir / "identity_talk.mp4"
    turns = []
    for offset in (PARTS[0][0], PARTS[2][0]):
        turns += [SpeakerTurn(u.start + offset, u.end + offset, LABEL[u.speaker]) for u in DIALOGUE]
    turns.append(SpeakerTurn(PARTS[1][0], PARTS[1][1], "S3"))
    turns.sort(key=lambda s: s.start)
    talk = IdentityTalk(video, tuple(turns), ("face1", "katie", "face2"))
    if index.exists() and video.exists():
        return talk
    v = media_dir / "video"
    face1, face2 = Source(v / "videoretalking_face1.mp4"), Source(v / "videoretalking_face2.mp4")
    katie = Source(v / "sadtalker_WDA_KatieHill_000.mp4")
    map_bg = _background(face2.frames[0], (0.74, 0.0, 1.0, 0.26))
    flag_bg = _background(face1.frames[0], (0.0, 0.0, 0.3, 0.3))
    left, right = (150, 330), (W - 150 - TILE, 310)
    wr, sound = _Writer(video), []
    _dialogue(wr, sound, {"A": face1, "B": face2}, {"A": left, "B": right}, map_bg, warm=False)
    seconds = PARTS[1][1] - PARTS[1][0]
    for i in range(round(seconds * FPS)):
        canvas = flag_bg.copy()
        _paste(canvas, katie.frame(i / FPS), (W - TILE) // 2, (H - TILE) // 2)
        wr.add(canvas)
    sound.append(katie.sound(0, seconds))
    _dialogue(wr, sound, {"A": face1, "B": face2}, {"A": right, "B": left}, map_bg, warm=True)
    wr.close(np.concatenate(sound))
    index.write_text(json.dumps({"video": str(video), "version": VERSION}))
    return talk
