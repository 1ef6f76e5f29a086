"""Framing test set with known truth, built from real faces (tests and bench/vision.py use it).

Real talking-head recordings from ../shared/media/video are placed as tiles on a 1920x1080 canvas
along known paths, with their own recorded sound, so mouths move exactly when speech is heard:

- ``moving``: one speaker (SadTalker's reference video, looped) swept left and right across the
  canvas (up to 350 px/s) with a vertical drift.
- ``dialogue``: two people far apart (video-retalking face1 left, face2 right) taking turns, with
  0.3-0.4 s gaps and one 0.6 s interjection. Whoever is not talking is shown as a still frame of
  themselves swaying a few pixels (no recording of these people listening exists; a still mouth
  on a moving head is what a listener looks like to a mouth-motion detector).
- ``cut``: a scene cut from one shot (face3 on the left, one background) to another (face2 on
  the right, another background).

Truth face box: each source clip's faces are found once at full resolution on the clean source
(libfacedetection, every frame) and the *union* of those boxes is the clip's face box, mapped
through the tile's placement. The union is larger than any single frame's face, so "face fully
inside the crop" is judged conservatively. The system under test sees something else: the
composited canvas after H.264 encoding, downscaled and sampled.

Truth speaker: the speaker of the sustained turn. A turn shorter than the framing hold time
(``speaker_min_hold_seconds``, 1.5 s) is an interjection the crop should *not* follow; its frames
count for the surrounding speaker. During silent gaps either visible face is acceptable.
Backgrounds are blurred, enlarged corners of the same recordings (a map, flags): real texture,
no face.
"""

from __future__ import annotations

import json
import subprocess
import wave
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import av
import cv2
import numpy as np

FPS = 25
W, H = 1920, 1080
TILE = 440
AUDIO_RATE = 48_000
TRUTH_EVERY = 3
"""Faces are found on every third source frame (heads move a few pixels between them)."""
VERSION = 5
"""Bump when the scenes change so a persistent cache is rebuilt."""

Box = tuple[float, float, float, float]


@dataclass(frozen=True)
class Turn:
    start: float
    end: float
    speaker: str


@dataclass(frozen=True)
class FrameTruth:
    t: float
    ok: tuple[Box, ...]
    """Boxes of which one must be fully inside the crop (empty: this frame does not count)."""
    talking: Box | None
    """Face of whoever is audibly talking right now (interjections included), for information."""


@dataclass(frozen=True)
class Scenario:
    name: str
    video: Path
    duration: float
    fps: int
    turns: tuple[Turn, ...]
    cuts: tuple[float, ...]
    """Times of the first frame of each new shot."""
    frames: tuple[FrameTruth, ...]

    def changes(self) -> list[tuple[float, float]]:
        """Windows ``(first, last)`` in which a cut of the crop is intended: each scene cut, and
        each change of sustained speaker (anywhere in the silent gap between the two turns)."""
        out = [(c, c) for c in self.cuts]
        prev: tuple[float, Box] | None = None
        for f in self.frames:
            if len(f.ok) != 1:
                continue
            moved = prev is not None and abs(f.ok[0][0] - prev[1][0]) > 300
            if prev is not None and moved and all(not (a - 0.1 <= f.t <= b + 0.1) for a, b in out):
                out.append((prev[0], f.t))
            prev = (f.t, f.ok[0])
        return sorted(out)


class Source:
    """A talking-head recording: frames at tile size, its sound, and its truth face box."""

    def __init__(self, path: Path) -> None:
        with av.open(str(path)) as c:
            vs = c.streams.video[0]
            self.fps = float(vs.average_rate or 25)
            frames, boxes = [], []
            from yuface import c_detect

            for i, f in enumerate(c.decode(vs)):
                img = f.to_ndarray(format="bgr24")
                tile = cv2.resize(img, (TILE, TILE), interpolation=cv2.INTER_AREA)
                frames.append(tile)
                if i % TRUTH_EVERY == 0:
                    # The tile itself (440 px) is what gets composited, so its face is the truth.
                    rows = c_detect(np.ascontiguousarray(tile))
                    rows = rows[rows[:, 0] >= 60]
                    if len(rows):
                        boxes.append(rows[np.argmax(rows[:, 0])][1:5].astype(float))
        looked = (len(frames) + TRUTH_EVERY - 1) // TRUTH_EVERY
        if len(boxes) < 0.6 * looked:
            raise RuntimeError(f"{path}: a face in only {len(boxes)}/{looked} frames; not a talking head")
        b = np.array(boxes)
        x0, y0 = float(b[:, 0].min()), float(b[:, 1].min())
        self.face = (x0, y0, float((b[:, 0] + b[:, 2]).max()) - x0, float((b[:, 1] + b[:, 3]).max()) - y0)
        self.frames = frames
        self.audio = _decode_audio(path)

    @property
    def seconds(self) -> float:
        return len(self.frames) / self.fps

    def frame(self, t: float) -> np.ndarray:
        return self.frames[int(t * self.fps) % len(self.frames)]

    def sound(self, t0: float, t1: float) -> np.ndarray:
        n = len(self.audio)
        idx = (np.arange(int(t0 * AUDIO_RATE), int(t1 * AUDIO_RATE)) % n) if n else np.zeros(0, int)
        return self.audio[idx]


