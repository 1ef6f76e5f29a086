"""Editor exports read back with OpenTimelineIO: every clip's range against its sidecar, to the frame,
for 23.976, 25, 29.97 (drop and non-drop), 30 fps sources and sources whose clock does not start at 0.

Sources are tiny real files made by ffmpeg; the sidecars are written on each source's frame grid
as the renderer writes them. The daemon test at the end does the same for a real job's sidecars,
through the socket and montagectl.
"""

from __future__ import annotations

import json
import subprocess
import xml.etree.ElementTree as ET
from fractions import Fraction
from pathlib import Path
from typing import Any

import opentimelineio as otio
import pytest
from opentimelineio import opentime

from montaged.export.formats import FORMATS, fcpxml_seconds
from montaged.export.job import export_job
from montaged.export.timeline import ExportError
from montaged.export.timing import ExportSourceError, read_timing

pytestmark = pytest.mark.timeout(120)


def _source(path: Path, rate: str, *, timecode: str | None = None, offset: float | None = None) -> Path:
    cmd = ["ffmpeg", "-hide_banner", "-loglevel", "error", "-y",
           "-f", "lavfi", "-i", f"testsrc2=size=160x90:rate={rate}:duration=4",
           "-f", "lavfi", "-i", "sine=frequency=300:duration=4",
           "-c:v", "libx264", "-preset", "ultrafast", "-c:a", "aac", "-shortest"]
    if timecode:
        cmd += ["-timecode", timecode]
    if offset:
        cmd += ["-output_ts_offset", str(offset)]
    subprocess.run([*cmd, str(path)], check=True)
    return path


def _probe(path: Path) -> dict[str, Any]:
    out = subprocess.run(["ffprobe", "-v", "error", "-show_entries",
                          "stream=codec_type,start_time,avg_frame_rate:stream_tags=timecode:format=start_time",
                          "-of", "json", str(path)], check=True, capture_output=True, text=True).stdout
    return json.loads(out)


def _job(tmp: Path, source: Path, ranges: list[tuple[int, int]]) -> tuple[dict[str, Any], list[dict]]:
    """A finished job with one sidecar per (first frame, frame count) range, on the source's
    frame grid in media seconds (seconds from the container's start), as the renderer writes."""
    info = _probe(source)
    video = next(s for s in info["streams"] if s["codec_type"] == "video")
    rate = Fraction(video["avg_frame_rate"])
    phase = float(video["start_time"]) - float(info["format"]["start_time"])
    clips, docs = [], []
    for i, (k, n) in enumerate(ranges):
        start, end = phase + float(k / rate), phase + float((k + n) / rate)
        doc = {"source": {"path": str(source)}, "clip": {"index": i, "start": start, "end": end},
               "score": 0.9 - i / 10, "reason": f"reason {i}", "text": f"words of clip {i}",
               "speakers": ["S1"], "crop": {"layout": "crop", "confidence": 0.8, "second_path": []},
               "crop_path": [{"t": 0.0, "x": 10, "y": 0, "w": 50, "h": 90}], "job_id": "j" * 32}
        sidecar = tmp / f"{source.stem}-{i}.json"
        sidecar.write_text(json.dumps(doc))
        clips.append({"index": i, "sidecar_path": str(sidecar), "path": str(tmp / f"{i}.mp4")})
        docs.append(doc)
    job = {"id": "0123456789abcdef0123456789abcdef", "state": "done", "result": {"clips": clips}}
    return job, docs


def _tag_frames(tag: str, fps: float) -> int:
    return round(opentime.from_timecode(tag, fps).value)


def _expected_first_frame(source: Path, doc: dict[str, Any]) -> int:
    """Independently of the exporter: the frame number of the clip's first frame on the source's
    timecode clock, from ffprobe's timestamps and timecode tag."""
    info = _probe(source)
    video = next(s for s in info["streams"] if s["codec_type"] == "video")
    rate = Fraction(video["avg_frame_rate"])
    tag = video.get("tags", {}).get("timecode")
    absolute = float(info["format"]["start_time"]) + doc["clip"]["start"]  # the frame's timestamp
    if tag is None:
        return round(absolute * rate)
    return _tag_frames(tag, float(rate)) + round((absolute - float(video["start_time"])) * rate)


