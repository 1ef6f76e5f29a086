"""One process-pool shell for every model the daemon runs off the event loop (Whisper, diarizer, vision).

Why not ``ProcessPoolExecutor``: one dead worker breaks the whole executor for good, failing
every task in flight in every worker, and its shutdown waits in a blocking call. Here each
worker is its own process on its own socket, so the failure contract is per task:

- a worker that dies (SIGKILL, out of memory, segfault) fails only the task it was running; that
  task is retried once on another worker, and fails with :class:`WorkerDied` (``worker_died``)
  if that one dies too;
- a dead worker is replaced at once (``montage_pool_restarts_total{pool}``); :attr:`ProcPool.healthy`
  is False until every worker is alive and ready again;
- :meth:`ProcPool.aclose` never blocks the event loop: idle workers are told to exit, busy ones
  get SIGTERM, and whatever is left after ``stop_timeout`` gets SIGKILL;
- workers start from a scrubbed environment (:func:`worker_env`): no credentials;
- the initializer runs once per worker (models load once per process, not per task), and a
  worker serves tasks until the pool closes (no process per task).

Workers are plain ``python -m montaged.procworker`` processes started with ``subprocess``: a
fresh interpreter (no forked locks or threads from the daemon) whose environment is ours to set.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pickle
import signal
import socket
import subprocess
import sys
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from multiprocessing.connection import Connection
from types import TracebackType
from typing import Any, Self, TypeVar, cast

import anyio
import anyio.to_thread
import structlog

from montaged import debris
from montaged.backoff import Backoff
from montaged.errors import MontageError
from montaged.metrics import POOL_RESTARTS

log = structlog.get_logger(__name__)

T = TypeVar("T")

STOP_TIMEOUT = 10.0
"""Seconds busy workers get after SIGTERM before SIGKILL when a pool closes."""

_SECRET_WORDS = ("PASSWORD", "PASSWD", "SECRET", "TOKEN", "API_KEY", "APIKEY", "CREDENTIAL", "PRIVATE")
_KEEP = frozenset({"MONTAGE_LOG__LEVEL", "MONTAGE_LOG__FORMAT"})
_SEND_IN_THREAD = 32 * 1024  # bigger payloads may fill the socket buffer: write them off the loop


class WorkerDied(MontageError):
    """A pool worker died twice on one task: the input likely crashes (or exhausts) the model."""

    code = "worker_died"


class PoolClosed(MontageError):
    """The pool was closed (the daemon is stopping) while a task needed it."""

    code = "pool_closed"


def _looks_secret(name: str, value: str) -> bool:
    upper = name.upper()
    if upper in _KEEP:
        return False
    if upper.startswith("MONTAGE_") or upper in ("CREDENTIALS_DIRECTORY", "DEEPGRAM_API_KEY"):
        return True  # workers need no daemon setting: everything they use comes in their arguments
    if any(word in upper for word in _SECRET_WORDS) or upper.endswith("_KEY"):
        return True
    # a URL with a password in it (DATABASE_URL=postgres://u:pw@h/db, REDIS_URL=...)
    scheme, sep, rest = value.partition("://")
    return bool(sep) and scheme.isalnum() and ":" in rest.split("@", 1)[0] and "@" in rest


def worker_env(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of a pool worker: the daemon's, less anything that may hold a credential."""
    env = os.environ if environ is None else environ
    return {k: v for k, v in env.items() if not _looks_secret(k, v)}


def _describe_exit(code: int | None) -> str:
    if code is None:
        return "closed its connection"
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        hint = " (the out-of-memory killer, or an operator)" if -code == signal.SIGKILL else ""
        return f"was killed by {name}{hint}"
    return f"exited with status {code}"


@dataclass(frozen=True)
class PoolHealth:
    """One pool as /healthz reports it."""

    name: str
    workers: int
    ready: int  # alive and initialised
    restarts: int
    healthy: bool


class _Died(Exception):
    def __init__(self, worker: _Worker) -> None:
        self.worker = worker