def _decode_audio(path: Path) -> np.ndarray:
    with av.open(str(path)) as c:
        rs = av.AudioResampler(format="flt", layout="mono", rate=AUDIO_RATE)
        parts = [o.to_ndarray().reshape(-1) for f in c.decode(audio=0) for o in rs.resample(f)]
    return np.concatenate(parts).astype(np.float32) if parts else np.zeros(0, np.float32)


def _background(img: np.ndarray, corner: tuple[float, float, float, float]) -> np.ndarray:
    h, w = img.shape[:2]
    x0, y0, x1, y1 = (int(corner[0] * w), int(corner[1] * h), int(corner[2] * w), int(corner[3] * h))
    bg = cv2.resize(img[y0:y1, x0:x1], (W, H), interpolation=cv2.INTER_CUBIC)
    return cv2.GaussianBlur(bg, (0, 0), 3)


def _sway(t: float, phase: float) -> tuple[int, int]:
    return round(6 * np.sin(2 * np.pi * t / 3.1 + phase)), round(4 * np.sin(2 * np.pi * t / 2.3 + phase))


def _paste(canvas: np.ndarray, tile: np.ndarray, x: int, y: int) -> None:
    canvas[y : y + TILE, x : x + TILE] = tile


def pose(
    src: Source, talking: bool, key: str, t: float, clock: dict[str, float], held: dict[str, np.ndarray],
    phase: float,
) -> tuple[np.ndarray, int, int]:  # fmt: skip
    """One person's tile and offset at ``t``: their recording plays on while they talk (``clock``
    counts how far); otherwise the last frame shown (``held``) sways a few pixels."""
    if talking:
        tile = src.frame(clock[key])
        clock[key] += 1 / FPS
        held[key] = tile
        return tile, 0, 0
    dx, dy = _sway(t, phase)
    return held[key], dx, dy


def _face_box(src: Source, x: float, y: float) -> Box:
    fx, fy, fw, fh = src.face
    return (x + fx, y + fy, fw, fh)


