"""Cores, memory and GPU memory this process may use, the sizing plan, and the memory guard.

The cgroup readers run on small trees laid out like /proc and /sys/fs/cgroup of a pod (cgroup
v2), a Docker container (v1) and an unlimited host, and once on this machine for real.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import anyio
import pytest

from montaged.config import Settings, load
from montaged.hostlimits import (
    CpuLimits,
    GpuMemory,
    MemoryLimits,
    cpu_limits,
    cpu_quota,
    memory_limits,
    parse_gpu_csv,
)
from montaged.memory_guard import MIB, MemoryGuard
from montaged.resources_plan import plan_resources, probe_plan, whisper_gpu_mb

GIB = 1 << 30


def _tree(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


MEMINFO = "MemTotal:       65536000 kB\nMemFree:         1000000 kB\nMemAvailable:   32000000 kB\n"


def test_cgroup_v2_pod_takes_the_tightest_limit_on_its_path(tmp_path: Path) -> None:
    cg = "sys/fs/cgroup"
    root = _tree(tmp_path, {
        "proc/self/cgroup": "0::/kubepods/pod1/ctr\n",
        "proc/meminfo": MEMINFO,
        f"{cg}/cgroup.controllers": "cpu memory\n",
        f"{cg}/kubepods/cpu.max": "max 100000\n",
        f"{cg}/kubepods/pod1/cpu.max": "250000 100000\n",        # the pod: 2.5 CPUs
        f"{cg}/kubepods/pod1/ctr/cpu.max": "max 100000\n",
        f"{cg}/kubepods/pod1/memory.max": f"{4 * GIB}\n",
        f"{cg}/kubepods/pod1/ctr/memory.max": "max\n",
        f"{cg}/kubepods/pod1/ctr/memory.current": f"{3 * GIB}\n",
        f"{cg}/kubepods/pod1/ctr/memory.stat": f"anon 100\ninactive_file {GIB // 2}\n",
    })
    assert cpu_quota(root) == 2.5
    mem = memory_limits(root)
    assert mem.cgroup_limit == 4 * GIB and mem.cgroup_used == 3 * GIB - GIB // 2
    assert mem.host_available == 32_000_000 * 1024
    assert mem.available == 4 * GIB - (3 * GIB - GIB // 2)  # the cgroup, not the host, is short


def test_cgroup_v2_namespace_sees_its_cgroup_as_the_root(tmp_path: Path) -> None:
    root = _tree(tmp_path, {
        "proc/self/cgroup": "0::/\n",
        "proc/meminfo": MEMINFO,
        "sys/fs/cgroup/cgroup.controllers": "cpu memory\n",
        "sys/fs/cgroup/cpu.max": "150000 100000\n",
        "sys/fs/cgroup/memory.max": "max\n",
    })
    assert cpu_quota(root) == 1.5
    assert memory_limits(root).cgroup_limit is None
    assert memory_limits(root).available == 32_000_000 * 1024


def test_cgroup_v1_container(tmp_path: Path) -> None:
    root = _tree(tmp_path, {
        "proc/self/cgroup": "7:memory:/docker/abc\n4:cpu,cpuacct:/docker/abc\n1:name=systemd:/docker/abc\n",
        "proc/meminfo": MEMINFO,
        "sys/fs/cgroup/cpu,cpuacct/docker/abc/cpu.cfs_quota_us": "50000\n",
        "sys/fs/cgroup/cpu,cpuacct/docker/abc/cpu.cfs_period_us": "100000\n",
        "sys/fs/cgroup/memory/docker/abc/memory.limit_in_bytes": f"{GIB}\n",
        "sys/fs/cgroup/memory/docker/abc/memory.usage_in_bytes": f"{800 * MIB}\n",
        "sys/fs/cgroup/memory/docker/abc/memory.stat": f"cache 5\ntotal_inactive_file {100 * MIB}\n",
    })
    assert cpu_quota(root) == 0.5
    assert memory_limits(root).available == GIB - 700 * MIB
    # A limit set on the parent (the leaf is unlimited) binds too.
    _tree(root, {"sys/fs/cgroup/memory/docker/abc/memory.limit_in_bytes": "9223372036854771712\n",
                 "sys/fs/cgroup/memory/docker/memory.limit_in_bytes": f"{GIB}\n",
                 "sys/fs/cgroup/memory/memory.limit_in_bytes": "9223372036854771712\n"})
    assert memory_limits(root).cgroup_limit == GIB


def test_unlimited_and_absent_cgroups(tmp_path: Path) -> None:
    v1 = _tree(tmp_path / "v1", {
        "proc/self/cgroup": "4:cpu,cpuacct:/\n7:memory:/\n",
        "proc/meminfo": MEMINFO,
        "sys/fs/cgroup/cpu,cpuacct/cpu.cfs_quota_us": "-1\n",
        "sys/fs/cgroup/cpu,cpuacct/cpu.cfs_period_us": "100000\n",
        "sys/fs/cgroup/memory/memory.limit_in_bytes": "9223372036854771712\n",
    })
    assert cpu_quota(v1) is None and memory_limits(v1).cgroup_limit is None
    bare = _tree(tmp_path / "bare", {"proc/meminfo": MEMINFO})
    assert cpu_quota(bare) is None
    assert memory_limits(bare) == MemoryLimits(32_000_000 * 1024, None, None)


@pytest.mark.parametrize(("affinity", "quota", "usable"),
                         [(8, None, 8), (8, 2.5, 3), (8, 2.0, 2), (8, 0.5, 1), (2, 16.0, 2)])
def test_usable_cores(affinity: int, quota: float | None, usable: int) -> None:
    assert CpuLimits(affinity, quota).usable == usable


def test_this_machine() -> None:
    cpu = cpu_limits()
    assert 1 <= cpu.usable <= cpu.affinity == len(os.sched_getaffinity(0))
    mem = memory_limits()
    assert 0 < mem.available <= mem.host_available


def test_nvidia_smi_lines() -> None:
    text = "0, NVIDIA H100 80GB HBM3, 81559, 80994\n1, NVIDIA L4, 23034, 22000\n[N/A] garbage\n"
    assert parse_gpu_csv(text) == [GpuMemory(0, "NVIDIA H100 80GB HBM3", 81559, 80994),
                                   GpuMemory(1, "NVIDIA L4", 23034, 22000)]


# ---- the plan ----------------------------------------------------------------------------------

@pytest.fixture
def settings_for(tmp_path: Path) -> Iterator[Callable[..., Settings]]:
    empty = tmp_path / "empty.toml"
    empty.write_text("")

    def make(**env: str) -> Settings:
        return load(empty, env={"HOME": str(tmp_path), **env})

    yield make


def test_plan_sizes_from_the_usable_cores_not_the_host(settings_for: Callable[..., Settings]) -> None:
    s = settings_for(MONTAGE_WHISPER__DEVICE="cpu")
    plan = plan_resources(s, CpuLimits(affinity=64, quota=1.5))  # a 1.5-CPU pod on a 64-core node
    assert (plan.whisper_workers, plan.whisper_threads) == (1, 2)
    assert (plan.diarize_threads, plan.vision_workers, plan.vision_threads, plan.render_slots) == (1, 2, 1, 1)
    plan = plan_resources(s, CpuLimits(affinity=8, quota=None))
    assert (plan.whisper_workers, plan.whisper_threads) == (4, 2)
    assert (plan.diarize_threads, plan.vision_workers, plan.vision_threads, plan.render_slots) == (2, 4, 2, 4)
    assert set(plan.sources.values()) == {"auto"}
    assert plan.lines()[0] == "cores: 8 usable (affinity 8, cgroup quota none)"


def test_config_overrides_win(settings_for: Callable[..., Settings]) -> None:
    s = settings_for(MONTAGE_WHISPER__DEVICE="cpu", MONTAGE_WHISPER__WORKERS="3",
                     MONTAGE_WHISPER__CPU_THREADS="1", MONTAGE_DIARIZE__THREADS="4",
                     MONTAGE_FRAME__WORKERS="2", MONTAGE_RENDER__WORKERS="5")
    plan = plan_resources(s, CpuLimits(affinity=2, quota=None))
    assert (plan.whisper_workers, plan.whisper_threads, plan.diarize_threads) == (3, 1, 4)
    assert (plan.vision_workers, plan.vision_threads, plan.render_slots) == (2, 1, 5)
    assert set(plan.sources.values()) == {"config"}
    assert "(config)" in plan.lines()[1]


def test_gpu_plan_estimates_whisper_memory(settings_for: Callable[..., Settings]) -> None:
    gpu = GpuMemory(0, "NVIDIA L4", 23034, 22000)
    plan = plan_resources(settings_for(MONTAGE_WHISPER__MODEL="large-v3"), CpuLimits(16, None), gpus=[gpu])
    assert plan.whisper_device == "cuda" and plan.whisper_workers == 1
    assert plan.gpu_need_mb == whisper_gpu_mb("large-v3", "default", 1) == 2956 + 600
    assert plan.warnings() == []
    small = GpuMemory(0, "tiny card", 4096, 2000)
    plan = plan_resources(settings_for(MONTAGE_WHISPER__MODEL="large-v3"), CpuLimits(16, None), gpus=[small])
    assert len(plan.warnings()) == 1 and "2000 MiB free" in plan.warnings()[0]
    assert whisper_gpu_mb("base.en", "int8_float16", 2) == 2 * (71 + 600)
    assert whisper_gpu_mb("/models/my-whisper", "default", 1) is None
    # No GPU seen: auto means the CPU.
    assert plan_resources(settings_for(), CpuLimits(4, None)).whisper_device == "cpu"


def test_probe_plan_on_this_machine(settings_for: Callable[..., Settings]) -> None:
    plan = probe_plan(settings_for(MONTAGE_WHISPER__DEVICE="cpu"))
    assert plan.whisper_workers * plan.whisper_threads <= 2 * plan.cpu.usable
    text = "\n".join(plan.lines())
    assert "usable" in text and "memory:" in text and "warning" not in text


# ---- the memory guard --------------------------------------------------------------------------

def _probe(values_mib: list[int]) -> Callable[[], MemoryLimits]:
    it = iter(values_mib)
    return lambda: MemoryLimits(host_available=next(it) * MIB, cgroup_limit=None, cgroup_used=None)


def test_guard_pauses_below_and_resumes_above_with_hysteresis() -> None:
    seen: list[tuple[bool, int]] = []
    guard = MemoryGuard(1024, 2048, probe=_probe([4000, 1500, 900, 1500, 2000, 2100, 1100]),
                        on_change=lambda p, a: seen.append((p, a // MIB)))
    assert [guard.check() for _ in range(7)] == [False, False, True, True, True, False, False]
    assert seen[2] == (True, 900) and seen[5] == (False, 2100)


def test_guard_off_and_bad_marks() -> None:
    guard = MemoryGuard(0, 0, probe=_probe([]))
    assert not guard.enabled and guard.check() is False  # never probes
    with pytest.raises(ValueError, match="pause_below_mb <= resume_above_mb"):
        MemoryGuard(2048, 1024)


@pytest.mark.anyio
async def test_guard_loop_follows_real_memory() -> None:
    """On this machine: a mark above what is free pauses, one far below never does."""
    high = MemoryGuard(1 << 40 >> 20, 1 << 41 >> 20)  # 1 TiB
    low = MemoryGuard(1, 2)
    async with anyio.create_task_group() as tg:
        tg.start_soon(high.run, 0.01)
        tg.start_soon(low.run, 0.01)
        await anyio.sleep(0.2)  # a sample each at once, then every 10 ms
        tg.cancel_scope.cancel()
    assert high.available is not None and low.available is not None
    assert high.paused and not low.paused


def test_montaged_check_prints_the_plan_with_overrides(settings_for: Callable[..., Settings],
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    from montaged.cli.check import _print_plan

    _print_plan(settings_for(MONTAGE_WHISPER__DEVICE="cpu", MONTAGE_RENDER__WORKERS="3"))
    out = capsys.readouterr().out
    assert "resource plan" in out and "usable (affinity" in out
    assert "render: 3 clips at once (config)" in out and "diarize: " in out and "(auto)" in out
