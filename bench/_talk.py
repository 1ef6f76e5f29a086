"""Build a long 1080p30 "talk" from real media, for the pipeline benchmark (cached).

The picture is real people on camera (../shared/media/video), cut like a multi-camera talk:
every stretch of speech gets a shot of 4-12 s of one clip, scaled to 1080p (16:9 sources fill
the frame; square talking heads stand left, centre or right on a stage-coloured background),
the clip looped as long as the shot needs. The sound is speech that never repeats:

- every real recording once: jfk, the three LibriVox readings, pyannote's two-speaker call,
  the two-speaker stereo file (mixed to mono), and the real soundtracks of the videos, which
  keep their own picture in sync (interview, restaurant, Hamilton, SadTalker, three talking
  heads, and auto-editor's voice-over with its face-less screen as a "slide");
- the rest read by espeak-ng: distinct paragraphs (bench/_talk_text.py) from three presenters
  and audience questions, each speaker its own voice, each paragraph its own speed and pitch.

Pauses of 0.3-1.2 s separate the pieces. The video is encoded like a common export (libx264
veryfast, CRF 21, 2 s GOP with B-frames, AAC 128k stereo). Shots are encoded one by one and
joined without re-encoding, so building costs about one real-time pass of 1080p encoding.
A build is cached under ``build/bench`` by its parameters; ``composition`` says what is real.
"""

from __future__ import annotations

import hashlib
import json
import random
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from _talk_text import PARAGRAPHS

ROOT = Path(__file__).resolve().parents[1]
sys.path.append(str(ROOT / "tests"))  # media.py: where the real recordings are
from media import MEDIA, for_script  # noqa: E402

CACHE = ROOT / "build" / "bench"
VERSION = 1  # bump when the recipe changes, so old cached talks are not reused
RATE = 48_000
FPS = 30
W, H = 1920, 1080
SHOT_MIN, SHOT_MAX = 4.0, 12.0
VOICES = {  # espeak-ng voice and base speed (words/min) and pitch per speaker
    "host": ("en-us", 160, 45),
    "guest": ("en-gb", 150, 55),
    "third": ("en+f3", 165, 60),
    "audience": ("en-gb-scotland", 155, 50),
}
AUDIENCE_EXTRA = ("en+m3", "en-us+f2", "en-gb-x-rp", "en-029")  # each question another person
STAGE_COLOURS = ("0x1f2a38", "0x2d2a26", "0x243524", "0x30233a", "0x202020")
AUDIO_ONLY = (  # real recordings without picture: (relative path, label)
    ("audio/jfk.flac", "jfk"),
    ("audio/librivox/sense_and_sensibility_01_austen_64kb-0870.wav", "librivox-0870"),
    ("audio/librivox/sense_and_sensibility_01_austen_64kb-0880.wav", "librivox-0880"),
    ("audio/librivox/sense_and_sensibility_01_austen_64kb-0890.wav", "librivox-0890"),
    ("audio/pyannote_sample.wav", "pyannote_sample"),
    ("audio/stereo_diarization.wav", "stereo_diarization"),
)
WITH_PICTURE = (  # real videos whose own speech is used, in sync with their picture
    "video/visualvoice_interview_2spk.mp4",
    "video/visualvoice_noisy_restaurant.mp4",
    "video/face_recognition_short_hamilton_clip.mp4",
    "video/sadtalker_WDA_KatieHill_000.mp4",
    "video/videoretalking_face1.mp4",
    "video/videoretalking_face2.mp4",
    "video/videoretalking_face3.mp4",
    "video/autoeditor_example_voice_noface.mp4",
)
FACES = WITH_PICTURE[:7]  # picture for speech that has none of its own


@dataclass(frozen=True)
class Shot:
    video: str  # path relative to MEDIA
    frames: int
    start: float  # seconds into the (looped) clip
    place: str  # fill | left | centre | right
    colour: str


@dataclass
class Piece:
    label: str
    real: bool
    seconds: float
    shots: list[Shot]


def _run(argv: list[str]) -> None:
    subprocess.run(argv, check=True, stdin=subprocess.DEVNULL)


def _ffmpeg(*args: str) -> list[str]:
    return ["ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin", "-y", *args]


def _pcm(path: Path) -> np.ndarray:
    """Any audio as 48 kHz mono float32 (a stereo pair with one speaker per side is mixed)."""
    out = subprocess.run(
        _ffmpeg("-i", str(path), "-vn", "-ac", "1", "-ar", str(RATE), "-f", "f32le", "-"),
        check=True, capture_output=True,
    ).stdout
    return np.frombuffer(out, np.float32).copy()


