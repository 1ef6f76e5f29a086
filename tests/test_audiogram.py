"""Audio-only input becomes audiogram clips: every podcast format, cover art, speaker labels,
burned captions read back by OCR, loudness on target.

The sound is JFK's real "ask not" recording in each container; the words are its transcript times
(tests/data/deepgram/jfk.json) with two speaker labels, so a label change is on screen.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import av
import numpy as np
import pytest
from conftest import ROOT, unavailable
from test_captions import _found_in_order, _frames_at, _norm, _ocr

from montaged.config import AudiogramConfig, ProfileConfig, Settings
from montaged.media.encoders import EncoderChoice, encoder_args
from montaged.media.probe import probe_media
from montaged.model import ClipPlan, Word
from montaged.render.audiogram import layout, main_speaker, speaker_colours
from montaged.render.encode import render_clip

pytestmark = pytest.mark.anyio
W, H = 270, 480
FORMATS = {"mp3": ["-c:a", "libmp3lame"], "m4a": ["-c:a", "aac"], "wav": [], "flac": [],
           "opus": ["-c:a", "libopus"]}


def _words() -> list[Word]:
    doc = json.loads((ROOT / "tests" / "data" / "deepgram" / "jfk.json").read_text())
    return [Word(w["punctuated_word"], w["start"], w["end"], w["confidence"],
                 "S1" if w["start"] < 5 else "S2") for w in doc["words"]]


@pytest.fixture(scope="module")
def cover(media_dir: Path, tmp_path_factory: pytest.TempPathFactory, ffmpeg: str) -> Path:
    """A real photo for the embedded art: one frame of the SadTalker talking head."""
    out = tmp_path_factory.mktemp("art") / "cover.jpg"
    subprocess.run([ffmpeg, "-hide_banner", "-loglevel", "error", "-y", "-ss", "3",
                    "-i", str(media_dir / "video" / "sadtalker_WDA_KatieHill_000.mp4"),
                    "-frames:v", "1", str(out)], check=True)  # fmt: skip
    return out


def _podcast(ffmpeg: str, media_dir: Path, ext: str, out: Path, art: Path | None) -> Path:
    src = media_dir / "audio" / "jfk.flac"
    argv = [ffmpeg, "-hide_banner", "-loglevel", "error", "-y", "-i", str(src)]
    if art is not None:  # embedded cover, as podcast files carry it
        argv += ["-i", str(art), "-map", "0:a", "-map", "1:v", "-c:v", "mjpeg",
                 "-disposition:v", "attached_pic"]
    subprocess.run([*argv, *FORMATS[ext], str(out)], check=True)
    return out


async def _render(src: Path, out: Path, ffmpeg: str, profile: ProfileConfig) -> Path:
    settings = Settings()
    clip = await render_clip(
        source=src, info=probe_media(src, need_video=False), plan=ClipPlan(0, 0.0, 11.0, 1.0, {}, "", ""),
        crop=None, profile=profile, out_dir=out, stem="pod", words=_words(), ffmpeg=ffmpeg,
        encoder=EncoderChoice("libx264", False, encoder_args("libx264", "ultrafast")),
        captions=settings.render.caption_styles["bold"], audiogram_cfg=settings.render.audiogram,
    )
    return Path(clip.path)


@pytest.mark.parametrize("ext", sorted(FORMATS))
async def test_every_podcast_format_becomes_a_clip(
    ext: str, media_dir: Path, tmp_path: Path, ffmpeg: str
) -> None:
    src = _podcast(ffmpeg, media_dir, ext, tmp_path / f"jfk.{ext}", None)
    clip = await _render(src, tmp_path / "out", ffmpeg, ProfileConfig(width=W, height=H, crf=35))
    with av.open(str(clip)) as c:
        v = c.streams.video[0]
        assert (v.width, v.height) == (W, H) and c.streams.audio
        assert abs(float(c.duration or 0) / 1e6 - 11.0) < 0.2
    doc = json.loads(clip.with_suffix(".json").read_text())
    assert doc["crop"]["layout"] == "audiogram"
    assert abs(doc["loudness"]["output"]["integrated_lufs"] - (-14.0)) <= 1.0
    assert clip.with_suffix(".srt").exists() and clip.with_suffix(".vtt").exists()


async def test_cover_art_waveform_label_and_captions(
    media_dir: Path, cover: Path, tmp_path: Path, ffmpeg: str
) -> None:
    if shutil.which("tesseract") is None:
        unavailable("tesseract not installed (Debian: apt-get install tesseract-ocr)")
    width, height = 540, 960
    profile = ProfileConfig(width=width, height=height, crf=28)
    with_art = await _render(_podcast(ffmpeg, media_dir, "mp3", tmp_path / "art.mp3", cover), tmp_path / "a",
                             ffmpeg, profile)
    plain = await _render(_podcast(ffmpeg, media_dir, "mp3", tmp_path / "plain.mp3", None), tmp_path / "b",
                          ffmpeg, profile)
    box = layout(width, height)
    words = _words()
    t = (words[8].start + words[8].end) / 2  # "your", spoken by S2
    art_frame, = _frames_at(with_art, [t])
    plain_frame, = _frames_at(plain, [t])
    y0, x0, s = box.cover_y, box.cover_x, box.cover_side
    art = art_frame[y0 : y0 + s, x0 : x0 + s].astype(float)
    assert art.std() > 20  # a photo, not the flat background
    assert np.abs(plain_frame[y0 : y0 + s, x0 : x0 + s].astype(float) - plain_frame[2, 2]).max() < 12
    # the waveform band moves while speech plays: pixels in the main speaker's colour
    band = art_frame[box.wave_y : box.wave_y + box.wave_h]
    colours = speaker_colours(words, AudiogramConfig().speaker_colours)

    def near(img: np.ndarray, colour: str) -> int:
        rgb = np.array([int(colour[i : i + 2], 16) for i in (1, 3, 5)])
        return int((np.abs(img[:, :, ::-1].astype(int) - rgb).max(axis=2) < 60).sum())

    assert near(band, colours[main_speaker(words)]) > 200
    # the label of the turn on screen (S2), in S2's colour, under the waveform
    label = art_frame[box.label_y : box.label_y + int(height * 0.05)]
    assert near(label, colours["S2"]) > 30 and near(label, colours["S1"]) < 5
    # the captions, below the label (the waveform may share the highlight's colour)
    read, lit = _ocr(art_frame[box.label_y + int(height * 0.05) :], Settings().render.caption_styles["bold"])
    assert all(_found_in_order(["your", "country"], read)) and lit == _norm(words[8].text)
