"""What this process may really use: cores (affinity and cgroup CPU quota), memory (cgroup limit
aware) and GPU memory.

``os.cpu_count()`` reports the host's cores; a container limited to 2 CPUs on a 64-core node that
sizes its pools from it starts 32 Whisper workers and thrashes. The affinity mask (taskset,
systemd ``CPUAffinity=``, Kubernetes static CPU manager) and the cgroup quota (``CPUQuota=``,
``--cpus``, a pod's CPU limit) are what count; the same holds for memory, where a pod's limit is
far below ``MemAvailable`` of the node. cgroup v2 and v1 are read; every limit of the cgroup's
ancestors applies too, so the tightest along the path wins.
"""

from __future__ import annotations

import math
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

ROOT = Path("/")


@dataclass(frozen=True)
class CpuLimits:
    affinity: int
    """Cores in this process's affinity mask."""
    quota: float | None
    """The cgroup CPU quota in cores (``cpu.max`` quota / period), ``None`` when unlimited."""

    @property
    def usable(self) -> int:
        """Whole cores to size pools for: the mask, cut to the quota rounded up (at least 1)."""
        if self.quota is None:
            return self.affinity
        return max(1, min(self.affinity, math.ceil(self.quota - 1e-9)))


@dataclass(frozen=True)
class MemoryLimits:
    host_available: int
    """``MemAvailable`` of /proc/meminfo, in bytes."""
    cgroup_limit: int | None
    """The tightest ``memory.max`` along the cgroup path, ``None`` when unlimited."""
    cgroup_used: int | None
    """What the cgroup uses now, less its reclaimable page cache (inactive files)."""

    @property
    def available(self) -> int:
        """Bytes this process can still allocate before the host or its cgroup runs out."""
        if self.cgroup_limit is None or self.cgroup_used is None:
            return self.host_available
        return max(0, min(self.host_available, self.cgroup_limit - self.cgroup_used))


@dataclass(frozen=True)
class GpuMemory:
    index: int
    name: str
    total_mb: int
    free_mb: int


def _cgroup_paths(root: Path) -> dict[str, str]:
    """Controller (``""`` for cgroup v2) → this process's cgroup path, from /proc/self/cgroup."""
    paths: dict[str, str] = {}
    try:
        text = (root / "proc/self/cgroup").read_text()
    except OSError:
        return paths
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) == 3:
            for controller in parts[1].split(","):
                paths[controller] = parts[2]
    return paths


def _v2_dirs(root: Path) -> list[Path]:
    """This process's cgroup v2 directory and its ancestors up to the mount, leaf first."""
    mount = root / "sys/fs/cgroup"
    if not (mount / "cgroup.controllers").exists():
        return []
    rel = _cgroup_paths(root).get("", "/").strip("/")
    leaf = mount / rel if rel else mount
    if not leaf.is_dir():  # a cgroup namespace shows the container's cgroup as the root
        leaf = mount
    dirs = [leaf]
    while dirs[-1] != mount:
        dirs.append(dirs[-1].parent)
    return dirs


def _v1_dirs(root: Path, controller: str, names: tuple[str, ...]) -> list[Path]:
    """This process's cgroup v1 directory for ``controller`` and its ancestors, leaf first."""
    rel = _cgroup_paths(root).get(controller, "/").strip("/")
    for name in names:
        mount = root / "sys/fs/cgroup" / name
        if not mount.is_dir():
            continue
        leaf = mount / rel if rel and (mount / rel).is_dir() else mount
        dirs = [leaf]
        while dirs[-1] != mount:
            dirs.append(dirs[-1].parent)
        return dirs
    return []


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def cpu_quota(root: Path = ROOT) -> float | None:
    """The tightest CPU quota in cores along this process's cgroup path; ``None``: unlimited."""
    quotas: list[float] = []
    for d in _v2_dirs(root):
        value = _read(d / "cpu.max")
        if value:
            quota, _, period = value.partition(" ")
            if quota != "max" and period:
                quotas.append(int(quota) / int(period))
    if not quotas:
        for d1 in _v1_dirs(root, "cpu", ("cpu", "cpu,cpuacct", "cpuacct,cpu")):
            quota_us, period_us = _read(d1 / "cpu.cfs_quota_us"), _read(d1 / "cpu.cfs_period_us")
            if quota_us and period_us and int(quota_us) > 0:
                quotas.append(int(quota_us) / int(period_us))
    return min(quotas) if quotas else None