def _check_readback(result: dict[str, Any], source: Path, docs: list[dict], fps: float) -> None:
    want = [(_expected_first_frame(source, d), round((d["clip"]["end"] - d["clip"]["start"]) * fps))
            for d in docs]
    fmt, text = result["format"], result["text"]
    if fmt == "otio":
        timeline = otio.adapters.read_from_string(text, "otio_json")
        video = next(t for t in timeline.tracks if t.kind == otio.schema.TrackKind.Video)
        got = [(round(c.source_range.start_time.value), round(c.source_range.duration.value)) for c in video]
        assert got == want
        for clip, doc in zip(video, docs, strict=True):
            meta = clip.metadata["montage"]
            assert [dict(b) for b in meta["crop_path"]] == doc["crop_path"]
            assert meta["reason"] == doc["reason"]
            assert meta["text"] == doc["text"] and meta["score"] == doc["score"]
            assert clip.markers[0].metadata["montage"]["score"] == doc["score"]
            assert abs(clip.source_range.start_time.rate - fps) < 1e-9
    elif fmt == "edl":
        timeline = otio.adapters.read_from_string(text, "cmx_3600", rate=fps)
        clips = list(timeline.find_clips())
        got = [(round(c.source_range.start_time.value), round(c.source_range.duration.value)) for c in clips]
        assert got == want
        if result["drop_frame"]:
            # the adapter's reader skips locators in drop-frame timecode (its pattern wants ':')
            assert [ln.startswith(f"* LOC: {c['source_in']} GREEN   #{c['index'] + 1} SCORE")
                    for ln, c in zip([x for x in text.splitlines() if x.startswith("* LOC:")],
                                     result["clips"], strict=True)] == [True] * len(docs)
        else:
            assert [c.markers[0].name.split(":")[0] for c in clips] == [
                f"#{i + 1} SCORE {d['score']:.2f}" for i, d in enumerate(docs)]
    else:
        timeline = otio.adapters.read_from_string(text, "fcpx_xml")
        clips = list(timeline.find_clips())
        assert len(clips) == len(docs)
        assert [c.markers[0].name for c in clips] == [f"#{i + 1} score {d['score']:.2f}: {d['reason']}"
                                                      for i, d in enumerate(docs)]
        # the adapter's reader rounds NTSC rates down to whole numbers (29 for 29.97): the exact
        # times are read from the document
        rate = Fraction(result["rate"])
        spine = [e for e in ET.fromstring(text).iter("clip") if e.get("lane") is None]
        got = [(fcpxml_seconds(e.get("start", "0s")) * rate, fcpxml_seconds(e.get("duration", "0s")) * rate)
               for e in spine]
        assert got == [(Fraction(a), Fraction(b)) for a, b in want]
        sequence = ET.fromstring(text).find(".//sequence")
        assert sequence is not None
        assert sequence.get("tcFormat") == ("DF" if result["drop_frame"] else "NDF")


CASES = {
    # name: (rate, timecode tag, offset, ranges (first frame, frames), expected in/out of clip 2)
    "23.976": ("24000/1001", None, None, [(0, 24), (48, 30)], "00:00:02:00", False),
    "25": ("25", None, None, [(5, 25), (50, 40)], "00:00:02:00", False),
    "25-offset": ("25", None, 10.0, [(5, 25), (50, 40)], "00:00:12:00", False),
    "29.97-df": ("30000/1001", "00:00:59;00", None, [(0, 30), (60, 30)], "00:01:01;02", True),
    "29.97-ndf": ("30000/1001", "00:00:59:00", None, [(0, 30), (60, 30)], "00:01:01:00", False),
    "29.97-offset": ("30000/1001", None, 7.0, [(3, 30), (60, 30)], None, True),
    "30": ("30", "01:00:00:00", 3.0, [(1, 29), (45, 60)], "01:00:01:15", False),
}


@pytest.mark.parametrize("name", list(CASES))
def test_exports_read_back_to_the_frame(tmp_path: Path, name: str) -> None:
    rate, tag, offset, ranges, second_in, drop = CASES[name]
    source = _source(tmp_path / f"src-{name}.mp4", rate, timecode=tag, offset=offset)
    job, docs = _job(tmp_path, source, ranges)
    fps = float(Fraction(rate))
    timing = read_timing(source)
    assert timing.drop_frame is drop
    for fmt in FORMATS:
        result = export_job(job, fmt)
        assert result["drop_frame"] is drop and abs(result["fps"] - fps) < 1e-5
        _check_readback(result, source, docs, fps)
    if second_in is not None:
        assert export_job(job, "edl")["clips"][1]["source_in"] == second_in
        assert f" {second_in} " in export_job(job, "edl")["text"]


def test_drop_frame_can_be_forced_and_is_refused_where_it_cannot_exist(tmp_path: Path) -> None:
    ntsc = _source(tmp_path / "ntsc.mp4", "30000/1001", offset=70.0)
    job, docs = _job(tmp_path, ntsc, [(0, 30), (60, 30)])
    df, ndf = export_job(job, "edl", drop_frame=True), export_job(job, "edl", drop_frame=False)
    assert "FCM: DROP FRAME" in df["text"] and "FCM: NON-DROP FRAME" in ndf["text"]
    assert [c["first_frame"] for c in df["clips"]] == [c["first_frame"] for c in ndf["clips"]]
    assert ";" in df["clips"][0]["source_in"] and ";" not in ndf["clips"][0]["source_in"]
    _check_readback(ndf, ntsc, docs, 30000 / 1001)
    _check_readback(df, ntsc, docs, 30000 / 1001)
    pal = _source(tmp_path / "pal.mp4", "25")
    job, _ = _job(tmp_path, pal, [(0, 25)])
    with pytest.raises(ExportSourceError, match=r"drop-frame timecode exists only for 29\.97 and 59\.94"):
        export_job(job, "edl", drop_frame=True)


