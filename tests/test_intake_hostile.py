"""Hostile intake against a real daemon: every bad entry ends alone, the daemon keeps serving.

One daemon per store (SQLite, PostgreSQL) takes hostile hot-folder drops, Redis entries and socket
submits at once; a second test swaps a queued file for a symlink (and for another file); the side
tasks (moving originals, publishing outcomes) meet unwritable folders and a Redis that refuses
writes; a property-based fuzz sends generated socket submits and Redis entries to a live daemon
for about a minute and checks that every entry ends and the daemon keeps serving.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import pytest
import redis
import redis.asyncio as aioredis
from conftest import REDIS_URL, make_talk_clip
from daemon_harness import DaemonProcess, intake_env, running_daemon, wait_state
from daemon_harness import request as ask
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from services import own_redis

from montaged.config import HotFolderConfig, RedisIntakeConfig
from montaged.events import EventBus
from montaged.gate import IntakeGate
from montaged.intake import SubmitError, Submitter
from montaged.media.source_file import MediaChanged, SourceFile, UnreadableSource, identity_of, open_source
from montaged.metrics import REGISTRY
from montaged.model import Job, JobSpec, JobState, MediaIdentity
from montaged.sources.hotfolder import on_job_finished
from montaged.sources.redis_stream import RedisIntake
from montaged.store import open_store

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(240)]

NON_UTF8 = b"talk-\xff\xfe.mp4"
REFUSALS = {"bad_submission", "bad_request", "bad_json", "line_too_long"}
"""Error codes of a refused submit: by the intake, or already by the protocol's parser."""


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory, ffmpeg: str) -> Path:
    return make_talk_clip(tmp_path_factory.mktemp("media") / "talk.mp4", seconds=2.0, size="160x90")


async def raw_line(sock: Path, line: str) -> bytes:
    """Send one raw request line; the first reply line."""
    async with await anyio.connect_unix(sock) as stream:
        await stream.send(line.encode() + b"\n")
        buf = b""
        with anyio.fail_after(10):
            while b"\n" not in buf:
                buf += await stream.receive()
    return buf.split(b"\n", 1)[0]


async def until(cond: Callable[[], Any], timeout: float = 60.0, what: str = "condition") -> Any:
    with anyio.fail_after(timeout):
        while not (found := await cond()):  # noqa: ASYNC110 (polls files, Redis and the socket)
            await anyio.sleep(0.1)
    return found


def hostile_redis_entries(root: Path, outside: Path) -> list[tuple[str, dict[bytes, bytes]]]:
    """(what, fields): each must end in the dead-letter stream with a reason."""
    fifo = root / "pipe.mp4"
    os.mkfifo(fifo)
    p = str(root).encode()
    return [
        ("~user path", {b"path": b"~nosuchuser/talk.mp4"}),
        ("NUL in path", {b"path": p + b"/ta\x00lk.mp4"}),
        ("non-UTF-8 path", {b"path": p + b"/" + NON_UTF8}),
        ("binary path", {b"path": bytes(range(256))}),
        ("path too long", {b"path": p + b"/" + b"a/" * 3000 + b"x.mp4"}),
        ("name too long", {b"path": p + b"/" + b"n" * 300 + b".mp4"}),
        ("missing file", {b"path": p + b"/missing.mp4"}),
        ("relative path", {b"path": b"talk.mp4"}),
        ("a directory", {b"path": p}),
        ("a FIFO", {b"path": str(fifo).encode()}),
        ("symlink out of the roots", {b"path": str(root / "escape.mp4").encode()}),
        ("outside the roots", {b"path": str(outside).encode()}),
        ("huge options", {b"path": p + b"/x.mp4", b"options": b'{"a": "' + b"x" * 200_000 + b'"}'}),
        ("deep options", {b"path": p + b"/x.mp4", b"options": b"[" * 50_000}),
        ("deep options within size", {b"path": p + b"/x.mp4", b"options": b'{"a":' * 20 + b"1" + b"}" * 20}),
        ("huge number", {b"path": p + b"/x.mp4", b"options": b'{"n": ' + b"9" * 5000 + b"}"}),
        ("binary options", {b"path": p + b"/x.mp4", b"options": b"\xff\xfe{}"}),
        ("NUL in options", {b"path": p + b"/x.mp4", b"options": b'{"a": "\\u0000"}'}),
        ("lone surrogate in options", {b"path": p + b"/x.mp4", b"options": b'{"a": "\\udcff"}'}),
        ("reserved option", {b"path": p + b"/x.mp4", b"options": b'{"hotfolder": {"file": [1]}}'}),
        ("unknown fields", {b"path": p + b"/x.mp4", **{f"f{i}".encode() * 30: b"v" for i in range(200)}}),
        ("huge request id", {b"path": p + b"/x.mp4", b"request_id": b"r" * 100_000}),
        ("NUL profile", {b"path": p + b"/x.mp4", b"profile": b"verti\x00cal"}),
        ("unknown profile", {b"path": p + b"/x.mp4", b"profile": b"p" * 100}),
        ("output_dir ~user", {b"path": p + b"/x.mp4", b"output_dir": b"~root/out"}),
        ("no path", {b"request_id": b"only-an-id"}),
    ]


