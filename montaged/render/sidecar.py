"""Files written beside each clip: a JSON sidecar (why this clip, from where, how), SRT and WebVTT.

Both are written to a temporary name and renamed, and before the clip itself is renamed into
place, so whoever sees ``stem.mp4`` appear finds its sidecars complete.
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Sequence
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from montaged.asr.formats import to_srt, to_vtt
from montaged.model import ClipPlan, CropPlan, MediaInfo, Word

SIDECAR_VERSION = 1


@functools.cache
def montage_version() -> str:
    """Read once: the package metadata does not change while the process runs, and a `ping` or a
    sidecar must not need a file descriptor when the daemon is out of them."""
    try:
        return version("montage")
    except PackageNotFoundError:
        return "unknown"


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through ``.path.tmp`` + rename; never leave half a file."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with tmp.open("w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def clip_words(words: Sequence[Word], start: float, end: float) -> list[Word]:
    """Words whose middle falls in ``[start, end)``: a word cut by the range edge goes to one side."""
    return [w for w in words if start <= (w.start + w.end) / 2 < end]


def srt_text(words: Sequence[Word], start: float) -> str:
    """Captions with times relative to the clip (the first frame is 00:00:00,000)."""
    return to_srt(words, offset=-start)


def vtt_text(words: Sequence[Word], start: float) -> str:
    """WebVTT captions with times relative to the clip."""
    return to_vtt(words, offset=-start)


def sidecar_dict(
    *,
    info: MediaInfo,
    plan: ClipPlan,
    start: float,
    end: float,
    crop: CropPlan | None,
    words: Sequence[Word],
    encoder: str,
    hardware: bool,
    width: int,
    height: int,
    fps: float,
    frames: int,
    timings: dict[str, float],
    extra: dict[str, Any] | None = None,
    loudness: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The sidecar document. Times in ``range``/``words`` are source media seconds; crop boxes
    are source pixels in display orientation with ``t`` in seconds from the clip start."""
    doc: dict[str, Any] = {
        "sidecar_version": SIDECAR_VERSION,
        "montage_version": montage_version(),
        "source": {
            "path": info.path,
            "content_hash": info.content_hash,
            "duration": info.duration,
            "width": info.width,
            "height": info.height,
            "rotation": info.rotation,
        },
        "clip": {"index": plan.index, "start": start, "end": end, "duration": end - start},
        "planned_range": {"start": plan.start, "end": plan.end},
        "score": plan.score,
        "reason": plan.reason,
        "features": dict(plan.features),
        "text": plan.text,
        "speakers": list(plan.speakers),
        "words": [w.to_dict() for w in words],
        "crop": {
            "layout": crop.layout if crop is not None else "centre",
            "confidence": crop.confidence if crop is not None else None,
            "notes": list(crop.notes) if crop is not None else [],
            "path": [b.to_dict() for b in crop.path] if crop is not None else [],
            "second_path": [b.to_dict() for b in crop.second_path] if crop is not None else [],
            # talk-wide face numbers seen in this clip and each speaker label's face with its
            # confidence (frame/identity.py); None when framing ran per clip or not at all
            "identity": crop.identity if crop is not None else None,
            # clip-time [start, end] stretches framed wide because two people on screen talk at once
            "wide": [list(w) for w in crop.wide] if crop is not None else [],
        },
        # the path the frames were cut along: t from the clip start, boxes in source pixels, linear
        # interpolation between entries (docs/framing.md); the lower pane's path is in crop.second_path
        "crop_path": [b.to_dict() for b in crop.path] if crop is not None else [],
        "output": {"width": width, "height": height, "fps": fps, "frames": frames},
        "encoder": {"name": encoder, "hardware": hardware},
        "timings": timings,
        "loudness": loudness,
    }
    if extra:
        doc.update(extra)
    return doc


def write_sidecars(json_path: Path, doc: dict[str, Any], captions: dict[Path, str]) -> None:
    """Caption files first, the JSON last: a sidecar on disk means its caption files are too."""
    for path, text in captions.items():
        write_atomic(path, text)
    write_atomic(json_path, json.dumps(doc, indent=2, ensure_ascii=False) + "\n")