def test_several_profiles_and_a_reel_export_each_range_once(tmp_path: Path) -> None:
    """A job rendered with two profiles has each range twice, and a reel holds its clips inside one
    sidecar: the timeline has each selected range once, as the first profile cut it."""
    source = _source(tmp_path / "multi.mp4", "25")
    job, docs = _job(tmp_path, source, [(0, 25), (50, 25)])
    square = []
    for clip, doc in zip(job["result"]["clips"], docs, strict=True):
        sidecar = tmp_path / f"square-{clip['index']}.json"
        sidecar.write_text(json.dumps({**doc, "profile": "square"}))
        square.append({**clip, "sidecar_path": str(sidecar)})
    reel = tmp_path / "reel.json"  # the reel lists its clips in a clip sidecar's shape, in reel order
    reel.write_text(json.dumps({"kind": "reel", "profile": "story", "source": docs[0]["source"],
                                "reel": {"clips": [{**d, "place": {}} for d in reversed(docs)]}}))
    job["result"]["clips"] = [*job["result"]["clips"], *square, {"index": -1, "sidecar_path": str(reel)}]
    for fmt in FORMATS:
        _check_readback(export_job(job, fmt), source, docs, 25.0)
    job["result"]["clips"] = [{"index": -1, "sidecar_path": str(reel)}]  # a job that made only the reel
    _check_readback(export_job(job, "otio"), source, docs, 25.0)


def test_unfinished_job_and_missing_source_get_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(ExportError, match="exports are made from a finished job's clips"):
        export_job({"id": "x", "state": "running", "result": {}}, "otio")
    source = _source(tmp_path / "gone.mp4", "25")
    job, _ = _job(tmp_path, source, [(0, 25)])
    source.unlink()
    with pytest.raises(ExportSourceError, match="restore it at this path"):
        export_job(job, "otio")


# ---- a real job, through the socket and montagectl -------------------------------------------------


def test_real_job_exports_through_montagectl(tmp_path: Path) -> None:
    import sys

    import anyio
    from daemon_harness import JFK, DaemonProcess, request, wait_state

    ctl = [str(Path(sys.executable).with_name("montagectl"))]
    source = tmp_path / "talk.mp4"
    subprocess.run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-y",
                    "-f", "lavfi", "-i", "testsrc2=size=320x180:rate=30000/1001:duration=8",
                    "-i", str(JFK), "-t", "8", "-c:v", "libx264", "-preset", "ultrafast",
                    "-pix_fmt", "yuv420p", "-c:a", "aac", "-output_ts_offset", "5", "-shortest",
                    str(source)], check=True)
    daemon = DaemonProcess(tmp_path).start()
    try:
        anyio.run(daemon.wait_ready, 90.0)
        job = anyio.run(lambda: request(daemon.socket, "submit", path=str(source), options={"max_clips": 2}))
        done = anyio.run(lambda: wait_state(daemon.socket, job["id"], {"done", "failed"}, 180.0))
        assert done["state"] == "done", daemon.log()[-3000:]
        env = {"MONTAGE_CONTROL__SOCKET_PATH": str(daemon.socket), "PATH": "/usr/bin:/bin"}
        docs = [json.loads(Path(c["sidecar_path"]).read_text()) for c in done["result"]["clips"]]
        for fmt in FORMATS:
            out = tmp_path / f"export.{fmt}"
            run = subprocess.run([*ctl, "export", job["id"], "--format", fmt, "-o", str(out), "--json"],
                                 capture_output=True, text=True, env=env, timeout=60)
            assert run.returncode == 0, run.stderr
            summary = json.loads(run.stdout)
            assert summary["path"] == str(out) and summary["drop_frame"] is True
            _check_readback({**summary, "text": out.read_text()}, source, docs, 30000 / 1001)
        human = subprocess.run([*ctl, "export", job["id"], "-f", "edl"], capture_output=True, text=True,
                               env=env, timeout=60)
        assert human.returncode == 0 and human.stdout.startswith("TITLE: talk")
        refused = subprocess.run([*ctl, "export", "nope", "--json"], capture_output=True, text=True,
                                 env=env, timeout=60)
        assert refused.returncode == 1 and "no job 'nope'" in refused.stderr
    finally:
        daemon.stop()
