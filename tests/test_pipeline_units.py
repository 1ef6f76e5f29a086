"""The pipeline alone, with fake stages that take milliseconds, over an embedded SQLite store:
drain, cancel, release with the stage reached, resume from stored results, the error that decides
a job's outcome, and back-pressure at the queue bounds. No pools, no media, no models."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import pytest

from montaged.config import Settings, load
from montaged.errors import DiskFullError, LeaseLost, MediaError, StoreUnavailable
from montaged.events import EventBus
from montaged.model import STAGES, ClipPlan, Job, JobEvent, JobSpec, JobState, MediaInfo, Transcript
from montaged.pipeline import Pipeline, decisive_error
from montaged.select.features import AudioFeatureTrack
from montaged.stages.background import Abandoned, Pending
from montaged.stages.context import JobContext
from montaged.stages.contract import Progress, Stage, check_stages
from montaged.stages.results import Framing, Heard, Rendered, Selection, Turns
from montaged.store import JobStore
from montaged.store.sqlite import SqliteStore

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(30)]

Hook = Callable[[JobContext], Awaitable[None]]


@dataclass
class FakeResources:
    """What the pipeline asks of resources, and a log of what the fake stages did."""

    ran: list[tuple[str, str]] = field(default_factory=list)  # (job id, stage) as each stage ends
    computed: list[tuple[str, str]] = field(default_factory=list)  # stages that found nothing stored

    async def job_cost(self, job_id: str) -> float:
        return 0.0


def _result(ctx: JobContext, name: str) -> None:
    """Set the typed result a stage of this name hands on (what the finished record reads)."""
    r = ctx.results
    if name == "probe":
        r.media = MediaInfo(path=str(ctx.source), content_hash="h" + ctx.id[:8], size_bytes=1, duration=10.0,
                            container="mp4", has_audio=True, has_video=False)
    elif name == "transcribe":
        transcript = Transcript(words=(), language="en", engine="whisper", model="fake", duration=10.0)
        r.heard = Heard("k-heard", transcript, AudioFeatureTrack().finish())
    elif name == "diarize":
        r.turns = Turns("k-turns", (), ctx.need_heard().transcript)
    elif name == "select":
        clip = ClipPlan(index=0, start=1.0, end=5.0, score=1.0, features={}, reason="fake", text="")
        r.selection = Selection("k-select", (clip,))
    elif name == "frame":
        r.framing = Framing((None,))
    elif name == "render":
        r.rendered = Rendered(())


def fake_stages(hooks: dict[str, Hook] | None = None, *, stored: bool = False) -> list[Stage[FakeResources]]:
    """One fake per stored stage name. ``hooks[name](ctx)`` runs inside that stage (to block it,
    fail it, start side work); with ``stored`` each stage first looks for its stored result and
    stores it once computed, as the real stages do."""
    hooks = hooks or {}

    def make(name: str) -> Stage[FakeResources]:
        async def run(ctx: JobContext, res: FakeResources, progress: Progress) -> None:
            key = f"{ctx.id}:{name}"
            if not (stored and await ctx.lease.store.get_result(name, key) is not None):
                if name in hooks:
                    await hooks[name](ctx)
                progress(0.5)
                res.computed.append((ctx.id, name))
                if stored:
                    await ctx.lease.put_result(name, key, {"done": True})
            _result(ctx, name)
            res.ran.append((ctx.id, name))

        return Stage(name, run, needs=(), weight=1 / len(STAGES))

    return [make(n) for n in STAGES]


def settings(tmp_path: Path, **daemon: Any) -> Settings:
    return load(Path("/dev/null"), env={}, paths={"state_dir": str(tmp_path / "state")},
                daemon={"poll_seconds": 0.02, "stage_queue_size": 1, **daemon})


@asynccontextmanager
async def sqlite_store(tmp_path: Path) -> AsyncIterator[JobStore]:
    store = SqliteStore(f"sqlite:///{tmp_path / 'montage.db'}")
    await store.migrate()
    try:
        yield store
    finally:
        await store.close()


async def submit(store: JobStore, n: int = 1) -> list[str]:
    return [(await store.submit(JobSpec(source=f"/talks/{i}.mp4", origin="cli"))).id for i in range(n)]


@dataclass
class Run:
    """A pipeline running in a task group, with every event it published."""

    pipeline: Pipeline[FakeResources]
    events: list[JobEvent]

    def kinds(self, job_id: str) -> list[str]:
        return [str(e.kind) for e in self.events if e.job_id == job_id]


@asynccontextmanager
async def running(
    s: Settings, store: JobStore, stages: list[Stage[FakeResources]], res: FakeResources, ids: list[str]
) -> AsyncIterator[Run]:
    bus = EventBus(buffer=10_000)
    run = Run(Pipeline(s, store, bus, res, stages, only=ids), [])

    async def collect() -> None:
        async with bus.subscribe() as events:
            async for event in events:
                run.events.append(event)

    async with anyio.create_task_group() as tg:
        tg.start_soon(collect)
        await anyio.lowlevel.checkpoint()  # subscribed before the first claim
        await tg.start(run.pipeline.run)
        yield run
        with anyio.fail_after(10):
            await run.pipeline.done.wait()
        tg.cancel_scope.cancel()


async def job(store: JobStore, job_id: str) -> Job:
    found = await store.get(job_id)
    assert found is not None
    return found


def blocker() -> tuple[anyio.Event, anyio.Event, Hook]:
    """A hook that says it was entered and waits until let go."""
    entered, go = anyio.Event(), anyio.Event()

    async def hook(ctx: JobContext) -> None:
        entered.set()
        await go.wait()

    return entered, go, hook


# ---- the contract -------------------------------------------------------------------------------


def test_stage_lists_the_pipeline_cannot_run_are_refused() -> None:
    async def nothing(ctx: JobContext, res: FakeResources, progress: Progress) -> None:
        return None

    with pytest.raises(ValueError, match="at least one"):
        check_stages([])
    with pytest.raises(ValueError, match="listed twice"):
        check_stages([Stage("probe", nothing), Stage("probe", nothing)])
    with pytest.raises(ValueError, match=r"needs \['select'\], which must come before it"):
        check_stages([Stage("probe", nothing), Stage("frame", nothing, ("select",)),
                      Stage("select", nothing)])


# ---- a job through every stage --------------------------------------------------------------------


async def test_a_job_runs_every_stage_in_order_and_finishes(tmp_path: Path) -> None:
    res = FakeResources()
    async with sqlite_store(tmp_path) as store:
        ids = await submit(store)
        async with running(settings(tmp_path), store, fake_stages(), res, ids) as run:
            pass
        done = await job(store, ids[0])
    assert done.state is JobState.DONE
    assert [stage for _, stage in res.ran] == list(STAGES)
    kinds = run.kinds(ids[0])
    assert kinds[0] == "job.claimed" and kinds[-1] == "job.done"
    assert [e.data["stage"] for e in run.events if e.kind == "job.stage"] == list(STAGES)
    # progress is bound to the job and stage: a stage's 0.5 is half its share of the job; the
    # pipeline says 1.0 as each stage ends (fractions below 1 are rate-limited, those are not)
    progress = [(e.data["stage"], e.data["stage_progress"], e.data["progress"])
                for e in run.events if e.kind == "job.progress"]
    assert progress[0] == ("probe", 0.5, pytest.approx(0.5 / len(STAGES), abs=1e-4))
    ends = [(stage, total) for stage, fraction, total in progress if fraction == 1.0]
    assert ends == [(s, pytest.approx((i + 1) / len(STAGES), abs=1e-4)) for i, s in enumerate(STAGES)]


async def test_the_live_claim_says_what_the_store_recorded_a_takeover_included(tmp_path: Path) -> None:
    """A claim that takes over a crashed worker's lapsed lease names that worker on the bus too."""
    async with sqlite_store(tmp_path) as store:
        ids = await submit(store)
        assert await store.claim("crashed", 0.0) is not None  # its lease lapses at once
        async with running(settings(tmp_path), store, fake_stages(), FakeResources(), ids) as run:
            pass
        stored = [e.data for e in await store.events(ids[0]) if e.kind == "job.claimed"]
    live = [e.data for e in run.events if e.kind == "job.claimed"]
    assert live == stored[1:] and live[0]["took_over_from"] == "crashed"


