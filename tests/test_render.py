"""render_clip end to end with real ffmpeg: frames, layouts, rotation, sidecars, failures, cleanup.

Output sizes are small (270x480 keeps the 9:16 shape of 1080x1920 at 1/16 of the pixels) so the
file stays fast on 2 cores; the code path is the same as for full size.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from fractions import Fraction
from pathlib import Path

import anyio
import av
import numpy as np
import psutil
import pytest
from conftest import make_talk_clip

from montaged import metrics
from montaged.config import ProfileConfig
from montaged.errors import DiskFullError, RenderError
from montaged.media.encoders import EncoderChoice, encoder_args, select_encoder, try_encoder
from montaged.media.ffmpeg import classify_failure, encode_argv, with_progress
from montaged.media.probe import probe_media
from montaged.model import ClipPlan, CropBox, CropPlan, MediaInfo, RenderedClip, Word
from montaged.render.croppath import box_at, centre_box, fit_box
from montaged.render.encode import output_rate, render_clip

pytestmark = pytest.mark.anyio
SMALL = ProfileConfig(aspect="9:16", width=270, height=480, crf=30)
WORDS = [Word("Hello", 2.2, 2.5, 0.9), Word("there.", 2.6, 3.0, 0.8), Word("Outside", 6.0, 6.5, 0.9)]


def _ff(*args: str) -> None:
    subprocess.run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", *args], check=True)


@pytest.fixture(scope="module")
def encoder() -> EncoderChoice:
    return EncoderChoice("libx264", False, encoder_args("libx264", "ultrafast"))


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory, ffmpeg: str) -> dict[str, tuple[Path, MediaInfo]]:
    """A talk-like clip, a half-white/half-black clip (crop checks) and a rotated one."""
    d = tmp_path_factory.mktemp("render-src")
    talk = make_talk_clip(d / "talk.mp4", seconds=8.0, size="640x360")
    tone = ["-f", "lavfi", "-i", "sine=frequency=300:duration=6", "-c:a", "aac"]
    halves = d / "halves.mp4"  # left half white, right half black
    _ff("-f", "lavfi", "-i", "color=black:s=640x360:r=25:d=6,drawbox=x=0:y=0:w=320:h=360:color=white:t=fill",
        *tone, "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", str(halves))  # fmt: skip
    upright = d / "tophalf.mp4"  # top half white as stored
    _ff("-f", "lavfi", "-i", "color=black:s=320x180:r=25:d=6,drawbox=x=0:y=0:w=320:h=90:color=white:t=fill",
        *tone, "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", str(upright))  # fmt: skip
    rotated = d / "rotated.mp4"  # displayed turned 90° counter-clockwise: white on the left
    _ff("-i", str(upright), "-c", "copy", "-metadata:s:v:0", "rotate=90", str(rotated))
    return {
        name: (p, probe_media(p)) for name, p in (("talk", talk), ("halves", halves), ("rotated", rotated))
    }


def _plan(start: float, end: float) -> ClipPlan:
    return ClipPlan(0, start, end, 0.87, {"energy": 0.5}, "a complete answer", "Hello there.", ("S1",))


def _frames(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as c:
        return [f.to_ndarray(format="gray") for f in c.decode(video=0)]


async def _render(src: tuple[Path, MediaInfo], out: Path, enc: EncoderChoice, **kw: object) -> RenderedClip:
    args: dict[str, object] = {
        "source": src[0], "info": src[1], "plan": _plan(2.0, 5.0), "crop": None, "profile": SMALL,
        "encoder": enc, "out_dir": out, "stem": "clip-000", "words": WORDS,
    }  # fmt: skip
    args.update(kw)
    return await render_clip(**args)  # type: ignore[arg-type]


async def test_render_vertical(
    media: dict[str, tuple[Path, MediaInfo]],
    encoder: EncoderChoice,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr("tempfile.tempdir", str(scratch))  # where the FIFO dir goes
    progress: list[float] = []
    out = tmp_path / "out"
    clip = await _render(media["talk"], out, encoder, on_progress=progress.append)
    final = out / "clip-000.mp4"
    assert sorted(p.name for p in out.iterdir()) == [
        "clip-000.json", "clip-000.mp4", "clip-000.srt", "clip-000.vtt"]
    assert list(scratch.iterdir()) == []  # FIFO and its private dir are gone
    assert clip.path == str(final) and (clip.width, clip.height, clip.frames) == (270, 480, 75)
    with av.open(str(final)) as c:
        v, a = c.streams.video[0], c.streams.audio[0]
        assert (v.codec_context.width, v.codec_context.height) == (270, 480)
        assert sum(1 for _ in c.decode(v)) == 75  # 3 s at the source's 25 fps, exactly
        assert a.duration is not None and a.time_base is not None
        assert float(a.duration * a.time_base) == pytest.approx(3.0, abs=0.04)  # within one frame
    assert progress and progress[-1] == 1.0
    doc = json.loads((out / "clip-000.json").read_text())
    assert doc["source"]["content_hash"] == media["talk"][1].content_hash
    assert (doc["clip"]["start"], doc["clip"]["end"]) == (2.0, 5.0)
    assert doc["score"] == 0.87 and doc["reason"] == "a complete answer" and doc["speakers"] == ["S1"]
    assert [w["text"] for w in doc["words"]] == ["Hello", "there."]  # only words inside the range
    box = doc["crop"]["path"][0]  # no crop plan: the centred 9:16 box, in source pixels
    assert doc["crop"]["layout"] == "crop" and (box["t"], box["y"], box["w"], box["h"]) == (0.0, 0, 202, 360)
    assert doc["crop_path"] == doc["crop"]["path"]
    assert doc["crop"]["confidence"] is None  # a stand-in centre crop is not a confident framing
    assert box["x"] + box["w"] / 2 == pytest.approx(320, abs=2)  # even-pixel snapping moves it ≤ 2 px
    assert doc["encoder"] == {"name": "libx264", "hardware": False} and doc["montage_version"]
    srt = (out / "clip-000.srt").read_text()
    assert srt.startswith("1\n00:00:00,200 --> ") and "Hello there." in srt  # times relative to the clip


async def test_real_media(media_dir: Path, encoder: EncoderChoice, tmp_path: Path) -> None:
    """A real camera file (H.264 High, 1280x720) renders to exactly the planned frames."""
    src = media_dir / "video" / "visualvoice_interview_2spk.mp4"
    clip = await _render((src, probe_media(src)), tmp_path, encoder, plan=_plan(5.13, 8.13))
    assert clip.frames == 75 and len(_frames(Path(clip.path))) == 75


async def test_crop_path_is_followed(
    media: dict[str, tuple[Path, MediaInfo]], encoder: EncoderChoice, tmp_path: Path
) -> None:
    """The box moves from the white half (t=0) to the black half (t=2): frames go white → black."""
    path = (CropBox(0.0, 0, 0, 202, 360), CropBox(2.0, 438, 0, 202, 360))
    crop = CropPlan(0, "crop", path, confidence=0.7)
    clip = await _render(media["halves"], tmp_path, encoder, crop=crop, plan=_plan(1.0, 4.0))
    assert json.loads(Path(clip.sidecar_path).read_text())["crop"]["confidence"] == 0.7
    luma = [float(f.mean()) for f in _frames(Path(clip.path))]
    assert luma[0] > 200 and luma[60] < 40  # limited-range white ≈ 235, black ≈ 16
    assert luma[25] == pytest.approx((luma[0] + luma[60]) / 2, abs=25)  # halfway: half white


async def test_split(
    media: dict[str, tuple[Path, MediaInfo]], encoder: EncoderChoice, tmp_path: Path
) -> None:
    crop = CropPlan(0, "split", (CropBox(0.0, 0, 0, 300, 266),), (CropBox(0.0, 340, 90, 300, 266),))
    clip = await _render(media["halves"], tmp_path, encoder, crop=crop)
    frame = _frames(Path(clip.path))[10]
    assert frame[:240].mean() > 200 and frame[240:].mean() < 40


async def test_letterbox(
    media: dict[str, tuple[Path, MediaInfo]], encoder: EncoderChoice, tmp_path: Path
) -> None:
    clip = await _render(media["halves"], tmp_path, encoder, crop=CropPlan(0, "letterbox", ()))
    frame = _frames(Path(clip.path))[10]
    band = frame[240 - 60 : 240 + 60]  # 640x360 fitted to 270 wide is 152 tall, centred
    assert band[:, :120].mean() > 200 and band[:, 150:].mean() < 40
    edge = frame[:100]  # blurred cover-scaled copy above: neither the white nor black extreme
    assert 40 < edge.mean() < 200


async def test_rotation(
    media: dict[str, tuple[Path, MediaInfo]], encoder: EncoderChoice, tmp_path: Path
) -> None:
    """A 320x180 frame with rotation 90 is shown 180x320 with its top (white) half on the left."""
    profile = ProfileConfig(aspect="9:16", width=180, height=320, crf=30)
    clip = await _render(media["rotated"], tmp_path, encoder, profile=profile)
    frame = _frames(Path(clip.path))[10]
    assert frame.shape == (320, 180)
    assert frame[:, :80].mean() > 200 and frame[:, 100:].mean() < 40


async def test_ffmpeg_failure(media: dict[str, tuple[Path, MediaInfo]], tmp_path: Path) -> None:
    bad = EncoderChoice("libx264", False, ("-c:v", "libx264", "-preset", "no-such-preset"))
    with pytest.raises(RenderError) as info:
        await _render(media["talk"], tmp_path, bad)
    assert "no-such-preset" in str(info.value)  # ffmpeg's own words are attached
    assert "speed=" not in str(info.value) and "progress=" not in str(info.value)  # progress kept apart
    assert list(tmp_path.iterdir()) == []


async def test_disk_full(
    media: dict[str, tuple[Path, MediaInfo]], encoder: EncoderChoice, tmp_path: Path
) -> None:
    """ENOSPC for real: the temporary output name points at /dev/full, which fails every write.

    (A tiny tmpfs would be closer to life but needs mount rights tests do not have.)
    """
    (tmp_path / ".clip-000.a0.part.mp4").symlink_to("/dev/full")  # attempt 0's part
    with pytest.raises(DiskFullError) as info:
        await _render(media["talk"], tmp_path, encoder)
    assert "No space left on device" in str(info.value)
    assert list(tmp_path.iterdir()) == []  # nothing under the final names, the partial is gone


_FSIZE_CHILD = textwrap.dedent(
    """
    import resource, sys
    from pathlib import Path
    import anyio
    from montaged.config import ProfileConfig
    from montaged.media.encoders import EncoderChoice, encoder_args
    from montaged.media.probe import probe_media
    from montaged.model import ClipPlan
    from montaged.render.encode import render_clip

    src, out = Path(sys.argv[1]), Path(sys.argv[2])
    info = probe_media(src)
    resource.setrlimit(resource.RLIMIT_FSIZE, (20_000, 20_000))  # ffmpeg inherits it
    try:
        anyio.run(lambda: render_clip(
            source=src, info=info, plan=ClipPlan(0, 0.0, 6.0, 1.0, {}, "", ""), crop=None,
            profile=ProfileConfig(width=270, height=480, crf=10), out_dir=out, stem="big", words=[],
            encoder=EncoderChoice("libx264", False, encoder_args("libx264", "ultrafast"))))
    except Exception as e:
        print(type(e).__name__)
    """
)


def test_file_size_limit(media: dict[str, tuple[Path, MediaInfo]], tmp_path: Path) -> None:
    """RLIMIT_FSIZE makes the encoder's write fail (SIGXFSZ/EFBIG): reported as disk full, no partial."""
    run = subprocess.run(
        [sys.executable, "-c", _FSIZE_CHILD, str(media["talk"][0]), str(tmp_path)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert run.stdout.strip().splitlines()[-1] == "DiskFullError", run.stdout + run.stderr
    assert list(tmp_path.iterdir()) == []


async def test_cancel_leaves_nothing(
    media: dict[str, tuple[Path, MediaInfo]], encoder: EncoderChoice, tmp_path: Path
) -> None:
    """Cancelling mid-render stops ffmpeg, removes the partial file and the FIFO."""
    big = ProfileConfig(width=1080, height=1920, crf=23)
    with anyio.move_on_after(0.7) as scope:
        await _render(media["talk"], tmp_path, encoder, profile=big, plan=_plan(0.0, 8.0))
    assert scope.cancelled_caught
    assert [p for p in psutil.Process().children(recursive=True) if p.name().startswith("ffmpeg")] == []
    assert list(tmp_path.iterdir()) == []


def test_select_encoder() -> None:
    choice = select_encoder("auto", x264_preset="ultrafast")
    assert choice.name in ("h264_nvenc", "hevc_nvenc", "libx264")
    assert choice.hardware == (choice.name != "libx264")
    assert metrics.REGISTRY.get_sample_value("montage_encoder_info", {"name": choice.name,
                                             "hardware": str(choice.hardware).lower()}) == 1.0  # fmt: skip
    if try_encoder("h264_nvenc") is not None:  # no usable NVENC here: asking for it by name is an error
        with pytest.raises(RenderError, match="does not open on this machine"):
            select_encoder("h264_nvenc")


def test_encode_argv() -> None:
    argv = encode_argv(
        ffmpeg="ffmpeg", fifo=Path("/t/v.yuv"), width=270, height=480, rate=Fraction(30000, 1001),
        frames=90, video_args=["-c:v", "libx264", "-crf", "23"], out=Path("/o/.c.part.mp4"),
        source=Path("/s.mp4"), start=3.25,
    )  # fmt: skip
    assert argv[:4] == ["ffmpeg", "-progress", "pipe:2", "-nostats"]
    i = argv.index("/t/v.yuv")
    raw = ["-f", "rawvideo", "-pix_fmt", "yuv420p", "-s", "270x480", "-framerate", "30000/1001", "-i"]
    assert argv[i - len(raw) : i] == raw
    assert argv[argv.index("-ss") + 1] == "3.250000" and argv[argv.index("-t") + 1] == "3.003000"  # 90/29.97
    assert argv[argv.index("1:a:0") - 1 : argv.index("1:a:0") + 1] == ["-map", "1:a:0"]
    assert argv[-1] == "/o/.c.part.mp4" and argv[-3:-1] == ["-f", "mp4"]
    silent = encode_argv(ffmpeg="ff", fifo=Path("f"), width=2, height=2, rate=Fraction(25), frames=1,
                         video_args=[], out=Path("o"))  # fmt: skip
    assert "-ss" not in silent and "1:a:0" not in silent
    assert with_progress(["ffmpeg", "-i", "x"]) == ["ffmpeg", "-progress", "pipe:2", "-nostats", "-i", "x"]


def test_classify_failure() -> None:
    argv = ["ffmpeg", "out.mp4"]
    assert isinstance(classify_failure(argv, 1, ["av_interleaved_write_frame(): No space left on device"]),
                      DiskFullError)  # fmt: skip
    assert isinstance(classify_failure(argv, -25, []), DiskFullError)  # SIGXFSZ
    err = classify_failure(argv, 1, ["Unknown encoder 'x'"])
    assert type(err) is RenderError and "Unknown encoder 'x'" in str(err) and "out.mp4" in str(err)


def test_output_rate() -> None:
    assert output_rate(None, 29.97002997) == Fraction(30000, 1001)
    assert output_rate(None, 25.0) == 25 and output_rate(30.0, 25.0) == 30
    assert output_rate(None, 23.976) == Fraction(24000, 1001)
    assert output_rate(None, 0.0) == 30  # unknown source rate


def test_crop_geometry() -> None:
    path = (CropBox(0.0, 0, 0, 100, 200), CropBox(2.0, 200, 100, 100, 200))
    assert box_at(path, -1) == (0, 0, 100, 200) and box_at(path, 5) == (200, 100, 100, 200)
    assert box_at(path, 0.5) == (50, 25, 100, 200)
    x, y, w, h = fit_box((600.0, 300.0, 101.0, 101.0), 9 / 16, 640, 360)
    assert all(v % 2 == 0 for v in (x, y, w, h))  # 4:2:0 needs even crops
    assert x + w <= 640 and y + h <= 360 and x >= 0 and y >= 0  # pushed back inside the frame
    assert w / h == pytest.approx(9 / 16, abs=0.02)
    assert centre_box(1920, 1080, 9 / 16) == (656, 0, 608, 1080)
    assert fit_box((460.0, 40.0, 1000.0, 1000.0), 9 / 16, 1920, 1080) == (656, 0, 608, 1080)  # shrunk to fit
