"""One sizing function: the cores this process may really use, split across Whisper, the
diarizer, framing (vision) and render, and the GPU memory the models need on CUDA.

Every number comes from the config when set there (``whisper.workers``, ``whisper.cpu_threads``,
``diarize.threads``, ``frame.workers``, ``render.workers``); a 0 means "size it here", from
:func:`montaged.hostlimits.cpu_limits` (affinity mask and cgroup quota), never from the host's
core count. Stages of different jobs run at the same time, so each stage may use the usable cores
on its own; what the plan guarantees is that none sizes itself past them. ``montaged check``
prints the plan.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from montaged.config import FrameConfig, Settings, WhisperConfig
from montaged.hostlimits import CpuLimits, GpuMemory, MemoryLimits, cpu_limits, gpu_memory, memory_limits

# Parameters (millions) of the Whisper models by name, for the GPU memory estimate (OpenAI's and
# the distil-whisper model cards).
WHISPER_PARAMS_M = {
    "tiny": 39, "base": 74, "small": 244, "medium": 769, "large": 1550,
    "large-v1": 1550, "large-v2": 1550, "large-v3": 1550, "large-v3-turbo": 809, "turbo": 809,
    "distil-small": 166, "distil-medium": 394, "distil-large-v2": 756, "distil-large-v3": 756,
}
# Bytes per parameter by CTranslate2 compute type; "default" on CUDA is float16.
_BYTES = {"float32": 4.0, "float16": 2.0, "bfloat16": 2.0, "int8_float16": 1.0, "int8": 1.0,
          "int8_float32": 1.0, "int8_bfloat16": 1.0, "default": 2.0, "auto": 2.0}
# Allowance per worker for the CUDA context, cuBLAS/cuDNN workspaces and activations beyond the
# weights. An estimate (the CUDA context alone takes a few hundred MiB), not measured here: the
# plan warns when the total exceeds the free memory, it does not refuse to start.
CUDA_OVERHEAD_MB = 600


@dataclass(frozen=True)
class ResourcePlan:
    cpu: CpuLimits
    memory: MemoryLimits | None
    whisper_device: str
    whisper_workers: int
    whisper_threads: int
    diarize_threads: int
    vision_workers: int
    vision_threads: int
    render_slots: int
    gpus: tuple[GpuMemory, ...] = ()
    gpu_need_mb: int | None = None
    """Estimated GPU memory the Whisper workers need (``None``: not on CUDA or model unknown)."""
    sources: dict[str, str] = field(default_factory=dict)
    """Per figure: ``config`` when set there, ``auto`` when sized here."""

    def warnings(self) -> list[str]:
        out = []
        if self.whisper_device == "cuda" and self.gpu_need_mb is not None and self.gpus:
            free = self.gpus[0].free_mb
            if self.gpu_need_mb > free:
                out.append(f"whisper: about {self.gpu_need_mb} MiB of GPU memory needed, {free} MiB free on "
                           f"GPU {self.gpus[0].index}; use a smaller model, compute_type = \"int8_float16\" "
                           "or fewer whisper.workers")
        if self.whisper_workers * self.whisper_threads > 2 * self.cpu.usable:
            out.append(f"whisper: {self.whisper_workers} workers x {self.whisper_threads} threads on "
                       f"{self.cpu.usable} usable cores oversubscribes them; lower whisper.workers")
        return out

    def lines(self) -> list[str]:
        """The plan as ``montaged check`` prints it."""
        quota = f"{self.cpu.quota:g}" if self.cpu.quota is not None else "none"
        s = self.sources
        out = [f"cores: {self.cpu.usable} usable (affinity {self.cpu.affinity}, cgroup quota {quota})",
               f"whisper: {self.whisper_workers} workers x {self.whisper_threads} threads on "
               f"{self.whisper_device} ({s.get('whisper', 'auto')})",
               f"diarize: {self.diarize_threads} threads ({s.get('diarize', 'auto')})",
               f"vision: {self.vision_workers} workers x {self.vision_threads} threads "
               f"({s.get('vision', 'auto')})",
               f"render: {self.render_slots} clips at once ({s.get('render', 'auto')})"]
        if self.memory is not None:
            limit = self.memory.cgroup_limit
            out.append(f"memory: {self.memory.available >> 20} MiB available"
                       + (f" (cgroup limit {limit >> 20} MiB)" if limit is not None else ""))
        for g in self.gpus:
            out.append(f"gpu {g.index}: {g.name}, {g.free_mb} of {g.total_mb} MiB free")
        if self.gpu_need_mb is not None:
            out.append(f"gpu: Whisper needs about {self.gpu_need_mb} MiB")
        return out + [f"warning: {w}" for w in self.warnings()]


def whisper_gpu_mb(model: str, compute_type: str, workers: int) -> int | None:
    """Estimated GPU memory of ``workers`` Whisper workers: weights by size and type, plus the
    per-worker CUDA overhead; ``None`` for a model whose size is not known (a path, a hub id)."""
    name = model.removesuffix(".en").split("/")[-1].removeprefix("faster-whisper-")
    params = WHISPER_PARAMS_M.get(name)
    if params is None:
        return None
    weights = params * _BYTES.get(compute_type, 2.0)  # MB, as parameters are in millions
    return workers * (round(weights * 1e6 / (1 << 20)) + CUDA_OVERHEAD_MB)


def whisper_size(cfg: WhisperConfig, device: str, cores: int) -> tuple[int, int]:
    """(workers, threads per worker): the config's, or sized to ``cores``. One worker on CUDA:
    more share one GPU without much gain (SYSTRAN/faster-whisper#100) and each holds its own
    model copy."""
    threads = cfg.cpu_threads or min(2, cores)
    return cfg.workers or (1 if device == "cuda" else max(1, cores // threads)), threads


def diarize_threads(cfg_threads: int, cores: int) -> int:
    """The config's threads, or half the cores, 1 to 2: the diarizer runs beside the Whisper
    workers and must not take their cores (on 2 cores, 1 thread cut the 10-minute benchmark's
    transcribe stage from 49 to 42 s; diarization still ended first)."""
    return cfg_threads or max(1, min(2, cores // 2))


def vision_size(cfg: FrameConfig, cores: int) -> tuple[int, int]:
    """(framing processes, OpenCV threads each): a process per clip in flight, at most 4 (a job
    rarely has more clips at once), and the cores shared between them."""
    workers = cfg.workers or max(1, min(4, cores))
    return workers, max(1, cores // workers)


def plan_resources(settings: Settings, cpu: CpuLimits, *, memory: MemoryLimits | None = None,
                   gpus: Sequence[GpuMemory] = (), device: str | None = None) -> ResourcePlan:
    """Size every pool from the config and the limits given (pure: :func:`probe_plan` reads them).

    ``device`` is Whisper's resolved device; by default ``whisper.device``, with ``auto`` meaning
    CUDA when ``gpus`` is not empty.
    """
    cores = cpu.usable
    w, d, f, r = settings.whisper, settings.diarize, settings.frame, settings.render
    if device is None:
        device = w.device if w.device != "auto" else ("cuda" if gpus else "cpu")
    whisper_workers, whisper_threads = whisper_size(w, device, cores)
    vision_workers, vision_threads = vision_size(f, cores)
    render_slots = r.workers or max(1, cores // 2)
    sources = {"whisper": "config" if w.workers or w.cpu_threads else "auto",
               "diarize": "config" if d.threads else "auto",
               "vision": "config" if f.workers else "auto",
               "render": "config" if r.workers else "auto"}
    need = whisper_gpu_mb(w.model, w.compute_type, whisper_workers) if device == "cuda" else None
    return ResourcePlan(cpu=cpu, memory=memory, whisper_device=device, whisper_workers=whisper_workers,
                        whisper_threads=whisper_threads, diarize_threads=diarize_threads(d.threads, cores),
                        vision_workers=vision_workers, vision_threads=vision_threads,
                        render_slots=render_slots, gpus=tuple(gpus), gpu_need_mb=need, sources=sources)


def probe_plan(settings: Settings) -> ResourcePlan:
    """The plan for this process on this machine (reads affinity, cgroups, nvidia-smi). Whisper's
    device is resolved as its pool resolves it (CTranslate2's CUDA device count), so the plan
    and the pool agree."""
    from montaged.asr.whisper_worker import resolve_device

    device = resolve_device(settings.whisper.device)
    gpus = gpu_memory() if device == "cuda" else []
    return plan_resources(settings, cpu_limits(), memory=memory_limits(), gpus=gpus, device=device)


def usable_cores() -> int:
    """Cores this process may use (affinity mask cut to the cgroup quota), for a pool that a
    one-shot command or a test starts without a plan."""
    return cpu_limits().usable