# ---- drain, cancel, release ---------------------------------------------------------------------------


async def test_drain_lets_the_running_stage_finish_and_releases_before_the_next(tmp_path: Path) -> None:
    entered, go, hook = blocker()
    res = FakeResources()
    async with sqlite_store(tmp_path) as store:
        ids = await submit(store, 2)
        s = settings(tmp_path, stage_workers={"transcribe": 1}, concurrent_jobs=1)
        async with running(s, store, fake_stages({"transcribe": hook}), res, ids) as run:
            await entered.wait()
            run.pipeline.drain()
            go.set()  # the stage in progress finishes; the job leaves at the next boundary
        first, second = await job(store, ids[0]), await job(store, ids[1])
    assert (first.state, first.stopped_at) == (JobState.QUEUED, "diarize")
    assert (second.state, second.attempts) == (JobState.QUEUED, 0)  # never claimed: drained first
    assert [stage for _, stage in res.ran] == ["probe", "transcribe"]
    assert run.kinds(ids[0])[-1] == "job.released"


async def test_a_job_interrupted_mid_stage_is_released_with_the_stage_it_was_in(tmp_path: Path) -> None:
    entered, _, hook = blocker()
    res = FakeResources()
    async with sqlite_store(tmp_path) as store:
        ids = await submit(store)
        bus = EventBus()
        pipeline = Pipeline(settings(tmp_path), store, bus, res, fake_stages({"select": hook}), only=ids)
        async with anyio.create_task_group() as tg:
            tg.start_soon(pipeline.run)
            await entered.wait()
            tg.cancel_scope.cancel()  # the grace period is over: the daemon cancels the pipeline
        interrupted = await job(store, ids[0])
    assert (interrupted.state, interrupted.stopped_at) == (JobState.QUEUED, "select")
    assert [stage for _, stage in res.ran] == ["probe", "transcribe", "diarize"]


