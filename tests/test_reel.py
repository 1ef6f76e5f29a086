"""Reels: clips of real media joined with a cross-fade or a dip to black, picture and sound.

Output is small (270x480, the 9:16 shape at 1/16 of the pixels) so the file stays fast on 2 cores;
the code path is the one of full size. The two clips of each join are framed on different people
of the interview (left and right crop), so a blend of them differs from either.
"""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from montaged.config import ProfileConfig, ReelConfig
from montaged.media.encoders import EncoderChoice, encoder_args
from montaged.media.probe import probe_media
from montaged.model import ClipPlan, CropBox, CropPlan, MediaInfo, RenderedClip, Word
from montaged.render.extract import ExtractSpec, output_frames
from montaged.render.reel import ReelTimeline, audio_graph, gains, ordered, reel_for, reel_words
from montaged.render.reel_encode import render_reel

SMALL = ProfileConfig(aspect="9:16", width=270, height=480, crf=20, loudness=None)
RATE = Fraction(25)
# three 3 s clips of the 25 fps interview; 0.4 s transitions are 10 frames
RANGES = [(1.0, 4.0), (6.0, 9.0), (11.0, 14.0)]
K = 10
LEFT, RIGHT = CropBox(0.0, 180, 0, 202, 360), CropBox(0.0, 900, 0, 202, 360)


@pytest.fixture(scope="module")
def interview(media_dir: Path) -> tuple[Path, MediaInfo]:
    src = media_dir / "video" / "visualvoice_interview_2spk.mp4"
    return src, probe_media(src)


def plans() -> list[ClipPlan]:
    return [ClipPlan(i, s, e, 0.5 + i / 10, {}, f"reason {i}", f"text {i}", ("S1",)) for i, (s, e) in
            enumerate(RANGES)]


def crops() -> list[CropPlan | None]:
    # 1280x720 source, boxes scaled to 9:16 of the full height; alternate sides at every join
    return [CropPlan(i, "crop", (box,)) for i, box in enumerate((LEFT, RIGHT, LEFT))]


async def _reel(src: tuple[Path, MediaInfo], out: Path, transition: str) -> RenderedClip:
    words = [Word("early", 2.0, 2.4, 0.9), Word("middle", 7.0, 7.4, 0.9), Word("late", 12.0, 12.3, 0.9)]
    return await render_reel(
        source=src[0], info=src[1], plans=plans(), crops=crops(), profile=SMALL,
        reel=ReelConfig(transition=transition, seconds=K / 25), out_dir=out, stem="talk-reel",
        encoder=EncoderChoice("libx264", False, encoder_args("libx264", "ultrafast")), words=words,
        captions=None, extra_sidecar={"job_id": "j", "profile": "small"},
    )  # fmt: skip


def _luma(path: Path) -> list[np.ndarray]:
    """The Y plane as encoded (limited range: black is 16), comparable to the extractor's frames."""
    with av.open(str(path)) as c:
        return [f.to_ndarray(format="yuv420p")[: f.height].astype(np.float32) for f in c.decode(video=0)]


def _audio(path: Path) -> tuple[np.ndarray, int]:
    with av.open(str(path)) as c:
        stream = c.streams.audio[0]
        chunks = [f.to_ndarray().mean(axis=0) for f in c.decode(stream)]
        return np.concatenate(chunks), int(stream.rate)


def _source_luma(src: tuple[Path, MediaInfo], start: float, box: CropBox, index: int) -> np.ndarray:
    """Frame ``index`` of a clip as the extractor hands it to the encoder (Y plane)."""
    spec = ExtractSpec(src[0], start, index + 1, RATE, 270, 480, path=(box,))
    frames = output_frames(spec)
    for i, buf in enumerate(frames):
        if i == index:
            frames.close()
            return buf[: 270 * 480].reshape(480, 270).astype(np.float32)
    raise AssertionError("no frame")