class _Writer:
    """Video through PyAV (libx264 superfast: B-frames, like real exports), sound muxed by ffmpeg."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.tmp = path.with_suffix(".video.mp4")
        self.c = av.open(str(self.tmp), "w")
        self.s = self.c.add_stream("libx264", rate=FPS)
        self.s.width, self.s.height, self.s.pix_fmt = W, H, "yuv420p"
        self.s.options = {"preset": "superfast", "crf": "23", "g": str(2 * FPS)}

    def add(self, bgr: np.ndarray) -> None:
        for p in self.s.encode(av.VideoFrame.from_ndarray(bgr, format="bgr24")):
            self.c.mux(p)

    def close(self, sound: np.ndarray) -> None:
        for p in self.s.encode():
            self.c.mux(p)
        self.c.close()
        wav = self.path.with_suffix(".wav")
        with wave.open(str(wav), "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(AUDIO_RATE)
            w.writeframes((np.clip(sound, -1, 1) * 32767).astype("<i2").tobytes())
        cmd = ["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", "-i", str(self.tmp), "-i", str(wav),
               "-c:v", "copy", "-c:a", "aac", "-b:a", "96k", "-shortest", str(self.path)]  # fmt: skip
        subprocess.run(cmd, check=True)
        self.tmp.unlink()
        wav.unlink()


def _times(seconds: float) -> Iterator[float]:
    for i in range(round(seconds * FPS)):
        yield i / FPS


def build_moving(out: Path, src: Source, bg: np.ndarray) -> Scenario:
    seconds = 12.0
    wr, frames = _Writer(out), []
    for t in _times(seconds):
        cx = W / 2 + 560 * np.sin(2 * np.pi * t / 10)
        cy = H / 2 + 60 * np.sin(2 * np.pi * t / 6)
        x, y = round(cx - TILE / 2), round(cy - TILE / 2)
        canvas = bg.copy()
        _paste(canvas, src.frame(t), x, y)
        wr.add(canvas)
        face = _face_box(src, x, y)
        frames.append(FrameTruth(t, (face,), face))
    wr.close(src.sound(0, seconds))
    return Scenario("moving", out, seconds, FPS, (Turn(0, seconds, "A"),), (), tuple(frames))


DIALOGUE = (
    Turn(0.0, 4.0, "A"),
    Turn(4.4, 7.6, "B"),
    Turn(7.9, 8.5, "A"),
    Turn(8.8, 11.6, "B"),
    Turn(12.0, 16.0, "A"),
)
INTERJECTION = 1.5
"""Turns shorter than this are interjections (frame.speaker_min_hold_seconds)."""


def build_dialogue(out: Path, a: Source, b: Source, bg: np.ndarray) -> Scenario:
    seconds = 16.0
    pos = {"A": (150, 330), "B": (W - 150 - TILE, 310)}
    src = {"A": a, "B": b}
    clock = {"A": 0.0, "B": 0.0}  # how far each person's recording has played
    held = {k: s.frame(0) for k, s in src.items()}
    sustained = [u for u in DIALOGUE if u.end - u.start >= INTERJECTION]
    sound = np.zeros(int(seconds * AUDIO_RATE), np.float32)
    for u in DIALOGUE:
        i0 = int(u.start * AUDIO_RATE)
        start = sum(v.end - v.start for v in DIALOGUE if v.speaker == u.speaker and v.end <= u.start)
        chunk = src[u.speaker].sound(start, start + u.end - u.start)
        sound[i0 : i0 + len(chunk)] = chunk[: len(sound) - i0]
    wr, frames = _Writer(out), []
    for t in _times(seconds):
        talking = next((u.speaker for u in DIALOGUE if u.start <= t < u.end), None)
        canvas = bg.copy()
        boxes = {}
        for k in ("A", "B"):
            x, y = pos[k]
            tile, dx, dy = pose(src[k], k == talking, k, t, clock, held, 0.0 if k == "A" else 1.7)
            _paste(canvas, tile, x + dx, y + dy)
            boxes[k] = _face_box(src[k], x + dx, y + dy)
        wr.add(canvas)
        floor = next((u.speaker for u in sustained if u.start <= t < u.end), None)
        if floor is None and talking is not None:
            # An interjection: the floor stays with the previous sustained speaker.
            floor = max((u for u in sustained if u.end <= t), key=lambda u: u.end).speaker
        ok = (boxes[floor],) if floor else (boxes["A"], boxes["B"])
        frames.append(FrameTruth(t, ok, boxes[talking] if talking else None))
    wr.close(sound)
    return Scenario("dialogue", out, seconds, FPS, DIALOGUE, (), tuple(frames))


def build_cut(out: Path, a: Source, b: Source, bg1: np.ndarray, bg2: np.ndarray) -> Scenario:
    seconds, cut = 10.4, 5.2
    pa, pb = (260, 320), (1240, 300)
    wr, frames = _Writer(out), []
    for t in _times(seconds):
        first = t < cut - 1e-9
        canvas = (bg1 if first else bg2).copy()
        src, (x, y) = (a, pa) if first else (b, pb)
        _paste(canvas, src.frame(t if first else t - cut), x, y)
        wr.add(canvas)
        face = _face_box(src, x, y)
        frames.append(FrameTruth(t, (face,), face))
    wr.close(np.concatenate([a.sound(0, cut), b.sound(0, seconds - cut)]))
    turns = (Turn(0.0, cut, "A"), Turn(cut, seconds, "B"))
    return Scenario("cut", out, seconds, FPS, turns, (cut,), tuple(frames))


def build_all(media_dir: Path, out_dir: Path) -> dict[str, Scenario]:
    """Build (or load from ``out_dir``) the three scenarios."""
    out_dir.mkdir(parents=True, exist_ok=True)
    index = out_dir / f"truth-v{VERSION}.json"
    if index.exists():
        return load(index)
    video = media_dir / "video"
    face1 = Source(video / "videoretalking_face1.mp4")
    face2 = Source(video / "videoretalking_face2.mp4")
    face3 = Source(video / "videoretalking_face3.mp4")
    katie = Source(video / "sadtalker_WDA_KatieHill_000.mp4")
    map_bg = _background(face2.frames[0], (0.74, 0.0, 1.0, 0.26))
    flag_bg = _background(face3.frames[0], (0.0, 0.0, 0.3, 0.3))
    scenarios = {
        "moving": build_moving(out_dir / "moving.mp4", katie, map_bg),
        "dialogue": build_dialogue(out_dir / "dialogue.mp4", face1, face2, map_bg),
        "cut": build_cut(out_dir / "cut.mp4", face3, face2, flag_bg, map_bg),
    }
    index.write_text(json.dumps({k: asdict(v) | {"video": str(v.video)} for k, v in scenarios.items()}))
    return scenarios


def _box(b: list[float]) -> Box:
    return (float(b[0]), float(b[1]), float(b[2]), float(b[3]))


def load(index: Path) -> dict[str, Scenario]:
    data = json.loads(index.read_text())
    out = {}
    for k, v in data.items():
        frames = tuple(
            FrameTruth(f["t"], tuple(_box(b) for b in f["ok"]), _box(f["talking"]) if f["talking"] else None)
            for f in v["frames"]
        )
        turns = tuple(Turn(**u) for u in v["turns"])
        out[k] = Scenario(k, Path(v["video"]), v["duration"], v["fps"], turns, tuple(v["cuts"]), frames)
    return out
