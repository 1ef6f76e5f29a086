"""No secret in anything Montage writes: errors, logs, events, sidecars, metrics, the store.

Distinctive secrets are planted (a Deepgram key, the database password, the Redis password, a
wrong Deepgram key, a mistyped key variable, a password inside a database URL), a real daemon
runs jobs end to end with them, on its own PostgreSQL and Redis that really demand the
passwords and a local Deepgram that really checks the key, and then everything the run wrote is
searched for them: the daemon's stdout/stderr, the state dir (the SQLite file included), the
output folder with its sidecars, every socket event and reply, /metrics and /healthz, a dump of
the PostgreSQL database and of every Redis key. ``--check-config``, ``montaged run`` and
``montaged check`` are searched the same way on their error paths.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import anyio
import pytest
from conftest import make_talk_clip
from daemon_harness import JFK, DaemonProcess, daemon_env, http_get, request, wait_state
from fake_deepgram import FakeDeepgram, load_fixtures
from services import free_port, own_postgres, own_redis

from montaged.cli.check import check_config
from montaged.control.client import ControlClient
from montaged.redact import names_credential, redact_text, redact_url

pytestmark = [pytest.mark.anyio]

TAG = uuid.uuid4().hex[:10]
PLANTED = {
    "deepgram key": f"dgkey-PLANTED-{TAG}",
    "wrong deepgram key": f"dgwrong-PLANTED-{TAG}",
    "database password": f"dbpw-PLANTED-{TAG}",
    "wrong database password": f"dbwrong-PLANTED-{TAG}",
    "redis password": f"rdpw-PLANTED-{TAG}",
    "mistyped key variable": f"typo-PLANTED-{TAG}",
    "password in a URL": f"urlpw-PLANTED-{TAG}",
}


def leaks(text: str | bytes) -> list[str]:
    """Which planted secrets ``text`` contains."""
    data = text.encode() if isinstance(text, str) else text
    return [name for name, value in PLANTED.items() if value.encode() in data]


def scan(roots: list[Path], skip: set[Path]) -> dict[str, list[str]]:
    """{file: planted secrets found in it} over every file under ``roots`` (binary files too)."""
    hits: dict[str, list[str]] = {}
    for root in roots:
        for path in [root] if root.is_file() else sorted(root.rglob("*")):
            if not path.is_file() or path.is_symlink() or any(path.is_relative_to(s) for s in skip):
                continue
            if found := leaks(path.read_bytes()):
                hits[str(path)] = found
    return hits


def _cli(*argv: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "montaged", *argv], capture_output=True, text=True,
                          timeout=120, env={**os.environ, **env}, stdin=subprocess.DEVNULL)


# ---- the redaction rules --------------------------------------------------------------------------


def test_redaction_rules() -> None:
    assert redact_url("postgresql://bob:s3cret@db:5432/montage") == "postgresql://bob:***@db:5432/montage"
    assert redact_url("redis://:p@ss/word@cache:6379/0") == "redis://:***@cache:6379/0"
    assert redact_url("postgresql://bob@db/m?sslpassword=x&application_name=a") == (
        "postgresql://bob@db/m?sslpassword=***&application_name=a")
    assert redact_url("postgresql://bob@db/montage") == "postgresql://bob@db/montage"
    assert redact_url("/var/lib/montage/montage.db") == "/var/lib/montage/montage.db"
    assert redact_text("cannot reach postgres://u:pw@h/d (refused); key abcd1234 seen", ["abcd1234"]) == (
        "cannot reach postgres://u:***@h/d (refused); key *** seen")
    for key in ("api_key", "deepgram_apikey", "DATABASE_PASSWD", "redis_password", "access_token", "auth",
                "client_secret", "deepgram_key", "credentials"):
        assert names_credential(key), key
    for key in ("key_prefix", "url", "model", "tokenizer", "max_clips", "monkey"):
        assert not names_credential(key), key


# ---- configuration errors -------------------------------------------------------------------------


def _check_config(env: dict[str, str], capsys: pytest.CaptureFixture[str], config: Path | None = None,
                  ) -> tuple[int, str]:
    """``--check-config`` in this process (seconds cheaper than a new interpreter per case)."""
    with pytest.MonkeyPatch.context() as mp:
        for k, v in env.items():
            mp.setenv(k, v)
        rc = check_config(config)
    out = capsys.readouterr()
    return rc, out.out + out.err


def test_config_errors_hide_secrets(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """What ``--check-config`` (ExecStartPre, so the journal) and a refused start print."""
    base = daemon_env(tmp_path)
    creds = tmp_path / "credentials"
    creds.mkdir()
    (creds / "deepgram_api_key").write_text(PLANTED["deepgram key"] + "\n")
    cases = {
        "mistyped variable": ({"MONTAGE_DEEPGRAM_APIKEY": PLANTED["mistyped key variable"]},
                              "deepgram_apikey: unknown key from environment MONTAGE_DEEPGRAM_APIKEY; "
                              "did you mean MONTAGE_DEEPGRAM_API_KEY? (got <hidden>)"),
        "secret as a section key": ({"MONTAGE_DEEPGRAM__API_KEY": PLANTED["mistyped key variable"]},
                                    "deepgram.api_key: unknown key (got <hidden>)"),
        "password in the store URL": (
            {"MONTAGE_STORE__URL": f"postgresql://bob:{PLANTED['password in a URL']}@db.example/montage"},
            "store.url: Value error, must not contain a password; set MONTAGE_DATABASE_PASSWORD instead "
            "(got 'postgresql://bob:***@db.example/montage')"),
        "a known secret pasted into another key": (
            {"CREDENTIALS_DIRECTORY": str(creds), "MONTAGE_WHISPER__BEAM_SIZE": PLANTED["deepgram key"]},
            "whisper.beam_size: Input should be a valid integer, unable to parse string as an integer "
            "(got '***')"),
    }
    for what, (extra, expected) in cases.items():
        rc, out = _check_config({**base, **extra}, capsys)
        assert rc == 1 and not leaks(out), (what, out)
        assert expected in out, (what, out)
    # the real programs, as systemd runs them: --check-config, and a start refused for the same reason
    for argv, what in ((["--check-config"], "password in the store URL"), (["run"], "mistyped variable")):
        extra, expected = cases[what]
        proc = _cli(*argv, env={**base, **extra})
        out = proc.stdout + proc.stderr
        assert proc.returncode == 1 and not leaks(out), (argv, out)
        assert expected in out, (argv, out)

    # accepted (libpq reads a password from the query too), but printed without it
    url = f"postgresql://bob@db.example/montage?password={PLANTED['password in a URL']}&application_name=x"
    rc, out = _check_config({**base, "MONTAGE_STORE__URL": url}, capsys)
    assert rc == 0 and not leaks(out), out
    assert "store postgresql://bob@db.example/montage?password=***&application_name=x," in out

    toml = tmp_path / "montage.toml"
    toml.write_text(f'[deepgram]\nenabled = true\ntoken = "{PLANTED["mistyped key variable"]}"\n'
                    f'[store]\nurl = "postgresql://bob:{PLANTED["password in a URL"]}@db/m"\n')
    rc, out = _check_config(base, capsys, toml)
    assert rc == 1 and not leaks(out), out
    assert "deepgram.token: unknown key (got <hidden>)" in out, out
    assert "(got 'postgresql://bob:***@db/m')" in out, out


def test_check_hides_the_database_password(tmp_path: Path) -> None:
    """``montaged check`` against a PostgreSQL that refuses the password, then accepts the right one."""
    with own_postgres(password=PLANTED["database password"]) as pg:
        env = {**daemon_env(tmp_path), "MONTAGE_STORE__URL": pg.url}
        wrong = _cli("check", env={**env, "MONTAGE_DATABASE_PASSWORD": PLANTED["wrong database password"]})
        right = _cli("check", env={**env, "MONTAGE_DATABASE_PASSWORD": PLANTED["database password"]})
        server_log = pg.log()
    assert "FAIL store: PostgreSQL at 127.0.0.1" in wrong.stdout and "refused the login" in wrong.stdout, (
        wrong.stdout + wrong.stderr)
    assert f"ok   store: {pg.url}" in right.stdout, right.stdout + right.stderr
    for proc in (wrong, right):
        assert not leaks(proc.stdout + proc.stderr), proc.stdout + proc.stderr
    assert not leaks(server_log)


# ---- a real run -----------------------------------------------------------------------------------


async def _record_events(sock: Path, into: Path, *, task_status: Any = anyio.TASK_STATUS_IGNORED) -> None:
    async with ControlClient(sock) as c:
        await c.request("subscribe")
        task_status.started()
        with into.open("a") as f:
            async for event in c.events():
                f.write(json.dumps(event) + "\n")
                f.flush()


def _redis_dump(url: str, password: str) -> str:
    """Every key of the Redis server with its value, whatever its type."""
    import redis

    client = redis.Redis.from_url(url, password=password, decode_responses=True)
    try:
        out = []
        read = {"string": client.get, "hash": client.hgetall, "set": client.smembers,
                "list": lambda k: client.lrange(k, 0, -1), "stream": client.xrange,
                "zset": lambda k: client.zrange(k, 0, -1, withscores=True)}
        for key in client.scan_iter("*"):
            kind = client.type(key)
            out.append(f"{kind} {key} {read.get(kind, lambda k: None)(key)!r}")
        return "\n".join(out)
    finally:
        client.close()


@pytest.fixture(params=["sqlite", "postgresql"])
def store_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def services(store_kind: str) -> Iterator[tuple[Any, Any]]:
    with ExitStack() as stack:
        pg = None
        if store_kind == "postgresql":
            pg = stack.enter_context(own_postgres(password=PLANTED["database password"]))
        rd = stack.enter_context(own_redis(password=PLANTED["redis password"]))
        yield pg, rd


@pytest.mark.timeout(300)
async def test_a_real_run_writes_no_secret(
    tmp_path: Path, media_dir: Path, services: tuple[Any, Any]
) -> None:
    pg, rd = services
    media = tmp_path / "media"
    media.mkdir()
    right = make_talk_clip(media / "right.mp4", seconds=5.0, size="320x180", speech=JFK)
    wrong = make_talk_clip(media / "wrong.mp4", seconds=5.6, size="320x180", speech=JFK)
    creds = tmp_path / "credentials"  # as systemd's LoadCredential= hands them over
    creds.mkdir(mode=0o700)
    (creds / "deepgram_api_key").write_text(PLANTED["deepgram key"] + "\n")
    (creds / "database_password").write_text(PLANTED["database password"] + "\n")
    port = free_port()
    events = tmp_path / "events.jsonl"
    replies = tmp_path / "replies.json"
    async with FakeDeepgram(load_fixtures(["jfk"], media_dir), api_key=PLANTED["deepgram key"]) as fake:
        env = {
            "CREDENTIALS_DIRECTORY": str(creds),
            "MONTAGE_REDIS_PASSWORD": PLANTED["redis password"],  # the other way in: the environment
            "MONTAGE_LOG__LEVEL": "debug",
            "MONTAGE_METRICS__PORT": str(port),
            "MONTAGE_PROFILES__VERTICAL__WIDTH": "180", "MONTAGE_PROFILES__VERTICAL__HEIGHT": "320",
            "MONTAGE_DEEPGRAM__ENABLED": "true", "MONTAGE_DEEPGRAM__BASE_URL": fake.ws_url,
            "MONTAGE_DEEPGRAM__TIMEOUT_SECONDS": "5",
            "MONTAGE_BUDGET__PRICES_PER_MINUTE": '{"deepgram/nova-3": 0.006}',
            "MONTAGE_CACHE__REDIS_URL": rd.url,
            "MONTAGE_REDIS_INTAKE__ENABLED": "true",
        }
        if pg is not None:
            env["MONTAGE_STORE__URL"] = pg.url
        daemon = DaemonProcess(tmp_path, **env).start()
        try:
            await daemon.wait_ready(120)
            async with anyio.create_task_group() as tg:
                await tg.start(_record_events, daemon.socket, events)
                first = await request(daemon.socket, "submit", path=str(right), options={"max_clips": 1})
                done = await wait_state(daemon.socket, first["id"], {"done", "failed"}, 120)
                # the key is read for every job: the next one is refused by Deepgram (401 path)
                (creds / "deepgram_api_key").write_text(PLANTED["wrong deepgram key"] + "\n")
                import redis

                client = redis.Redis.from_url(rd.url, password=PLANTED["redis password"])
                client.xadd("montage:jobs", {"path": str(wrong), "options": '{"max_clips": 1}',
                                             "request_id": "leak-test"})
                client.close()
                second = None
                with anyio.fail_after(60):
                    while second is None:
                        jobs = (await request(daemon.socket, "list"))["jobs"]
                        second = next((j for j in jobs if j["id"] != first["id"]), None)
                        await anyio.sleep(0.2)
                done2 = await wait_state(daemon.socket, second["id"], {"done", "failed"}, 120)
                sock = daemon.socket
                shown: dict[str, Any] = {op: await request(sock, op) for op in ("ping", "list", "stats")}
                shown["show"] = [await request(sock, "show", job_id=j["id"]) for j in (done, done2)]
                replies.write_text(json.dumps(shown, default=str))
                (tmp_path / "metrics.txt").write_bytes((await http_get(port, "/metrics"))[1])
                (tmp_path / "healthz.txt").write_bytes((await http_get(port, "/healthz"))[1])
                await anyio.sleep(1.0)  # the last events reach the recorder
                tg.cancel_scope.cancel()
        finally:
            daemon.stop()
        refused = list(fake.refused)
    dumps = tmp_path / "dumps"
    dumps.mkdir()
    (dumps / "redis.txt").write_text(_redis_dump(rd.url, PLANTED["redis password"]))
    (dumps / "redis-server.log").write_text(rd.log())
    if pg is not None:
        (dumps / "postgres.sql").write_text(pg.dump())
        (dumps / "postgres-server.log").write_text(pg.log())

    assert done["state"] == "done" and done["result"]["transcript"]["engine"] == "rover", done
    assert done2["state"] == "done" and done2["result"]["transcript"]["engine"] == "whisper", done2
    assert refused == [401], refused  # the wrong key really reached Deepgram, and was refused
    assert (tmp_path / "out").is_dir() and list((tmp_path / "out").rglob("*.json")), "no sidecar written"
    if pg is None:
        assert list((tmp_path / "state").glob("*.db")), "the SQLite store should be in the state dir"
    # the search itself works: it finds what the credentials folder holds
    assert scan([creds], skip=set()) == {str(creds / "database_password"): ["database password"],
                                         str(creds / "deepgram_api_key"): ["wrong deepgram key"]}
    written = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file())
    hits = scan([tmp_path], skip={creds})
    print(f"searched {len(written)} files for {len(PLANTED)} planted secrets: {len(hits)} hits")
    assert not hits, f"secrets written by the run: {hits}"
    assert len(events.read_text().splitlines()) > 5, "the event recorder saw nothing"
