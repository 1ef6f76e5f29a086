"""What an editor's timecode needs from a source: its exact frame rate and where its clock starts.

Media times in Montage (transcript words, clip ranges, sidecars) are seconds from the container's
start. An editing application counts frames from the source's own timecode instead: the ``timecode``
tag (an MP4/MOV ``tmcd`` track, an MXF or MKV tag) when the file carries one, else the first video
frame's timestamp. A file cut from a longer recording or remuxed with an offset starts at a
non-zero timestamp, so without this every range would land that many frames early.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import av.error
import av.stream
from opentimelineio import opentime

from montaged.errors import MediaError

# NTSC rates are stored as 24000/1001 etc., but containers often report an average rate a hair
# off (23.97602..., 29.97002...); a rate this close to a standard one is that standard rate.
RATE_SNAP = 0.01
NTSC_BASES = (24, 30, 48, 60, 120)
DROP_FRAME_BASES = (30, 60)  # drop-frame timecode exists only for 29.97 and 59.94
TIMECODE = re.compile(r"^\d{2}:\d{2}:\d{2}[:;.]\d{2,3}$")


class ExportSourceError(MediaError):
    """The source a job was cut from cannot be read for its timecode."""

    code = "export_source"


@dataclass(frozen=True)
class SourceTiming:
    """How to turn a source's media seconds into its frame numbers (and timecode).

    Attributes:
        rate: exact video frame rate (``Fraction(30000, 1001)`` for 29.97).
        phase: media seconds of the first video frame (0 unless audio priming shifts it).
        origin_frame: the first video frame's frame number on the source's timecode clock.
        duration_frames: frames in the source, from the first video frame.
        timecode_tag: the file's own start timecode, if it carries one.
        drop_frame: whether its timecode counts in drop-frame (only 29.97 and 59.94 can).
    """

    rate: Fraction
    phase: float
    origin_frame: int
    duration_frames: int
    timecode_tag: str | None
    drop_frame: bool

    @property
    def fps(self) -> float:
        return float(self.rate)

    def frame(self, media_seconds: float) -> int:
        """Source frame number (timecode clock) of the frame shown at ``media_seconds``."""
        return self.origin_frame + round((media_seconds - self.phase) * self.rate)

    def timecode(self, frame: int) -> str:
        return str(opentime.to_timecode(opentime.RationalTime(frame, self.fps), self.fps, self.drop_frame))


def standard_rate(rate: Fraction) -> Fraction:
    """``rate`` snapped to 24000/1001-style NTSC rates or whole numbers when within RATE_SNAP."""
    for base in NTSC_BASES:
        ntsc = Fraction(base * 1000, 1001)
        if abs(rate - ntsc) < RATE_SNAP:
            return ntsc
    whole = round(rate)
    if whole > 0 and abs(rate - whole) < RATE_SNAP:
        return Fraction(whole)
    return rate


def can_drop_frame(rate: Fraction) -> bool:
    return any(rate == Fraction(base * 1000, 1001) for base in DROP_FRAME_BASES)


def _timecode_tag(container: av.container.InputContainer, stream: av.stream.Stream) -> str | None:
    candidates = [stream.metadata.get("timecode"), container.metadata.get("timecode")]
    candidates += [s.metadata.get("timecode") for s in container.streams if s.type == "data"]
    for tag in candidates:
        if isinstance(tag, str) and TIMECODE.match(tag.strip()):
            return tag.strip()
    return None


def read_timing(path: Path, *, drop_frame: bool | None = None) -> SourceTiming:
    """Open ``path`` (headers only, no decoding) and work out its timecode clock.

    ``drop_frame``: None follows the file's timecode tag (``;`` before the frames means drop
    frame) and, without a tag, the NTSC convention (drop frame at 29.97 and 59.94). True or False
    forces it; True at a rate without drop frame is refused.
    """
    try:
        container = av.open(str(path), mode="r", metadata_errors="ignore")
    except (OSError, av.error.FFmpegError) as e:
        raise ExportSourceError(
            f"{path}: the source of this job cannot be opened ({e}); exports refer to the source media,"
            " so restore it at this path (or re-run the job on its new path)"
        ) from e
    with container:
        video = [s for s in container.streams.video
                 if not (s.disposition & av.stream.Disposition.attached_pic)]
        if not video:
            raise ExportSourceError(f"{path}: has no video stream; editor exports need a video source")
        stream = video[0]
        raw = stream.average_rate or stream.guessed_rate or stream.base_rate
        if not raw:
            raise ExportSourceError(f"{path}: the video stream declares no frame rate; re-mux the file")
        rate = standard_rate(Fraction(raw))
        tb = stream.time_base
        origin = container.start_time / av.time_base if container.start_time is not None else 0.0
        first = float(stream.start_time * tb) if stream.start_time is not None and tb is not None else origin
        if stream.duration is not None and tb is not None:
            seconds = float(stream.duration * tb)
        elif container.duration is not None:
            seconds = container.duration / av.time_base
        else:
            seconds = 0.0
        tag = _timecode_tag(container, stream)
    if drop_frame is None:
        drop = (";" in tag or "." in tag) if tag is not None else can_drop_frame(rate)
    else:
        drop = drop_frame
    if drop and not can_drop_frame(rate):
        raise ExportSourceError(
            f"{path}: drop-frame timecode exists only for 29.97 and 59.94 fps; this source runs at"
            f" {float(rate):.3f} fps, so export it without --drop-frame"
        )
    fps = float(rate)
    if tag is not None:
        # the tag's separator says how the file counts; read it that way, then count in `drop`
        origin_frame = round(opentime.from_timecode(tag.replace(".", ";"), fps).value)
    else:
        origin_frame = round(first * rate)
    return SourceTiming(
        rate=rate, phase=first - origin, origin_frame=origin_frame,
        duration_frames=max(1, round(seconds * rate)), timecode_tag=tag, drop_frame=drop,
    )