def hostile_submits(root: Path, outside: Path) -> list[tuple[str, dict[str, Any]]]:
    """(what, submit fields): each must get an error reply, never a job or a dropped connection."""
    r = str(root)
    return [
        ("~user path", {"path": "~nosuchuser/talk.mp4"}),
        ("~ path", {"path": "~/talk.mp4"}),
        ("NUL in path", {"path": f"{r}/ta\x00lk.mp4"}),
        ("path too long", {"path": r + "/a" * 3000 + ".mp4"}),
        ("name too long", {"path": f"{r}/{'n' * 300}.mp4"}),
        ("control characters", {"path": f"{r}/two\nlines.mp4"}),
        ("lone surrogate in path", {"path": f"{r}/talk-\udcff.mp4"}),
        ("missing file", {"path": f"{r}/missing.mp4"}),
        ("a FIFO", {"path": f"{r}/pipe.mp4"}),
        ("symlink out of the roots", {"path": f"{r}/escape.mp4"}),
        ("outside the roots", {"path": str(outside)}),
        ("deep options", {"path": f"{r}/x.mp4", "options": json.loads('{"a":' * 12 + "1" + "}" * 12)}),
        ("huge options", {"path": f"{r}/x.mp4", "options": {"a": "x" * 200_000}}),
        ("NUL in options", {"path": f"{r}/x.mp4", "options": {"a": "\x00"}}),
        ("reserved option", {"path": f"{r}/x.mp4", "options": {"redis": {"stream": "s", "entry": "1-0"}}}),
        ("output_dir NUL", {"path": f"{r}/x.mp4", "output_dir": f"{r}/o\x00ut"}),
        ("output_dir ~user", {"path": f"{r}/x.mp4", "output_dir": "~nosuchuser/out"}),
        ("profile NUL", {"path": f"{r}/x.mp4", "profile": "verti\x00cal"}),
    ]