def cpu_limits(root: Path = ROOT) -> CpuLimits:
    try:
        affinity = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        affinity = os.cpu_count() or 1
    return CpuLimits(affinity=max(1, affinity), quota=cpu_quota(root))


def _meminfo(root: Path) -> dict[str, int]:
    out: dict[str, int] = {}
    for line in (_read(root / "proc/meminfo") or "").splitlines():
        key, _, rest = line.partition(":")
        fields = rest.split()
        if fields and fields[0].isdigit():
            out[key] = int(fields[0]) * (1024 if fields[1:] == ["kB"] else 1)
    return out


def _stat_value(path: Path, key: str) -> int:
    for line in (_read(path) or "").splitlines():
        name, _, value = line.partition(" ")
        if name == key and value.isdigit():
            return int(value)
    return 0


def memory_limits(root: Path = ROOT) -> MemoryLimits:
    info = _meminfo(root)
    host = info.get("MemAvailable", info.get("MemFree", 0))
    limits: list[int] = []
    used: int | None = None
    dirs = _v2_dirs(root)
    for d in dirs:
        value = _read(d / "memory.max")
        if value and value != "max":
            limits.append(int(value))
    if dirs and limits:
        current = _read(dirs[0] / "memory.current")
        if current is not None:
            used = int(current) - _stat_value(dirs[0] / "memory.stat", "inactive_file")
    elif v1 := _v1_dirs(root, "memory", ("memory",)):
        for d1 in v1:
            value = _read(d1 / "memory.limit_in_bytes")
            # v1 reports "unlimited" as a huge number (PAGE_COUNTER_MAX pages).
            if value and int(value) < min(1 << 62, info.get("MemTotal", 1 << 62)):
                limits.append(int(value))
        usage = _read(v1[0] / "memory.usage_in_bytes")
        if limits and usage is not None:
            used = int(usage) - _stat_value(v1[0] / "memory.stat", "total_inactive_file")
    return MemoryLimits(host_available=host, cgroup_limit=min(limits) if limits else None,
                        cgroup_used=max(0, used) if used is not None else None)


def gpu_memory(timeout: float = 10.0) -> list[GpuMemory]:
    """Memory of the NVIDIA GPUs this process may use (``CUDA_VISIBLE_DEVICES`` honoured); empty
    without nvidia-smi or a working driver. Asks nvidia-smi so the daemon does not import torch."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return []
    try:
        proc = subprocess.run(
            [exe, "--query-gpu=index,name,memory.total,memory.free", "--format=csv,noheader,nounits"],
            capture_output=True, text=True, timeout=timeout, check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return []
    if proc.returncode != 0:
        return []
    gpus = parse_gpu_csv(proc.stdout)
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None and all(v.strip().isdigit() for v in visible.split(",") if v.strip()):
        wanted = [int(v) for v in visible.split(",") if v.strip()]
        gpus = [g for i in wanted for g in gpus if g.index == i]
    return gpus


def parse_gpu_csv(text: str) -> list[GpuMemory]:
    """``index, name, total MiB, free MiB`` lines as nvidia-smi prints them; odd lines skipped."""
    out = []
    for line in text.splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) == 4 and parts[0].isdigit() and parts[2].isdigit() and parts[3].isdigit():
            out.append(GpuMemory(int(parts[0]), parts[1], int(parts[2]), int(parts[3])))
    return out
