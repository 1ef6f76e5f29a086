"""One contract, two backends: every JobStore behaviour is checked on SQLite and on PostgreSQL."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import anyio
import pytest

from montaged.control import protocol as p
from montaged.control.protocol import PAYLOADS, EventKind
from montaged.errors import LeaseLost, StoreError
from montaged.model import Job, JobEvent, JobSpec, JobState
from montaged.store import Caps, Fence, JobStore, Pruned, PrunePolicy, open_store

pytestmark = pytest.mark.anyio

BIG = 1e9  # a cap that never binds, so a test exercises exactly one cap at a time


def ts(iso: str) -> float:
    return datetime.fromisoformat(iso).replace(tzinfo=UTC).timestamp()


def spec(source: str = "/media/talk.mp4", **kw: Any) -> JobSpec:
    return JobSpec(source=source, **kw)


async def ok(store: JobStore, job_id: str, amount: float, caps: Caps, now: float | None = None) -> bool:
    """Whether a reservation of ``amount`` for ``job_id`` was accepted."""
    return (
        await store.reserve(job_id=job_id, engine="deepgram", amount=amount, caps=caps, now=now) is not None
    )


async def kinds(store: JobStore, job_id: str) -> list[str]:
    return [e.kind for e in await store.events(job_id)]


def assert_payload(event: JobEvent) -> None:
    """The event's data has exactly the keys control/protocol.py promises for its kind."""
    shape = PAYLOADS[event.kind]
    keys = set(event.data)
    allowed = shape.__required_keys__ | shape.__optional_keys__
    assert shape.__required_keys__ <= keys <= allowed, (event.kind, sorted(keys))