@pytest.mark.parametrize("store", ["sqlite", "postgres"])
async def test_hostile_entries_end_alone_and_the_daemon_keeps_serving(
    store: str, tmp_path: Path, clip: Path, redis_prefix: str, request: pytest.FixtureRequest
) -> None:
    root, hot = tmp_path, tmp_path / "hot"
    env = intake_env(hot, redis_prefix, MONTAGE_FRAME__ENABLED="false")
    if store == "postgres":
        env["MONTAGE_STORE__URL"] = request.getfixturevalue("pg_url")
    hot.mkdir()
    outside = tmp_path.parent / f"{tmp_path.name}-outside.mp4"
    shutil.copy(clip, outside)
    (root / "escape.mp4").symlink_to(outside)
    shutil.copy(clip, root / "x.mp4")
    entries = hostile_redis_entries(root, outside)
    submits = hostile_submits(root, outside)
    sock = tmp_path / "run" / "montaged.sock"
    r = aioredis.Redis.from_url(REDIS_URL)
    try:
        async with running_daemon(tmp_path, **env):
            # hot folder: a name that is not UTF-8, a name with a newline, a symlink out of the roots,
            # and a file that is not media (a job that fails: its original goes to failed/ at job end)
            fd = os.open(os.path.join(os.fsencode(hot), NON_UTF8), os.O_WRONLY | os.O_CREAT, 0o644)
            os.write(fd, clip.read_bytes())
            os.close(fd)
            shutil.copy(clip, hot / "two\nlines.mp4")
            (hot / "linked.mp4").symlink_to(outside)
            (hot / "notmedia.mp4").write_bytes(os.urandom(4096))
            ids = [(what, (await r.xadd(f"{redis_prefix}jobs", fields)).decode()) for what, fields in entries]
            for what, fields in submits:  # raw lines: what any program may write to the socket
                reply = json.loads(await raw_line(sock, json.dumps({"id": 7, "op": "submit", **fields})))
                assert reply["ok"] is False, what
                assert reply["error"]["code"] in REFUSALS, (what, reply)
                assert reply["error"]["message"], what

            failed = hot / "failed"

            async def all_failed() -> bool:
                names = set(os.listdir(os.fsencode(failed))) if failed.exists() else set()
                want = {NON_UTF8, b"two\nlines.mp4", b"linked.mp4", b"notmedia.mp4"}
                return want | {n + b".error.txt" for n in want} <= names

            await until(all_failed, what="every hostile drop in failed/")
            notes = {n: (failed / os.fsdecode(n + b".error.txt")).read_text(encoding="utf-8")
                     for n in (NON_UTF8, b"two\nlines.mp4", b"linked.mp4", b"notmedia.mp4")}
            assert "not valid UTF-8" in notes[NON_UTF8] and "talk-\\xff\\xfe.mp4" in notes[NON_UTF8]
            assert "control characters" in notes[b"two\nlines.mp4"]
            assert "outside the input roots" in notes[b"linked.mp4"]
            assert "not_media" in notes[b"notmedia.mp4"]

            async def all_dead() -> list[dict[bytes, bytes]] | None:
                dead = [f for _id, f in await r.xrange(f"{redis_prefix}dead")]
                return dead if len(dead) >= len(ids) else None

            dead = await until(all_dead, what="every hostile entry dead-lettered")
            by_entry = {d[b"entry_id"].decode(): d for d in dead}
            for what, eid in ids:
                assert eid in by_entry, f"{what}: not dead-lettered"
                assert by_entry[eid][b"reason"], what
                assert len(by_entry[eid][b"fields"]) < 40_000, f"{what}: the dead letter is not bounded"
            groups = [{(k.decode() if isinstance(k, bytes) else k): v for k, v in g.items()}
                      for g in await r.xinfo_groups(f"{redis_prefix}jobs")]
            name = f"{redis_prefix}group"
            group = next(g for g in groups if g["name"] in (name, name.encode()))
            assert group["pending"] == 0 and group["lag"] == 0

            # still serving: a good file is taken from the socket, nothing hostile became a job
            assert (await ask(sock, "ping"))["pong"] is True
            await ask(sock, "pause")
            job = await ask(sock, "submit", path=str(root / "x.mp4"))
            assert job["spec"]["media"]["size"] == (root / "x.mp4").stat().st_size
            jobs = (await ask(sock, "list"))["jobs"]
            assert {j["spec"]["source"] for j in jobs} == {str(root / "x.mp4"), str(hot / "processing" /
                                                                                   "notmedia.mp4")}
    finally:
        await r.aclose()
        outside.unlink(missing_ok=True)


