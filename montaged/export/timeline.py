"""A job's clips as an OpenTimelineIO timeline against the source media.

Each rendered clip becomes one OTIO clip on a video track (and its twin on an audio track), cut
from the source at the range its sidecar records, in source frames on the source's timecode clock.
A marker on each clip carries its rank, score and reason; the clip's metadata (``montage``) holds
the sidecar's text, speakers, crop layout and crop path, so a conform script can re-frame it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import opentimelineio as otio

from montaged.errors import MediaError
from montaged.export.timing import SourceTiming


class ExportError(MediaError):
    """A job that has nothing an editor could open (not finished, no clips, sidecars gone)."""

    code = "export"


def load_sidecars(job: dict[str, Any]) -> list[dict[str, Any]]:
    """The sidecar of every rendered clip of a finished ``job`` (a ``Job.to_dict()``), in clip order;
    for a preview (nothing rendered), the picked candidates in the sidecars' shape."""
    result = job.get("result") or {}
    clips = result.get("clips") or []
    if job.get("state") == "done" and not clips and result.get("dry_run"):
        return _picked_candidates(job)
    if job.get("state") != "done" or not clips:
        raise ExportError(
            f"job {job.get('id')} is {job.get('state')} with {len(clips)} rendered clips; exports are"
            " made from a finished job's clips or a preview's picks (`montagectl show ID` shows where it"
            " stands)"
        )
    docs = []
    for clip in sorted(clips, key=lambda c: c.get("index", 0)):
        path = Path(str(clip.get("sidecar_path", "")))
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise ExportError(
                f"{path}: the sidecar of clip {clip.get('index', 0) + 1} cannot be read ({e}); it is the"
                " record of the clip's range, so restore it or re-run the job"
            ) from e
        # a reel's sidecar holds each of its clips in a clip sidecar's shape
        reel = doc.get("reel") if doc.get("kind") == "reel" else None
        docs += [{**c, "profile": doc.get("profile")} for c in reel["clips"]] if reel else [doc]
    # several profiles cut the same ranges: each range once, as the first profile cut it
    once: dict[int, dict[str, Any]] = {}
    for doc in docs:
        once.setdefault(int(doc["clip"]["index"]), doc)
    return [once[i] for i in sorted(once)]


def _picked_candidates(job: dict[str, Any]) -> list[dict[str, Any]]:
    """A preview's picks as sidecar-shaped records: the ranges select chose, not yet framed, so
    they carry no crop path."""
    rows = [r for r in job["result"].get("candidates") or [] if r.get("clip") is not None]
    if not rows:
        raise ExportError(f"preview {job.get('id')} picked no moment; there is nothing to export")
    docs = []
    for row in sorted(rows, key=lambda r: r["clip"]):
        docs.append({
            "source": {"path": job["spec"]["source"]},
            "clip": {"index": row["clip"] - 1, "start": row["start"], "end": row["end"]},
            "score": row.get("score"), "reason": row.get("reason", ""), "text": row.get("text", ""),
            "speakers": row.get("speakers") or [], "crop": {}, "crop_path": [], "rank": row.get("rank"),
        })
    return docs


def _range(start: int, duration: int, fps: float) -> otio.opentime.TimeRange:
    return otio.opentime.TimeRange(otio.opentime.RationalTime(start, fps),
                                   otio.opentime.RationalTime(duration, fps))


def clip_frames(doc: dict[str, Any], timing: SourceTiming) -> tuple[int, int]:
    """(first source frame, frame count) of the range a sidecar records."""
    start, end = float(doc["clip"]["start"]), float(doc["clip"]["end"])
    first = timing.frame(start)
    return first, max(1, timing.frame(end) - first)


def _metadata(doc: dict[str, Any], job_id: str) -> dict[str, Any]:
    crop = doc.get("crop") or {}
    return {
        "job_id": job_id,
        "index": doc["clip"]["index"],
        "range_seconds": {"start": doc["clip"]["start"], "end": doc["clip"]["end"]},
        "score": doc.get("score"),
        "reason": doc.get("reason", ""),
        "text": doc.get("text", ""),
        "speakers": list(doc.get("speakers") or []),
        "crop": {"layout": crop.get("layout"), "confidence": crop.get("confidence"),
                 "second_path": crop.get("second_path") or []},
        # t in seconds from the clip start, boxes in source pixels (as in the sidecar)
        "crop_path": doc.get("crop_path") or [],
        "rendered": (doc.get("rendered") or {}).get("path"),
        "profile": doc.get("profile"),
    }


def build_timeline(job: dict[str, Any], docs: Sequence[dict[str, Any]],
                   timing: SourceTiming) -> otio.schema.Timeline:
    """The OTIO timeline of ``docs`` (clip sidecars of ``job``), cut end to end in clip order."""
    fps = timing.fps
    source = Path(docs[0]["source"]["path"])
    name = f"{source.stem} (montage {str(job['id'])[:8]})"
    timeline = otio.schema.Timeline(name=name)
    timeline.metadata["montage"] = {
        "job_id": job["id"], "source": str(source),
        "rate": f"{timing.rate.numerator}/{timing.rate.denominator}", "drop_frame": timing.drop_frame,
        "source_timecode": timing.timecode(timing.origin_frame),
    }
    video = otio.schema.Track(name="V1", kind=otio.schema.TrackKind.Video)
    audio = otio.schema.Track(name="A1", kind=otio.schema.TrackKind.Audio)
    available = _range(timing.origin_frame, timing.duration_frames, fps)
    for doc in docs:
        first, count = clip_frames(doc, timing)
        index = int(doc["clip"]["index"])
        meta = _metadata(doc, str(job["id"]))
        for track in (video, audio):
            clip = otio.schema.Clip(
                name=f"{source.stem} #{index + 1:02d}",
                media_reference=otio.schema.ExternalReference(
                    target_url=source.absolute().as_uri(), available_range=available),
                source_range=_range(first, count, fps),
                metadata={"montage": meta},
            )
            if track is video:
                score = doc.get("score")
                label = f"#{index + 1}"
                if isinstance(score, int | float):
                    label += f" score {score:.2f}"
                clip.markers.append(otio.schema.Marker(
                    name=f"{label}: {doc.get('reason', '')}".strip(),
                    marked_range=_range(first, 1, fps),  # one frame: Final Cut drops empty markers
                    color=otio.schema.MarkerColor.GREEN,
                    metadata={"montage": {"score": score, "reason": doc.get("reason", "")}},
                ))
            track.append(clip)
    timeline.tracks.append(video)
    timeline.tracks.append(audio)
    return timeline