class StoreContract:
    """The tests. Subclasses only say which database the ``url`` fixture points at."""

    @pytest.fixture
    async def store(self, url: str) -> AsyncIterator[JobStore]:
        store = open_store(url)
        await store.migrate()
        yield store
        await store.close()

    # ---- jobs -------------------------------------------------------------------------------

    async def test_submit_and_get_round_trip(self, store: JobStore) -> None:
        options = {"speakers": 2, "max_clips": 3}
        s = spec(profile="square", origin="hotfolder", options=options, output_dir="/out")
        before = time.time()
        job = await store.submit(s, content_hash="abc")
        assert job.state is JobState.QUEUED
        assert job.spec == s and job.content_hash == "abc"
        assert job.attempts == 0 and job.progress == 0.0 and job.worker is None and job.result == {}
        assert before <= job.created_at == job.updated_at <= time.time()
        assert await store.get(job.id) == job
        assert await store.get("no-such-job") is None
        assert await kinds(store, job.id) == ["job.submitted"]

    async def test_list_newest_first_with_state_filter_and_limit(self, store: JobStore) -> None:
        ids = [(await store.submit(spec(f"/m/{i}.mp4"))).id for i in range(4)]
        assert [j.id for j in await store.list()] == ids[::-1]
        assert [j.id for j in await store.list(limit=2)] == ids[:1:-1]
        claimed = await store.claim("w", 30)
        assert claimed is not None and claimed.id == ids[0]  # claims take the oldest
        assert [j.id for j in await store.list(JobState.RUNNING)] == [ids[0]]
        assert [j.id for j in await store.list(JobState.QUEUED)] == ids[:0:-1]
        assert await store.list(JobState.DONE) == []

    async def test_count_by_state_names_every_state(self, store: JobStore) -> None:
        assert await store.count_by_state() == dict.fromkeys(JobState, 0)
        a = await store.submit(spec())
        await store.submit(spec())
        await store.cancel(a.id)
        counts = await store.count_by_state()
        assert counts[JobState.QUEUED] == 1 and counts[JobState.CANCELLED] == 1
        assert sum(counts.values()) == 2 and set(counts) == set(JobState)

    async def test_claim_oldest_first_until_empty(self, store: JobStore) -> None:
        assert await store.claim("w1", 30) is None
        first, second = await store.submit(spec("/a")), await store.submit(spec("/b"))
        got = await store.claim("w1", 30)
        assert got is not None and got.id == first.id
        assert got.state is JobState.RUNNING and got.worker == "w1" and got.attempts == 1
        got2 = await store.claim("w2", 30)
        assert got2 is not None and got2.id == second.id and got2.worker == "w2"
        assert await store.claim("w3", 30) is None  # both leases are live
        events = await store.events(first.id)
        assert [e.kind for e in events] == ["job.submitted", "job.claimed"]
        assert events[1].data == {"worker": "w1", "attempt": 1}

    async def test_expired_lease_is_taken_over(self, store: JobStore) -> None:
        job = await store.submit(spec())
        assert await store.claim("crashed", 0.2) is not None
        assert await store.claim("other", 30) is None  # lease still live
        await anyio.sleep(0.4)  # 2x the lease: past it on any clock the backend uses
        taken = await store.claim("other", 30)
        assert taken is not None and taken.id == job.id
        assert taken.worker == "other" and taken.attempts == 2 and taken.state is JobState.RUNNING
        assert await store.heartbeat(job.id, "crashed", 30) is False
        assert await store.heartbeat(job.id, "other", 30) is True
        last = (await store.events(job.id))[-1]
        assert last.kind == "job.claimed" and last.data["took_over_from"] == "crashed"

    async def test_heartbeat_extends_the_lease(self, store: JobStore) -> None:
        job = await store.submit(spec())
        await store.claim("w1", 0.3)
        for _ in range(3):  # 0.45 s in all, past the first lease, kept alive by heartbeats
            await anyio.sleep(0.15)
            assert await store.heartbeat(job.id, "w1", 0.3)
        assert await store.claim("w2", 30) is None
        assert await store.heartbeat(job.id, "w2", 30) is False
        assert await store.heartbeat("no-such-job", "w1", 30) is False

    async def test_stage_progress_and_hash(self, store: JobStore) -> None:
        job = await store.submit(spec())
        await store.claim("w", 30)
        await store.set_stage(job.id, "transcribe", 0.25)
        await store.set_progress(job.id, 0.5)
        await store.set_content_hash(job.id, "h" * 64)
        got = await store.get(job.id)
        assert got is not None
        assert (got.stage, got.progress, got.content_hash) == ("transcribe", 0.5, "h" * 64)
        assert got.updated_at >= job.updated_at
        stage_events = [e for e in await store.events(job.id) if e.kind == "job.stage"]
        assert [e.data for e in stage_events] == [{"stage": "transcribe", "progress": 0.25}]

    async def test_finish(self, store: JobStore) -> None:
        job = await store.submit(spec())
        await store.claim("w", 30)
        result = {"clips": [{"index": 0, "path": "/out/0.mp4"}], "notes": ["ok"], "cost": 0.0}
        await store.finish(job.id, result)
        got = await store.get(job.id)
        assert got is not None and got.state is JobState.DONE and got.progress == 1.0 and got.result == result
        assert await store.heartbeat(job.id, "w", 30) is False
        assert await store.claim("w", 30) is None
        assert await kinds(store, job.id) == ["job.submitted", "job.claimed", "job.done"]
        done = (await store.events(job.id))[-1]
        # what the pipeline publishes when it finishes a job: the store keeps the same
        assert done.data == p.done(result) == {"clips": ["/out/0.mp4"], "result": result}

    async def test_every_recorded_payload_is_the_protocols(self, store: JobStore) -> None:
        job = await store.submit(spec(origin="hotfolder"))
        await store.claim("w", 30)
        await store.set_stage(job.id, "probe", 0.0)
        await store.release(job.id, stopped_at="probe")
        await store.claim("w", 30)
        await store.fail(job.id, stage="probe", error_class="MediaError", message="no audio")
        retried = await store.retry(job.id)
        await store.cancel(job.id)
        await store.add_event(job.id, EventKind.HOTFOLDER_DUPLICATE, p.duplicate("/in/b.mp4", "h" * 64))
        events = await store.events(job.id)
        for event in events:
            assert_payload(event)
        by_kind = {e.kind: e.data for e in events}
        submitted = await store.get(job.id)
        assert submitted is not None
        assert by_kind[EventKind.JOB_SUBMITTED]["job"]["id"] == job.id
        assert by_kind[EventKind.JOB_SUBMITTED]["origin"] == "hotfolder"
        assert retried is not None and by_kind[EventKind.JOB_RETRIED] == p.retried(retried)
        assert by_kind[EventKind.JOB_CANCELLED] == {"was": "queued"}

    async def test_fail_then_retry(self, store: JobStore) -> None:
        job = await store.submit(spec())
        await store.claim("w", 30)
        await store.set_stage(job.id, "diarize")
        await store.fail(job.id, stage="diarize", error_class="MediaError", message="no audio stream")
        failed = await store.get(job.id)
        assert failed is not None and failed.state is JobState.FAILED
        assert (failed.error_stage, failed.error_class, failed.error_message) == (
            "diarize", "MediaError", "no audio stream",
        )  # fmt: skip
        assert (await store.events(job.id))[-1].data["error_class"] == "MediaError"
        retried = await store.retry(job.id)
        assert retried is not None and retried.state is JobState.QUEUED
        assert retried.error_class is retried.error_message is retried.error_stage is None
        assert retried.stage is None and retried.progress == 0.0 and retried.worker is None
        assert retried.attempts == 1  # history of attempts survives a retry
        again = await store.claim("w", 30)
        assert again is not None and again.id == job.id and again.attempts == 2
        assert await kinds(store, job.id) == [
            "job.submitted", "job.claimed", "job.stage", "job.failed", "job.retried", "job.claimed",
        ]  # fmt: skip

    async def test_retry_only_from_failed_or_cancelled(self, store: JobStore) -> None:
        job = await store.submit(spec())
        assert await store.retry(job.id) is None  # queued
        await store.claim("w", 30)
        assert await store.retry(job.id) is None  # running
        await store.finish(job.id, {})
        assert await store.retry(job.id) is None  # done
        assert await store.retry("no-such-job") is None
        other = await store.submit(spec())
        await store.cancel(other.id)
        retried = await store.retry(other.id)
        assert retried is not None and retried.state is JobState.QUEUED

    async def test_cancel_edges(self, store: JobStore) -> None:
        queued = await store.submit(spec("/q"))
        running = await store.submit(spec("/r"))
        assert (await store.claim("w", 30)).id == queued.id  # type: ignore[union-attr]
        cancelled = await store.cancel(queued.id)
        assert cancelled is not None and cancelled.state is JobState.CANCELLED
        # the cancelled job's daemon learns it at its next heartbeat
        assert await store.heartbeat(queued.id, "w", 30) is False
        c2 = await store.cancel(running.id)
        assert c2 is not None and c2.state is JobState.CANCELLED
        assert await store.cancel(queued.id) is None  # already terminal
        assert await store.cancel("no-such-job") is None
        done = await store.submit(spec("/d"))
        await store.claim("w", 30)
        await store.finish(done.id, {})
        assert await store.cancel(done.id) is None
        assert (await kinds(store, running.id))[-1] == "job.cancelled"
        # the state it had when cancelled, read in the cancel's own transaction
        assert (await store.events(queued.id))[-1].data == {"was": "running"}
        assert (await store.events(running.id))[-1].data == {"was": "queued"}

    async def test_late_finish_or_fail_does_not_undo_cancel(self, store: JobStore) -> None:
        job = await store.submit(spec())
        await store.claim("w", 30)
        await store.cancel(job.id)
        await store.set_stage(job.id, "render")
        await store.finish(job.id, {"clips": []})
        await store.fail(job.id, stage="render", error_class="RenderError", message="late")
        got = await store.get(job.id)
        assert got is not None and got.state is JobState.CANCELLED and got.error_class is None
        assert await kinds(store, job.id) == ["job.submitted", "job.claimed", "job.cancelled"]

    async def test_release_requeues_with_stopped_stage(self, store: JobStore) -> None:
        job = await store.submit(spec())
        await store.release(job.id, stopped_at="probe")  # queued: nothing to release
        assert (await store.get(job.id)).stopped_at is None  # type: ignore[union-attr]
        await store.claim("w1", 30)
        await store.set_stage(job.id, "transcribe")
        await store.release(job.id, stopped_at="transcribe")
        got = await store.get(job.id)
        assert got is not None and got.state is JobState.QUEUED
        assert got.stopped_at == "transcribe" and got.worker is None
        assert await store.heartbeat(job.id, "w1", 30) is False
        again = await store.claim("w2", 30)
        assert again is not None and again.id == job.id and again.attempts == 2
        released = [e for e in await store.events(job.id) if e.kind == "job.released"]
        assert [e.data for e in released] == [{"stopped_at": "transcribe"}]

    # ---- fencing: a claim's token guards every write of its holder -------------------------------

    async def _taken_over(self, store: JobStore, *, reserve: float = 0.0) -> tuple[Job, Job, str | None]:
        """A job claimed by "stale" whose lease lapsed, then claimed by "fresh": (first, second),
        and the id of what "stale" reserved before it died (when ``reserve`` is given)."""
        await store.submit(spec())
        first = await store.claim("stale", 0.2)
        assert first is not None
        await store.set_stage(first.id, "probe", token=first.attempts)
        rid = None
        if reserve:
            caps = Caps(per_job=BIG, per_day=BIG, per_month=BIG)
            r = await store.reserve(
                job_id=first.id, engine="dg", amount=reserve, caps=caps, token=first.attempts
            )
            assert r is not None and r.token == first.attempts
            rid = r.id
        await anyio.sleep(0.4)
        second = await store.claim("fresh", 30)
        assert second is not None and second.id == first.id and second.attempts == first.attempts + 1
        return first, second, rid

    async def test_stale_holder_is_refused_every_write(self, store: JobStore) -> None:
        first, second, _ = await self._taken_over(store)
        job_id, old, new = first.id, first.attempts, second.attempts
        await store.set_stage(job_id, "render", 0.9, token=new)
        stale_writes = [
            store.set_stage(job_id, "select", token=old),
            store.set_progress(job_id, 0.99, token=old),
            store.finish(job_id, {"clips": ["stale"]}, token=old),
            store.fail(job_id, stage="render", error_class="internal", message="stale", token=old),
            store.release(job_id, stopped_at="render", token=old),
            store.put_result("select", "k-stale", {"by": "stale"}, fence=Fence(job_id, old)),
            store.set_content_hash(job_id, "stale-hash", token=old),
        ]
        for write in stale_writes:
            with pytest.raises(
                LeaseLost, match=rf"claim {old} no longer holds the job \(it is now on claim {new}\)"
            ):
                await write
        assert await store.heartbeat(job_id, "stale", 30, token=old) is False
        assert await store.heartbeat(job_id, "fresh", 30, token=old) is False  # right name, old claim
        assert await store.get_result("select", "k-stale") is None
        now = await store.get(job_id)
        assert now is not None and now.state is JobState.RUNNING and now.worker == "fresh"
        assert (now.stage, now.progress, now.error_class, now.result) == ("render", 0.9, None, {})
        assert now.content_hash is None
        # the current holder goes on as if nothing happened
        assert await store.heartbeat(job_id, "fresh", 30, token=new) is True
        await store.put_result("select", "k", {"by": "fresh"}, fence=Fence(job_id, new))
        await store.finish(job_id, {"clips": ["fresh"]}, token=new)
        done = await store.get(job_id)
        assert done is not None and done.state is JobState.DONE and done.result == {"clips": ["fresh"]}
        assert (await kinds(store, job_id)).count("job.done") == 1

    async def test_fenced_writes_after_cancel_are_quiet(self, store: JobStore) -> None:
        job = await store.submit(spec())
        claimed = await store.claim("w", 30)
        assert claimed is not None
        await store.cancel(job.id)
        await store.finish(job.id, {}, token=claimed.attempts)  # its own claim: no error, no change
        await store.release(job.id, stopped_at="probe", token=claimed.attempts)
        assert (await store.get(job.id)).state is JobState.CANCELLED  # type: ignore[union-attr]
        with pytest.raises(LeaseLost, match="the job no longer exists"):
            await store.put_result("probe", "k", {}, fence=Fence("no-such-job", 1))

    # ---- poison jobs ------------------------------------------------------------------------

    async def test_job_whose_worker_keeps_dying_is_poisoned(self, store: JobStore) -> None:
        job = await store.submit(spec())
        for attempt in (1, 2, 3):  # each holder reaches "frame", then dies (its lease lapses)
            got = await store.claim(f"w{attempt}", 0.2, max_attempts=3)
            assert got is not None and got.state is JobState.RUNNING and got.attempts == attempt
            await store.set_stage(job.id, "frame", token=got.attempts)
            await anyio.sleep(0.4)
        other = await store.submit(spec("/media/next.mp4"))
        poisoned = await store.claim("w4", 30, max_attempts=3)
        assert poisoned is not None and poisoned.id == job.id and poisoned.state is JobState.FAILED
        assert poisoned.error_class == "poisoned" and poisoned.error_stage == "frame"
        assert poisoned.error_message is not None
        assert (
            "stopped 3 times in a row" in poisoned.error_message and "stage frame" in poisoned.error_message
        )
        assert f"montagectl retry {job.id}" in poisoned.error_message
        failed = [e for e in await store.events(job.id) if e.kind == "job.failed"]
        assert [e.data["error_class"] for e in failed] == ["poisoned"]
        nxt = await store.claim("w4", 30, max_attempts=3)  # the queue moves on
        assert nxt is not None and nxt.id == other.id
        # an operator's retry gives it a fresh count; its attempt number (the token) goes on
        await store.retry(job.id)
        again = await store.claim("w5", 30, max_attempts=3)
        assert again is not None and again.id == job.id and again.state is JobState.RUNNING
        assert again.attempts == 4

    async def test_crashes_that_get_further_are_no_poison(self, store: JobStore) -> None:
        job = await store.submit(spec())
        for stage in ("probe", "transcribe", "diarize", "select", "frame"):  # dies a stage later each time
            got = await store.claim("w", 0.2, max_attempts=2)
            assert got is not None and got.state is JobState.RUNNING, got
            await store.set_stage(job.id, stage, token=got.attempts)
            await anyio.sleep(0.4)
        got = await store.claim("w", 0.2, max_attempts=2)  # the second crash in a row at frame
        assert got is not None and got.state is JobState.RUNNING
        await store.set_stage(job.id, "probe", token=got.attempts)  # a resumed pass...
        await store.set_stage(job.id, "frame", token=got.attempts)  # ...dies at frame again
        await anyio.sleep(0.4)
        poisoned = await store.claim("w", 30, max_attempts=2)
        assert poisoned is not None and poisoned.state is JobState.FAILED and poisoned.error_stage == "frame"

    async def test_clean_releases_are_no_strikes(self, store: JobStore) -> None:
        job = await store.submit(spec())
        for _ in range(5):  # five graceful restarts: never poisoned
            got = await store.claim("w", 30, max_attempts=2)
            assert got is not None and got.state is JobState.RUNNING
            await store.release(job.id, stopped_at="transcribe", token=got.attempts)
        assert (await store.claim("w", 30, max_attempts=2)).attempts == 6  # type: ignore[union-attr]
        assert await store.claim("w", 30) is None  # without max_attempts nothing is poisoned

    # ---- reservations belong to a claim ------------------------------------------------------

    async def test_reservations_by_claim(self, store: JobStore) -> None:
        caps = Caps(per_job=1.0, per_day=BIG, per_month=BIG)
        first, second, old = await self._taken_over(store, reserve=0.9)
        assert old is not None
        job_id = first.id
        with pytest.raises(LeaseLost):  # the stale holder cannot spend in the job's name any more
            await store.reserve(job_id=job_id, engine="dg", amount=0.1, caps=caps, token=first.attempts)
        # the resumed job's reservation first releases its dead holder's: the cap does not block it
        mine = await store.reserve(job_id=job_id, engine="dg", amount=0.9, caps=caps, token=second.attempts)
        assert mine is not None and mine.token == second.attempts
        rows = {r.period.split(":")[0]: r for r in await store.spend(caps, job_id=job_id)}
        assert (rows["job"].spent, rows["job"].reserved) == pytest.approx((0.0, 0.9))
        # a late settle from the dead holder still counts: that money was spent
        await store.settle(old, 0.25)
        rows = {r.period.split(":")[0]: r for r in await store.spend(caps, job_id=job_id)}
        assert (rows["job"].spent, rows["job"].reserved) == pytest.approx((0.25, 0.9))

    async def test_sweeper_releases_reservations_whose_claim_is_gone(self, store: JobStore) -> None:
        caps = Caps(per_job=BIG, per_day=10.0, per_month=BIG)
        live_job = await store.submit(spec("/m/live.mp4"))
        dead_job = await store.submit(spec("/m/dead.mp4"))
        live = await store.claim("a", 30, only=[live_job.id])
        dead = await store.claim("b", 0.2, only=[dead_job.id])
        assert live is not None and dead is not None
        keep = await store.reserve(job_id=live.id, engine="dg", amount=1.0, caps=caps, token=live.attempts)
        lost = await store.reserve(job_id=dead.id, engine="dg", amount=2.0, caps=caps, token=dead.attempts)
        tool = await store.reserve(job_id="tool", engine="dg", amount=0.5, caps=caps)
        assert keep and lost and tool
        assert await store.sweep_reservations() == []  # every holder is alive
        await anyio.sleep(0.4)  # b's lease lapses
        swept = await store.sweep_reservations()
        assert [r.id for r in swept] == [lost.id] and swept[0].token == dead.attempts
        day = (await store.spend(caps))[0]
        assert day.reserved == pytest.approx(1.5)
        await store.finish(live.id, {}, token=live.attempts)  # a finished job's open reservation goes too
        assert [r.id for r in await store.sweep_reservations()] == [keep.id]
        assert await store.sweep_reservations() == []
        await store.settle(lost.id, 0.5)  # a late settle from the presumed-dead holder is kept
        day = (await store.spend(caps))[0]
        assert (day.spent, day.reserved) == pytest.approx((0.5, 0.5))

    async def test_find_by_hash_for_dedup(self, store: JobStore) -> None:
        assert await store.find_by_hash("h1", "vertical") is None
        failed = await store.submit(spec(), content_hash="h1")
        await store.fail(failed.id, stage="probe", error_class="MediaError", message="x")
        assert await store.find_by_hash("h1", "vertical") is None  # a failed job is no duplicate
        live = await store.submit(spec(), content_hash="h1")
        assert (await store.find_by_hash("h1", "vertical")).id == live.id  # type: ignore[union-attr]
        assert await store.find_by_hash("h1", "square") is None  # another profile is other work
        await store.cancel(live.id)
        assert await store.find_by_hash("h1", "vertical") is None  # cancelled: user wants it again
        done = await store.submit(spec())
        await store.set_content_hash(done.id, "h1")
        await store.claim("w", 30)
        await store.finish(done.id, {})
        newer = await store.submit(spec(), content_hash="h1")
        assert newer.created_at > done.created_at
        assert (await store.find_by_hash("h1", "vertical")).id == done.id  # type: ignore[union-attr]

    # ---- results and events -----------------------------------------------------------------

    async def test_stage_results_upsert(self, store: JobStore) -> None:
        assert await store.get_result("transcribe", "k1") is None
        payload = {"words": [{"text": "hello", "start": 0.0, "end": 0.4}], "language": "en"}
        await store.put_result("transcribe", "k1", payload)
        assert await store.get_result("transcribe", "k1") == payload
        await store.put_result("transcribe", "k1", {"v": 2})
        assert await store.get_result("transcribe", "k1") == {"v": 2}
        assert await store.get_result("diarize", "k1") is None  # keyed by stage and key

    async def test_events_custom_and_limit(self, store: JobStore) -> None:
        job = await store.submit(spec())
        ev = await store.add_event(job.id, EventKind.HOTFOLDER_DUPLICATE, {"path": "/in/b.mp4", "n": 1})
        assert ev.job_id == job.id and ev.kind is EventKind.HOTFOLDER_DUPLICATE and ev.data["n"] == 1
        # a kind this version does not know (a newer montaged wrote it): the history skips it
        await store.add_event(job.id, "job.from_the_future", {})  # type: ignore[arg-type]
        for i in range(5):
            await store.add_event(job.id, EventKind.JOB_PROGRESS, {"i": i})
        events = await store.events(job.id)
        assert [e.kind for e in events[:3]] == ["job.submitted", "hotfolder.duplicate", "job.progress"]
        assert all(isinstance(e.kind, EventKind) for e in events)
        assert [e.at for e in events] == sorted(e.at for e in events)
        latest = await store.events(job.id, limit=3)  # the latest three, oldest first
        assert [e.data["i"] for e in latest] == [2, 3, 4]
        assert await store.events("no-such-job") == []
        with pytest.raises(StoreError, match="no-such-job"):
            await store.add_event("no-such-job", EventKind.HOTFOLDER_DUPLICATE)

    # ---- retention --------------------------------------------------------------------------

    async def _finished(self, store: JobStore, source: str, content_hash: str | None = None,
                        result_key: str | None = None) -> Job:
        """A job claimed and finished here; with ``result_key``, it wrote a frame result first."""
        job = await store.submit(spec(source), content_hash=content_hash)
        claimed = await store.claim("w", 30, only=[job.id])
        assert claimed is not None
        if result_key:
            await store.put_result("frame", result_key, {"by": source}, fence=Fence(job.id, claimed.attempts))
        await store.finish(job.id, {}, token=claimed.attempts)
        return job

    async def test_prune_by_age_keeps_live_jobs_and_the_results_their_media_needs(
        self, store: JobStore
    ) -> None:
        old = await self._finished(store, "/old.mp4", "h-old", "k-old")
        shared = await self._finished(store, "/shared.mp4", "h-shared", "k-shared")
        await store.put_result("transcript", "cache-1", {"words": []})  # the transcript cache: no claim
        failed = await store.submit(spec("/failed.mp4"))
        claimed = await store.claim("w", 30, only=[failed.id])
        assert claimed is not None
        await store.fail(failed.id, stage="probe", error_class="MediaError", message="x",
                         token=claimed.attempts)
        cancelled = await store.submit(spec("/cancelled.mp4"))
        await store.cancel(cancelled.id)
        await anyio.sleep(0.05)
        cut = time.time()
        await anyio.sleep(0.05)
        queued = await store.submit(spec("/again.mp4"), content_hash="h-shared")  # same media as `shared`
        running = await store.submit(spec("/running.mp4"))
        assert await store.claim("w", 30, only=[running.id]) is not None
        recent = await self._finished(store, "/recent.mp4")
        gone = [old, shared, failed, cancelled]
        events_before = sum([len(await store.events(j.id)) for j in gone])

        pruned = await store.prune(PrunePolicy(jobs_before=cut, results_before=time.time() + 1))
        assert pruned == Pruned(jobs=4, events=events_before, results=2)
        for job in gone:
            assert await store.get(job.id) is None and await store.events(job.id) == []
        for job in (queued, running, recent):
            assert await store.get(job.id) is not None and await store.events(job.id) != []
        assert await store.get_result("frame", "k-old") is None
        assert await store.get_result("transcript", "cache-1") is None
        assert await store.get_result("frame", "k-shared") == {"by": "/shared.mp4"}  # `queued` needs it
        assert await store.prune(PrunePolicy(jobs_before=cut)) == Pruned()  # nothing left to do

    async def test_prune_by_count_and_old_events_of_finished_jobs(self, store: JobStore) -> None:
        jobs = [await self._finished(store, f"/t{i}.mp4") for i in range(3)]
        for i in range(3):
            await store.put_result("select", f"r{i}", {"i": i})
            await anyio.sleep(0.02)
        running = await store.submit(spec("/running.mp4"))
        assert await store.claim("w", 30, only=[running.id]) is not None
        assert await store.prune(PrunePolicy()) == Pruned()
        pruned = await store.prune(PrunePolicy(max_jobs=1, max_results=1))
        assert (pruned.jobs, pruned.results) == (2, 2) and pruned.events > 0
        assert [await store.get(j.id) is not None for j in jobs] == [False, False, True]
        assert [await store.get_result("select", f"r{i}") for i in range(3)] == [None, None, {"i": 2}]
        # by bytes: 10 kB results, room for two of them
        for i in range(3, 6):
            await store.put_result("select", f"r{i}", {"blob": "x" * 10_000})
            await anyio.sleep(0.02)
        assert await store.prune(PrunePolicy(max_result_bytes=25_000)) == Pruned(results=2)  # r3 and r2
        assert [await store.get_result("select", f"r{i}") is not None for i in range(2, 6)] == [
            False, False, True, True]
        # events of finished jobs go by age; the job itself and a running job's events stay
        pruned = await store.prune(PrunePolicy(events_before=time.time() + 1))
        assert pruned == Pruned(events=3)  # submitted, claimed, done
        assert await store.get(jobs[2].id) is not None and await store.events(jobs[2].id) == []
        assert await kinds(store, running.id) == ["job.submitted", "job.claimed"]

    # ---- cost ledger ------------------------------------------------------------------------

    async def test_reserve_refuses_past_job_cap(self, store: JobStore) -> None:
        caps = Caps(per_job=1.0, per_day=BIG, per_month=BIG)
        r1 = await store.reserve(job_id="j1", engine="deepgram", amount=0.6, caps=caps)
        assert r1 is not None and (r1.job_id, r1.engine, r1.amount) == ("j1", "deepgram", 0.6)
        assert not await ok(store, "j1", 0.5, caps)
        assert await ok(store, "j1", 0.4, caps)  # exactly at the cap is allowed
        assert not await ok(store, "j1", 0.01, caps)
        assert await ok(store, "j2", 0.9, caps)  # another job has its own cap

    async def test_settle_replaces_reserved_amount_with_actual(self, store: JobStore) -> None:
        caps = Caps(per_job=1.0, per_day=BIG, per_month=BIG)
        r = await store.reserve(job_id="j", engine="deepgram", amount=0.9, caps=caps)
        assert r is not None
        assert await store.reserve(job_id="j", engine="deepgram", amount=0.2, caps=caps) is None
        await store.settle(r.id, 0.3)  # the call cost less than reserved: money comes back
        assert await store.reserve(job_id="j", engine="deepgram", amount=0.7, caps=caps) is not None
        with pytest.raises(StoreError, match="nope"):
            await store.settle("nope", 0.1)
        with pytest.raises(ValueError, match="non-negative"):
            await store.settle(r.id, -1.0)
        with pytest.raises(ValueError, match="non-negative"):
            await store.reserve(job_id="j", engine="deepgram", amount=-0.1, caps=caps)

    async def test_release_reservation_frees_money(self, store: JobStore) -> None:
        caps = Caps(per_job=BIG, per_day=1.0, per_month=BIG)
        r = await store.reserve(job_id="j", engine="deepgram", amount=1.0, caps=caps)
        assert r is not None
        assert await store.reserve(job_id="k", engine="deepgram", amount=0.1, caps=caps) is None
        backend: Any = store  # both backends have release_reservation; the protocol may not yet
        assert await backend.release_reservation(r.id) is True
        assert await backend.release_reservation(r.id) is False
        with pytest.raises(StoreError):
            await store.settle(r.id, 0.5)
        assert await store.reserve(job_id="k", engine="deepgram", amount=1.0, caps=caps) is not None

    async def test_day_and_month_caps_follow_utc_calendar(self, store: JobStore) -> None:
        caps = Caps(per_job=BIG, per_day=1.0, per_month=1.5)
        late_march = ts("2026-03-31T23:30:00")
        early_april = ts("2026-04-01T00:30:00")
        april_15 = ts("2026-04-15T12:00:00")
        assert await ok(store, "a", 1.0, caps, late_march)
        assert not await ok(store, "b", 0.1, caps, late_march)  # day cap
        assert await ok(store, "b", 1.0, caps, early_april)  # a new UTC day and month
        assert await ok(store, "c", 0.5, caps, april_15)  # 1.5 in April: at the month cap
        assert not await ok(store, "d", 0.1, caps, april_15)  # month cap
        assert await ok(store, "d", 0.1, caps, ts("2026-05-01T00:00:00"))

    async def test_spend_summaries(self, store: JobStore) -> None:
        caps = Caps(per_job=2.0, per_day=5.0, per_month=50.0)
        now = ts("2026-11-24T10:00:00")
        r1 = await store.reserve(job_id="j", engine="deepgram", amount=1.0, caps=caps, now=now)
        await store.reserve(job_id="j", engine="deepgram", amount=0.5, caps=caps, now=now)
        await store.reserve(job_id="other", engine="deepgram", amount=0.25, caps=caps, now=now)
        assert await ok(store, "j", 3.0, Caps(BIG, BIG, BIG), now - 86400)  # yesterday, same month
        assert r1 is not None
        await store.settle(r1.id, 0.75)
        by_period = {s.period: s for s in await store.spend(caps, job_id="j", now=now)}
        job, day, month = by_period["job:j"], by_period["day:2026-11-24"], by_period["month:2026-11"]
        assert (job.spent, job.reserved, job.cap) == pytest.approx((0.75, 3.5, 2.0))
        assert job.remaining == 0.0  # over its cap through the yesterday reservation: clamps at 0
        assert (day.spent, day.reserved, day.remaining) == pytest.approx((0.75, 0.75, 3.5))
        assert (month.spent, month.reserved) == pytest.approx((0.75, 3.75))
        periods = [s.period for s in await store.spend(caps, now=now)]
        assert periods == ["day:2026-11-24", "month:2026-11"]

    # ---- health -----------------------------------------------------------------------------

    async def test_ping_and_reopen(self, store: JobStore, url: str) -> None:
        await store.ping()
        job = await store.submit(spec())
        await store.close()
        reopened = open_store(url)
        try:
            await reopened.migrate()  # a second migrate on a current schema changes nothing
            assert await reopened.get(job.id) == job
        finally:
            await reopened.close()


class TestSqliteStore(StoreContract):
    @pytest.fixture
    def url(self, sqlite_url: str) -> str:
        return sqlite_url


class TestPostgresStore(StoreContract):
    @pytest.fixture
    def url(self, pg_url: str) -> str:
        return pg_url
