"""What a killed daemon leaves behind, and how the next one on the same state dir clears it.

One daemon owns a state dir at a time: :func:`own_state_dir` takes an ``fcntl`` lock on
``state_dir/montaged.lock`` for the daemon's life (the kernel drops it when the process dies,
however it dies), so a second daemon on the same state dir is refused with the first one's pid.
Holding the lock is also what makes start-up cleaning safe: whatever carries this state dir's
mark can only be left over from an earlier instance. The mark is :attr:`Owner.token`, a short
hash of the state dir's path, and it is put on

- the FIFO folders the renderer makes in the temp folder (``montage-fifo-<token>-*``),
- the command line of every pool worker (``montaged.procworker ... <token>``), whose pid and
  start time are also listed in ``state_dir/workers.pid``,

so another daemon's folders and workers (another state dir, another token) are never touched.
Scratch (``state_dir/work``) needs no mark: it is inside the state dir.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path

import structlog

from montaged.errors import MontageError

log = structlog.get_logger(__name__)

LOCK_NAME = "montaged.lock"
PIDS_NAME = "workers.pid"
WORKER_MODULE = "montaged.procworker"


class StateDirError(MontageError):
    """The state dir cannot be used (not creatable, not writable)."""

    code = "state_dir"


class StateDirLocked(StateDirError):
    """Another live daemon holds the state dir (two would delete each other's scratch)."""

    code = "state_dir_locked"


def state_token(state_dir: Path) -> str:
    """The mark of one state dir: stable across restarts, different for every other state dir."""
    return hashlib.sha256(str(state_dir.resolve()).encode()).hexdigest()[:12]


@dataclass
class Owner:
    """This process's claim on a state dir; pools and the renderer mark what they make with it."""

    state_dir: Path
    token: str
    workers: dict[int, dict[str, object]] = field(default_factory=dict)

    @property
    def pid_file(self) -> Path:
        return self.state_dir / PIDS_NAME

    def worker_started(self, pool: str, pid: int) -> None:
        """List a pool worker so the next start can reap it if this daemon is killed."""
        import psutil

        try:
            created = psutil.Process(pid).create_time()
        except psutil.Error:
            return  # already gone: nothing to reap later
        self.workers[pid] = {"pid": pid, "pool": pool, "create_time": created}
        self._write()

    def worker_exited(self, pid: int) -> None:
        if self.workers.pop(pid, None) is not None:
            self._write()

    def _write(self) -> None:
        doc = {"daemon": os.getpid(), "token": self.token, "workers": list(self.workers.values())}
        tmp = self.pid_file.with_suffix(".tmp")
        try:
            tmp.write_text(json.dumps(doc))
            os.replace(tmp, self.pid_file)
        except OSError as e:  # the list only helps the next start; the job is not at stake
            log.warning("cannot write the worker pid file", path=str(self.pid_file), error=e.strerror)


_owner: ContextVar[Owner | None] = ContextVar("montage_state_owner", default=None)
_held: set[Path] = set()


def current_owner() -> Owner | None:
    """The state dir the running daemon (this task and the tasks it started) owns, if any."""
    return _owner.get()


def fifo_prefix() -> str:
    """Prefix of a FIFO folder in the temp folder, marked with the owning state dir."""
    owner = _owner.get()
    return fifo_dir_prefix(owner) if owner is not None else "montage-fifo-"


def _holder(lock_path: Path) -> str:
    try:
        pid = lock_path.read_text().split()[0]
    except (OSError, IndexError):
        return "another montaged"
    return f"another montaged (pid {pid})"


def _refusal(state_dir: Path) -> StateDirLocked:
    return StateDirLocked(
        f"{_holder(state_dir / LOCK_NAME)} is using the state dir {state_dir}; stop it first, or give "
        "this one its own paths.state_dir (MONTAGE_PATHS__STATE_DIR)"
    )


def _open_lock(state_dir: Path) -> int:
    try:
        state_dir.mkdir(parents=True, exist_ok=True)
        return os.open(state_dir / LOCK_NAME, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError as e:
        raise StateDirError(
            f"{state_dir / LOCK_NAME}: cannot create the state dir's lock file ({e.strerror}); make "
            "paths.state_dir a folder the daemon's user can write"
        ) from None


def check_state_dir_free(state_dir: Path) -> None:
    """Refuse early (before jobs are submitted) when another daemon holds ``state_dir``."""
    state_dir = state_dir.resolve()
    if state_dir in _held:
        return
    fd = _open_lock(state_dir)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise _refusal(state_dir) from None
    finally:
        os.close(fd)  # closing drops the probe's lock


@contextlib.contextmanager
def own_state_dir(state_dir: Path) -> Iterator[Owner]:
    """Hold the state dir for the duration; raises :class:`StateDirLocked` when another has it."""
    state_dir = state_dir.resolve()
    fd = _open_lock(state_dir)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise _refusal(state_dir) from None
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    owner = Owner(state_dir, state_token(state_dir))
    _held.add(state_dir)
    reset = _owner.set(owner)
    try:
        yield owner
    finally:
        _owner.reset(reset)
        _held.discard(state_dir)
        with contextlib.suppress(OSError):
            owner.pid_file.unlink()
        os.close(fd)


@dataclass
class Swept:
    """What :func:`sweep` removed (logged, and read by tests)."""

    workers: int = 0
    worker_rss_bytes: int = 0
    encoders: int = 0
    fifo_dirs: int = 0
    scratch: bool = False


def _listed_workers(owner: Owner) -> list[dict[str, object]]:
    try:
        doc = json.loads(owner.pid_file.read_text())
    except (OSError, ValueError):
        return []
    if not isinstance(doc, dict) or doc.get("token") != owner.token:
        return []
    return [w for w in doc.get("workers", []) if isinstance(w, dict)]


def _is_our_worker(cmdline: list[str], token: str) -> bool:
    return WORKER_MODULE in cmdline and token in cmdline


def reap_workers(owner: Owner) -> tuple[int, int]:
    """Kill the pool workers an earlier instance left: (how many, their resident bytes).

    Listed ones are checked by pid, start time and command line (a pid may have been reused);
    a scan for this state dir's token also finds one started just before the daemon died.
    """
    import psutil

    found: dict[int, psutil.Process] = {}
    for entry in _listed_workers(owner):
        try:
            proc = psutil.Process(int(str(entry["pid"])))
            same_start = abs(proc.create_time() - float(str(entry["create_time"]))) < 0.05
            if same_start and _is_our_worker(proc.cmdline(), owner.token):
                found[proc.pid] = proc
        except (psutil.Error, KeyError, ValueError):
            continue
    for proc in psutil.process_iter(["cmdline"]):
        if proc.pid not in found and _is_our_worker(proc.info["cmdline"] or [], owner.token):
            found[proc.pid] = proc
    rss = 0
    for proc in found.values():
        with contextlib.suppress(psutil.Error):
            rss += proc.memory_info().rss
            proc.kill()
    _gone, alive = psutil.wait_procs(list(found.values()), timeout=5)
    if alive:
        log.warning("orphaned pool workers did not exit after SIGKILL", pids=[p.pid for p in alive])
    return len(found), rss


def reap_encoders(owner: Owner) -> int:
    """Kill the ffmpeg encoders an earlier instance left, recognised by their marked FIFO.

    Encoders run in their own session (so a Ctrl-C reaches the daemon first), which also means a
    SIGKILLed daemon's process-group kill misses them; one still waiting to open its FIFO would
    wait forever.
    """
    import psutil

    marked = str(Path(tempfile.gettempdir()) / fifo_dir_prefix(owner))
    reaped = 0
    for proc in psutil.process_iter(["name", "cmdline"]):
        try:
            if not (proc.info["name"] or "").startswith("ffmpeg"):
                continue
            if any(arg.startswith(marked) for arg in proc.info["cmdline"] or []):
                proc.kill()
                reaped += 1
        except psutil.Error:
            continue
    return reaped


def fifo_dir_prefix(owner: Owner) -> str:
    return f"montage-fifo-{owner.token}-"


def remove_fifo_dirs(owner: Owner) -> int:
    tmp = Path(tempfile.gettempdir())
    removed = 0
    for folder in tmp.glob(fifo_dir_prefix(owner) + "*"):
        shutil.rmtree(folder, ignore_errors=True)
        removed += 1
    return removed


def sweep(owner: Owner, work_dir: Path) -> Swept:
    """Remove an earlier instance's debris; call only while holding the state dir."""
    swept = Swept()
    swept.workers, swept.worker_rss_bytes = reap_workers(owner)
    swept.encoders = reap_encoders(owner)
    swept.fifo_dirs = remove_fifo_dirs(owner)
    if work_dir.exists():
        shutil.rmtree(work_dir, ignore_errors=True)
        swept.scratch = True
    with contextlib.suppress(OSError):
        owner.pid_file.unlink()
    if swept.encoders:  # the wording the fault drills count
        log.warning("killed ffmpeg encoders a killed daemon left behind", count=swept.encoders)
    if swept.workers or swept.encoders or swept.fifo_dirs:
        log.warning(
            "removed what an earlier montaged on this state dir left behind",
            workers=swept.workers, worker_rss_mb=round(swept.worker_rss_bytes / 2**20, 1),
            encoders=swept.encoders, fifo_dirs=swept.fifo_dirs,
        )  # fmt: skip
    return swept