async def test_a_queued_file_swapped_after_submit_is_refused(tmp_path: Path, clip: Path) -> None:
    outside = tmp_path.parent / f"{tmp_path.name}-secret.mp4"
    shutil.copy(clip, outside)
    linked, replaced = tmp_path / "linked.mp4", tmp_path / "replaced.mp4"
    for p in (linked, replaced):
        shutil.copy(clip, p)
    sock = tmp_path / "run" / "montaged.sock"
    try:
        async with running_daemon(tmp_path, MONTAGE_FRAME__ENABLED="false"):
            await ask(sock, "pause")
            a = await ask(sock, "submit", path=str(linked))
            b = await ask(sock, "submit", path=str(replaced))
            # after the checks at submit: one becomes a symlink to a file outside the roots,
            # the other is replaced by another file under the same name
            linked.unlink()
            linked.symlink_to(outside)
            os.replace(make_talk_clip(tmp_path / "new.mp4", seconds=1.0, size="160x90"), replaced)
            await ask(sock, "resume")
            for job_id, words in ((a["id"], "symbolic link"), (b["id"], "another file")):
                job = await wait_state(sock, job_id, {"failed", "done"}, timeout=120)
                assert job["state"] == "failed" and job["error_class"] == "media_changed", job
                assert job["error_stage"] == "probe" and words in job["error_message"]
                assert str(tmp_path) in job["error_message"] and "/proc/" not in job["error_message"]
            assert (await ask(sock, "ping"))["pong"] is True
    finally:
        outside.unlink(missing_ok=True)


def _metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def _ended(job_id: str, source: Path, state: JobState = JobState.FAILED) -> Job:
    return Job(id=job_id, spec=JobSpec(source=str(source), origin="hotfolder"), state=state, stage=None,
               progress=1.0, created_at=0.0, updated_at=0.0, error_class="not_media", error_message="no",
               error_stage="probe")


async def test_moving_originals_never_raises(tmp_path: Path) -> None:
    hot = tmp_path / "hot"
    (hot / "processing").mkdir(parents=True)
    (hot / "failed").write_text("a file where the failed/ folder should be")
    src = hot / "processing" / "talk.mp4"
    src.write_bytes(b"x")
    cfg = HotFolderConfig(paths=[hot], after="move")
    before = _metric("montage_intake_errors_total", task="hotfolder_results", code="os_eexist")
    await on_job_finished(cfg, _ended("j1", src))  # failed/ cannot be created: logged, counted
    assert src.exists()
    assert _metric("montage_intake_errors_total", task="hotfolder_results", code="os_eexist") == before + 1
    (hot / "failed").unlink()
    await on_job_finished(cfg, _ended("j1", src))  # the next sweep succeeds
    assert not src.exists() and (hot / "failed" / "talk.mp4.error.txt").exists()
    weird = Job(id="j2", spec=JobSpec(source=str(hot / "processing" / "b.mp4"), origin="hotfolder"),
                state=JobState.DONE, stage=None, progress=1.0, created_at=0.0, updated_at=0.0,
                result={"clips": "not a list"})
    await on_job_finished(cfg, weird)  # gone already: nothing to do, nothing raised


@pytest.mark.parametrize("fault", ["wrong_type", "oom", "read_only"])
async def test_results_writer_contains_refusals_and_publishes_later(
    fault: str, tmp_path: Path, sqlite_url: str
) -> None:
    store = open_store(sqlite_url)
    await store.migrate()
    media = tmp_path / "talk.mp4"
    media.write_bytes(b"x")
    with own_redis() as server:
        client = aioredis.Redis.from_url(server.url, decode_responses=True)
        cfg = RedisIntakeConfig(enabled=True, stream="jobs", results_stream="results",
                                dead_letter_stream="dead")
        submitter = Submitter(store, EventBus(), input_roots=[tmp_path], profiles=["vertical"])
        intake = RedisIntake(cfg, server.url, submitter, EventBus(), gate=IntakeGate())
        try:
            job = await store.submit(JobSpec(source=str(media), origin="redis",
                                             options={"redis": {"stream": "jobs", "entry": "1-0"}}))
            await store.claim("w", 30)
            await store.fail(job.id, stage="probe", error_class="not_media", message="not media")
            if fault == "wrong_type":
                await client.set("results", "a string where the results stream should be")
            elif fault == "oom":
                await client.set("ballast", "x" * 200_000)
                await client.config_set("maxmemory", "1")
                await client.config_set("maxmemory-policy", "noeviction")
            else:
                await client.replicaof("127.0.0.1", "1")  # a replica of nothing: read-only
            before = _metric("montage_intake_errors_total", task="redis_results", code="redis_refused")
            await intake._publish_id(job.id)  # refused: logged and counted, not raised
            assert _metric("montage_intake_errors_total", task="redis_results", code="redis_refused") > before
            if fault == "wrong_type":
                await client.delete("results")
            elif fault == "oom":
                await client.config_set("maxmemory", "0")
            else:
                await client.replicaof("NO", "ONE")
            await intake._catch_up(full=True)  # the next pass publishes it, once
            await intake._catch_up(full=True)
            results = await client.xrange("results")
            assert [f["job_id"] for _id, f in results] == [job.id]
        finally:
            await client.aclose()
            await intake.redis.aclose()
            await store.close()


