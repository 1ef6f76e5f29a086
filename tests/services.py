"""Private PostgreSQL and Redis servers for tests that stop, restart or lock down their services.

The machine's PostgreSQL (5432) and Redis (6379) are shared by every test and every developer on
it, so a test that needs an outage, a password or a crash gets servers of its own: a fresh
cluster from ``initdb`` and a ``redis-server``, each on a free port in its own temporary folder,
without persistence. ``own_postgres()`` and ``own_redis()`` always stop what they started and
remove the folder, also when the test fails. Missing binaries skip locally and fail with CI=true
(``scripts/bootstrap.sh`` installs them).
"""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from conftest import unavailable

PG_USER = "montage"  # the cluster's superuser, and the user in its URL
PG_DB = "postgres"  # every fresh cluster has it: no createdb step


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1.0):
            return True
    except OSError:
        return False


def wait_port(port: int, *, open_: bool, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while port_open(port) != open_:
        if time.monotonic() > deadline:
            raise AssertionError(f"port {port} still {'closed' if open_ else 'open'} after {timeout} s")
        time.sleep(0.1)


# ---- PostgreSQL ---------------------------------------------------------------------------------


def pg_bindir() -> Path | None:
    """The newest PostgreSQL server binaries: Debian's /usr/lib/postgresql/N/bin, else PATH."""
    found = [p.parent for p in Path("/usr/lib/postgresql").glob("*/bin/initdb")]
    found.sort(key=lambda b: int(re.sub(r"\D", "", b.parent.name) or 0))
    if found:
        return found[-1]
    initdb = shutil.which("initdb")
    return Path(initdb).resolve().parent if initdb else None


def _server_user() -> tuple[int, int] | None:
    """(uid, gid) to run the server as: ``initdb`` refuses root, so root hands it to ``postgres``
    (the Debian package's user) or ``nobody``; anyone else runs it as themselves (None)."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            entry = pwd.getpwnam(name)
            return entry.pw_uid, entry.pw_gid
    unavailable("running as root without a 'postgres' or 'nobody' user to run initdb as")
    return None


@dataclass
class PostgresServer:
    """One private cluster. ``stop()``/``start()`` make an outage; ``url`` is what the daemon uses
    (the password, if any, is not in it: it is the ``database_password`` secret)."""

    bindir: Path
    base: Path
    port: int
    password: str | None = None
    owner: tuple[int, int] | None = None

    @property
    def data(self) -> Path:
        return self.base / "data"

    @property
    def url(self) -> str:
        return f"postgresql://{PG_USER}@127.0.0.1:{self.port}/{PG_DB}"

    def _run(self, *argv: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """A server binary as the cluster's owner (root may not run them)."""
        as_owner = {"user": self.owner[0], "group": self.owner[1], "extra_groups": []} if self.owner else {}
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C", "LANG": "C"}
        return subprocess.run([str(self.bindir / argv[0]), *argv[1:]], capture_output=True, text=True,
                              timeout=timeout, cwd=self.base, env=env, **as_owner)

    def init(self) -> None:
        auth = ["--auth=trust"]
        pwfile = self.base / "pwfile"
        if self.password is not None:
            pwfile.write_text(self.password + "\n")
            if self.owner:
                os.chown(pwfile, *self.owner)
            auth = ["--auth-local=trust", "--auth-host=scram-sha-256", f"--pwfile={pwfile}"]
        try:
            proc = self._run("initdb", "-D", str(self.data), "-U", PG_USER, "-E", "UTF8", "--locale=C",
                             "--no-sync", *auth)
        finally:
            pwfile.unlink(missing_ok=True)
        assert proc.returncode == 0, f"initdb failed: {proc.stdout}{proc.stderr}"
        with (self.data / "postgresql.conf").open("a") as conf:
            # a throw-away cluster: durability off, only loopback TCP, its socket in its own folder
            conf.write(f"\nport = {self.port}\nlisten_addresses = '127.0.0.1'\n"
                       f"unix_socket_directories = '{self.base}'\nfsync = off\nsynchronous_commit = off\n"
                       "full_page_writes = off\nshared_buffers = 16MB\nmax_connections = 60\n")

    def start(self) -> None:
        log = str(self.base / "server.log")
        proc = self._run("pg_ctl", "-D", str(self.data), "-l", log, "-w", "-t", "60", "start")
        assert proc.returncode == 0, f"pg_ctl start: {proc.stdout}{proc.stderr}\n{self.log()}"
        wait_port(self.port, open_=True)

    def stop(self, mode: str = "fast") -> None:
        proc = self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", "30", "stop")
        assert proc.returncode == 0, f"pg_ctl stop: {proc.stdout}{proc.stderr}"
        wait_port(self.port, open_=False)

    def running(self) -> bool:
        return self.data.is_dir() and self._run("pg_ctl", "-D", str(self.data), "status").returncode == 0

    def dump(self) -> str:
        """Everything the cluster's database holds, as SQL (``pg_dump``), to search through."""
        env = {**os.environ, "PGPASSWORD": self.password or ""}
        proc = subprocess.run([str(self.bindir / "pg_dump"), "-h", "127.0.0.1", "-p", str(self.port),
                               "-U", PG_USER, PG_DB], capture_output=True, text=True, timeout=120, env=env)
        assert proc.returncode == 0, f"pg_dump: {proc.stderr}"
        return proc.stdout

    def log(self) -> str:
        path = self.base / "server.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def _shutdown(self) -> None:
        """Whatever state it is in: stopped, then its postmaster certainly gone."""
        if not self.data.is_dir():
            return
        for mode in ("fast", "immediate"):
            if not self.running():
                break
            with contextlib.suppress(AssertionError, subprocess.TimeoutExpired):
                self.stop(mode)
        pidfile = self.data / "postmaster.pid"
        if pidfile.exists():
            with contextlib.suppress(ValueError, IndexError, ProcessLookupError, PermissionError):
                os.kill(int(pidfile.read_text().split()[0]), signal.SIGKILL)


@contextmanager
def own_postgres(*, password: str | None = None) -> Iterator[PostgresServer]:
    """A fresh, running PostgreSQL cluster on a free port; stopped and deleted afterwards.

    Args:
        password: the superuser's password; set, TCP logins need it (scram-sha-256).
    """
    bindir = pg_bindir()
    if bindir is None or not (bindir / "pg_ctl").exists():
        unavailable("PostgreSQL server binaries (initdb, pg_ctl) not found; scripts/bootstrap.sh installs"
                    " the 'postgresql' package")
    assert bindir is not None
    owner = _server_user()
    # under the system temp dir, not pytest's tmp_path: that is root-only (0700) and the server
    # may run as another user
    base = Path(tempfile.mkdtemp(prefix="montage-pg-"))
    if owner:
        os.chown(base, *owner)
    server = PostgresServer(bindir, base, free_port(), password, owner)
    try:
        server.init()
        server.start()
        yield server
    finally:
        server._shutdown()
        shutil.rmtree(base, ignore_errors=True)


# ---- Redis --------------------------------------------------------------------------------------


@dataclass
class RedisServer:
    """One private ``redis-server`` (no persistence: it comes back empty after ``stop()``)."""

    binary: str
    base: Path
    port: int
    password: str | None = None
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        """No password in it: that is the ``redis_password`` secret."""
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        conf = self.base / "redis.conf"
        # the password goes in the file, not on the command line where `ps` would show it
        conf.write_text(f'port {self.port}\nbind 127.0.0.1\nsave ""\nappendonly no\ndir {self.base}\n'
                        f"logfile {self.base / 'redis.log'}\ndaemonize no\n"
                        + (f"requirepass {self.password}\n" if self.password else ""))
        conf.chmod(0o600)
        self.proc = subprocess.Popen([self.binary, str(conf)], stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     start_new_session=True)
        deadline = time.monotonic() + 30
        while not port_open(self.port):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"redis-server did not start (exit {self.proc.poll()}):\n{self.log()}")
            time.sleep(0.05)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(15)
        wait_port(self.port, open_=False)

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log(self) -> str:
        path = self.base / "redis.log"
        return path.read_text(errors="replace") if path.exists() else ""


@contextmanager
def own_redis(*, password: str | None = None) -> Iterator[RedisServer]:
    """A running ``redis-server`` on a free port in a temporary folder; stopped and deleted after.

    Args:
        password: ``requirepass``; set, every client must authenticate with it.
    """
    binary = shutil.which("redis-server")
    if binary is None:
        unavailable("redis-server not found; scripts/bootstrap.sh installs the 'redis-server' package")
    assert binary is not None
    base = Path(tempfile.mkdtemp(prefix="montage-redis-"))
    server = RedisServer(binary, base, free_port(), password)
    try:
        server.start()
        yield server
    finally:
        with contextlib.suppress(AssertionError):
            server.stop()
        if server.proc is not None and server.proc.poll() is None:
            server.proc.kill()
        shutil.rmtree(base, ignore_errors=True)
