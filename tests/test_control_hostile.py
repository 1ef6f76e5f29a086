"""The control socket against hostile clients, each case on a real running daemon.

Every class of input or behaviour that could once stop the daemon (unbounded JSON, huge numbers,
endless lines, idle or unreadable clients, connection floods, running out of descriptors,
foreign users) ends at most the offending connection; a property-based fuzz test sends arbitrary
lines and checks after every example that the daemon still answers.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import psutil
import pytest
from anyio.abc import SocketStream
from daemon_harness import DaemonProcess, running_daemon
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from montaged.control import protocol as p
from montaged.control.client import ControlClient, DaemonUnreachable
from montaged.control.peers import SocketFolderUnsafe, prepare_folder
from montaged.control.server import ControlServer
from montaged.events import EventBus
from montaged.metrics import CONTROL_DROPPED
from montaged.model import JobEvent

pytestmark = [pytest.mark.timeout(300)]
anyio_test = pytest.mark.anyio
NOBODY = 65534


@pytest.fixture
def wired() -> Any:
    """In-process daemons; their control server reads the whole ControlConfig (cap, timeouts, peers)."""
    return running_daemon


async def _lines(stream: SocketStream, count: int, timeout: float = 20) -> list[dict[str, Any]]:
    """Read ``count`` reply lines (skipping pushed events), or fewer if the daemon closes."""
    data, out = b"", []
    with anyio.fail_after(timeout):
        while len(out) < count:
            while b"\n" not in data:
                try:
                    data += await stream.receive()
                except (anyio.EndOfStream, anyio.BrokenResourceError):
                    return out
            line, data = data.split(b"\n", 1)
            msg = json.loads(line)
            if "event" not in msg:
                out.append(msg)
    return out


async def _eof(stream: SocketStream, timeout: float = 30) -> list[dict[str, Any]]:
    """Every line until the daemon closes the connection."""
    data = b""
    with anyio.fail_after(timeout):
        while True:
            try:
                data += await stream.receive()
            except (anyio.EndOfStream, anyio.BrokenResourceError):
                break
    return [json.loads(line) for line in data.splitlines()]


def _code(reply: dict[str, Any]) -> str | None:
    return (reply.get("error") or {}).get("code")


async def _ping(sock: Path) -> None:
    async with ControlClient(sock, timeout=20) as c:
        assert (await c.request("ping"))["pong"] is True


# -- bounded parsing and contained failures ------------------------------------------------------

HOSTILE: list[tuple[bytes, str, str]] = [
    (b"[" * 50_000, "bad_request", "nesting deeper than 32"),
    (b'{"id":' + b"7" * 5000 + b',"op":"ping"}', "bad_request", "number too large"),
    (b'{"id":1,"op":"list","limit":1e400}', "bad_request", "number too large"),
    (b'{"id":2,"op":"submit","options":' + b'{"a":' * 40 + b"1" + b"}" * 41, "bad_request",
     "options.a.a"),
    (b'{"id":3,"op":"submit","path":"' + b"x" * 20_000 + b'"}', "bad_request", "path: a string of 20000"),
    (b'{"id":' + b"1" * 30 + b',"op":"ping"}', "bad_request", "id: "),
    (b'{"id":"' + b"i" * 300 + b'","op":"ping"}', "bad_request", "id: "),
    (b'{"id":true,"op":"ping"}', "bad_request", "id: "),
    (b"\xff\xfe\x00garbage", "bad_json", "UTF-8"),
    (b'{"id":4,"op":"ping"', "bad_json", "not JSON"),
    (b"\x00" * 100, "bad_json", "not JSON"),
    (b'{"id":5,"op":"submit","path":"/in/a\\u0000b.mp4"}', "", ""),  # refused by intake, any code
    (b'{"id":6,"op":"show","job_id":"' + "é".encode() * 1000 + b'"}', "not_found", ""),
    (b'{"id":8,"op":"ping","' + b"k" * 20_000 + b'":1}', "bad_request", "a key of 20000"),
]


@anyio_test
async def test_hostile_lines_get_error_replies(tmp_path: Path) -> None:
    async with running_daemon(tmp_path) as daemon:
        sock = daemon.settings.control.socket()
        stream = await anyio.connect_unix(sock)
        async with stream:
            for payload, code, words in HOSTILE:
                await stream.send(payload + b"\n")
                [reply] = await _lines(stream, 1)
                assert reply["ok"] is False, payload[:60]
                if code:
                    assert _code(reply) == code, (payload[:60], reply)
                    assert words in reply["error"]["message"], (payload[:60], reply)
                    assert ";" in reply["error"]["message"] or code == "not_found"  # what; what to do
            # an oversized line (over control.max_line_bytes) gets one reply, the connection lives on
            oversized = b'{"id":9,"op":"ping","pad":"' + b"z" * 300_000 + b'"}\n'
            await stream.send(oversized + b'{"id":10,"op":"ping"}\n')
            replies = await _lines(stream, 2)
            assert [(r["id"], _code(r)) for r in replies] == [(None, "line_too_long"), (10, None)]
        # a client that hangs up in the middle of its reply, many times over
        for _ in range(20):
            s = await anyio.connect_unix(sock)
            await s.send(b'{"id":1,"op":"stats"}\n' * 50)
            await s.aclose()
        await _ping(sock)
        assert daemon.stopped.is_set() is False


async def _failing_handler(request: p.Request) -> Any:
    """Ops that fail the way bugs do: an unexpected exception, a result that cannot be encoded."""
    if request.op == "show":
        raise RecursionError("maximum recursion depth exceeded")
    if request.op == "list":
        loop: dict[str, Any] = {}
        loop["self"] = loop
        return loop
    return {"pong": True}


@anyio_test
async def test_failures_stay_inside_their_connection(tmp_path: Path) -> None:
    """The server alone, with a handler that fails: each failure ends at most its connection."""
    bus = EventBus()
    server = ControlServer(tmp_path / "run" / "c.sock", _failing_handler, bus)
    async with anyio.create_task_group() as tg:
        await tg.start(server.serve)
        stream = await anyio.connect_unix(server.path)
        async with stream:
            await stream.send(b'{"id":1,"op":"show"}\n{"id":2,"op":"list"}\n{"id":3,"op":"ping"}\n')
            replies = await _lines(stream, 3)
            assert [(r["id"], _code(r)) for r in replies] == [(1, "internal"), (2, "internal"), (3, None)]
            assert "RecursionError" in replies[0]["error"]["message"]
        # an event that cannot be encoded ends the subscriber's connection, not the server
        feed = await anyio.connect_unix(server.path)
        async with feed:
            await feed.send(b'{"id":1,"op":"subscribe"}\n')
            await _lines(feed, 1)
            loop: dict[str, Any] = {}
            loop["self"] = loop
            bus.publish(JobEvent(job_id="j", kind="job.progress", at=0.0, data=loop))
            assert await _eof(feed) == []
        before = CONTROL_DROPPED.labels(reason="error")._value.get()
        assert before >= 1
        await _ping(server.path)
        assert server.active <= 1
        tg.cancel_scope.cancel()


# -- limits: cap, idle and partial-line timeouts, unreadable clients --------------------------------


@anyio_test
async def test_cap_and_timeouts(tmp_path: Path, wired: Any) -> None:
    async with wired(tmp_path, MONTAGE_CONTROL__MAX_CONNECTIONS="4",
                     MONTAGE_CONTROL__IDLE_TIMEOUT_SECONDS="2",
                     MONTAGE_CONTROL__LINE_TIMEOUT_SECONDS="2",
                     MONTAGE_CONTROL__SEND_TIMEOUT_SECONDS="2") as daemon:
        sock = daemon.settings.control.socket()
        async with contextlib.AsyncExitStack() as held:
            streams = [await held.enter_async_context(await anyio.connect_unix(sock)) for _ in range(4)]
            for i, s in enumerate(streams):  # admitted: each answers
                await s.send(b'{"id":%d,"op":"ping"}\n' % i)
                assert (await _lines(s, 1))[0]["ok"] is True
            extra = await anyio.connect_unix(sock)
            async with extra:
                [refused] = await _eof(extra)
            assert _code(refused) == "too_many_connections" and "control.max_connections" in \
                refused["error"]["message"]
            with pytest.raises(DaemonUnreachable, match=r"serves 4 control connections.*too_many_conn"):
                await _ping(sock)  # what montagectl and the TUI show (montagectl: exit 3)

            # streams[0] subscribes (a listener may stay silent), [1] idles, [2] sends half a line
            await streams[0].send(b'{"id":1,"op":"subscribe"}\n')
            assert (await _lines(streams[0], 1))[0]["result"]["subscribed"] is True
            await streams[2].send(b'{"id":1,"op":"pi')
            started = time.monotonic()
            idle, partial = await _eof(streams[1]), await _eof(streams[2])
            assert [_code(r) for r in idle] == ["idle_timeout"]
            assert [_code(r) for r in partial] == ["line_timeout"]
            assert time.monotonic() - started < 20
            # a line trickled a byte at a time is cut at the line timeout too
            trickle = await anyio.connect_unix(sock)
            async with trickle:
                with anyio.move_on_after(15), contextlib.suppress(anyio.BrokenResourceError, OSError):
                    for byte in b'{"id":1,"op":"ping","x":"' + b"y" * 1000:
                        await trickle.send(bytes([byte]))
                        await anyio.sleep(0.05)
                assert [_code(r) for r in await _eof(trickle)] == ["line_timeout"]
            # the subscriber outlived the idle timeout and still answers
            await streams[0].send(b'{"id":2,"op":"ping"}\n')
            assert (await _lines(streams[0], 1))[0]["result"]["pong"] is True

        # a client that never reads its replies is disconnected after the send timeout
        before = CONTROL_DROPPED.labels(reason="send_timeout")._value.get()
        reader = await anyio.connect_unix(sock)
        async with reader:
            with anyio.move_on_after(20):
                with contextlib.suppress(anyio.BrokenResourceError, OSError):
                    for _ in range(2000):
                        await reader.send(b'{"id":1,"op":"stats"}\n' * 100)
        with anyio.fail_after(20):
            while CONTROL_DROPPED.labels(reason="send_timeout")._value.get() == before:  # noqa: ASYNC110
                await anyio.sleep(0.1)  # a metric to poll: no event tells the test
        await _ping(sock)


@anyio_test
async def test_second_subscribe_replaces_the_filter(tmp_path: Path) -> None:
    media = tmp_path / "talk.mp4"
    media.write_bytes(b"queued while paused: never probed")
    async with running_daemon(tmp_path) as daemon:
        sock = daemon.settings.control.socket()
        async with ControlClient(sock) as feed, ControlClient(sock) as c:
            events = feed.events()

            async def until(kind: str, job_id: str) -> list[tuple[str, str]]:
                seen = []
                with anyio.fail_after(20):
                    async for event in events:
                        if event["job_id"]:
                            seen.append((event["event"], event["job_id"]))
                        if (event["event"], event["job_id"]) == (kind, job_id):
                            return seen
                raise AssertionError("feed ended")

            await c.request("pause")
            await feed.request("subscribe", job_id="no-such-job")
            await feed.request("subscribe")  # all jobs now, through the same single feed
            assert (await c.request("stats"))["subscribers"] == 1
            first = await c.request("submit", path=str(media))
            assert await until("job.submitted", first["id"]) == [("job.submitted", first["id"])]
            await feed.request("subscribe", job_id="still-no-such-job")
            second = await c.request("submit", path=str(media))
            await c.request("cancel", job_id=second["id"])
            await feed.request("subscribe", job_id=first["id"])
            await c.request("cancel", job_id=first["id"])
            assert await until("job.cancelled", first["id"]) == [("job.cancelled", first["id"])]
            assert (await c.request("stats"))["subscribers"] == 1


# -- who may connect ---------------------------------------------------------------------------------


def test_socket_folder_must_be_safe(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o777)
    shared.chmod(0o1777)
    with pytest.raises(SocketFolderUnsafe, match=r"writable by everyone \(mode 1777\).*mode 750"):
        prepare_folder(shared)
    created = tmp_path / "run" / "deeper"
    prepare_folder(created)
    assert created.stat().st_mode & 0o777 == 0o750
    if os.geteuid() == 0:
        foreign = tmp_path / "foreign"
        foreign.mkdir(mode=0o750)
        os.chown(foreign, NOBODY, NOBODY)
        with pytest.raises(SocketFolderUnsafe, match=f"belongs to uid {NOBODY}"):
            prepare_folder(foreign)


@anyio_test
async def test_daemon_refuses_an_unsafe_socket_folder(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o1777)
    proc = DaemonProcess(tmp_path, MONTAGE_CONTROL__SOCKET_PATH=str(shared / "montaged.sock")).start()
    try:
        assert proc.wait(120) == 1
    finally:
        proc.stop()
    assert "montaged: control.socket_path: the socket's folder" in proc.log()
    assert "writable by everyone" in proc.log() and "Traceback" not in proc.log()


_CONNECT_AS_PEER = """
import socket, sys
s = socket.socket(socket.AF_UNIX)
s.settimeout(20)
s.connect(sys.argv[1])
try:
    s.sendall(b'{"id":1,"op":"ping"}\\n')