class _Worker:
    """One worker process and the parent's end of its socket."""

    def __init__(
        self, pool: ProcPool, proc: subprocess.Popen[bytes], conn: Connection, *, replacement: bool
    ) -> None:
        self.pool = pool
        self.proc = proc
        self.conn = conn
        self.pid = proc.pid
        self.replacement = replacement  # started after a death: the pool is unhealthy until ready
        self.ready = False
        self.dead = False
        self.watched = False
        self.init_error: BaseException | None = None
        self.started = time.monotonic()

    def alive(self) -> bool:
        return not self.dead and self.proc.poll() is None

    async def recv(self) -> tuple[Any, ...]:
        try:
            await anyio.wait_readable(self.conn.fileno())
            msg: tuple[Any, ...] = pickle.loads(self.conn.recv_bytes())
        except (EOFError, OSError, anyio.ClosedResourceError) as e:  # closed: the pool is closing
            raise _Died(self) from e
        return msg

    async def _send(self, payload: bytes) -> None:
        try:
            if len(payload) <= _SEND_IN_THREAD:
                self.conn.send_bytes(payload)
            else:
                with anyio.CancelScope(shield=True):  # half a message would desync the socket
                    await anyio.to_thread.run_sync(self.conn.send_bytes, payload)
        except OSError as e:
            raise _Died(self) from e

    def mark_ready(self, error: BaseException | None) -> None:
        self.ready, self.init_error = True, error
        seconds = round(time.monotonic() - self.started, 2)
        if error is None:
            log.debug("pool worker ready", pool=self.pool.name, pid=self.pid, seconds=seconds)
        else:
            log.error("pool worker could not load its model", pool=self.pool.name, pid=self.pid,
                      error=str(error))

    async def wait_ready(self) -> BaseException | None:
        """The initializer's error, if it failed (the worker stays up and answers with it)."""
        if not self.ready:
            _kind, _pid, error = await self.recv()
            self.mark_ready(error)
        return self.init_error

    async def call(self, payload: bytes) -> tuple[str, Any]:
        await self.wait_ready()
        await self._send(payload)
        status, value = await self.recv()
        return status, value

    def kill(self) -> None:
        self.dead = True
        with contextlib.suppress(ProcessLookupError):
            self.proc.kill()
        if not self.conn.closed:
            anyio.notify_closing(self.conn.fileno())  # wakes a task waiting on it, before the fd goes
            self.conn.close()