# ---- property-based fuzz against a live daemon ------------------------------------------------

FUZZ_SECONDS = 20.0
"""Wall time each of the two fuzz phases may take (the examples stop early past it)."""

_text = st.text(st.characters(exclude_categories=()), max_size=40)
_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | _text,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_text, inner, max_size=4),
    max_leaves=20,
)


def _paths(root: str) -> st.SearchStrategy[str]:
    return st.one_of(
        _text,
        _text.map(lambda t: f"{root}/{t}"),
        _text.map(lambda t: f"~{t}/talk.mp4"),
        st.sampled_from([root, f"{root}/pipe.mp4", f"{root}/escape.mp4", "/", "/dev/zero", "/proc/self/mem",
                         f"{root}/../../etc/passwd", f"{root}/" + "a" * 300, root + "/a" * 2100]),
    )


def _submits(root: str) -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries({"path": _paths(root)}, optional={
        "profile": _text | st.sampled_from(["vertical", "square"]),
        "options": st.dictionaries(_text, _json, max_size=5) | _json,
        "output_dir": _paths(root) | _json,
    })


def _entries(root: str) -> st.SearchStrategy[dict[bytes, bytes]]:
    fields = st.sampled_from([b"path", b"profile", b"options", b"request_id", b"output_dir"])
    value = st.one_of(
        st.binary(max_size=200),
        _paths(root).map(lambda p: p.encode("utf-8", "surrogatepass")),
        _json.map(lambda j: json.dumps(j).encode()),
        st.integers(1, 3000).map(lambda n: b"[" * n + b"]" * n),
    )
    return st.dictionaries(fields | st.binary(min_size=1, max_size=20), value, min_size=1, max_size=6)