except BrokenPipeError:
    pass  # refused before the request went out: the daemon's goodbye is still there to read
data = b""
while True:
    chunk = s.recv(65536)
    if not chunk:
        break
    data += chunk
    if data.endswith(b"\\n"):
        break
print(data.decode().strip())
"""


def _interpreter_for_nobody() -> str | None:
    """A Python that user nobody may run (the venv's may live under root's 0700 home)."""
    for exe in (sys.executable, "/usr/bin/python3"):
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            if subprocess.run([exe, "-I", "-c", "pass"], user=NOBODY, group=NOBODY, extra_groups=[],
                              capture_output=True, timeout=30, cwd="/").returncode == 0:
                return exe
    return None


def _as_nobody(exe: str, sock: Path) -> dict[str, Any]:
    out = subprocess.run([exe, "-I", "-c", _CONNECT_AS_PEER, str(sock)], user=NOBODY, group=NOBODY,
                         extra_groups=[], capture_output=True, text=True, timeout=60, cwd="/")
    assert out.returncode == 0, out.stderr
    return dict(json.loads(out.stdout))


@pytest.fixture
def open_folder() -> Iterator[Path]:
    """A folder any user may traverse (pytest's own tmp folders are 0700)."""
    folder = Path(tempfile.mkdtemp(prefix="montage-peer-"))
    folder.chmod(0o755)
    try:
        yield folder
    finally:
        for child in folder.iterdir():
            child.unlink()
        folder.rmdir()


@pytest.mark.skipif(os.geteuid() != 0, reason="connecting as another user needs root")
@anyio_test
async def test_peers_checked_with_so_peercred(tmp_path: Path, open_folder: Path, wired: Any) -> None:
    exe = _interpreter_for_nobody()
    if exe is None:
        pytest.skip("no Python interpreter that user nobody may run")
    sock = open_folder / "montaged.sock"
    env = {"MONTAGE_CONTROL__SOCKET_PATH": str(sock), "MONTAGE_CONTROL__SOCKET_MODE": "438"}  # 0o666
    for name in "abc":
        (tmp_path / name).mkdir()
    async with wired(tmp_path / "a", **env):
        before = CONTROL_DROPPED.labels(reason="peer")._value.get()
        reply = await anyio.to_thread.run_sync(_as_nobody, exe, sock)
        assert _code(reply) == "peer_refused" and f"uid {NOBODY}" in reply["error"]["message"]
        assert "control.allowed_uids" in reply["error"]["message"]
        assert CONTROL_DROPPED.labels(reason="peer")._value.get() == before + 1
        await _ping(sock)  # root and the daemon's own user still may
    async with wired(tmp_path / "b", **env, MONTAGE_CONTROL__ALLOWED_UIDS=f"[{NOBODY}]"):
        reply = await anyio.to_thread.run_sync(_as_nobody, exe, sock)
        assert reply["ok"] is True and reply["result"]["pong"] is True
    async with wired(tmp_path / "c", **env, MONTAGE_CONTROL__ALLOWED_GIDS=f"[{NOBODY}]"):
        reply = await anyio.to_thread.run_sync(_as_nobody, exe, sock)
        assert reply["ok"] is True


# -- a daemon of its own: memory under idle clients, descriptor exhaustion, fuzzing ----------------


@pytest.fixture(scope="module")
def daemon_proc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonProcess]:
    proc = DaemonProcess(tmp_path_factory.mktemp("hostile")).start()
    try:
        anyio.run(proc.wait_ready)
        yield proc
    finally:
        proc.stop()


