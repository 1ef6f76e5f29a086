"""montage-tui against a real daemon on a temporary socket: keys pressed, screen text asserted.

Every test drives the app with Textual's Pilot at 80×24 and reads what the screen shows (the
compositor's rendered lines), not the app's internals. The daemons are real (in-process
``running_daemon``, or ``DaemonProcess`` where a crash must be real), with a real store, real
events and real media (JFK's speech over a test pattern).
"""

from __future__ import annotations

import multiprocessing.resource_tracker
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import make_talk_clip
from daemon_harness import JFK, DaemonProcess, request, running_daemon
from fake_deepgram import FakeDeepgram, load_fixtures
from rich.style import Style
from textual.app import App
from textual.pilot import Pilot
from textual.widgets._toast import Toast

from montaged.control.client import ControlClient
from montaged.control.protocol import EventKind
from montaged.model import JobEvent
from tui.__main__ import main
from tui.app import MontageApp, make_app
from tui.client import translate
from tui.messages import IntakeChanged, JobChanged, JobEventReceived, JobProgress, JobsLoaded, StatsReceived
from tui.state import JobBook
from tui.widgets import format as fmt
from tui.widgets.budget import level
from tui.widgets.submit import complete, matches

pytestmark = [pytest.mark.timeout(120)]
SIZE = (80, 24)


@pytest.fixture(scope="module", autouse=True)
def resource_tracker() -> Iterator[None]:
    """Textual swaps sys.stderr for an object whose fileno() is -1 while an app runs; a daemon
    started inside the test would then fail to spawn multiprocessing's resource tracker. Start it
    first (the TUI itself never spawns processes)."""
    multiprocessing.resource_tracker.ensure_running()
    yield


# ---- reading the screen ------------------------------------------------------------------------


def screen_lines(app: App[None]) -> list[str]:
    update = app.screen._compositor.render_update(full=True, screen_stack=app._background_screens)
    return ["".join(seg.text for strip in line for seg in strip) for line in update.strips]  # type: ignore[union-attr]


def toasts(app: App[None]) -> list[str]:
    """The notifications on screen, each as one line (the screen wraps them inside the toast)."""
    return [" ".join(toast.render().plain.split()) for toast in app.screen.query(Toast)]


def screen_text(app: App[None]) -> str:
    """The rendered lines, then each visible toast unwrapped (so a message can be matched whole)."""
    return "\n".join([*screen_lines(app), *toasts(app)])


def style_of(app: App[None], words: str) -> Style:
    """The style the screen draws ``words`` in (first occurrence)."""
    update = app.screen._compositor.render_update(full=True, screen_stack=app._background_screens)
    for line in update.strips:  # type: ignore[union-attr]
        for strip in line:
            for seg in strip:
                if words in seg.text:
                    return seg.style or Style()
    raise AssertionError(f"{words!r} is not on screen:\n{screen_text(app)}")


async def until(pilot: Pilot[None], check: Callable[[str], bool], what: str, timeout: float = 30.0) -> str:
    """Wait until the screen text passes ``check``; fail with the screen when it never does."""
    deadline = time.monotonic() + timeout
    while True:
        text = screen_text(pilot.app)
        if check(text):
            return text
        if time.monotonic() > deadline:
            raise AssertionError(f"screen never showed {what} within {timeout} s:\n{text}")
        await pilot.pause(0.1)


def row_of(text: str, needle: str) -> str:
    """The first line holding ``needle``, without a toast drawn over its right side (after ▌)."""
    return next((line.split("▌")[0] for line in text.splitlines() if needle in line), "")


def table_row(text: str, job_id: str) -> list[str]:
    """The jobs-table row of a job (rows start with the short id; toasts never start a line)."""
    return next((line.split() for line in text.splitlines() if line.startswith(job_id[:8])), [])


def budget_row(text: str, period: str) -> list[str]:
    """The budget panel's row for ``period`` (job/day/month), split into its cells."""
    return next((line.split() for line in text.splitlines() if line.strip().startswith(f"{period} ")), [])


