"""Hot folder against real files, a real SQLite store, a real Submitter and EventBus.

Each test runs the watcher in a task group and ends it by cancelling; every wait has a timeout.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest
from conftest import make_talk_clip

from montaged.config import HotFolderConfig
from montaged.errors import ConfigError
from montaged.events import EventBus
from montaged.gate import IntakeGate
from montaged.intake import Submitter
from montaged.media.probe import content_hash
from montaged.model import JobEvent, JobSpec, JobState
from montaged.sources.hotfolder import on_job_finished, run_hotfolder
from montaged.store import JobStore, open_store
from montaged.store.sqlite import SqliteStore

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(120)]

SETTLE = 0.6


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory, ffmpeg: str) -> list[Path]:
    """Three small real clips with different content."""
    d = tmp_path_factory.mktemp("clips")
    return [make_talk_clip(d / f"talk{i}.mp4", seconds=2.0 + i) for i in range(3)]


class Rig:
    """A store, bus and submitter, and the events published while the hot folder runs."""

    def __init__(self, store: JobStore, submitter: Submitter) -> None:
        self.store = store
        self.submitter = submitter
        self.events: list[JobEvent] = []
        self.gate = IntakeGate()

    def kinds(self, kind: str) -> list[JobEvent]:
        return [e for e in self.events if e.kind == kind]

    async def wait_for(self, cond: Callable[[], Any], timeout: float = 10.0) -> Any:
        with anyio.fail_after(timeout):
            while not (found := cond()):  # noqa: ASYNC110 (polls files and a list, no event)
                await anyio.sleep(0.02)
        return found

    @asynccontextmanager
    async def hotfolder(self, cfg: HotFolderConfig) -> AsyncIterator[None]:
        async with anyio.create_task_group() as tg:
            await tg.start(self._collect)
            await tg.start(lambda task_status: run_hotfolder(
                cfg, self.submitter, gate=self.gate, task_status=task_status))
            yield
            tg.cancel_scope.cancel()

    async def _collect(self, *, task_status: anyio.abc.TaskStatus[None]) -> None:
        async with self.submitter.bus.subscribe() as events:
            task_status.started()
            async for event in events:
                self.events.append(event)


@asynccontextmanager
async def rig(tmp_path: Path, sqlite_url: str) -> AsyncIterator[Rig]:
    store = open_store(sqlite_url)
    await store.migrate()
    try:
        submitter = Submitter(store, EventBus(), input_roots=[tmp_path], profiles=["vertical", "square"])
        yield Rig(store, submitter)
    finally:
        await store.close()


def hot_cfg(folder: Path, **kw: Any) -> HotFolderConfig:
    folder.mkdir(exist_ok=True)
    return HotFolderConfig(paths=[folder], settle_seconds=SETTLE, rescan_seconds=2.0, **kw)


async def slow_copy(src: Path, dst: Path, *, pieces: int, pause: float) -> float:
    """Copy in ``pieces`` writes with ``pause`` between them; return the time of the last write."""
    data = src.read_bytes()
    step = -(-len(data) // pieces)
    with dst.open("wb") as f:
        for i in range(0, len(data), step):
            f.write(data[i:i + step])
            f.flush()
            last = time.time()
            if i + step < len(data):
                await anyio.sleep(pause)
    return last


async def test_slow_writer_is_taken_only_when_complete(tmp_path: Path, sqlite_url: str,
                                                       clips: list[Path]) -> None:
    inbox = tmp_path / "in"
    async with rig(tmp_path, sqlite_url) as r, r.hotfolder(hot_cfg(inbox)):
        # pauses of 0.4 s, each shorter than the 0.6 s settle time: the file keeps changing
        last_write = await slow_copy(clips[2], inbox / "talk.mp4", pieces=10, pause=0.4)
        submitted = await r.wait_for(lambda: r.kinds("job.submitted"))
        await anyio.sleep(SETTLE * 2)
        assert len(r.kinds("job.submitted")) == 1
        job = await r.store.get(submitted[0].job_id)
        assert job is not None
        # the hash taken at pick-up is the complete file's, and pick-up came after the last write
        assert job.content_hash == content_hash(clips[2])
        assert submitted[0].at >= last_write + SETTLE
        latency = submitted[0].at - (os.stat(inbox / "talk.mp4").st_mtime + SETTLE)
        assert 0 <= latency < 1.0, latency
        assert job.spec.origin == "hotfolder" and job.spec.source == str((inbox / "talk.mp4").resolve())
        assert (inbox / "talk.mp4").exists()  # after = "leave"


@pytest.mark.parametrize("polling", [False, True])
async def test_partial_names_are_ignored_until_renamed(tmp_path: Path, sqlite_url: str, clips: list[Path],
                                                       polling: bool) -> None:
    inbox = tmp_path / "in"
    async with rig(tmp_path, sqlite_url) as r, r.hotfolder(hot_cfg(inbox, force_polling=polling,
                                                                    poll_delay_ms=100)):
        names = ["talk.mp4.part", "talk.mp4.crdownload", "talk.tmp", "talk.mp4~", ".talk.mp4",
                 "TALK.MP4.PART"]
        for i, name in enumerate(names):
            shutil.copyfile(clips[i % 3], inbox / name)
        (inbox / "sub").mkdir()
        shutil.copyfile(clips[0], inbox / "sub" / "nested.mp4")  # sub-folders are not watched
        await anyio.sleep(SETTLE * 4)
        assert r.kinds("job.submitted") == []
        assert await r.store.list() == []
        # the browser renames the finished download: now it is taken, under its final name
        os.rename(inbox / "talk.mp4.crdownload", inbox / "talk.mp4")
        ev = await r.wait_for(lambda: r.kinds("job.submitted"))
        assert ev[0].data["source"] == str((inbox / "talk.mp4").resolve())
        await anyio.sleep(SETTLE * 2)
        assert len(await r.store.list()) == 1


async def test_same_content_twice_is_one_job_and_restart_loses_nothing(
    tmp_path: Path, sqlite_url: str, clips: list[Path]
) -> None:
    inbox = tmp_path / "in"
    cfg = hot_cfg(inbox)
    async with rig(tmp_path, sqlite_url) as r:
        async with r.hotfolder(cfg):
            shutil.copyfile(clips[0], inbox / "a.mp4")
            first = await r.wait_for(lambda: r.kinds("job.submitted"))
            shutil.copyfile(clips[0], inbox / "copy of a.mp4")
            dup = await r.wait_for(lambda: r.kinds("hotfolder.duplicate"))
            assert dup[0].job_id == first[0].job_id
            assert dup[0].data["path"] == str((inbox / "copy of a.mp4").resolve())
            assert len(await r.store.list()) == 1
            recorded = [e.kind for e in await r.store.events(first[0].job_id)]
            assert "hotfolder.duplicate" in recorded

        # dropped while the daemon was down
        shutil.copyfile(clips[1], inbox / "b.mp4")
        r.events.clear()
        async with r.hotfolder(cfg):
            ev = await r.wait_for(lambda: r.kinds("job.submitted"))
            await anyio.sleep(SETTLE * 3)
            # b is new; a and its copy are recognised from the store, not submitted again
            assert [e.data["source"] for e in r.kinds("job.submitted")] == [str((inbox / "b.mp4").resolve())]
            assert ev[0].data["origin"] == "hotfolder"
            assert len(await r.store.list()) == 2


async def test_paused_intake_holds_settled_files(tmp_path: Path, sqlite_url: str, clips: list[Path]) -> None:
    inbox = tmp_path / "in"
    async with rig(tmp_path, sqlite_url) as r, r.hotfolder(hot_cfg(inbox, after="move")):
        r.gate.pause()
        shutil.copyfile(clips[0], inbox / "a.mp4")
        await anyio.sleep(SETTLE * 4)
        assert r.kinds("job.submitted") == []
        assert (inbox / "a.mp4").exists()  # not even moved while paused
        r.gate.resume()
        await r.wait_for(lambda: r.kinds("job.submitted"))
        assert (inbox / "processing" / "a.mp4").exists()


async def test_move_processing_done_failed(tmp_path: Path, sqlite_url: str, clips: list[Path]) -> None:
    inbox = tmp_path / "in"
    cfg = hot_cfg(inbox, after="move")
    async with rig(tmp_path, sqlite_url) as r, r.hotfolder(cfg):
        shutil.copyfile(clips[0], inbox / "a.mp4")
        shutil.copyfile(clips[1], inbox / "b.mp4")
        events = await r.wait_for(lambda: len(r.kinds("job.submitted")) == 2 and r.kinds("job.submitted"))
        processing = inbox / "processing"
        assert sorted(p.name for p in processing.iterdir()) == ["a.mp4", "b.mp4"]
        assert not (inbox / "a.mp4").exists()
        sources = sorted(e.data["source"] for e in events)
        assert sources == [str((processing / "a.mp4").resolve()), str((processing / "b.mp4").resolve())]

        by_name = {Path(e.data["source"]).name: e.job_id for e in events}
        for _ in range(2):
            assert await r.store.claim("test-worker", 30) is not None
        await r.store.finish(by_name["a.mp4"], {"clips": []})
        await r.store.fail(by_name["b.mp4"], stage="probe", error_class="corrupt_media", message="truncated")
        for job_id in by_name.values():
            job = await r.store.get(job_id)
            assert job is not None
            await on_job_finished(cfg, job)
        assert (inbox / "done" / "a.mp4").exists()
        assert (inbox / "failed" / "b.mp4").exists()
        note = (inbox / "failed" / "b.mp4.error.txt").read_text()
        assert "corrupt_media: truncated" in note and by_name["b.mp4"] in note
        assert list(processing.iterdir()) == []

        # the same content again: recognised, moved to done/ beside the first (a free name)
        shutil.copyfile(clips[0], inbox / "a.mp4")
        await r.wait_for(lambda: r.kinds("hotfolder.duplicate"))
        await r.wait_for(lambda: (inbox / "done" / "a.2.mp4").exists())
        assert len(await r.store.list()) == 2


async def test_move_recovers_files_left_in_processing(tmp_path: Path, sqlite_url: str,
                                                       clips: list[Path]) -> None:
    """A daemon that died after the rename but before submitting: the next start submits it."""
    inbox = tmp_path / "in"
    cfg = hot_cfg(inbox, after="move")
    (inbox / "processing").mkdir()
    shutil.copyfile(clips[0], inbox / "processing" / "orphan.mp4")
    async with rig(tmp_path, sqlite_url) as r:
        async with r.hotfolder(cfg):
            ev = await r.wait_for(lambda: r.kinds("job.submitted"))
            assert ev[0].data["source"] == str((inbox / "processing" / "orphan.mp4").resolve())
        # its job ended while no daemon ran: the next start moves it along, submitting nothing
        assert await r.store.claim("w", 30) is not None
        await r.store.finish(ev[0].job_id, {"clips": []})
        r.events.clear()
        async with r.hotfolder(cfg):
            await r.wait_for(lambda: (inbox / "done" / "orphan.mp4").exists())
            assert r.kinds("job.submitted") == []
        assert [j.state for j in await r.store.list()] == [JobState.DONE]


async def test_unusable_folders_are_named_in_the_error(tmp_path: Path, sqlite_url: str) -> None:
    outside = tmp_path.parent / f"{tmp_path.name}-elsewhere"
    outside.mkdir()
    cfg = HotFolderConfig(paths=[tmp_path / "missing", outside], profile="wide")
    async with rig(tmp_path, sqlite_url) as r:
        with pytest.raises(ConfigError) as err:
            await run_hotfolder(cfg, r.submitter, gate=IntakeGate())
    msg = str(err.value)
    assert f"{tmp_path / 'missing'} is not an existing folder" in msg
    assert f"{outside} is outside paths.input_roots" in msg
    assert "hotfolder.profile: 'wide' is not configured" in msg
    shutil.rmtree(outside)


async def test_move_sweeps_jobs_ended_elsewhere(tmp_path: Path, sqlite_url: str, clips: list[Path]) -> None:
    """A job finished by another daemon (no event here) still gets its original moved on; at a
    restart, a file whose own job is still running stays put even when another job with the same
    content is done."""
    inbox = tmp_path / "in"
    cfg = hot_cfg(inbox, after="move").model_copy(update={"rescan_seconds": 0.5})
    async with rig(tmp_path, sqlite_url) as r:
        async with r.hotfolder(cfg):
            shutil.copyfile(clips[0], inbox / "a.mp4")
            shutil.copyfile(clips[1], inbox / "b.mp4")
            ev = await r.wait_for(lambda: len(r.kinds("job.submitted")) == 2 and r.kinds("job.submitted"))
            ids = {Path(e.data["source"]).name: e.job_id for e in ev}
            assert await r.store.claim("elsewhere", 30, only=[ids["a.mp4"]]) is not None
            await r.store.finish(ids["a.mp4"], {"clips": []})
            await r.wait_for(lambda: (inbox / "done" / "a.mp4").exists())
        # b's job is still queued; the same content arrives through the socket and is done
        same = shutil.copyfile(clips[1], tmp_path / "same-as-b.mp4")
        other = await r.submitter.submit(JobSpec(source=str(same), origin="socket"),
                                         content_hash=content_hash(same))
        assert await r.store.claim("elsewhere", 30, only=[other.id]) is not None
        await r.store.finish(other.id, {"clips": []})
        r.events.clear()
        async with r.hotfolder(cfg):
            await anyio.sleep(SETTLE * 4)
            assert (inbox / "processing" / "b.mp4").exists()
            assert r.kinds("job.submitted") == [] and r.kinds("hotfolder.duplicate") == []
        assert len(await r.store.list()) == 3


async def test_store_outage_keeps_the_drop_waiting_not_failed(tmp_path: Path, clips: list[Path]) -> None:
    """The store refuses writes for 2 s (another process holds SQLite's write lock): the settled
    file waits in processing/ (never failed/), and becomes a job once the store answers."""
    db = tmp_path / "montage.db"
    inbox = tmp_path / "in"
    cfg = hot_cfg(inbox, after="move")
    async with rig(tmp_path, f"sqlite:///{db}") as r:
        r.store = r.submitter.store = SqliteStore(f"sqlite:///{db}", busy_timeout=0.2)
        lock = sqlite3.connect(db, isolation_level=None)
        lock.execute("BEGIN IMMEDIATE")
        try:
            async with r.hotfolder(cfg):
                shutil.copyfile(clips[0], inbox / "a.mp4")
                await r.wait_for(lambda: (inbox / "processing" / "a.mp4").exists())
                await anyio.sleep(2.0)
                assert await r.store.list() == [] and not (inbox / "failed").joinpath("a.mp4").exists()
                lock.execute("ROLLBACK")
                await r.wait_for(lambda: r.kinds("job.submitted"), timeout=20)
                assert (inbox / "processing" / "a.mp4").exists() and len(await r.store.list()) == 1
        finally:
            lock.close()
            await r.store.close()


async def test_folder_rule_and_options_file_reach_the_job(tmp_path: Path, sqlite_url: str,
                                                          clips: list[Path]) -> None:
    """A folder's rule gives options to every drop; a file's options file wins over it, travels
    with the file into processing/ and is never taken as media itself."""
    inbox = tmp_path / "in"
    rule = {"max_clips": 2, "profiles": ["vertical", "square"]}
    cfg = hot_cfg(inbox, after="move", folder_options={str(inbox): rule})
    async with rig(tmp_path, sqlite_url) as r, r.hotfolder(cfg):
        (inbox / "a.mp4.montage.json").write_text('{"reel": {"transition": "dip"}, "max_clips": 3}')
        shutil.copyfile(clips[0], inbox / "a.mp4")
        (inbox / "b.montage.json").write_text('{"reel": true}')  # the short name: b.mp4 → b.montage.json
        shutil.copyfile(clips[1], inbox / "b.mp4")
        shutil.copyfile(clips[2], inbox / "c.mp4")  # no options file: the rule alone
        events = await r.wait_for(lambda: len(r.kinds("job.submitted")) == 3 and r.kinds("job.submitted"))
        await anyio.sleep(SETTLE * 2)
        assert len(r.kinds("job.submitted")) == 3  # the options files are no jobs
        jobs = {Path(e.data["source"]).name: await r.store.get(e.job_id) for e in events}
        asked = {name: {k: v for k, v in job.spec.options.items() if k != "hotfolder"}
                 for name, job in jobs.items() if job is not None}
        assert asked == {"a.mp4": {**rule, "max_clips": 3, "reel": {"transition": "dip"}},
                         "b.mp4": {**rule, "reel": True}, "c.mp4": rule}
        assert sorted(p.name for p in (inbox / "processing").iterdir()) == [
            "a.mp4", "a.mp4.montage.json", "b.montage.json", "b.mp4", "c.mp4"]
        # the job ends: the options file goes on with its file
        job = jobs["a.mp4"]
        assert job is not None
        while (claimed := await r.store.claim("w", 30)) is not None and claimed.id != job.id:
            pass
        await r.store.finish(job.id, {"clips": []})
        done = await r.store.get(job.id)
        assert done is not None
        await on_job_finished(cfg, done)
        assert sorted(p.name for p in (inbox / "done").iterdir()) == ["a.mp4", "a.mp4.montage.json"]


@pytest.mark.parametrize(("text", "says"), [
    ('{"reel": {"transition": "wipe"}, "colour": "red"}',
     ["options.reel: transition must be 'crossfade' or 'dip' (got {'transition': 'wipe'})",
      "options.colour: not a job option (got 'red')"]),
    ('{"reel": tru', ["the options file is not JSON (Expecting value at line 1 column 10)"]),
    ('["reel"]', ["options: must be a JSON object"]),
    ('{"profiles": ["vertical", "poster"]}', ["options.profiles: 'poster' not configured"]),
])
async def test_a_bad_options_file_refuses_its_file_into_failed(
    tmp_path: Path, sqlite_url: str, clips: list[Path], text: str, says: list[str]
) -> None:
    inbox = tmp_path / "in"
    async with rig(tmp_path, sqlite_url) as r, r.hotfolder(hot_cfg(inbox, after="move")):
        (inbox / "talk.montage.json").write_text(text)
        shutil.copyfile(clips[0], inbox / "talk.mp4")
        failed = inbox / "failed"
        await r.wait_for(lambda: (failed / "talk.mp4.error.txt").exists())
        note = (failed / "talk.mp4.error.txt").read_text()
        assert "talk.montage.json" in note and all(s in note for s in says), note
        assert (failed / "talk.montage.json").exists() and (failed / "talk.mp4").exists()
        assert r.kinds("job.submitted") == []


async def test_folder_rules_name_watched_folders_and_configured_profiles(tmp_path: Path,
                                                                         sqlite_url: str) -> None:
    inbox, other = tmp_path / "in", tmp_path / "other"
    cfg = hot_cfg(inbox, folder_options={str(other): {"max_clips": 1}, str(inbox): {"profiles": ["poster"]}})
    async with rig(tmp_path, sqlite_url) as r:
        with pytest.raises(ConfigError) as err:
            await run_hotfolder(cfg, r.submitter, gate=IntakeGate())
    msg = str(err.value)
    assert f"hotfolder.folder_options.{str(other)!r}: not one of hotfolder.paths" in msg
    assert f"hotfolder.folder_options.{str(inbox)!r}.profiles: 'poster' is not configured" in msg
    with pytest.raises(ValueError, match=r"options\.reel: must be true, false or an object"):
        hot_cfg(inbox, folder_options={str(inbox): {"reel": "yes"}})