def _level(x: np.ndarray, target_db: float = -20.0) -> np.ndarray:
    """Bring speech to one loudness (RMS of the louder half of 50 ms frames), as a mix engineer would."""
    n = len(x) // 2400 * 2400
    if n == 0:
        return x
    rms = np.sqrt((x[:n].reshape(-1, 2400) ** 2).mean(axis=1))
    loud = np.sort(rms)[len(rms) // 2 :].mean()
    gain = 10 ** (target_db / 20) / max(float(loud), 1e-6)
    return np.clip(x * gain, -0.99, 0.99).astype(np.float32)


def _video_seconds(path: Path) -> float:
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-show_entries", "format=duration", "-of", "csv=p=0", str(path)],
        check=True, capture_output=True, text=True,
    ).stdout
    return float(out.strip())


def _espeak(text: str, voice: str, speed: int, pitch: int, wav: Path) -> np.ndarray:
    _run(["espeak-ng", "-v", voice, "-s", str(speed), "-p", str(pitch), "-w", str(wav), text])
    return _pcm(wav)


def _speech(work: Path, rng: random.Random) -> tuple[list[tuple[str, bool, np.ndarray, str | None]], int]:
    """Real pieces (each once) and synthetic paragraphs (each once), in talk order."""
    real: list[tuple[str, bool, np.ndarray, str | None]] = []
    for rel, label in AUDIO_ONLY:
        real.append((label, True, _pcm(MEDIA / rel), None))
    for rel in WITH_PICTURE:
        real.append((Path(rel).stem, True, _pcm(MEDIA / rel), rel))
    rng.shuffle(real)
    synth: list[tuple[str, bool, np.ndarray, str | None]] = []
    asked = 0
    for i, (speaker, text) in enumerate(PARAGRAPHS):
        voice, speed, pitch = VOICES[speaker]
        if speaker == "audience":
            voice = (voice, *AUDIENCE_EXTRA)[asked % (len(AUDIENCE_EXTRA) + 1)]
            asked += 1
        speed = round(speed * rng.uniform(0.92, 1.08))
        pitch = max(0, min(99, pitch + rng.randint(-8, 8)))
        x = _espeak(text, voice, speed, pitch, work / f"tts-{i:02d}.wav")
        synth.append((f"tts-{i:02d}-{speaker}-{voice}", False, x, None))
    # Real pieces land between paragraphs, spread over the talk (never two in a row at the start).
    order: list[tuple[str, bool, np.ndarray, str | None]] = []
    gap = max(1, len(synth) // (len(real) + 1))
    ri = iter(real)
    for i, piece in enumerate(synth):
        order.append(piece)
        if i % gap == gap - 1 and (nxt := next(ri, None)) is not None:
            order.append(nxt)
    order.extend(ri)
    return order, len(synth)


def _shots(frames: int, own: str | None, rng: random.Random, last: list[str]) -> list[Shot]:
    """Shots covering ``frames``: the piece's own picture, else cuts between real faces."""
    if own is not None:
        place = "fill" if _wide(own) else rng.choice(("left", "centre", "right"))
        return [Shot(own, frames, 0.0, place, rng.choice(STAGE_COLOURS))]
    out: list[Shot] = []
    left = frames
    while left > 0:
        n = min(left, round(rng.uniform(SHOT_MIN, SHOT_MAX) * FPS))
        if 0 < left - n < SHOT_MIN * FPS:
            n = left  # no sliver of a shot at the end
        choices = [f for f in FACES if f not in last[-2:]]
        video = rng.choice(choices)
        last.append(video)
        place = "fill" if _wide(video) else rng.choice(("left", "centre", "right"))
        out.append(Shot(video, n, round(rng.uniform(0, 4), 2), place, rng.choice(STAGE_COLOURS)))
        left -= n
    return out


_SIZES = {
    "video/visualvoice_interview_2spk.mp4": "1280x720",
    "video/visualvoice_noisy_restaurant.mp4": "1280x720",
    "video/autoeditor_example_voice_noface.mp4": "1280x720",
    "video/face_recognition_short_hamilton_clip.mp4": "640x360",  # 16:9 too: fills the frame
    "video/sadtalker_WDA_KatieHill_000.mp4": "512x512",
    "video/videoretalking_face1.mp4": "700x700",
    "video/videoretalking_face2.mp4": "844x844",
    "video/videoretalking_face3.mp4": "590x590",
}


def _wide(video: str) -> bool:
    w, h = map(int, _SIZES[video].split("x"))
    return w * 9 == h * 16


def _shot_filter(shot: Shot) -> tuple[list[str], str]:
    """Extra inputs and the filter graph that puts one shot's picture on the 1920x1080 canvas."""
    if shot.place == "fill":
        return [], f"[0:v]fps={FPS},scale={W}:{H}:flags=bicubic,setsar=1,format=yuv420p[v]"
    side = 960  # a talking head about as big as a presenter's half-body shot
    x = {"left": 180, "centre": (W - side) // 2, "right": W - side - 180}[shot.place]
    bg = ["-f", "lavfi", "-i", f"color=c={shot.colour}:s={W}x{H}:r={FPS}"]
    graph = (f"[0:v]fps={FPS},scale={side}:{side}:flags=bicubic,setsar=1[f];"
             f"[1:v][f]overlay={x}:{(H - side) // 2}:shortest=1,format=yuv420p[v]")
    return bg, graph


def _encode_shot(shot: Shot, out: Path) -> None:
    extra, graph = _shot_filter(shot)
    _run(_ffmpeg(
        "-stream_loop", "-1", "-ss", f"{shot.start:.2f}", "-i", str(MEDIA / shot.video), *extra,
        "-filter_complex", graph, "-map", "[v]", "-frames:v", str(shot.frames), "-an",
        "-c:v", "libx264", "-preset", "veryfast", "-crf", "21", "-g", str(2 * FPS),
        "-profile:v", "high", "-r", str(FPS), "-video_track_timescale", "15360", str(out),
    ))


def talk_key(minutes: float, seed: int) -> str:
    blob = json.dumps({"v": VERSION, "minutes": minutes, "seed": seed, "text": PARAGRAPHS}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def build_talk(
    minutes: float = 10.0, *, seed: int = 7, cache: Path = CACHE
) -> tuple[Path, dict[str, object]]:
    """The talk file and its composition; built once per (minutes, seed, recipe), then reused."""
    for_script()  # without the recordings: one line saying so, and exit
    key = talk_key(minutes, seed)
    final = cache / f"talk-{minutes:g}min-{key}.mp4"
    manifest = final.with_suffix(".json")
    if final.exists() and manifest.exists():
        return final, json.loads(manifest.read_text())
    t0 = time.perf_counter()
    work = cache / f"work-{key}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    rng = random.Random(seed)
    speech, synth_total = _speech(work, rng)
    target = minutes * 60
    audio: list[np.ndarray] = []
    pieces: list[Piece] = []
    last: list[str] = []
    total_frames = 0
    for label, real, x, own in speech:
        if total_frames / FPS >= target:
            break
        x = _level(x)
        pause = rng.uniform(0.3, 1.2)
        frames = round((len(x) / RATE + pause) * FPS)
        frames = min(frames, round(target * FPS) - total_frames)
        samples = frames * RATE // FPS
        seg = np.zeros(samples, np.float32)
        seg[: min(len(x), samples)] = x[:samples]
        audio.append(seg)
        pieces.append(Piece(label, real, frames / FPS, _shots(frames, own, rng, last)))
        total_frames += frames
    if total_frames / FPS < target - 1:
        raise SystemExit(
            f"only {total_frames / FPS:.0f} s of distinct speech for a {target:.0f} s talk; "
            "add paragraphs to bench/_talk_text.py rather than repeat any"
        )
    wav = work / "speech.f32"
    np.concatenate(audio).tofile(wav)
    listing = work / "shots.txt"
    lines = []
    n = 0
    for piece in pieces:
        for shot in piece.shots:
            out = work / f"shot-{n:03d}.mp4"
            _encode_shot(shot, out)
            lines.append(f"file '{out.name}'\n")
            n += 1
    listing.write_text("".join(lines))
    part = final.with_name(f".{final.name}.part.mp4")
    _run(_ffmpeg(
        "-f", "concat", "-safe", "0", "-i", str(listing),
        "-f", "f32le", "-ar", str(RATE), "-ac", "1", "-i", str(wav),
        "-map", "0:v", "-map", "1:a", "-c:v", "copy", "-c:a", "aac", "-b:a", "128k", "-ac", "2",
        "-movflags", "+faststart", "-shortest", str(part),
    ))
    part.replace(final)
    real_s = sum(p.seconds for p in pieces if p.real)
    composition: dict[str, object] = {
        "file": str(final),
        "seconds": round(_video_seconds(final), 3),
        "size": f"{W}x{H}@{FPS}",
        "real_speech_seconds": round(real_s, 1),
        "tts_seconds": round(sum(p.seconds for p in pieces if not p.real), 1),
        "tts_paragraphs_used": sum(1 for p in pieces if not p.real),
        "tts_paragraphs_written": synth_total,
        "shots": n,
        "pieces": [{**asdict(p), "shots": [asdict(s) for s in p.shots]} for p in pieces],
        "build_seconds": round(time.perf_counter() - t0, 1),
    }
    manifest.write_text(json.dumps(composition, indent=1) + "\n")
    shutil.rmtree(work, ignore_errors=True)
    return final, composition


if __name__ == "__main__":
    import argparse

    p = argparse.ArgumentParser(description="build (or find) the cached benchmark talk")
    p.add_argument("--minutes", type=float, default=10.0)
    p.add_argument("--seed", type=int, default=7)
    a = p.parse_args()
    path, comp = build_talk(a.minutes, seed=a.seed)
    print(path)
    print({k: v for k, v in comp.items() if k != "pieces"})