@pytest.mark.anyio
async def test_crossfade_reel_of_real_media(interview: tuple[Path, MediaInfo], tmp_path: Path) -> None:
    reel = await _reel(interview, tmp_path, "crossfade")
    total = 3 * 75 - 2 * K  # sum of the clips less one overlap per transition
    assert reel.frames == total and reel.end == pytest.approx(total / 25)
    luma = _luma(Path(reel.path))
    assert len(luma) == total  # to the frame
    doc = json.loads((tmp_path / "talk-reel.json").read_text())
    assert doc["kind"] == "reel" and doc["reel"]["transition"] == "crossfade"
    assert doc["reel"]["seconds"] == 0.4
    places = [(c["place"]["start"], c["place"]["end"]) for c in doc["reel"]["clips"]]
    assert places == pytest.approx([(0.0, 3.0), (2.6, 5.6), (5.2, 8.2)])
    for entry, (start, end) in zip(doc["reel"]["clips"], RANGES, strict=True):
        # the source range as cut: on the 25 fps source's frames, within half a frame of the plan
        assert entry["clip"]["start"] == pytest.approx(start, abs=0.02)
        assert entry["clip"]["end"] == pytest.approx(end, abs=0.02)
        assert entry["reason"].startswith("reason") and entry["crop"]["layout"] == "crop"
    assert [w["text"] for w in doc["words"]] == ["early", "middle", "late"]
    assert doc["words"][1]["start"] == pytest.approx(7.0 - 6.0 + 2.6, abs=0.02)  # on the reel's clock

    # frame 5 of the first join (progress 0.55): 0.45 of clip 0's frame 70 and 0.55 of clip 1's frame 5
    a = _source_luma(interview, doc["reel"]["clips"][0]["clip"]["start"], LEFT, 75 - K + 5)
    b = _source_luma(interview, doc["reel"]["clips"][1]["clip"]["start"], RIGHT, 5)
    mixed = luma[75 - K + 5]
    expected = 0.45 * a + 0.55 * b
    # the encode (crf 20) stays within a few levels of what it was given; the two sides differ by far more
    assert np.abs(a - b).mean() > 15
    assert np.abs(mixed - expected).mean() < 4
    assert np.abs(mixed - a).mean() > 6 and np.abs(mixed - b).mean() > 6

    samples, rate = _audio(Path(reel.path))
    assert len(samples) / rate == pytest.approx(total / 25, abs=0.05)  # sound to the end
    window = rate // 4
    rms = [float(np.sqrt(np.mean(samples[i : i + window] ** 2)))
           for i in range(0, len(samples) - window, window)]
    # a TV interview has room tone between words: no quarter second of the reel is near digital silence
    assert min(20 * np.log10(max(r, 1e-9)) for r in rms) > -60