def shows(needle: str) -> Callable[[str], bool]:
    return lambda text: needle in text


def shows_all(*needles: str) -> Callable[[str], bool]:
    """Every needle on screen at once (a toast may cover a line for its few seconds; wait it out)."""
    return lambda text: all(needle in text for needle in needles)


def row_is(job_id: str, state: str) -> Callable[[str], bool]:
    return lambda text: table_row(text, job_id)[2:3] == [state]


KEYS = {" ": "space", "/": "slash", ".": "full_stop", "-": "minus", "_": "underscore"}


async def type_text(pilot: Pilot[None], text: str) -> None:
    await pilot.press(*[KEYS.get(c, c) for c in text])


# ---- against a real daemon ---------------------------------------------------------------------


@pytest.mark.anyio
async def test_submit_with_completion_runs_to_done_and_shows_details(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_talk_clip(tmp_path / "talk.mp4", seconds=11, size="320x180", speech=JFK)
    (tmp_path / "talks").mkdir()
    monkeypatch.chdir(tmp_path)  # the dialog starts in the working directory, like a shell
    async with running_daemon(tmp_path) as daemon:
        app = make_app(socket=daemon.settings.control.socket())
        async with app.run_test(size=SIZE, notifications=True) as pilot:
            await until(pilot, shows("1 Jobs"), "the dashboard")
            # a path the daemon refuses: the dialog stays open with the daemon's own words
            await pilot.press("s")
            await until(pilot, shows("Submit a talk"), "the submit dialog")
            await type_text(pilot, "missing.mp4")
            await pilot.press("enter")
            text = await until(pilot, shows("no such file"), "the daemon's refusal")
            assert "bad_submission" in text
            assert "Submit a talk" in screen_text(app)
            # completion: "ta" lists talk.mp4 and talks/, tab takes the common part, "." + tab the file
            await pilot.press("ctrl+u")
            await type_text(pilot, "ta")
            text = await until(pilot, shows("talks/"), "the completion candidates")
            assert "talk.mp4" in text
            await pilot.press("tab")
            await type_text(pilot, ".")
            await pilot.press("tab")
            await until(pilot, shows("▊  talk.mp4 "), "the completed path in the input")
            await pilot.press("enter")
            text = await until(pilot, shows("queued: talk.mp4"), "the submit confirmation")
            assert "Submit a talk" not in text
            job = (await request(daemon.settings.control.socket(), "list"))["jobs"][0]
            # the row follows the job through its stages to done, from pushed events
            await until(pilot, row_is(job["id"], "running"), "the running job")
            text = await until(pilot, row_is(job["id"], "done"), "the finished job", timeout=90)
            row = table_row(text, job["id"])
            assert row[1] == "talk.mp4" and row[3] == "render" and row[4] == "100%", row
            assert row[7] == "1" and row[8] == "$0.00", f"one clip, no cloud cost: {row}"
            job = (await request(daemon.settings.control.socket(), "show", job_id=job["id"]))["job"]
            # the detail view: timings, transcript, each clip, no error
            pilot.app.clear_notifications()  # the "submitted" toast would cover the clip lines
            await pilot.pause()
            await pilot.press("enter")
            clip = job["result"]["clips"][0]
            clip_lines = shows_all(
                "── clips (1)", f"score {clip['score']:.2f}", f"encoder {clip['encoder']}", clip["reason"]
            )
            text = await until(
                pilot,
                lambda t: clip_lines(t) and "ask not what your country" in t.lower(),
                "the job detail with its transcript and clip",
            )
            assert f"Job {job['id']}" in text and "done" in text
            for stage in ("probe", "transcribe", "select", "frame", "render"):
                assert row_of(text, stage), f"no timing for {stage}:\n{text}"
            await pilot.press("end")  # the clip's path and the stored events sit below the fold at 80×24
            below = await until(pilot, shows("events (last"), "the stored events")
            assert clip["path"] in "".join(line.strip() for line in below.splitlines())  # a long path wraps
            assert "job.done" in below
            assert "── error" not in text


@pytest.mark.anyio
async def test_actions_by_keys_and_command_palette(tmp_path: Path) -> None:
    bad = tmp_path / "notes.mp4"
    bad.write_bytes(b"meeting notes, not a video")
    async with running_daemon(tmp_path) as daemon:
        sock = daemon.settings.control.socket()
        app = make_app(socket=sock)
        async with app.run_test(size=SIZE, notifications=True) as pilot:
            await until(pilot, shows("1 Jobs"), "the dashboard")
            await pilot.press("p")
            await until(pilot, shows("PAUSED"), "paused intake in the status line")
            await until(pilot, shows("intake paused"), "the pause confirmation")
            assert (await request(sock, "stats"))["paused"] is True

            job = await request(sock, "submit", path=str(bad))  # another client submits
            short = job["id"][:8]
            await until(pilot, row_is(short, "queued"), "the queued job")
            assert table_row(screen_text(app), short)[1] == "notes.mp4"

            # cancel asks first, then the daemon's answer shows
            await pilot.press("c")
            await until(pilot, shows(f"Cancel job {short}"), "the cancel question")
            await pilot.press("y")
            await until(pilot, row_is(short, "cancelled"), "the cancelled job")
            await until(pilot, shows(f"job {short} cancelled"), "the cancel confirmation")
            # the daemon's own error when the action makes no sense
            await pilot.press("c")
            await until(pilot, shows("Cancel job"), "the cancel question")
            await pilot.press("y")
            refusal = "only queued or running jobs can be cancelled"
            text = await until(pilot, shows(refusal), "the daemon's refusal")
            assert "invalid_state" in text

            # retry from the command palette
            await pilot.press("ctrl+p")
            await type_text(pilot, "retry")
            await until(pilot, shows("Retry job"), "the palette's retry command")
            await pilot.press("enter")
            await until(pilot, row_is(short, "queued"), "the retried job")
            await until(pilot, shows(f"job {short} queued again"), "the retry confirmation")

            # filter by state: queued shows it, running hides it, round again to all
            await pilot.press("f")
            await until(pilot, lambda t: bool(table_row(t, short)), "the queued filter")
            assert style_of(app, " queued 1 ").reverse, "the active filter is highlighted"
            await pilot.press("f")
            await until(pilot, lambda t: not table_row(t, short), "the running filter hiding it")
            await pilot.press("f", "f", "f", "f")
            await until(pilot, lambda t: bool(table_row(t, short)), "all jobs again")

            # resume from the palette: the job runs and fails in probe (not media)
            await pilot.press("ctrl+p")
            await type_text(pilot, "resume")
            await until(pilot, shows("Resume intake"), "the palette's resume command")
            await pilot.press("enter")
            await until(pilot, shows("intake resumed"), "the resume confirmation")
            await until(pilot, lambda t: "PAUSED" not in t, "the status line without PAUSED")
            text = await until(pilot, row_is(short, "failed"), "the failed job", timeout=30)
            assert table_row(text, short)[3] == "probe", "the stage it failed in"
            # the detail view shows the error with its stage; r retries this job from there
            pilot.app.clear_notifications()  # toasts drawn over the detail view would hide its text
            await pilot.pause()
            await pilot.press("enter")
            text = await until(pilot, shows("── error"), "the error in the detail view")
            assert row_of(text, "  class ").split() == ["stage", "probe", "class", "not_media"], text
            assert "not an audio or video file FFmpeg recognises" in " ".join(text.split())  # wrapped
            await pilot.press("r")
            await until(pilot, shows(f"job {short} queued again"), "the retry confirmation")
            shown = await request(sock, "show", job_id=job["id"])
            assert [e["kind"] for e in shown["events"]].count("job.retried") == 2


@pytest.mark.anyio
async def test_budget_panel_blocked_cloud_and_near_cap_spend(
    tmp_path: Path, media_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("MONTAGE_DEEPGRAM_API_KEY", "DEEPGRAM_API_KEY", "CREDENTIALS_DIRECTORY"):
        monkeypatch.delenv(name, raising=False)
    # cloud on without a key: blocked, with the daemon's reason, in the panel and the status line
    env: dict[str, Any] = {"MONTAGE_DEEPGRAM__ENABLED": "true", "MONTAGE_BUDGET__PER_JOB": "0.5",
                           "MONTAGE_BUDGET__PER_DAY": "2", "MONTAGE_BUDGET__PER_MONTH": "40"}
    async with running_daemon(tmp_path / "a", **env) as daemon:
        app = make_app(socket=daemon.settings.control.socket())
        async with app.run_test(size=SIZE, notifications=True) as pilot:
            await until(pilot, shows("cloud ASR BLOCKED"), "the blocked mark in the status line")
            await pilot.press("2")
            text = await until(pilot, shows("CLOUD ASR BLOCKED"), "the budget panel")
            assert "no Deepgram key" in text
            assert budget_row(text, "day")[2:6] == ["$0.00", "$0.00", "$2.00", "$2.00"], text
            assert budget_row(text, "month")[2:6] == ["$0.00", "$0.00", "$40.00", "$40.00"], text

    # real spend (the Deepgram protocol fake over the real SDK) close to a tiny daily cap
    key = "tui-test-key"
    monkeypatch.setenv("MONTAGE_DEEPGRAM_API_KEY", key)
    talk = make_talk_clip(tmp_path / "talk.mp4", seconds=12, size="320x180", speech=JFK)
    async with FakeDeepgram(load_fixtures(["jfk"], media_dir), api_key=key) as fake:
        env = {"MONTAGE_DEEPGRAM__ENABLED": "true", "MONTAGE_DEEPGRAM__BASE_URL": fake.ws_url,
               "MONTAGE_DEEPGRAM__TIMEOUT_SECONDS": "5", "MONTAGE_FRAME__ENABLED": "false",
               "MONTAGE_BUDGET__PRICES_PER_MINUTE": '{"deepgram/nova-3": 0.006}',
               "MONTAGE_BUDGET__PER_DAY": "0.0013", "MONTAGE_BUDGET__PER_MONTH": "40"}
        roots = f'["{tmp_path}"]'
        async with running_daemon(tmp_path / "b", MONTAGE_PATHS__INPUT_ROOTS=roots, **env) as daemon:
            sock = daemon.settings.control.socket()
            app = make_app(socket=sock)
            async with app.run_test(size=SIZE, notifications=True) as pilot:
                await until(pilot, shows("1 Jobs"), "the dashboard")
                await request(sock, "submit", path=str(talk), options={"max_clips": 1})
                job = (await request(sock, "list"))["jobs"][0]
                await until(pilot, row_is(job["id"], "done"), "the finished job", timeout=90)
                job = (await request(sock, "show", job_id=job["id"]))["job"]
                assert job["result"]["cost"] > 0
                await pilot.press("2")
                text = await until(pilot, shows("near cap"), "the near-cap warning", timeout=15)
                stats = await request(sock, "stats")
                spent = next(r for r in stats["budget"] if r["period"].startswith("day:"))["spent"]
                assert budget_row(text, "day")[2] == fmt.money(spent), text
                assert budget_row(text, "job")[1:3] == [job["id"][:8], fmt.money(job["result"]["cost"])], text
                assert "cloud ASR on" in text
                warn = style_of(app, "near cap")
                assert warn.color is not None and warn.color.triplet is not None
                assert warn.color.triplet.hex == "#d7af00", warn  # the warning colour


@pytest.mark.anyio
async def test_unreachable_then_reconnects_across_stop_and_restart(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    sock = tmp_path / "run" / "montaged.sock"
    app = make_app(socket=sock, retry_seconds=0.2)
    async with app.run_test(size=SIZE, notifications=True) as pilot:
        text = await until(pilot, shows("montaged is unreachable"), "the unreachable screen")
        assert "not running" in text and "montaged run" in text and "Trying again" in text
        assert "daemon unreachable" in screen_lines(app)[0]  # the status line
        # the daemon starts after the app: the dashboard comes by itself
        async with running_daemon(tmp_path) as daemon:
            await until(pilot, shows("1 Jobs"), "the dashboard after the daemon started")
            await request(sock, "pause")
            job = await request(sock, "submit", path=str(make_talk_clip(tmp_path / "a.mp4", seconds=2)))
            await until(pilot, row_is(job["id"], "queued"), "the submitted job")
            # a view that missed events (as if it fell behind): the daemon's job counts in the next
            # stats snapshots disagree with it, so it fetches the list again by itself
            app.post_message(JobsLoaded([]))
            await until(pilot, shows("all 0"), "the emptied table")
            await until(pilot, row_is(job["id"], "queued"), "the job back after the resync", timeout=10)
            assert daemon.ready.is_set()
        # a graceful stop: the app says so and keeps trying
        await until(pilot, shows("Lost the connection to montaged"), "the lost-connection screen")
        await pilot.press("s")  # an action with no daemon reports it instead of crashing
        await type_text(pilot, "a.mp4")
        await pilot.press("enter")
        await until(pilot, shows("montaged is unreachable:"), "the submit error without a daemon")
        await pilot.press("escape")
        # and the same store again: the job is back in the table
        async with running_daemon(tmp_path):
            await until(pilot, shows("reconnected to montaged"), "the reconnect notice")
            await until(pilot, shows(job["id"][:8]), "the job from the store")
        assert app.is_running


@pytest.mark.anyio
async def test_killed_daemon_process_never_crashes_the_app(tmp_path: Path) -> None:
    proc = DaemonProcess(tmp_path).start()
    try:
        await proc.wait_ready()
        app = make_app(socket=proc.socket, retry_seconds=0.2)
        async with app.run_test(size=SIZE, notifications=True) as pilot:
            await until(pilot, shows("1 Jobs"), "the dashboard")
            async with ControlClient(proc.socket) as c:
                await c.request("pause")
                job = await c.request("submit", path=str(make_talk_clip(tmp_path / "k.mp4", seconds=2)))
            await until(pilot, shows(job["id"][:8]), "the job")
            proc.kill()  # SIGKILL: no goodbye, a stale socket file left behind
            await until(pilot, shows("Lost the connection"), "the lost-connection screen")
            await until(pilot, lambda t: "stale socket" in t or "not running" in t, "why it is unreachable")
            proc.start()
            await proc.wait_ready()
            await until(pilot, shows(job["id"][:8]), "the job after the restart", timeout=30)
            assert app.is_running
    finally:
        proc.stop()
        if proc.proc is not None and proc.proc.poll() is None:
            proc.signal(signal.SIGKILL)


# ---- pieces without a daemon -------------------------------------------------------------------


def test_main_reports_a_bad_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--config", str(tmp_path / "none.toml")]) == 2
    err = capsys.readouterr().err
    assert "config file not found" in err and "--socket PATH" in err


def test_translate_events_to_messages() -> None:
    job = {"id": "j1", "state": "queued"}
    assert isinstance(translate({"event": "job.submitted", "job_id": "j1", "at": 1.0, "data": {"job": job}}),
                      JobChanged)
    tick = translate({"event": "job.progress", "job_id": "j1", "at": 2.0,
                      "data": {"stage": "render", "stage_progress": 0.5, "progress": 0.8}})
    assert isinstance(tick, JobProgress) and tick.progress == 0.8 and tick.stage == "render"
    newer = JobProgress("j1", "render", 0.6, 0.9, 3.0)
    assert newer.can_replace(tick) and not newer.can_replace(JobProgress("j2", "render", 0.1, 0.8, 3.0))
    stats = translate({"event": "daemon.stats", "job_id": "", "at": 1.0, "data": {"paused": True}})
    assert isinstance(stats, StatsReceived) and stats.can_replace(StatsReceived({}))
    assert translate({"event": "intake.paused", "job_id": "", "at": 1.0, "data": {}}) == IntakeChanged(True)
    failed = translate({"event": "job.failed", "job_id": "j1", "at": 1.0, "data": {}})
    assert isinstance(failed, JobEventReceived) and failed.event.kind is EventKind.JOB_FAILED
    assert translate({"event": "something.new", "job_id": "", "at": 1.0, "data": {}}) is None


def test_job_book_applies_events_like_the_pipeline() -> None:
    book = JobBook()
    book.load([{"id": "a", "state": "queued", "stage": None, "progress": 0.0, "created_at": 100.0},
               {"id": "b", "state": "done", "stage": "render", "progress": 1.0, "created_at": 50.0}])
    assert [j["id"] for j in book.ordered()] == ["a", "b"] and book.counts()["queued"] == 1
    assert book.apply(JobEvent("a", EventKind.JOB_CLAIMED, 110.0, {"attempt": 1, "worker": "w"}))
    assert book.started(book.jobs["a"]) == 110.0
    assert book.progress("a", "render", 0.5, 120.0) and book.jobs["a"]["state"] == "running"
    assert fmt.eta(book.jobs["a"], 130.0, 110.0) == pytest.approx(20.0)
    failed = {"stage": "render", "error_class": "x", "message": "m"}
    assert book.apply(JobEvent("a", EventKind.JOB_FAILED, 131.0, failed))
    assert book.jobs["a"]["error_stage"] == "render" and book.counts()["failed"] == 1
    # a progress tick still in flight when the job failed does not bring it back to life
    assert book.progress("a", "render", 0.9, 131.5) and book.jobs["a"]["state"] == "failed"
    assert not book.apply(JobEvent("zzz", EventKind.JOB_DONE, 1.0))
    assert not book.progress("zzz", "probe", 0.1, 1.0)
    assert [j["id"] for j in book.ordered("done")] == ["b"]


def test_formats_fit_their_columns() -> None:
    assert [fmt.duration(s) for s in (4, 65, 3725, 200000, None)] == ["4s", "1m05s", "1h02m", "2d07h", "–"]
    assert fmt.percent(0.754) == "75%" and fmt.money(12.5) == "$12.50"
    assert fmt.money(0.0042) == "$0.0042" and fmt.money(0) == "$0.00"
    assert level(0.0, 0.0, 10.0) == "ok" and level(7.0, 1.0, 10.0) == "near"
    assert level(9.0, 1.0, 10.0) == "over"
    assert level(0.0, 0.0, 0.0) == "over"


def test_path_completion(tmp_path: Path) -> None:
    (tmp_path / "talk.mp4").write_bytes(b"")
    (tmp_path / "talks").mkdir()
    (tmp_path / ".hidden.mp4").write_bytes(b"")
    assert matches(f"{tmp_path}/ta") == ["talks/", "talk.mp4"]
    assert complete(f"{tmp_path}/ta") == f"{tmp_path}/talk"
    assert complete(f"{tmp_path}/talk.") == f"{tmp_path}/talk.mp4"
    assert complete(f"{tmp_path}/talks") == f"{tmp_path}/talks/"
    assert complete(f"{tmp_path}/x") is None
    assert matches(f"{tmp_path}/") == ["talks/", "talk.mp4"]  # hidden files only when asked for
    assert matches(f"{tmp_path}/.h") == [".hidden.mp4"]
    assert matches("/no/such/folder/x") == []


def test_app_is_a_montage_app() -> None:
    app = make_app(socket="/run/montage/montaged.sock")
    assert isinstance(app, MontageApp) and app.socket_path == Path("/run/montage/montaged.sock")
