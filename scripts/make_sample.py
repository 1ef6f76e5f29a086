"""Build the demo's sample talk: real synthesised speech over a real face, as an ordinary MP4.

``make demo`` needs a talk-style video on a machine that has downloaded nothing. This script makes
one locally:

- the sound is eleven distinct paragraphs of a short talk (a hook, a story, claims with numbers, a
  question from the floor and its answer, a close), spoken by espeak-ng, each paragraph at its own
  speed and pitch so the prosody is not one flat line; an audience member asks in another voice;
- the picture is scikit-image's ``astronaut()`` photograph (a real face) on a stage-coloured
  background beside a title, with slow Ken-Burns zooms and pans toward the face, rendered with
  sub-pixel warps so the motion is smooth (a real video for the framing stage, not a still);
- ffmpeg encodes it like a common export: H.264 (libx264, 2 s GOP), AAC 48 kHz, faststart.

Idempotent: the recipe (this file and the arguments) is hashed into ``<out>.json``; a second run
with the same recipe does nothing. The transcript is written to ``<out>.txt`` beside the video.

Usage: ``python scripts/make_sample.py build/demo/sample.mp4 [--height 720|1080] [--fps 30]``
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import shutil
import subprocess
import sys
import tempfile
import time
import wave
from pathlib import Path

import cv2
import numpy as np

# (voice, words per minute, pitch, text). One presenter (en-us) and one audience member (en-gb).
PARAGRAPHS: tuple[tuple[str, int, int, str], ...] = (
    ("en-us", 165, 48,
     "Good evening. Here is a question that sounds simple. How does a crowd of ten thousand animals, "
     "with no leader and no meetings, choose a new home in about two days, and get it right most of "
     "the time? Tonight I want to convince you that honeybees have solved a problem that most "
     "committees never do."),
    ("en-us", 158, 42,
     "My first swarm landed on a bicycle outside my kitchen window, on a hot morning in June. It "
     "looked like a dripping brown beard, and it hummed. My neighbour wanted to call the fire "
     "brigade. I wanted to know what they were waiting for. It turns out they were waiting for a "
     "decision."),
    ("en-us", 170, 50,
     "While the swarm hangs in its cluster, a few hundred scouts fly out to search. A scout that finds "
     "a promising hollow comes back and dances. The angle of the waggle dance points the direction, "
     "and the length of each run gives the distance. A longer run means a farther site."),
    ("en-us", 172, 55,
     "Now here is the clever part. A scout dances harder for a better site. A forty litre cavity with "
     "a small entrance, high off the ground, might earn a hundred waggle runs. A damp, draughty hole "
     "might earn ten. And every scout dances a little less each time she returns, so no opinion lasts "
     "forever."),
    ("en-us", 162, 46,
     "So how do they know when to stop arguing? They never count votes. Instead, the scouts at each "
     "site notice how crowded it is. When twenty or thirty bees are there at the same time, they "
     "switch from dancing to piping, a sound that tells the whole swarm to warm up for the flight."),
    ("en-us", 168, 44,
     "I think there are three lessons here for people. First, search widely before you commit. "
     "Second, let support depend on quality, not on who is loudest. Third, build in decay, so that "
     "old enthusiasm fades and the group can still change its mind."),
    ("en-us", 175, 52,
     "Does it always work? No. In one experiment with five nest boxes, one good and four mediocre, "
     "swarms picked the best box in four trials out of five. That is not perfect. But compare it with "
     "the last time your team picked a restaurant, or a database."),
    ("en-us", 166, 49,
     "One more number, because it surprised me. A swarm usually weighs about a dozen candidate sites, "
     "some of them several kilometres away, yet the whole debate takes less than two days. No single "
     "bee ever sees more than one or two of those sites. Only the group sees all of them."),
    ("en-gb", 160, 62,
     "Sorry, a question from the back. If bees are so good at this, why are human groups so bad at "
     "it? Is it just that we talk too much?"),
    ("en-us", 164, 47,
     "Great question, and no, I do not think talking is the problem. We anchor on the first idea, and "
     "we copy whoever sounds most confident. Bees avoid both. A scout must visit a site herself before "
     "she can dance for it. Imagine if every meeting worked that way."),
    ("en-us", 155, 40,
     "So here is my challenge for next week. Before your next big decision, send out more scouts, ask "
     "each of them to see the options in person, and agree in advance what a quorum means. And if a "
     "swarm ever lands on your bicycle, do not call the fire brigade. Just watch. Thank you."),
)
TITLE = ("What honeybees know", "about deciding")
SUBTITLE = "An evening talk"
PAUSES = (0.9, 0.6, 1.1, 0.7, 1.2, 0.8, 1.0, 1.4, 0.5, 1.0)  # silence after paragraph i (s)
LEAD_IN, TAIL = 0.8, 1.2
TTS_RATE = 22_050  # espeak-ng writes 22.05 kHz mono
FACE_CENTRE = (0.45, 0.24)  # the astronaut's face, as a share of the photograph's width/height


def _need(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        sys.exit(f"make_sample: {tool} not found on PATH; run scripts/bootstrap.sh (it installs it)"
                 f" or `sudo apt-get install {tool}`")
    return path


def _run(cmd: list[str]) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        tail = "\n".join(proc.stderr.strip().splitlines()[-10:])
        sys.exit(f"make_sample: {Path(cmd[0]).name} failed (exit {proc.returncode}):\n{tail}")


def speak(work: Path) -> np.ndarray:
    """All paragraphs as one 22.05 kHz float32 track, with pauses and a faint room tone."""
    espeak = _need("espeak-ng")
    rng = np.random.default_rng(7)
    pieces: list[np.ndarray] = [np.zeros(int(LEAD_IN * TTS_RATE), np.float32)]
    for i, (voice, wpm, pitch, text) in enumerate(PARAGRAPHS):
        wav = work / f"p{i:02d}.wav"
        _run([espeak, "-v", voice, "-s", str(wpm), "-p", str(pitch), "-w", str(wav), text])
        with wave.open(str(wav)) as w:
            if w.getframerate() != TTS_RATE or w.getnchannels() != 1 or w.getsampwidth() != 2:
                sys.exit(f"make_sample: unexpected espeak-ng output format in {wav}")
            pcm = np.frombuffer(w.readframes(w.getnframes()), np.int16).astype(np.float32) / 32768
        pieces.append(pcm)
        pause = PAUSES[i] if i < len(PAUSES) else TAIL
        pieces.append(np.zeros(int(pause * TTS_RATE), np.float32))
    audio: np.ndarray = np.concatenate(pieces)
    audio += rng.normal(0, 10 ** (-60 / 20), audio.shape).astype(np.float32)  # -60 dBFS room tone
    clipped: np.ndarray = np.clip(audio * 0.9, -1, 1)
    return clipped


def write_wav(path: Path, audio: np.ndarray) -> None:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(TTS_RATE)
        w.writeframes((audio * 32767).astype(np.int16).tobytes())


def stage(width: int, height: int) -> tuple[np.ndarray, tuple[float, float]]:
    """The still scene (RGB): gradient backdrop, title on the left, the astronaut on the right.

    Returns the image and the face centre in its pixels (what the camera drifts toward).
    """
    from skimage import data  # dev dependency; imported here so --help works without it

    y = np.linspace(0, 1, height, dtype=np.float32)[:, None, None]
    top, bottom = np.array([18, 28, 48], np.float32), np.array([6, 10, 20], np.float32)
    scene = np.broadcast_to(top * (1 - y) + bottom * y, (height, width, 3)).astype(np.uint8).copy()
    face = data.astronaut()  # 512x512 RGB, a real photograph (NASA, public domain)
    side = int(height * 0.92)
    face = cv2.resize(face, (side, side), interpolation=cv2.INTER_CUBIC)
    x0, y0 = width - side - int(width * 0.04), (height - side) // 2
    scene[y0:y0 + side, x0:x0 + side] = face
    scale = height / 720
    font = cv2.FONT_HERSHEY_DUPLEX
    for i, line in enumerate(TITLE):
        org = (int(48 * scale), int((250 + 70 * i) * scale))
        cv2.putText(scene, line, org, font, 1.2 * scale, (240, 240, 235), max(1, round(2 * scale)),
                    cv2.LINE_AA)
    cv2.putText(scene, SUBTITLE, (int(50 * scale), int(420 * scale)), font, 0.9 * scale, (170, 190, 215),
                max(1, round(scale)), cv2.LINE_AA)
    centre = (x0 + FACE_CENTRE[0] * side, y0 + FACE_CENTRE[1] * side)
    return scene, centre


def camera(t: float, width: int, height: int, face: tuple[float, float]) -> np.ndarray:
    """2x3 affine of a slow Ken-Burns move at time t: zoom 1.0-1.35, drifting toward the face.

    Two incommensurate periods, so the move never visibly repeats within a few minutes.
    """
    zoom_share = 0.5 - 0.5 * math.cos(2 * math.pi * t / 37.0)
    zoom = 1.0 + 0.35 * zoom_share
    drift = 0.15 * math.sin(2 * math.pi * t / 23.0)
    cx = width / 2 + (face[0] - width / 2) * (zoom_share * 0.8 + drift)
    cy = height / 2 + (face[1] - height / 2) * zoom_share * 0.6
    # Keep the view inside the scene: half the visible size from every edge.
    half_w, half_h = width / (2 * zoom), height / (2 * zoom)
    cx = min(max(cx, half_w), width - half_w)
    cy = min(max(cy, half_h), height - half_h)
    return np.array([[zoom, 0, width / 2 - zoom * cx], [0, zoom, height / 2 - zoom * cy]], np.float64)


def encode(out: Path, audio_wav: Path, seconds: float, width: int, height: int, fps: int) -> None:
    """Render every frame and pipe it raw into ffmpeg, which muxes it with the speech."""
    ffmpeg = _need("ffmpeg")
    scene, face = stage(width, height)
    frames = math.ceil(seconds * fps)
    cmd = [
        ffmpeg, "-hide_banner", "-loglevel", "error", "-y",
        "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{width}x{height}", "-r", str(fps), "-i", "pipe:0",
        "-i", str(audio_wav),
        "-map", "0:v", "-map", "1:a",
        "-c:v", "libx264", "-preset", "veryfast", "-crf", "21", "-pix_fmt", "yuv420p", "-g", str(2 * fps),
        "-c:a", "aac", "-b:a", "128k", "-ar", "48000",
        "-t", f"{seconds:.3f}", "-movflags", "+faststart", str(out),
    ]
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdin is not None
    try:
        for n in range(frames):
            m = camera(n / fps, width, height, face)
            frame = cv2.warpAffine(scene, m, (width, height), flags=cv2.INTER_LINEAR,
                                   borderMode=cv2.BORDER_REFLECT)
            proc.stdin.write(frame.tobytes())
        proc.stdin.close()
    except BrokenPipeError:
        pass  # ffmpeg died; its stderr below says why
    err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
    if proc.wait() != 0:
        sys.exit(f"make_sample: ffmpeg failed (exit {proc.returncode}):\n{err.strip()[-2000:]}")


def recipe_hash(args: argparse.Namespace) -> str:
    h = hashlib.sha256(Path(__file__).read_bytes())
    h.update(f"{args.height}x{args.fps}".encode())
    return h.hexdigest()[:16]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Build the demo's sample talk (speech over a face, about 3 min).")
    p.add_argument("output", type=Path, help="the .mp4 to write (parent folders are created)")
    p.add_argument("--height", type=int, choices=(720, 1080), default=720, help="frame height (16:9)")
    p.add_argument("--fps", type=int, default=30, help="frame rate")
    p.add_argument("--force", action="store_true", help="rebuild even when the recipe is unchanged")
    args = p.parse_args(argv)
    out: Path = args.output
    meta_path, text_path = out.with_suffix(".json"), out.with_suffix(".txt")
    digest = recipe_hash(args)
    if not args.force and out.is_file() and meta_path.is_file():
        try:
            if json.loads(meta_path.read_text()).get("recipe") == digest:
                print(f"make_sample: {out} is up to date")
                return 0
        except json.JSONDecodeError:
            pass  # a damaged record: rebuild
    width, height = args.height * 16 // 9, args.height
    out.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="montage-sample-") as tmp:
        work = Path(tmp)
        audio = speak(work)
        seconds = len(audio) / TTS_RATE
        write_wav(work / "speech.wav", audio)
        partial = out.with_name(f".{out.name}.part.mp4")
        encode(partial, work / "speech.wav", seconds, width, height, args.fps)
        partial.replace(out)  # appears only when complete
    text_path.write_text("\n\n".join(p[3] for p in PARAGRAPHS) + "\n")
    meta = {
        "recipe": digest, "seconds": round(seconds, 2), "width": width, "height": height, "fps": args.fps,
        "paragraphs": len(PARAGRAPHS), "words": sum(len(p[3].split()) for p in PARAGRAPHS),
        "picture": "skimage.data.astronaut() with Ken-Burns motion", "speech": "espeak-ng",
    }
    meta_path.write_text(json.dumps(meta, indent=2) + "\n")
    print(f"make_sample: wrote {out} ({seconds:.0f} s, {width}x{height}@{args.fps}, "
          f"{len(PARAGRAPHS)} paragraphs) in {time.monotonic() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