@pytest.mark.anyio
async def test_dip_reel_goes_through_black_and_silence(
    interview: tuple[Path, MediaInfo], tmp_path: Path
) -> None:
    reel = await _reel(interview, tmp_path, "dip")
    luma = _luma(Path(reel.path))
    assert len(luma) == 3 * 75 - 2 * K
    for join in (75 - K, 2 * (75 - K)):  # first frame of each transition
        middle = luma[join + K // 2]  # progress 0.55: each clip keeps a tenth of its picture
        before, after = luma[join - 1], luma[join + K]
        floor = 16 + 0.2 * (min(before.mean(), after.mean()) - 16)  # 0.1 + 0.1 of the two, at most
        assert middle.mean() < floor, (middle.mean(), before.mean(), after.mean())
    samples, rate = _audio(Path(reel.path))
    assert len(samples) / rate == pytest.approx(len(luma) / 25, abs=0.05)

    def level(at: float, seconds: float) -> float:
        piece = samples[int(at * rate) : int((at + seconds) * rate)]
        return float(20 * np.log10(max(float(np.sqrt(np.mean(piece**2))), 1e-9)))

    middle_s = (75 - K + K / 2) / 25  # the first join's middle, in reel seconds
    # a 20 ms window at the middle holds at most 10 ms of each side's faded tail (gain ≤ 0.05 there)
    assert level(middle_s - 0.01, 0.02) < min(level(middle_s - 1.0, 0.5), level(middle_s + 0.5, 0.5)) - 15
    doc = json.loads((tmp_path / "talk-reel.json").read_text())
    assert doc["reel"]["transition"] == "dip" and len(doc["reel"]["clips"]) == 3


def test_timeline_orders_and_gains() -> None:
    t = ReelTimeline.of([75, 75, 75], 0.4, RATE)
    assert (t.overlap, t.total, t.places()) == (10, 205, [(0, 75), (65, 140), (130, 205)])
    short = ReelTimeline.of([75, 12, 75], 1.0, RATE)  # a 12-frame clip holds two 6-frame transitions
    assert short.overlap == 6 and short.total == 162 - 12
    assert ReelTimeline.of([40], 0.5, RATE).overlap == 0
    assert gains("dip", 0.5) == (0.0, 0.0) and gains("crossfade", 0.25) == (0.75, 0.25)
    ps = plans()
    assert [p.index for p in ordered(ps, "score")] == [2, 1, 0]
    assert [p.index for p in ordered(list(reversed(ps)), "time")] == [0, 1, 2]


def test_reel_settings_come_from_the_option_over_the_profile() -> None:
    plain, reeling = ProfileConfig(), ProfileConfig(reel=ReelConfig(transition="dip", seconds=1.0))
    assert reel_for(None, plain) is None and reel_for(False, reeling) is None
    assert reel_for(True, plain) == ReelConfig()
    assert reel_for(None, reeling) == reeling.reel
    assert reel_for({"seconds": 0.3}, reeling) == ReelConfig(transition="dip", seconds=0.3)


def test_audio_graph_joins_each_clip_once() -> None:
    t = ReelTimeline.of([75, 75], 0.4, RATE)
    graph = audio_graph([3.0, 3.0], t, "crossfade", [None, "volume=2"])
    assert graph.count("acrossfade=d=0.400000") == 1 and "[2:a:0]volume=2," in graph
    assert graph.endswith("[reel_audio]")
    dip = audio_graph([3.0, 3.0], t, "dip", [None, None])
    assert "afade=t=out:st=2.600000:d=0.200000" in dip and "afade=t=in:st=0.200000:d=0.200000" in dip
    assert "c1=nofade:c2=nofade" in dip
    one = audio_graph([3.0], ReelTimeline.of([75], 0.4, RATE), "dip", [None])
    assert one.startswith("[1:a:0]") and "acrossfade" not in one and "afade" not in one


def test_words_on_the_reel_clock_split_each_overlap_at_its_middle() -> None:
    t = ReelTimeline.of([75, 75], 0.4, RATE)  # clip 0 at reel 0..3.0, clip 1 at 2.6..5.6: middle 2.8
    specs = [ExtractSpec(Path("/m"), start, 75, RATE, 270, 480) for start in (1.0, 6.0)]
    words = [Word("tail", 3.70, 3.78, 1.0), Word("gone", 3.9, 3.98, 1.0),  # clip 0: reel 2.70, 2.90
             Word("head", 6.05, 6.1, 1.0), Word("body", 6.5, 6.7, 1.0)]  # clip 1: reel 2.65, 3.10
    out = reel_words(words, specs, t)
    # each side of the middle shows one clip: its words, and only those, are captioned there
    assert [w.text for w in out] == ["tail", "body"]
    assert (out[0].start, out[1].start) == pytest.approx((2.70, 3.10))


def test_process_renders_each_profile_and_a_reel_from_one_analysis(tmp_path: Path) -> None:
    """``montaged process -p tall -p wide -p story``: the clips of one selection in two shapes, and
    the 9:16 reel profile's reel of the same clips (framed once per aspect)."""
    import os
    import subprocess
    import sys

    from conftest import make_talk_clip
    from daemon_harness import JFK, daemon_env

    from montaged.export.job import export_job

    clip = make_talk_clip(tmp_path / "talk.mp4", seconds=11, size="320x180", speech=JFK)
    config = tmp_path / "montage.toml"
    config.write_text(
        '[profiles.tall]\naspect = "9:16"\nwidth = 180\nheight = 320\ncrf = 30\ncaptions = "none"\n'
        '[profiles.wide]\naspect = "16:9"\nwidth = 320\nheight = 180\ncrf = 30\ncaptions = "none"\n'
        '[profiles.story]\naspect = "9:16"\nwidth = 180\nheight = 320\ncrf = 30\n'
        '[profiles.story.reel]\ntransition = "dip"\nseconds = 0.4\n')
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("MONTAGE_")}, **daemon_env(tmp_path)}
    out = tmp_path / "clips"
    done = subprocess.run(
        [sys.executable, "-m", "montaged", "process", str(clip), "-o", str(out), "--config", str(config),
         "-p", "tall", "-p", "wide", "-p", "story", "--range", "0.5-4.0", "--range", "5.0-9.5", "--exact",
         "--json"],
        capture_output=True, text=True, env=env, timeout=300, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stderr[-3000:]
    (job,) = json.loads(done.stdout)
    rendered = job["result"]["clips"]
    by_profile: dict[str, list[dict]] = {}
    for c in rendered:
        by_profile.setdefault(c["profile"], []).append(c)
    n = len(by_profile["tall"])
    assert n == 2 and len(by_profile["wide"]) == n and len(by_profile["story"]) == 1  # one selection
    (reel,) = by_profile["story"]
    stem = f"talk-{job['id'][:8]}"
    assert Path(reel["path"]).name == f"{stem}-reel-story.mp4"
    assert sorted(Path(c["path"]).name for c in by_profile["tall"]) == [
        f"{stem}-{i:02d}-tall.mp4" for i in range(1, n + 1)]
    # the reel: the clips' frames less one 0.4 s (10 frame) transition per join, to the frame
    assert reel["frames"] == sum(c["frames"] for c in by_profile["tall"]) - (n - 1) * 10
    with av.open(reel["path"]) as c:
        assert sum(1 for _ in c.decode(video=0)) == reel["frames"]
        assert c.streams.audio[0].duration is not None
    assert [r["index"] for r in reel["reel"]["clips"]] == [c["index"] for c in by_profile["tall"]]
    tall_docs = {c["index"]: json.loads(Path(c["sidecar_path"]).read_text()) for c in by_profile["tall"]}
    reel_doc = json.loads(Path(reel["sidecar_path"]).read_text())
    for entry in reel_doc["reel"]["clips"]:  # 9:16 profiles share their framing
        assert entry["crop_path"] == tall_docs[entry["clip"]["index"]]["crop_path"]
        assert entry["clip"]["start"] == tall_docs[entry["clip"]["index"]]["clip"]["start"]
    wide = json.loads(Path(by_profile["wide"][0]["sidecar_path"]).read_text())
    assert wide["output"]["width"] == 320 and wide["profile"] == "wide"
    # an export holds each range once
    exported = export_job(job, "otio")
    assert len(exported["clips"]) == n
    # montagectl show: every clip under its profile, the reel with its clips' ranges and places
    from rich.console import Console

    from montaged.ctl.render import print_job

    console = Console(record=True, width=200)
    print_job(console, {"job": job, "events": []})
    shown = console.export_text()
    assert shown.count("[tall]") == n and shown.count("[wide]") == n
    assert f"reel  [story]  {reel['end']:.1f} s, 2 clips, dip 0.40 s, time order" in shown
    first = reel["reel"]["clips"][0]
    place = f"at 0.00–{first['place_end']:.2f} s of the reel"
    assert f"#1  source {first['start']:7.1f}–{first['end']:.1f} s  {place}" in shown


def test_tui_job_detail_lists_a_reel_and_each_clips_profile() -> None:
    from rich.console import Console

    from tui.widgets.detail import clips_block

    clips = [{"index": 0, "start": 1.0, "end": 5.0, "score": 0.5, "reason": "a hook", "encoder": "libx264",
              "path": "/out/talk-01-tall.mp4", "profile": "tall"},
             {"index": -1, "start": 0.0, "end": 9.5, "profile": "story", "path": "/out/talk-reel-story.mp4",
              "reel": {"transition": "dip", "seconds": 0.4, "order": "time", "clips": [{}, {}]}}]
    console = Console(record=True, width=120)
    console.print(clips_block({"clips": clips}))
    text = console.export_text()
    assert "#1 tall score 0.50" in text and "reel story 9.5s, 2 clips, dip 0.40s" in text