def _rss(proc: DaemonProcess) -> int:
    assert proc.proc is not None
    return int(psutil.Process(proc.proc.pid).memory_info().rss)


@anyio_test
async def test_idle_clients_holding_partial_lines(daemon_proc: DaemonProcess) -> None:
    sock, payload = daemon_proc.socket, b'{"id":1,"op":"ping","pad":"' + b"p" * (1 << 20)
    await _ping(sock)
    baseline, peak = _rss(daemon_proc), 0
    endings: list[list[str | None]] = []

    async def client() -> None:
        """1 MB of one request line that never ends, then silence until the daemon hangs up."""
        async with await anyio.connect_unix(sock) as s:
            with contextlib.suppress(anyio.BrokenResourceError, OSError), anyio.move_on_after(30):
                await s.send(payload)
            endings.append([_code(r) for r in await _eof(s, timeout=90)])

    async def sample() -> None:
        nonlocal peak
        while True:
            peak = max(peak, _rss(daemon_proc))
            await anyio.sleep(0.05)

    started = time.monotonic()
    async with anyio.create_task_group() as sampler:
        sampler.start_soon(sample)
        async with anyio.create_task_group() as clients:
            for _ in range(150):
                clients.start_soon(client)
        sampler.cancel_scope.cancel()
    growth = (peak - baseline) / 2**20
    refused = sum(e == ["too_many_connections"] for e in endings)
    timed_out = sum(e == ["line_too_long", "line_timeout"] for e in endings)
    print(f"\n150 idle clients x 1 MB unfinished lines: daemon RSS {baseline / 2**20:.1f} MB,"
          f" peak {peak / 2**20:.1f} MB (+{growth:.1f} MB); {timed_out} served until the line timeout,"
          f" {refused} refused over the cap; all closed after {time.monotonic() - started:.1f} s")
    assert refused + timed_out == 150, endings
    assert refused >= 150 - 64
    assert growth < 40, f"RSS grew {growth:.1f} MB"
    await _ping(sock)
    assert daemon_proc.proc is not None and daemon_proc.proc.poll() is None


