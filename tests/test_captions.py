"""Burned-in captions: real speech rendered with each shipped style, read back with tesseract.

The clip is real: a talking head (SadTalker's example, looped to 11 s) carrying JFK's "ask not"
recording, with the word times of ``tests/data/deepgram/jfk.json`` (faster-whisper on that same
recording). At each word's middle we OCR the frame and check (1) the words of the caption on
screen are there, (2) the word in the highlight colour is the word being spoken.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
from conftest import ROOT, unavailable

from montaged.config import CaptionStyle, Settings
from montaged.media.encoders import EncoderChoice, encoder_args
from montaged.media.probe import probe_media
from montaged.model import ClipPlan, Word
from montaged.render.captions import (
    ass_document,
    ass_filter,
    caption_cues,
    missing_fonts,
    resolve_style,
    safe_area,
)
from montaged.render.encode import render_clip

pytestmark = pytest.mark.anyio
WIDTH, HEIGHT = 540, 960
STYLES = Settings().render.caption_styles
FIXTURE = ROOT / "tests" / "data" / "deepgram" / "jfk.json"
MIN_HIT_RATE = 0.9


def _words() -> list[Word]:
    doc = json.loads(FIXTURE.read_text())
    return [Word(w["punctuated_word"], w["start"], w["end"], w["confidence"]) for w in doc["words"]]


def _norm(text: str) -> str:
    return re.sub(r"[^a-z0-9]", "", text.lower())


@pytest.fixture(scope="module")
def talk(media_dir: Path, tmp_path_factory: pytest.TempPathFactory, ffmpeg: str) -> Path:
    """Real face and real speech: the talking head looped under the 11 s JFK recording."""
    out = tmp_path_factory.mktemp("captions") / "talk.mp4"
    subprocess.run(
        [ffmpeg, "-hide_banner", "-loglevel", "error", "-y", "-stream_loop", "1",
         "-i", str(media_dir / "video" / "sadtalker_WDA_KatieHill_000.mp4"),
         "-i", str(media_dir / "audio" / "jfk.flac"), "-map", "0:v:0", "-map", "1:a:0", "-t", "11",
         "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-c:a", "aac", str(out)],
        check=True,
    )  # fmt: skip
    return out


def _frames_at(path: Path, times: list[float]) -> list[np.ndarray]:
    """BGR frames shown at each of ``times`` (seconds), decoded in one pass."""
    wanted = sorted(range(len(times)), key=lambda i: times[i])
    out: list[np.ndarray | None] = [None] * len(times)
    k = 0
    with av.open(str(path)) as c:
        for frame in c.decode(video=0):
            assert frame.time is not None
            while k < len(wanted) and frame.time + 0.5 / 25 >= times[wanted[k]]:
                out[wanted[k]] = frame.to_ndarray(format="bgr24")
                k += 1
            if k == len(wanted):
                break
    assert all(f is not None for f in out)
    return [f for f in out if f is not None]


def _near(img: np.ndarray, hex_colour: str, tol: int = 60) -> np.ndarray:
    h = hex_colour.lstrip("#")
    rgb = np.array([int(h[0:2], 16), int(h[2:4], 16), int(h[4:6], 16)], dtype=np.int32)
    return np.abs(img[:, :, ::-1].astype(np.int32) - rgb).max(axis=2) < tol


def _tesseract(ink: np.ndarray, psm: int) -> list[str]:
    ok, png = cv2.imencode(".png", ink)
    assert ok
    res = subprocess.run(["tesseract", "stdin", "stdout", "--psm", str(psm), "tsv"], input=png.tobytes(),
                         capture_output=True, check=True, env={**os.environ, "OMP_THREAD_LIMIT": "1"})
    rows = [line.split("\t") for line in res.stdout.decode().splitlines()[1:]]
    return [_norm(f[11]) for f in rows if len(f) == 12 and _norm(f[11])]


def _outlined(mask: np.ndarray, img: np.ndarray) -> np.ndarray:
    """Only the blobs of ``mask`` ringed by dark pixels: caption glyphs have a dark outline (or box)
    around them, a bright patch of the picture that happens to share their colour does not."""
    dark = img.max(axis=2) < 100
    n, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    keep = np.zeros_like(mask)
    for i in range(1, n):
        x, y, w, h, area = stats[i]
        if area < 12:
            continue
        x0, y0 = max(0, x - 4), max(0, y - 4)
        comp = labels[y0 : y + h + 4, x0 : x + w + 4] == i
        grown = [cv2.dilate(comp.astype(np.uint8), np.ones((3, 3), np.uint8), iterations=k).astype(bool)
                 for k in (1, 3)]
        ring = grown[1] & ~grown[0]  # 2-3 px out: past the colour bleed of 4:2:0 chroma
        if dark[y0 : y + h + 4, x0 : x + w + 4][ring].mean() > 0.6:
            keep[y0 : y + h + 4, x0 : x + w + 4] |= comp
    return keep


def _ocr(img: np.ndarray, style: CaptionStyle) -> tuple[str, str]:
    """(all text read, in reading order, run together; the word read from the highlight colour)."""
    text, lit = _outlined(_near(img, style.colour), img), _outlined(_near(img, style.highlight), img)
    ys, xs = np.nonzero(text | lit)
    if len(xs) < 50:
        return "", ""
    band = (text | lit)[max(0, ys.min() - 20) : ys.max() + 20]  # the caption lines, not the whole frame
    everything = "".join(_tesseract(np.where(band, 0, 255).astype(np.uint8), psm=11))
    ys, xs = np.nonzero(lit)
    if len(xs) < 50:
        return everything, ""
    # The lit word alone: its pixels, cut out with a margin, read as one word.
    pad = 12
    crop = lit[max(0, ys.min() - pad) : ys.max() + pad, max(0, xs.min() - pad) : xs.max() + pad]
    return everything, "".join(_tesseract(np.where(crop, 0, 255).astype(np.uint8), psm=8))


def _found_in_order(expected: list[str], read: str) -> list[bool]:
    """Which expected words occur in ``read`` in order (tesseract sometimes runs two words together
    where the background between their outlines is as light as the text)."""
    pos, out = 0, []
    for word in expected:
        at = read.find(word, pos)
        out.append(at >= 0)
        if at >= 0:
            pos = at + len(word)
    return out


@pytest.mark.parametrize("name", sorted(STYLES))
async def test_burned_words_read_back(name: str, talk: Path, tmp_path: Path, ffmpeg: str) -> None:
    if shutil.which("tesseract") is None:
        unavailable("tesseract not installed (Debian: apt-get install tesseract-ocr)")
    style, words = STYLES[name], _words()
    info = probe_media(talk)
    profile = Settings().profiles["vertical"].model_copy(update={"width": WIDTH, "height": HEIGHT, "crf": 26})
    clip = await render_clip(
        source=talk, info=info, plan=ClipPlan(0, 0.0, 11.0, 1.0, {}, "", ""), crop=None, profile=profile,
        encoder=EncoderChoice("libx264", False, encoder_args("libx264", "ultrafast")), out_dir=tmp_path,
        stem="clip", words=words, ffmpeg=ffmpeg, captions=style,
    )
    cues = caption_cues(words, style, WIDTH, HEIGHT)
    # Every word's middle for the default style; every other word for the rest (test time).
    sampled = words if name == Settings().profiles["vertical"].captions else words[::2]
    words = sampled
    times = [(w.start + w.end) / 2 for w in words]
    expected_total = hits = lit_right = 0
    misses: list[str] = []
    for w, t, frame in zip(words, times, _frames_at(Path(clip.path), times), strict=True):
        cue = next(c for c in cues if c.start <= t < c.end)
        read, lit_word = _ocr(frame, style)
        for cw, ok in zip(cue.words, _found_in_order([_norm(x.text) for x in cue.words], read), strict=True):
            expected_total += 1
            hits += ok
            if not ok:
                misses.append(f"{cw.text}@{t:.2f}")
        lit_right += lit_word == _norm(w.text)
    rate = hits / expected_total
    print(f"style {name}: OCR found {hits}/{expected_total} = {rate:.1%};"
          f" highlight on the spoken word {lit_right}/{len(words)}")
    assert rate >= MIN_HIT_RATE, f"OCR found {rate:.1%} of the burned words; missed {misses}"
    assert lit_right >= 0.9 * len(words), f"highlight on the spoken word at {lit_right}/{len(words)} samples"
    assert Path(clip.srt_path).read_text().startswith("1\n00:00:00,000 --> ")
    assert (tmp_path / "clip.vtt").read_text().startswith("WEBVTT\n")


def test_cues_fit_the_style_and_never_reflow() -> None:
    words = _words()
    for style in STYLES.values():
        cues = caption_cues(words, style, WIDTH, HEIGHT)
        assert [w for c in cues for w in c.words] == words  # every word once, in order
        for c in cues:
            assert 1 <= len(c.lines) <= style.lines
            assert all(len(line) <= style.words_per_line for line in c.lines)
        script = ass_document(cues, style, WIDTH, HEIGHT)
        events = [e for e in script.splitlines() if e.startswith("Dialogue:")]
        assert len(events) == len(words)
        # Each event of a cue holds the same text once the colour override is removed.
        plain = [re.sub(r"\{[^}]*\}", "", e.split(",", 9)[9]) for e in events]
        k = 0
        for c in cues:
            assert len(set(plain[k : k + len(c.words)])) == 1
            k += len(c.words)


def test_cues_break_at_speaker_change() -> None:
    words = [Word("Yes", 0.0, 0.3, 0.9, "S1"), Word("no", 0.35, 0.6, 0.9, "S2"),
             Word("maybe", 0.65, 1.0, 0.9, "S2")]
    cues = caption_cues(words, STYLES["clean"], WIDTH, HEIGHT)
    assert [[w.text for w in c.words] for c in cues] == [["Yes"], ["no", "maybe"]]


def test_safe_area_and_margins() -> None:
    vertical = safe_area(1080, 1920)
    assert vertical.bottom >= 0.2 and vertical.right > vertical.left  # app overlays: bottom and right
    assert safe_area(1920, 1080).bottom == 0.1


def test_style_names() -> None:
    assert resolve_style(STYLES, "none") is None
    assert resolve_style(STYLES, "bold") is STYLES["bold"]
    with pytest.raises(ValueError, match="no caption style 'fancy'; use one of bold, clean, pop, none"):
        resolve_style(STYLES, "fancy")
    assert len(STYLES) >= 3 and Settings().profiles["vertical"].captions in STYLES
    with pytest.raises(ValueError, match="reserved"):
        Settings(render={"caption_styles": {"none": {}}})


def test_shipped_fonts_installed() -> None:
    if shutil.which("fc-list") is None:
        unavailable("fontconfig (fc-list) not installed")
    assert missing_fonts(STYLES) == {}
    assert missing_fonts({"x": CaptionStyle(font="No Such Font Family")}) == {"x": "No Such Font Family"}


def test_ass_filter_path_escaping(tmp_path: Path, ffmpeg: str) -> None:
    odd = tmp_path / "a:b,c'd [e]"
    odd.mkdir()
    ass = odd / "captions.ass"
    style = STYLES["bold"]
    ass.write_text(ass_document(caption_cues([Word("Hi", 0.0, 0.5, 1.0)], style, 160, 284), style, 160, 284))
    subprocess.run([ffmpeg, "-hide_banner", "-loglevel", "error", "-f", "lavfi",
                    "-i", "color=s=160x284:d=0.2", "-vf", ass_filter(ass), "-f", "null", "-"], check=True)


def test_job_option_wins_over_the_profile() -> None:
    from montaged.errors import MediaError
    from montaged.model import Job, JobSpec, JobState
    from montaged.stages.context import JobContext
    from montaged.stages.render import _captions

    settings = Settings()

    def ctx(options: dict[str, object], profile: str = "vertical") -> JobContext:
        spec = JobSpec(source="/media/talk.mp4", profile=profile, options=options)
        job = Job("j1", spec, JobState.RUNNING, None, 0.0, 0.0, 0.0)
        return JobContext(job=job, lease=None)  # type: ignore[arg-type]  # _captions reads the spec only

    assert _captions(ctx({}), settings) == ("bold", STYLES["bold"])
    assert _captions(ctx({"captions": "clean"}), settings) == ("clean", STYLES["clean"])
    assert _captions(ctx({"captions": "none"}), settings) == ("none", None)
    assert _captions(ctx({}, profile="master"), settings) == ("none", None)
    with pytest.raises(MediaError, match=r"options\.captions: no caption style 'fancy'"):
        _captions(ctx({"captions": "fancy"}), settings)


def test_strip_burn_draws_what_the_ass_filter_draws(tmp_path: Path, ffmpeg: str) -> None:
    """The cheaper burn (libass onto a strip at caption changes, overlaid on every frame) must give the
    pixels of ffmpeg's plain ``ass`` filter on every frame, for every shipped style: same words, same
    highlight timing, same translucent box and shadow. A few pixels on a glyph's faint edge may differ
    by up to 16 of 255 (the coverage is recovered from two 8-bit renders, then blended again); a wrong
    word, a late highlight or a box of another opacity would differ by far more, and in many pixels."""
    from fractions import Fraction

    from montaged.render.captions import burn_filter, write_ass

    w, h, n = 270, 480, 75
    texts = ["ask", "not", "what", "your", "country", "can", "do"]
    words = [Word(t, 0.3 * i, 0.3 * i + 0.25, 0.9) for i, t in enumerate(texts)]
    for name, style in Settings().render.caption_styles.items():
        outs = []
        plain = tmp_path / f"{name}.ass"
        write_ass(plain, words, style, w, h)
        for vf in (burn_filter(tmp_path / f"{name}.strip.ass", words, style, w, h, Fraction(25), n),
                   ass_filter(plain)):
            argv = [ffmpeg, "-hide_banner", "-loglevel", "error", "-f", "lavfi", "-i",
                    f"testsrc2=s={w}x{h}:r=25:d={n / 25}", "-vf", f"format=yuv420p,{vf}",
                    "-f", "rawvideo", "-pix_fmt", "yuv420p", "-"]  # fmt: skip
            res = subprocess.run(argv, capture_output=True, check=True)
            outs.append(np.frombuffer(res.stdout, np.uint8).reshape(-1, w * h * 3 // 2).astype(int))
        strip, ass = outs
        assert strip.shape == ass.shape == (n, w * h * 3 // 2)
        diff = np.abs(strip - ass)
        assert diff.max() <= 16, (name, int(diff.max()), np.flatnonzero(diff.max(axis=1) > 16))
        assert (diff > 3).mean() < 0.001 and diff.mean() < 0.05, (name, (diff > 3).mean(), diff.mean())
