"""probe_media: real files pass, and every kind of bad input fails with its own error naming the file.

Each bad input is built here from a generated clip (or real media), so the test shows exactly
what makes it bad.
"""

from __future__ import annotations

import hashlib
import os
import random
import subprocess
import wave
from pathlib import Path

import pytest
from conftest import make_talk_clip

from montaged.errors import MediaError
from montaged.media.probe import (
    CorruptMediaError,
    EmptyMediaError,
    NoAudioStreamError,
    NotMediaError,
    NoVideoStreamError,
    UnreadableMediaError,
    UnsupportedCodecError,
    probe_media,
)

# Durations from ../shared/media/MANIFEST.md (rounded there to 0.1 s).
REAL_VIDEO = {
    "visualvoice_interview_2spk.mp4": (17.6, 1280, 720),
    "visualvoice_noisy_restaurant.mp4": (9.0, 1280, 720),
    "face_recognition_short_hamilton_clip.mp4": (10.0, 640, 360),
    "sadtalker_WDA_KatieHill_000.mp4": (8.1, 512, 512),
    "autoeditor_example_voice_noface.mp4": (42.5, 1280, 720),
}


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory, ffmpeg: str) -> Path:
    return make_talk_clip(tmp_path_factory.mktemp("probe") / "talk.mp4", seconds=4.0, size="320x180")


def _ff(*args: str) -> None:
    subprocess.run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", *args], check=True)


def _fails(path: Path, kind: type[MediaError], **kw: bool) -> str:
    with pytest.raises(kind) as info:
        probe_media(path, **kw)
    message = str(info.value)
    assert str(path) in message, "the message must name the file"
    return message


def test_generated_clip(clip: Path) -> None:
    info = probe_media(clip)
    assert (info.width, info.height, info.fps, info.rotation) == (320, 180, 25.0, 0)
    assert info.duration == pytest.approx(4.0, abs=0.05)  # AAC framing pads < 1 frame (21 ms)
    assert info.video_codec == "h264" and info.audio_codec == "aac"
    assert info.audio_sample_rate == 48000 and info.audio_channels == 2
    assert info.has_audio and info.has_video and info.container.startswith("mov,mp4")
    assert {s.kind for s in info.streams} == {"video", "audio"}
    assert info.content_hash == "sha256:" + hashlib.sha256(clip.read_bytes()).hexdigest()
    assert info.size_bytes == clip.stat().st_size


@pytest.mark.parametrize("name", sorted(REAL_VIDEO))
def test_real_media_pass(media_dir: Path, name: str) -> None:
    """No false alarms on real camera files (the end-of-file truncation check included)."""
    duration, w, h = REAL_VIDEO[name]
    info = probe_media(media_dir / "video" / name)
    # The manifest rounds to 0.1 s and may quote a stream rather than the container (autoeditor:
    # PyAV (FFmpeg 8) says 42.40 s, ffprobe 5.1 42.45 s, manifest 42.5): 0.15 s covers both.
    assert info.duration == pytest.approx(duration, abs=0.15)
    assert (info.width, info.height) == (w, h)


def test_audio_only_file(media_dir: Path) -> None:
    path = media_dir / "audio" / "jfk.flac"
    assert "no video stream" in _fails(path, NoVideoStreamError)
    info = probe_media(path, need_video=False)
    assert not info.has_video and info.duration == pytest.approx(11.0, abs=0.05)


def test_video_only_file(tmp_path: Path, clip: Path) -> None:
    path = tmp_path / "silent.mp4"
    _ff("-i", str(clip), "-an", "-c", "copy", str(path))
    assert "no audio stream" in _fails(path, NoAudioStreamError)
    assert probe_media(path, need_audio=False).has_audio is False


def test_random_bytes(tmp_path: Path) -> None:
    """Fixed seeds: about 1 random file in 150 fools FFmpeg's content guess (raw H.263, LRC), and
    the probe must still call those not media; seed 0 is a plain one."""
    for seed in (0, 131, 1297):  # 131 is guessed as LRC lyrics, 1297 as raw H.263 (PyAV 18.1)
        path = tmp_path / f"noise{seed}.mp4"
        path.write_bytes(random.Random(seed).randbytes(64 * 1024))
        _fails(path, NotMediaError)


def test_zero_bytes(tmp_path: Path) -> None:
    path = tmp_path / "empty.mp4"
    path.touch()
    assert "empty" in _fails(path, EmptyMediaError)


def test_zero_duration(tmp_path: Path) -> None:
    path = tmp_path / "nothing.wav"
    with wave.open(str(path), "wb") as w:  # a valid WAV header with no samples
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(b"")
    _fails(path, EmptyMediaError, need_video=False)


def test_cut_in_half(tmp_path: Path, clip: Path) -> None:
    """An MP4 with its index (moov) at the end, cut in half: the container will not open."""
    data = clip.read_bytes()
    path = tmp_path / "half.mp4"
    path.write_bytes(data[: len(data) // 2])
    assert "truncated" in _fails(path, CorruptMediaError)


def test_cut_in_half_faststart(tmp_path: Path, clip: Path) -> None:
    """Index at the front (faststart): it opens, the header promises 4 s, the data stops early."""
    fast = tmp_path / "fast.mp4"
    _ff("-i", str(clip), "-c", "copy", "-movflags", "+faststart", str(fast))
    data = fast.read_bytes()
    path = tmp_path / "fast_half.mp4"
    path.write_bytes(data[: len(data) // 2])
    assert "truncated" in _fails(path, CorruptMediaError)


def test_undecodable_codec(tmp_path: Path, clip: Path) -> None:
    """Patch the sample entry 'avc1' to an unknown fourcc: the demuxer finds no decoder for it."""
    data = clip.read_bytes()
    assert b"avc1" in data
    path = tmp_path / "unknown_codec.mp4"
    path.write_bytes(data.replace(b"avc1", b"zzz9"))
    assert "cannot decode" in _fails(path, UnsupportedCodecError)
    # The audio is still fine, so an audio-only use of the file works.
    assert probe_media(path, need_video=False).audio_codec == "aac"


def test_not_a_regular_file(tmp_path: Path) -> None:
    _fails(tmp_path, UnreadableMediaError)
    fifo = tmp_path / "pipe.mp4"
    os.mkfifo(fifo)
    _fails(fifo, UnreadableMediaError)


def test_missing_file(tmp_path: Path) -> None:
    assert "no such file" in _fails(tmp_path / "gone.mp4", UnreadableMediaError)


@pytest.mark.skipif(os.geteuid() == 0, reason="root can read every file, so permissions cannot be tested")
def test_unreadable_file(tmp_path: Path, clip: Path) -> None:
    path = tmp_path / "secret.mp4"
    path.write_bytes(clip.read_bytes())
    path.chmod(0)
    _fails(path, UnreadableMediaError)


@pytest.mark.parametrize(("tag", "rotation"), [("90", 90), ("270", 270)])
def test_rotation(tmp_path: Path, clip: Path, tag: str, rotation: int) -> None:
    """ffmpeg 5.1 turns the stream ``rotate`` tag into a display matrix; PyAV reports the matrix."""
    path = tmp_path / f"rot{tag}.mp4"
    _ff("-i", str(clip), "-c", "copy", "-metadata:s:v:0", f"rotate={tag}", str(path))
    info = probe_media(path)
    assert info.rotation == rotation
    assert info.display_size == (180, 320)