class SyncControl:
    """One raw line per connection, as any local program could send it."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def send(self, line: bytes) -> dict[str, Any]:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(15)
            s.connect(str(self.path))
            s.sendall(line + b"\n")
            buf = b""
            while b"\n" not in buf:
                chunk = s.recv(65536)
                if not chunk:
                    raise AssertionError(f"the daemon closed the connection unanswered: {line[:200]!r}")
                buf += chunk
        reply: dict[str, Any] = json.loads(buf.split(b"\n", 1)[0])
        return reply


@pytest.mark.timeout(300)
def test_fuzzed_intake_entries_all_end_and_the_daemon_keeps_serving(
    tmp_path: Path, redis_prefix: str, ffmpeg: str
) -> None:
    root = str(tmp_path)
    os.mkfifo(tmp_path / "pipe.mp4")
    outside = tmp_path.parent / f"{tmp_path.name}-outside.mp4"
    outside.write_bytes(b"not for the daemon")
    (tmp_path / "escape.mp4").symlink_to(outside)
    env = intake_env(tmp_path, redis_prefix, MONTAGE_FRAME__ENABLED="false")
    env = {k: v for k, v in env.items() if "HOTFOLDER" not in k}
    daemon = DaemonProcess(tmp_path, **env).start()
    r = redis.Redis.from_url(REDIS_URL)
    stream, ids = f"{redis_prefix}jobs", []
    try:
        anyio.run(daemon.wait_ready)
        control = SyncControl(daemon.socket)
        refused = Counter[str]()

        started = time.monotonic()

        @settings(max_examples=1500, deadline=None, database=None, suppress_health_check=list(HealthCheck))
        @given(_submits(root))
        def submit(fields: dict[str, Any]) -> None:
            if time.monotonic() - started > FUZZ_SECONDS:
                return
            reply = control.send(json.dumps({"id": 1, "op": "submit", **fields}).encode())
            assert reply["ok"] is False, (fields, reply)
            refused[reply["error"]["code"]] += 1

        submit()
        started = time.monotonic()

        @settings(max_examples=1500, deadline=None, database=None, suppress_health_check=list(HealthCheck))
        @given(_entries(root))
        def push(fields: dict[bytes, bytes]) -> None:
            if time.monotonic() - started > FUZZ_SECONDS:
                return
            ids.append(r.xadd(stream, fields).decode())  # type: ignore[arg-type, union-attr]

        push()
        assert control.send(b'{"id":2,"op":"ping"}')["ok"] is True

        deadline = time.monotonic() + 60
        while True:
            dead = {f[b"entry_id"].decode() for _id, f in r.xrange(f"{redis_prefix}dead")}  # type: ignore[union-attr]
            jobs = control.send(b'{"id":3,"op":"list","limit":5000}')["result"]["jobs"]
            made = {j["spec"]["options"].get("redis", {}).get("entry") for j in jobs}
            lost = [eid for eid in ids if eid not in dead and eid not in made]
            if not lost:
                break
            assert time.monotonic() < deadline, f"{len(lost)} of {len(ids)} entries never ended: {lost[:5]}"
            time.sleep(0.5)
        group = next(g for g in r.xinfo_groups(stream) if g["name"] in (f"{redis_prefix}group",  # type: ignore[union-attr]
                                                                          f"{redis_prefix}group".encode()))
        assert group["pending"] == 0 and group["lag"] == 0
        assert daemon.proc is not None and daemon.proc.poll() is None, daemon.log()[-3000:]
        assert "task crashed" not in daemon.log() and "Traceback" not in daemon.log(), daemon.log()[-3000:]
        print(f"fuzz: {sum(refused.values())} socket submits refused {dict(refused)};"
              f" {len(ids)} redis entries, {len(dead & set(ids))} dead-lettered, {len(made & set(ids))} jobs")
    finally:
        daemon.stop()
        r.close()
        outside.unlink(missing_ok=True)


# ---- the validation and the checked open, without a daemon --------------------------------------


async def test_every_field_is_bounded_before_the_filesystem_is_touched(
    tmp_path: Path, sqlite_url: str
) -> None:
    store = open_store(sqlite_url)
    await store.migrate()
    media = tmp_path / "talk.mp4"
    media.write_bytes(b"x" * 10)
    sub = Submitter(store, EventBus(), input_roots=[tmp_path], profiles=["vertical"],
                    output_roots=[tmp_path / "out"])
    good = JobSpec(source=str(media), options={"max_clips": 3, "recut_of": {"a": [1, 2.5, None, True]}})
    checked = sub.check(good)
    assert checked.media is not None
    assert (checked.media.size, checked.media.inode) == (10, media.stat().st_ino)
    bad: list[tuple[JobSpec, str]] = [
        (JobSpec(source="~nosuchuser/talk.mp4"), "not an absolute path"),
        (JobSpec(source=str(tmp_path) + "/a\x00b"), "NUL"),
        (JobSpec(source=str(tmp_path) + "/talk-\udcff.mp4"), "talk-\\xff.mp4: the name is not valid UTF-8"),
        (JobSpec(source=str(tmp_path) + "/" + "n" * 256), "more than a file name may be"),
        (JobSpec(source=str(tmp_path) + "/a" * 2100), "more than a path may be"),
        (JobSpec(source=str(tmp_path) + "/a\tb.mp4"), "control characters"),
        (JobSpec(source=str(media), profile="nope"), "not configured"),
        (JobSpec(source=str(media), profile=7), "must be a string"),  # type: ignore[arg-type]
        (JobSpec(source=str(media), options=[1]), "must be a JSON object"),  # type: ignore[arg-type]
        (JobSpec(source=str(media), options={"a": float("nan")}), "not a finite number"),
        (JobSpec(source=str(media), options={"a": 2**70}), "does not fit 64 bits"),
        (JobSpec(source=str(media), options={"a": object()}), "not a JSON value"),
        (JobSpec(source=str(media), options={"k" * 200: 1}), "longer than 128 bytes"),
        (JobSpec(source=str(media), options={"a": "x" * 70_000}), "options are small values"),
        (JobSpec(source=str(media), options={"a": ["y" * 1000] * 100}), "more than 65536"),
        (JobSpec(source=str(media), options={"hotfolder": {}}), "recorded by the hotfolder intake"),
        (JobSpec(source=str(media), options={"reel": "sideways"}), "options.reel: must be true, false or"),
        (JobSpec(source=str(media), options={"colour": True}), "options.colour: not a job option (got True)"),
        (JobSpec(source=str(media), options={"max_clips": 0}), "options.max_clips: must be a whole number"),
        (JobSpec(source=str(media), origin="mail"), "origin"),
        (JobSpec(source=str(media), output_dir="/etc"), "outside the output folder"),
        (JobSpec(source=str(media), output_dir="~root"), "not an absolute path"),
    ]
    deep: dict[str, Any] = {}
    for _ in range(10):
        deep = {"a": deep}
    bad.append((JobSpec(source=str(media), options=deep), "nested deeper than 8"))
    for spec, words in bad:
        with pytest.raises(SubmitError) as err:
            sub.check(spec)
        assert words in str(err.value), (spec, str(err.value))
        str(err.value).encode("utf-8")  # every message is printable text
    await store.close()


def test_a_spec_stored_before_identities_still_loads() -> None:
    old = {"source": "/m/a.mp4", "profile": "vertical", "origin": "socket", "options": {}, "output_dir": None}
    assert JobSpec.from_dict(old).media is None
    ident = MediaIdentity(1, 2, 3, 4)
    spec = JobSpec(source="/m/a.mp4", media=ident)
    assert JobSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec
    assert JobSpec.from_dict({**old, "media": {"device": "x"}}).media is None


def test_the_checked_open_refuses_what_the_path_has_become(tmp_path: Path) -> None:
    root, outside_dir = tmp_path / "in", tmp_path / "elsewhere"
    root.mkdir()
    outside_dir.mkdir()
    media = root / "talk.mp4"
    media.write_bytes(b"media")
    ident = identity_of(media.stat())
    src = SourceFile(media, ident, (root,))
    with open_source(src) as opened:
        assert opened.pread(5) == b"media"
    fifo = root / "pipe.mp4"
    os.mkfifo(fifo)
    with pytest.raises(UnreadableSource, match="not a regular file"):
        open_source(SourceFile(fifo, None, (root,)))  # refused at once, never blocks on the FIFO
    # a folder of the path swapped for a link out of the roots: the opened file's real place counts
    sub = root / "sub"
    sub.mkdir()
    (sub / "a.mp4").write_bytes(b"a")
    inner = SourceFile(sub / "a.mp4", identity_of((sub / "a.mp4").stat()), (root,))
    shutil.move(str(sub / "a.mp4"), outside_dir / "a.mp4")
    sub.rmdir()
    sub.symlink_to(outside_dir)
    with pytest.raises(MediaChanged, match="outside the input roots"):
        open_source(inner)
    os.utime(media, ns=(1, 1))
    with pytest.raises(MediaChanged, match="has changed since it was submitted"):
        open_source(src)
    media.unlink()
    with pytest.raises(MediaChanged, match="no longer exists"):
        open_source(src)
    with pytest.raises(UnreadableSource, match="not valid UTF-8"):
        open_source(SourceFile(Path(os.fsdecode(bytes(root) + b"/\xff.mp4"))))