async def test_cancel_stops_the_stage_and_the_work_it_started_for_later_stages(tmp_path: Path) -> None:
    entered, _, hook = blocker()
    side: list[Pending[None]] = []

    async def start_side_work(ctx: JobContext) -> None:
        assert ctx.side is not None
        side.append(ctx.side.start(anyio.sleep_forever))

    res = FakeResources()
    async with sqlite_store(tmp_path) as store:
        ids = await submit(store)
        stages = fake_stages({"transcribe": start_side_work, "diarize": hook})
        async with running(settings(tmp_path), store, stages, res, ids) as run:
            await entered.wait()
            assert not side[0].done  # still running beside the diarize stage
            await store.cancel(ids[0])
            assert run.pipeline.cancel_job(ids[0])
        cancelled = await job(store, ids[0])
    assert cancelled.state is JobState.CANCELLED
    assert [stage for _, stage in res.ran] == ["probe", "transcribe"]
    assert not run.pipeline.inflight
    with pytest.raises(Abandoned):  # the side work went with its job
        await side[0].wait()
    assert "job.done" not in run.kinds(ids[0])


async def test_side_work_outlives_the_stage_that_started_it(tmp_path: Path) -> None:
    """Work transcribe starts (diarization) runs beside the next stages and is awaited later."""
    order: list[str] = []

    async def start(ctx: JobContext) -> None:
        assert ctx.side is not None

        async def turns() -> list[Any]:
            await anyio.sleep(0.05)
            order.append("side work done")
            return []

        ctx.diarizing = ctx.side.start(turns)
        order.append("transcribe done")

    async def await_it(ctx: JobContext) -> None:
        assert ctx.diarizing is not None
        assert await ctx.diarizing.wait() == []
        order.append("diarize awaited")

    res = FakeResources()
    async with sqlite_store(tmp_path) as store:
        ids = await submit(store)
        async with running(settings(tmp_path), store, fake_stages({"transcribe": start, "diarize": await_it}),
                           res, ids):
            pass
        assert (await job(store, ids[0])).state is JobState.DONE
    assert order == ["transcribe done", "side work done", "diarize awaited"]


# ---- resume -----------------------------------------------------------------------------------------


async def test_a_released_job_resumes_from_its_stored_results(tmp_path: Path) -> None:
    entered, go, hook = blocker()
    res = FakeResources()
    async with sqlite_store(tmp_path) as store:
        ids = await submit(store)
        stages = fake_stages({"frame": hook}, stored=True)
        async with running(settings(tmp_path), store, stages, res, ids) as run:
            await entered.wait()
            run.pipeline.drain()
            go.set()
        assert (await job(store, ids[0])).stopped_at == "render"
        first = list(res.computed)
        res.computed.clear()
        async with running(settings(tmp_path), store, fake_stages(stored=True), res, ids):
            pass
        done = await job(store, ids[0])
    assert first == [(ids[0], s) for s in STAGES[:5]]
    assert res.computed == [(ids[0], "render")]  # everything before it came from the store
    assert done.state is JobState.DONE and done.attempts == 2