@anyio_test
async def test_accept_backs_off_when_out_of_descriptors(daemon_proc: DaemonProcess) -> None:
    assert daemon_proc.proc is not None
    pid = daemon_proc.proc.pid
    soft, hard = resource.prlimit(pid, resource.RLIMIT_NOFILE)
    in_use = len(os.listdir(f"/proc/{pid}/fd"))
    clients: list[socket.socket] = []
    try:
        resource.prlimit(pid, resource.RLIMIT_NOFILE, (in_use + 3, hard))
        for _ in range(20):  # the kernel queues them; the daemon can take only a few
            c = socket.socket(socket.AF_UNIX)
            c.connect(str(daemon_proc.socket))
            c.sendall(b'{"id":1,"op":"ping"}\n')
            clients.append(c)
        deadline = time.monotonic() + 30
        while "accept_failed" not in daemon_proc.log():
            assert time.monotonic() < deadline, "the daemon never ran out of descriptors"
            time.sleep(0.2)
        time.sleep(2)  # a few rounds of back-off
        assert daemon_proc.proc.poll() is None, daemon_proc.log()[-3000:]
    finally:
        resource.prlimit(pid, resource.RLIMIT_NOFILE, (soft, hard))
    replies = []
    for c in clients:  # every queued client is answered once descriptors are back
        c.settimeout(30)
        replies.append(json.loads(c.recv(65536)))
        c.close()
    # those served while descriptors ran out may get an error reply (EMFILE opening a file)
    assert all(r["id"] == 1 for r in replies)
    assert all(r["ok"] or "Too many open files" in r["error"]["message"] for r in replies), replies
    assert replies[-1]["ok"] is True
    await _ping(daemon_proc.socket)
    assert "control socket accepts again" in daemon_proc.log()


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=40),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=20,
)
_requests = st.fixed_dictionaries(
    {"id": st.integers() | st.text(max_size=20) | _json_values,
     "op": st.sampled_from([*p.OPS, "dance", ""])},
    optional={k: _json_values | st.text(max_size=200) for k in
              ("path", "profile", "options", "output_dir", "job_id", "state", "limit", "extra")},
).map(lambda d: json.dumps(d).encode())
_hostile_bytes = st.one_of(
    st.binary(max_size=2000),
    _json_values.map(lambda v: json.dumps(v).encode()),
    _requests,
    _requests.map(lambda b: b[: len(b) // 2]),  # cut short
    st.tuples(st.sampled_from([b"[", b"{", b'{"a":', b"[[", b'{"id":1,"op":"ping","options":{"x":']),
              st.integers(1, 5000)).map(lambda t: t[0] * t[1]),
    st.integers(10, 6000).map(lambda n: b'{"id":' + b"9" * n + b',"op":"ping"}'),
    st.integers(10, 100_000).map(lambda n: b'{"id":1,"op":"ping","s":"' + b"s" * n + b'"}'),
)


def _ask(sock: Path, payload: bytes, marker: bytes) -> bytes:
    """Send ``payload`` on a fresh connection and read until ``marker`` shows in the replies."""
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(30)
        s.connect(str(sock))
        s.sendall(payload)
        data = b""
        while marker not in data or not data.endswith(b"\n"):
            chunk = s.recv(1 << 20)
            assert chunk, f"connection closed before {marker!r} came: {data[-500:]!r}"
            data += chunk
    return data


def _survives(proc: DaemonProcess, chunks: list[bytes]) -> None:
    payload = b"\n".join(chunks) + b"\n" + b'{"id":"fuzz-ping","op":"ping"}\n'
    data = _ask(proc.socket, payload, b'"id":"fuzz-ping","ok":true')
    for line in data.splitlines():
        json.loads(line)  # every reply is one JSON object per line
    stats = _ask(proc.socket, b'{"id":"fuzz-stats","op":"stats"}\n', b'"id":"fuzz-stats"')
    assert json.loads(stats)["ok"] is True  # and a fresh client gets stats
    assert proc.proc is not None and proc.proc.poll() is None


FUZZ_SECONDS = 45.0


def test_fuzz_lines_never_stop_the_daemon(daemon_proc: DaemonProcess) -> None:
    """Arbitrary lines never stop the daemon: up to 1,200 examples, as many as fit ~45 s."""
    ran = 0
    started = time.monotonic()

    @settings(max_examples=1200, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(chunks=st.lists(_hostile_bytes, min_size=1, max_size=4))
    def fuzz(chunks: list[bytes]) -> None:
        nonlocal ran
        if time.monotonic() - started > FUZZ_SECONDS:
            return  # time is up: the rest only draw (hypothesis has no time budget of its own)
        ran += 1
        _survives(daemon_proc, chunks)

    fuzz()
    print(f"\nfuzz: {ran} examples sent in {time.monotonic() - started:.1f} s,"
          " the daemon answered ping and stats after each")
    assert ran >= 100