class ProcPool:
    """``async with ProcPool("vision", workers=2, initializer=f) as pool: r = await pool.run(g, x)``.

    Args:
        name: the pool's label in logs, metrics and health (``whisper``, ``diarizer``, ``vision``).
        workers: processes in the pool.
        initializer: a top-level function run once in each worker before its first task (load
            the model here); an exception from it fails every task of that worker with that error.
        initargs: its arguments (picklable).
        warm: start every worker and wait for its initializer in ``__aenter__``, so a broken
            model fails the start, not a job; otherwise workers start on first use.
        hint: appended to the :class:`WorkerDied` message (what the operator can lower).
        stop_timeout: seconds busy workers get after SIGTERM before SIGKILL at close.
    """

    def __init__(
        self,
        name: str,
        *,
        workers: int = 1,
        initializer: Callable[..., object] | None = None,
        initargs: tuple[Any, ...] = (),
        warm: bool = True,
        hint: str = "",
        stop_timeout: float = STOP_TIMEOUT,
    ) -> None:
        if workers < 1:
            raise ValueError(f"{name} pool: workers must be at least 1 (got {workers})")
        self.name = name
        self.size = workers
        self.restarts = 0
        self.stop_timeout = stop_timeout
        init = pickle.dumps((initializer, initargs), protocol=pickle.HIGHEST_PROTOCOL)
        self._init = pickle.dumps((list(sys.path), init), protocol=pickle.HIGHEST_PROTOCOL)
        self._warm = warm
        self._hint = hint
        self._workers: list[_Worker] = []
        self._idle: deque[_Worker] = deque()
        self._waiters: deque[asyncio.Future[_Worker]] = deque()
        self._draining: set[asyncio.Task[None]] = set()
        self._owner = debris.current_owner()
        self._start_backoff = Backoff(2.0, 30.0)  # for replacements that die before they are ready
        self._pending_spawns = 0
        self._started = False
        self._closed = False

    # ---- lifecycle ---------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        if self._warm:
            await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def start(self) -> None:
        """Start every worker and wait until each has run its initializer (a failure raises here)."""
        if self._closed:
            raise PoolClosed(f"the {self.name} pool is closed")
        self._started = True
        fresh = [self._spawn() for _ in range(self.size)]
        try:
            for error in await _gather([w.wait_ready for w in fresh]):
                if error is not None:
                    raise error
        except BaseException:
            await self.aclose()
            raise
        for w in fresh:
            self._release(w)

    def _ensure_started(self) -> None:
        if self._closed:
            raise PoolClosed(f"the {self.name} pool is closed (the daemon is stopping)")
        if not self._started:
            self._started = True
            for _ in range(self.size):
                self._release(self._spawn())

    def _spawn(self, *, replacement: bool = False) -> _Worker:
        parent, child = socket.socketpair()
        token = self._owner.token if self._owner is not None else "-"
        argv = [sys.executable, "-m", debris.WORKER_MODULE, str(child.fileno()), str(os.getpid()), self.name,
                token]
        try:
            proc = subprocess.Popen(argv, env=worker_env(), pass_fds=(child.fileno(),),
                                    stdin=subprocess.DEVNULL, close_fds=True)
        finally:
            child.close()
        conn = Connection(parent.detach())
        conn.send_bytes(self._init)  # small: the socket buffer takes it without blocking
        worker = _Worker(self, proc, conn, replacement=replacement)
        self._workers.append(worker)
        if self._owner is not None:
            self._owner.worker_started(self.name, proc.pid)
        return worker

    def _forget(self, worker: _Worker) -> None:
        self._unwatch(worker)
        worker.kill()
        with contextlib.suppress(ValueError):
            self._workers.remove(worker)
        with contextlib.suppress(ValueError):
            self._idle.remove(worker)
        with contextlib.suppress(subprocess.TimeoutExpired):
            worker.proc.wait(0.1)  # reap it; a SIGKILLed process is gone within milliseconds
        if self._owner is not None:
            self._owner.worker_exited(worker.pid)

    def _replace(self, dead: _Worker) -> str:
        """Swap a dead worker for a fresh one; returns how it died, for the error and the log."""
        try:  # its socket closed as it exited: the status follows within microseconds
            code: int | None = dead.proc.wait(0.1)
        except subprocess.TimeoutExpired:
            code = None  # alive but its socket is gone: it cannot be talked to, so it is killed
        how = _describe_exit(code)
        self._forget(dead)
        if self._closed:
            return how
        self.restarts += 1
        POOL_RESTARTS.labels(pool=self.name).inc()
        # A worker that keeps dying before it is ready (a model that crashes on load) is
        # restarted with back-off instead of in a tight loop.
        if dead.replacement and not dead.ready:
            delay = self._start_backoff.next()
        else:
            delay = 0.0
            self._start_backoff.reset()
        log.warning("pool worker died; starting a fresh one", pool=self.name, pid=dead.pid, how=how,
                    restarts=self.restarts, delay=delay)
        self._pending_spawns += 1
        asyncio.get_running_loop().call_later(delay, self._respawn)
        return how

    def _respawn(self) -> None:
        self._pending_spawns -= 1
        if not self._closed:
            self._release(self._spawn(replacement=True))

    async def aclose(self) -> None:
        """Stop every worker: idle ones exit, busy ones get SIGTERM, then SIGKILL after ``stop_timeout``.

        Never blocks the event loop: the wait is a poll with sleeps.
        """
        if self._closed:
            return
        self._closed = True
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_exception(PoolClosed(f"the {self.name} pool closed while a task waited"))
        for task in self._draining:
            task.cancel()
        idle = set(self._idle)
        for w in self._workers:
            self._unwatch(w)
            with contextlib.suppress(OSError):
                if w in idle and w.ready:
                    w.conn.send_bytes(pickle.dumps(None))
                else:
                    w.proc.terminate()
        with anyio.CancelScope(shield=True):
            deadline = time.monotonic() + self.stop_timeout
            # A child's exit has no event to await portably (pidfd is Linux 5.3+): poll, never block.
            while any(w.proc.poll() is None for w in self._workers) and time.monotonic() < deadline:  # noqa: ASYNC110
                await anyio.sleep(0.02)
            for w in list(self._workers):
                if w.proc.poll() is None:
                    log.warning("pool worker did not stop in time; killing it", pool=self.name, pid=w.pid,
                                stop_timeout=self.stop_timeout)
                self._forget(w)

    # ---- health ------------------------------------------------------------------------------

    @property
    def ready_workers(self) -> int:
        return sum(1 for w in self._workers if w.ready and w.alive())

    @property
    def healthy(self) -> bool:
        """False once closed, and while a dead worker is being replaced (until the new one is ready)."""
        if self._closed:
            return False
        if not self._started:
            return True  # a lazy pool that has had no work yet
        return (not self._pending_spawns and len(self._workers) == self.size
                and all(w.alive() and (w.ready or not w.replacement) for w in self._workers))

    def health(self) -> PoolHealth:
        return PoolHealth(self.name, self.size, self.ready_workers, self.restarts, self.healthy)

    @property
    def pids(self) -> list[int]:
        """Worker pids (tests kill them; ``ps`` shows them as ``montaged.procworker``)."""
        return [w.pid for w in self._workers if w.alive()]

    # ---- idle workers ------------------------------------------------------------------------

    def _release(self, worker: _Worker) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(worker)
                return
        self._idle.append(worker)
        self._watch(worker)

    def _watch(self, worker: _Worker) -> None:
        """Notice an idle worker's death (or its ready message) without a task per worker."""
        asyncio.get_running_loop().add_reader(worker.conn.fileno(), self._idle_readable, worker)
        worker.watched = True

    def _unwatch(self, worker: _Worker) -> None:
        if worker.watched:
            worker.watched = False
            with contextlib.suppress(ValueError, OSError):
                asyncio.get_running_loop().remove_reader(worker.conn.fileno())

    def _idle_readable(self, worker: _Worker) -> None:
        if not worker.ready:
            try:
                _kind, _pid, error = pickle.loads(worker.conn.recv_bytes())
                worker.mark_ready(error)
                return
            except (EOFError, OSError):
                pass
        # A ready worker sends nothing unasked: readable while idle means end of file, it died.
        self._replace(worker)

    async def _checkout(self) -> _Worker:
        if not self._started:
            self._ensure_started()
        elif self._closed:
            raise PoolClosed(f"the {self.name} pool is closed (the daemon is stopping)")
        while True:
            if self._idle:
                worker = self._idle.popleft()
                self._unwatch(worker)
            else:
                waiter: asyncio.Future[_Worker] = asyncio.get_running_loop().create_future()
                self._waiters.append(waiter)
                try:
                    worker = await waiter
                except BaseException:
                    if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                        self._release(waiter.result())  # handed a worker just as we were cancelled
                    raise
            if worker.alive():
                return worker
            self._replace(worker)  # died while idle: not this task's attempt

    def _drain(self, worker: _Worker) -> None:
        """A cancelled task's worker finishes that task in the background, then serves again."""

        async def finish() -> None:
            try:
                await (worker.wait_ready() if not worker.ready else worker.recv())
            except _Died:
                self._replace(worker)
                return
            self._release(worker)

        task = asyncio.get_running_loop().create_task(finish())
        self._draining.add(task)
        task.add_done_callback(self._draining.discard)

    # ---- work --------------------------------------------------------------------------------

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` in a worker (``fn`` a top-level function; arguments and result picklable).

        The worker's exception is raised here. A worker that dies during the call is replaced
        and the call retried once; a second death raises :class:`WorkerDied`.
        """
        payload = pickle.dumps((fn, args), protocol=pickle.HIGHEST_PROTOCOL)
        what = getattr(fn, "__name__", "a task")
        for attempt in (1, 2):
            worker = await self._checkout()
            try:
                status, value = await worker.call(payload)
            except _Died:
                how = self._replace(worker)
                if self._closed:
                    raise PoolClosed(f"the {self.name} pool closed while {what} was running") from None
                if attempt == 2:
                    raise WorkerDied(
                        f"the {self.name} worker {how} while running {what}, twice (retried once on a "
                        f"fresh worker); the input may crash or exhaust the model{self._hint}"
                    ) from None
                log.warning("retrying the task of a dead pool worker", pool=self.name, task=what, how=how)
                continue
            except BaseException:
                if worker.alive() and not self._closed:
                    self._drain(worker)
                raise
            self._release(worker)
            if status == "ok":
                return cast(T, value)
            raise value
        raise AssertionError("unreachable")


class PooledModel:
    """Base of a model's pool wrapper (vision, diarizer): ``async with`` closes its :attr:`pool`."""

    pool: ProcPool

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        # Waiting tasks fail; running ones get stop_timeout, then their process is killed.
        await self.pool.aclose()

    def health(self) -> PoolHealth:
        return self.pool.health()


async def _gather(calls: list[Callable[[], Any]]) -> list[Any]:
    results: list[Any] = [None] * len(calls)

    async def one(i: int) -> None:
        results[i] = await calls[i]()

    async with anyio.create_task_group() as tg:
        for i in range(len(calls)):
            tg.start_soon(one, i)
    return results
