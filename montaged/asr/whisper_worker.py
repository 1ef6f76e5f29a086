"""Code that runs inside a Whisper worker process (top-level functions, picklable by reference).

The pool initializer loads the model once per process; each call then transcribes one window
and returns plain data (never faster-whisper objects, which hold references to the model).
A load failure is raised from the initializer as :class:`ModelError`: the pool shell
(procpool.py) fails the pool start with it, and every later call on that worker.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any, TypedDict

import numpy as np

from montaged.errors import ModelError


class WordDict(TypedDict):
    text: str
    start: float  # media time, seconds
    end: float
    probability: float


class WindowResult(TypedDict):
    words: list[WordDict]
    language: str
    pid: int
    loads: int  # how many times this process has loaded a model; 1 in a healthy pool
    seconds: float  # wall time of this call


@dataclass(frozen=True)
class LoadOptions:
    """How a worker builds its ``WhisperModel``."""

    model: str  # local CTranslate2 folder (from models.resolve) or a faster-whisper name
    device: str  # "cpu" | "cuda" (already resolved from "auto")
    compute_type: str  # already resolved from "default"
    cpu_threads: int


@dataclass(frozen=True)
class DecodeOptions:
    beam_size: int = 1
    language: str | None = "en"
    # Each window is decoded on its own, in parallel with its neighbours, so there is no
    # previous text to condition on; off also stops one window's hallucination spreading.
    condition_on_previous_text: bool = False


def resolve_device(device: str) -> str:
    """``auto`` → ``cuda`` when CTranslate2 sees a CUDA device, else ``cpu``."""
    if device != "auto":
        return device
    import ctranslate2

    try:
        return "cuda" if ctranslate2.get_cuda_device_count() > 0 else "cpu"
    except Exception:  # a CUDA runtime that cannot even count devices means: no usable GPU
        return "cpu"


def resolve_compute_type(compute_type: str, device: str) -> str:
    """``default`` → int8 on CPU (4× smaller, fast on AVX2), float16 on CUDA."""
    if compute_type != "default":
        return compute_type
    return "float16" if device == "cuda" else "int8"


_model: Any = None
_loads = 0


def init_worker(opts: LoadOptions) -> None:
    """Pool initializer: load the model once for the life of this process."""
    global _model, _loads
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    from montaged.logging import setup_worker

    setup_worker()
    try:
        from faster_whisper import WhisperModel

        _model = WhisperModel(
            opts.model, device=opts.device, compute_type=opts.compute_type, cpu_threads=opts.cpu_threads
        )
        if opts.device == "cuda":  # CTranslate2 loads cuBLAS lazily: fail the pool start, not a job
            segments, _ = _model.transcribe(np.zeros(16000, np.float32), language="en", beam_size=1)
            list(segments)
        _loads += 1
    except Exception as e:
        raise ModelError(
            f"cannot load Whisper model {opts.model!r} on {opts.device}/{opts.compute_type}: {e}."
            " Check whisper.model/device/compute_type, or run `montaged models verify`."
            " On CUDA, CTranslate2's wheels need CUDA 12 cuBLAS: pip install nvidia-cublas-cu12"
            " and put its lib folder on LD_LIBRARY_PATH (docs/gpu.md)"
        ) from None


def ping() -> dict[str, Any]:
    """Called once per worker at pool start: which process, and how often it loaded a model."""
    return {"pid": os.getpid(), "loads": _loads}


def transcribe_window(samples: np.ndarray, offset: float, opts: DecodeOptions) -> WindowResult:
    """Transcribe one window of 16 kHz mono float32 audio that starts at ``offset`` media seconds."""
    if _model is None:
        raise RuntimeError("transcribe_window called outside a WhisperPool worker (no model loaded)")
    started = time.perf_counter()
    segments, info = _model.transcribe(
        np.ascontiguousarray(samples, dtype=np.float32),
        beam_size=opts.beam_size,
        language=opts.language,
        word_timestamps=True,
        condition_on_previous_text=opts.condition_on_previous_text,
        vad_filter=False,  # windows are already cut at VAD silences by the parent
    )
    words: list[WordDict] = []
    for seg in list(segments):  # segments is a lazy generator: decoding happens here
        for w in seg.words or ():
            text = w.word.strip()
            if text:
                words.append(
                    WordDict(
                        text=text,
                        start=round(offset + float(w.start), 3),
                        end=round(offset + float(w.end), 3),
                        probability=round(float(w.probability), 4),
                    )
                )
    return WindowResult(
        words=words,
        language=info.language,
        pid=os.getpid(),
        loads=_loads,
        seconds=round(time.perf_counter() - started, 3),
    )
