"""One job's export, end to end: its sidecars, its source's timecode clock, the text to save."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import structlog

from montaged.export.formats import FORMATS, SUFFIX, Format, write_text
from montaged.export.timeline import ExportError, build_timeline, clip_frames, load_sidecars
from montaged.export.timing import read_timing

log = structlog.get_logger(__name__)


def parse_format(value: Any) -> Format:
    for fmt in FORMATS:
        if value == fmt:
            return fmt
    raise ExportError(f"format: use one of {', '.join(FORMATS)} (got {value!r})")


def export_job(job: dict[str, Any], fmt: Format, *, drop_frame: bool | None = None) -> dict[str, Any]:
    """The export of a finished ``job`` (``Job.to_dict()``) in ``fmt``; blocking (reads files).

    The result holds the text (``text``), the file suffix to save it under, and per clip the
    source range in frames and timecode, so a client can show what it wrote.
    """
    docs = load_sidecars(job)
    timing = read_timing(Path(docs[0]["source"]["path"]), drop_frame=drop_frame)
    timeline = build_timeline(job, docs, timing)
    text = write_text(timeline, fmt, timing)
    clips = []
    for doc in docs:
        first, count = clip_frames(doc, timing)
        clips.append({
            "index": doc["clip"]["index"], "start": doc["clip"]["start"], "end": doc["clip"]["end"],
            "source_in": timing.timecode(first), "source_out": timing.timecode(first + count),
            "first_frame": first, "frames": count,
        })
    log.info("job exported", job_id=job["id"], format=fmt, clips=len(clips))
    return {
        "job_id": job["id"], "format": fmt, "suffix": SUFFIX[fmt], "text": text,
        "rate": f"{timing.rate.numerator}/{timing.rate.denominator}", "fps": round(timing.fps, 6),
        "drop_frame": timing.drop_frame, "source_timecode": timing.timecode(timing.origin_frame),
        "timecode_tag": timing.timecode_tag, "clips": clips,
    }
