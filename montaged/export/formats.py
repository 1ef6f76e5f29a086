"""Write a timeline as OTIO JSON, FCPXML or CMX 3600 EDL through OpenTimelineIO's adapters.

Two gaps of the adapters are closed here rather than worked around by the user:

- otio-fcpx-xml-adapter looks frame durations up in a table keyed by ``int(rate)`` or a rounded
  float (29.97), so an exact NTSC rate (30000/1001) finds none and the write fails. The table
  learns the exact rates before writing; the times it writes are exact fractions either way.
- its reader turns frame durations back into whole-number rates (29 for 29.97), so the exact
  times of an NTSC export are read with :func:`fcpxml_seconds` (tests do) rather than its reader.
- otio-cmx3600-adapter writes timecode in drop frame whenever the rate allows it and no ``FCM``
  line. Non-drop-frame exports have their timecodes rewritten (same frame numbers, counted
  without drops), and both get the ``FCM`` line an EDL reader uses to tell them apart.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from fractions import Fraction
from typing import Literal

import opentimelineio as otio
from opentimelineio import opentime

from montaged.export.timing import NTSC_BASES, SourceTiming

Format = Literal["otio", "fcpxml", "edl"]
FORMATS: tuple[Format, ...] = ("otio", "fcpxml", "edl")
SUFFIX: dict[Format, str] = {"otio": ".otio", "fcpxml": ".fcpxml", "edl": ".edl"}
ADAPTER: dict[Format, str] = {"otio": "otio_json", "fcpxml": "fcpx_xml", "edl": "cmx_3600"}

_DF_TIMECODE = re.compile(r"\b(\d{2}):(\d{2}):(\d{2});(\d{2})\b")


def _teach_ntsc_rates() -> None:
    # the module object OTIO itself loaded for the adapter (plugins are loaded by file path)
    table = otio.adapters.from_name(ADAPTER["fcpxml"]).module().FRAMERATE_FRAMEDURATION
    for base in NTSC_BASES:
        table.setdefault(base * 1000 / 1001, f"1001/{base * 1000}s")


def _fcpxml(timeline: otio.schema.Timeline, timing: SourceTiming) -> str:
    _teach_ntsc_rates()
    # In Final Cut an asset clip carries its own sound: the adapter would turn the audio track
    # into connected gap clips, so only the picture track is written and the asset keeps audio.
    picture = timeline.deepcopy()
    for i in reversed(range(len(picture.tracks))):
        if picture.tracks[i].kind != otio.schema.TrackKind.Video:
            del picture.tracks[i]
    root = ET.fromstring(otio.adapters.write_to_string(picture, ADAPTER["fcpxml"]))
    for asset in root.iter("asset"):
        asset.set("hasAudio", "1")
    # the sequence says how its timecode counts (Final Cut shows 29.97 as DF or NDF by this)
    for sequence in root.iter("sequence"):
        sequence.set("tcFormat", "DF" if timing.drop_frame else "NDF")
    body = ET.tostring(root, encoding="unicode")
    return '<?xml version="1.0" encoding="UTF-8"?>\n<!DOCTYPE fcpxml>\n' + body + "\n"


def _edl(timeline: otio.schema.Timeline, timing: SourceTiming) -> str:
    fps = timing.fps
    text = str(otio.adapters.write_to_string(timeline, ADAPTER["edl"], rate=fps))
    if not timing.drop_frame:
        def ndf(match: re.Match[str]) -> str:
            frames = opentime.from_timecode(match.group(0), fps)
            return str(opentime.to_timecode(frames, fps, False))

        text = _DF_TIMECODE.sub(ndf, text)
    fcm = "FCM: DROP FRAME" if timing.drop_frame else "FCM: NON-DROP FRAME"
    lines = text.splitlines()
    at = 1 if lines and lines[0].startswith("TITLE:") else 0
    lines.insert(at, fcm)
    return "\n".join(lines) + "\n"


def write_text(timeline: otio.schema.Timeline, fmt: Format, timing: SourceTiming) -> str:
    """``timeline`` in ``fmt``, as text ready to save with :data:`SUFFIX`'s extension."""
    if fmt == "otio":
        return str(otio.adapters.write_to_string(timeline, ADAPTER["otio"]))
    if fmt == "fcpxml":
        return _fcpxml(timeline, timing)
    return _edl(timeline, timing)


def fcpxml_seconds(value: str) -> Fraction:
    """An FCPXML time (``"1001/30000s"``, ``"5s"``, ``"0s"``) as exact seconds."""
    return Fraction(value.removesuffix("s")) if value else Fraction(0)