# ---- errors -------------------------------------------------------------------------------------------


def test_the_decisive_error_of_a_group_goes_by_importance_not_order() -> None:
    media, disk = MediaError("bad media"), DiskFullError("disk full")
    store_down, lost = StoreUnavailable("store down"), LeaseLost("taken over")
    nested = ExceptionGroup("outer", [ValueError("bug"), ExceptionGroup("inner", [media, disk])])
    assert decisive_error(nested) is disk
    assert decisive_error(ExceptionGroup("g", [media, ExceptionGroup("i", [store_down])])) is store_down
    assert decisive_error(ExceptionGroup("g", [store_down, lost])) is lost
    assert decisive_error(ExceptionGroup("g", [ValueError("bug"), KeyError("k")])) is None


@pytest.mark.parametrize(("raised", "error_class"), [
    (lambda: ExceptionGroup("parts", [RuntimeError("crashed"), DiskFullError("disk full")]), "disk_full"),
    (lambda: ExceptionGroup("parts", [MediaError("unreadable")]), "bad_media"),
    (lambda: ExceptionGroup("parts", [RuntimeError("a bug")]), "internal"),
    (lambda: MediaError("unreadable"), "bad_media"),
])  # fmt: skip
async def test_a_stage_failure_fails_the_job_with_its_decisive_error(
    tmp_path: Path, raised: Callable[[], Exception], error_class: str
) -> None:
    async def fail(ctx: JobContext) -> None:
        raise raised()

    res = FakeResources()
    async with sqlite_store(tmp_path) as store:
        ids = await submit(store)
        async with running(settings(tmp_path), store, fake_stages({"frame": fail}), res, ids) as run:
            pass
        failed = await job(store, ids[0])
    assert (failed.state, failed.error_stage, failed.error_class) == (JobState.FAILED, "frame", error_class)
    assert run.kinds(ids[0])[-1] == "job.failed"


# ---- back-pressure ------------------------------------------------------------------------------------


async def test_a_stuck_stage_fills_the_queues_before_it_and_claims_stop(tmp_path: Path) -> None:
    """One worker per stage, queues of one, transcribe stuck: transcribe holds a job, its queue
    one, probe one waiting to hand on, probe's queue one, and the claim loop one waiting to hand
    it to probe. Five claimed; the rest stay in the store, not in memory."""
    entered, go, hook = blocker()
    res = FakeResources()
    workers = dict.fromkeys(STAGES, 1)
    async with sqlite_store(tmp_path) as store:
        ids = await submit(store, 8)
        s = settings(tmp_path, stage_workers=workers, concurrent_jobs=100)
        async with running(s, store, fake_stages({"transcribe": hook}), res, ids) as run:
            await entered.wait()
            await anyio.sleep(0.3)  # many claim polls: the loop would have taken more by now
            queues = run.pipeline.queue_depths()
            claimed = [i for i in ids if (await job(store, i)).state is JobState.RUNNING]
            go.set()
        states = {(await job(store, i)).state for i in ids}
    assert len(claimed) == 5
    assert queues["probe"]["depth"] == queues["probe"]["capacity"] == 1
    assert queues["transcribe"]["depth"] == queues["transcribe"]["capacity"] == 1
    assert queues["transcribe"]["busy"] == 1
    assert states == {JobState.DONE}  # let go, every job finishes


async def test_concurrent_jobs_caps_what_is_claimed(tmp_path: Path) -> None:
    entered, go, hook = blocker()
    res = FakeResources()
    async with sqlite_store(tmp_path) as store:
        ids = await submit(store, 5)
        s = settings(tmp_path, stage_workers=dict.fromkeys(STAGES, 1), concurrent_jobs=2)
        async with running(s, store, fake_stages({"transcribe": hook}), res, ids):
            await entered.wait()
            await anyio.sleep(0.2)
            claimed = [i for i in ids if (await job(store, i)).state is JobState.RUNNING]
            go.set()
    assert len(claimed) == 2
