"""Hot folder: media dropped into a watched folder becomes a job once the file has settled.

A file is taken when its size, mtime and inode stayed the same for ``settle_seconds`` and it
opens for reading; partial-download names and dot files are never taken. Events from watchfiles
(inotify, or polling on network mounts) only say "look again": every decision is made on a fresh
``stat``, and every folder is listed again every ``rescan_seconds``, so a lost event delays a drop
but never loses it. Files already there at start-up are taken too (a restart loses no drop).

The same content is recognised by its SHA-256 (cached in the store by inode, size and mtime, so a
restart does not read every file again): a second drop is logged and recorded as a
``hotfolder.duplicate`` event on the existing job instead of becoming a second job.
"""

from __future__ import annotations

import fnmatch
import os
import threading
import time
from collections.abc import Awaitable
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import anyio.lowlevel
import anyio.to_thread
import structlog
from watchfiles import Change, awatch

from montaged.backoff import Backoff
from montaged.config import HotFolderConfig
from montaged.control.protocol import EventKind, duplicate
from montaged.errors import ConfigError, StoreUnavailable
from montaged.gate import IntakeGate
from montaged.intake import SubmitError, Submitter, check_path_text, check_source
from montaged.media.source_file import shown
from montaged.metrics import INTAKE_ERRORS, INTAKE_REFUSED
from montaged.model import TERMINAL_STATES, Job, JobSpec, JobState
from montaged.sources import Sig, error_code, hash_file, move_into, openable, stat_regular
from montaged.sources.dropoptions import drop_options, is_options_file, move_along, rule_problems
from montaged.sources.folders import Folder, on_job_finished, resolve_folders

log = structlog.get_logger(__name__)

HASH_CACHE_STAGE = "hotfolder.hash"
"""Stage name under which the store caches file hashes (key: device, inode, size, mtime)."""
"""How often a settled file looks whether intake was resumed."""
HASH_THREADS = 2
"""Files hashed at once: hashing is disk-bound, more threads only make the drives seek."""
HASH_AHEAD_QUIET_SECONDS = 0.2
"""A file quiet this long starts being hashed while the rest of its settle time runs out, so a
large file's hash is mostly ready when it settles; a later write throws that hash away."""
STARTUP_LOOKBACK = 2000
"""Recent jobs read at start-up to match files already there to the job made from them."""
SWEEP_LOOKBACK = 200
"""Recently ended jobs per state looked at when sweeping processing/."""
MTIME_SLACK_SECONDS = 0.02
"""Kernels stamp mtimes from a coarse clock (up to a scheduler tick behind the write)."""
WATCH_DEBOUNCE_MS = 300
"""Longest batching of change events (watchfiles' default 1.6 s would delay settling)."""


def _asked(job: Job) -> dict[str, Any]:
    """What a job asked for beyond its file (the options the hot folder did not record)."""
    return {k: v for k, v in job.spec.options.items() if k != "hotfolder"}


def _same_file(job: Job, source: str, sig: Sig) -> bool:
    """``job`` was submitted for this very file, not for an equal copy dropped later."""
    return job.spec.source == source and job.spec.options.get("hotfolder", {}).get("file") == list(sig)


class _Ahead:
    """A hash started before the file settled; it counts only for the file as it was (``sig``)."""

    def __init__(self, sig: Sig) -> None:
        self.sig = sig
        self.cancel = threading.Event()
        self.done = anyio.Event()
        self.digest: str | None = None


class _Waiter:
    """Wakes one file's settle loop early when watchfiles reports a change to it."""

    def __init__(self) -> None:
        self._event = anyio.Event()

    def poke(self) -> None:
        self._event.set()

    async def wait(self, timeout: float) -> None:
        with anyio.move_on_after(timeout):
            await self._event.wait()
        self._event = anyio.Event()


class HotFolder:
    """Watches ``cfg.paths`` and submits every settled file once (see the module docstring).

    Args:
        cfg: the ``[hotfolder]`` settings.
        submitter: the daemon's front door; its store also answers "seen this content before?".
        gate: the intake gate: while paused, settled files wait (and are not moved).
    """

    def __init__(self, cfg: HotFolderConfig, submitter: Submitter, *, gate: IntakeGate) -> None:
        self.cfg = cfg
        self.submitter = submitter
        self.store = submitter.store
        self.gate = gate
        self.folders = resolve_folders(cfg)
        self._ignore = [p.lower() for p in cfg.ignore_patterns]
        self._waiters: dict[Path, _Waiter] = {}
        self._handled: dict[Path, Sig] = {}  # path → content it had when taken (or refused)
        self._lock = anyio.Lock()  # one lookup-then-submit at a time: equal drops cannot race
        self._hash_limiter = anyio.CapacityLimiter(HASH_THREADS)
        self._tg: anyio.abc.TaskGroup | None = None
        self._busy: set[Path] = set()  # files in processing/ being handled right now
        self._startup_jobs: dict[str, list[Job]] = {}

    # ---- start-up ----------------------------------------------------------------------------

    def check(self) -> None:
        """Raise ConfigError listing every unusable folder, before anything is watched."""
        problems = []
        if self.cfg.profile not in self.submitter.profiles:
            known = ", ".join(sorted(self.submitter.profiles))
            problems.append(f"hotfolder.profile: {self.cfg.profile!r} is not configured; use one of: {known}")
        roots = [Path(r).expanduser().resolve() for r in self.submitter.input_roots]
        shown = ", ".join(str(r) for r in roots) or "(none)"
        for f in self.folders:
            if not f.watched.is_dir():
                problems.append(f"hotfolder.paths: {f.watched} is not an existing folder;"
                                " create it or fix the path")
                continue
            if not any(f.watched.is_relative_to(r) for r in roots):
                problems.append(f"hotfolder.paths: {f.watched} is outside paths.input_roots ({shown});"
                                " add it there or watch a folder inside them")
            if self.cfg.after != "move":
                continue
            for key, d in (("processing_dir", f.processing), ("done_dir", f.done), ("failed_dir", f.failed)):
                try:
                    d.mkdir(parents=True, exist_ok=True)
                except OSError as e:
                    problems.append(f"hotfolder.{key}: cannot create {d} ({e.strerror});"
                                    " create it or fix the path")
                    continue
                if d.stat().st_dev != f.watched.stat().st_dev:
                    problems.append(f"hotfolder.{key}: {d} is on another filesystem than {f.watched};"
                                    " files are moved by rename, so put it on the same one")
            if not any(f.processing.is_relative_to(r) for r in roots):
                problems.append(f"hotfolder.processing_dir: {f.processing} is outside paths.input_roots"
                                f" ({shown}); jobs read their file from there, so add it")
        problems += rule_problems(self.cfg, [f.watched for f in self.folders], self.submitter.profiles)
        if problems:
            raise ConfigError("\n".join(problems))

    async def run(self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        await anyio.to_thread.run_sync(self.check)
        if not self.folders:
            task_status.started()
            return
        stop = anyio.Event()
        async with anyio.create_task_group() as tg:
            self._tg = tg
            tg.start_soon(self._set_on_cancel, stop)
            tg.start_soon(self._watch, stop)
            await anyio.lowlevel.checkpoint()  # the watcher registers on its first step; then list
            await self._load_startup_jobs()
            if self.cfg.after == "move":
                await self._sweep_processing(startup=True)
            await self._scan(initial=True)
            tg.start_soon(self._rescan_loop)
            log.info("hot folder watching", folders=[str(f.watched) for f in self.folders],
                     settle_seconds=self.cfg.settle_seconds, after=self.cfg.after,
                     polling=self.cfg.force_polling)
            task_status.started()

    @staticmethod
    async def _set_on_cancel(stop: anyio.Event) -> None:
        """The watcher thread cannot be cancelled; it ends within 50 ms of ``stop`` being set."""
        try:
            await anyio.sleep_forever()
        finally:
            stop.set()

    # ---- finding candidates ------------------------------------------------------------------

    def eligible(self, name: str) -> bool:
        low = name.lower()
        return not is_options_file(low) and not any(fnmatch.fnmatchcase(low, p) for p in self._ignore)

    async def _watch(self, stop: anyio.Event) -> None:
        """Follow change events; when the watcher fails (it cannot decode a file name that is not
        UTF-8), start a new one and list the folders, so the events it lost cost a rescan only."""
        backoff = Backoff()
        while not stop.is_set():
            try:
                await self._watch_once(stop, backoff)
                return
            except Exception as e:
                INTAKE_ERRORS.labels(task="hotfolder_watch", code="watch_error").inc()
                delay = backoff.next()
                log.warning("hot folder watcher failed; restarting it and listing the folders",
                            code="watch_error", retry_in=delay, error=f"{type(e).__name__}: {str(e)[:300]}")
                await anyio.sleep(delay)
                await _contained("rescan", None, self._scan(initial=False))

    async def _watch_once(self, stop: anyio.Event, backoff: Backoff) -> None:
        async for changes in awatch(
            *(f.watched for f in self.folders), watch_filter=lambda _c, p: self.eligible(Path(p).name),
            debounce=WATCH_DEBOUNCE_MS, step=50, stop_event=stop, recursive=False,
            force_polling=self.cfg.force_polling, poll_delay_ms=self.cfg.poll_delay_ms,
        ):
            backoff.reset()
            for change, raw in changes:
                path = Path(raw)
                if change == Change.deleted:
                    if (w := self._waiters.get(path)) is not None:
                        w.poke()
                    self._handled.pop(path, None)
                else:
                    self._consider(path, initial=False)

    def _regular_files(self, folder: Path) -> dict[Path, Sig]:
        """Eligible regular files directly in ``folder`` (runs in a thread: stat may block on NFS)."""
        try:
            with os.scandir(folder) as entries:
                names = sorted(e.name for e in entries)
        except OSError as e:
            log.warning("hot folder cannot be listed", folder=str(folder), error=e.strerror)
            return {}
        found = {}
        for name in names:
            if self.eligible(name) and (sig := stat_regular(folder / name)) is not None:
                found[folder / name] = sig
        return found

    async def _scan(self, *, initial: bool) -> None:
        present: dict[Path, Sig] = {}
        for f in self.folders:
            present.update(await anyio.to_thread.run_sync(self._regular_files, f.watched))
        for path, sig in present.items():
            if self._handled.get(path) != sig:
                self._consider(path, initial=initial)
        for path in [p for p in self._handled if p not in present]:
            self._handled.pop(path, None)

    async def _rescan_loop(self) -> None:
        while True:
            await anyio.sleep(self.cfg.rescan_seconds)
            await _contained("rescan", None, self._scan(initial=False))
            if self.cfg.after == "move":
                await _contained("sweep", None, self._sweep_processing(startup=False))

    def _consider(self, path: Path, *, initial: bool) -> None:
        if path.parent not in {f.watched for f in self.folders} or not self.eligible(path.name):
            return
        if (w := self._waiters.get(path)) is not None:
            w.poke()
            return
        assert self._tg is not None
        self._waiters[path] = _Waiter()
        self._tg.start_soon(self._follow, path, initial, name=f"hotfolder:{path.name}")

    # ---- one file ----------------------------------------------------------------------------

    async def _follow(self, path: Path, initial: bool) -> None:
        try:
            await _contained("follow", path, self._settle_then_take(path, initial))
        finally:
            self._waiters.pop(path, None)

    async def _settle_then_take(self, path: Path, initial: bool) -> None:
        waiter = self._waiters[path]
        settle = self.cfg.settle_seconds
        last: Sig | None = None
        since = 0.0
        looked = 0.0  # wall time of the previous stat
        ahead: _Ahead | None = None
        try:
            while True:
                sig = await anyio.to_thread.run_sync(stat_regular, path)
                if sig is None or self._handled.get(path) == sig:
                    return  # gone, not a file, or already taken with this content
                now, wall = time.monotonic(), time.time()
                if sig != last:
                    # the change happened between the previous stat and now: at its mtime when that
                    # lies in between (a late event costs no latency), else count from now (a
                    # network mount's clock may disagree with ours)
                    written = sig.mtime_ns / 1e9
                    in_between = last is not None and looked <= written <= wall
                    credit = wall - written - MTIME_SLACK_SECONDS if in_between else 0.0
                    last, since = sig, now - credit
                    if ahead is not None:
                        ahead.cancel.set()
                        ahead = None
                looked = wall
                if sig.size == 0:  # still being created
                    await waiter.wait(settle)
                    continue
                left = since + settle - now
                if left > 0:
                    quiet = now - since
                    if ahead is None and quiet >= HASH_AHEAD_QUIET_SECONDS:
                        ahead = _Ahead(sig)
                        assert self._tg is not None
                        self._tg.start_soon(self._hash_ahead, path, ahead)
                    wait = left if ahead is not None else min(left, HASH_AHEAD_QUIET_SECONDS - quiet)
                    await waiter.wait(wait)
                    continue
                if not await anyio.to_thread.run_sync(openable, path):
                    since = now
                    continue
                if self.gate.paused:
                    await self.gate.wait_open()
                    continue
                await self._take(path, initial, settled_at=since + settle, settled=sig, ahead=ahead)
                return
        finally:
            if ahead is not None:
                ahead.cancel.set()

    async def _hash_ahead(self, path: Path, ahead: _Ahead) -> None:
        try:
            ahead.digest = await self._hash(path, ahead.sig, ahead.cancel)
        except OSError:
            ahead.digest = None  # hashed again (and the error reported) when the file is taken
        finally:
            ahead.done.set()

    async def _take(self, path: Path, initial: bool, *, settled_at: float, settled: Sig,
                    ahead: _Ahead | None) -> None:
        source = path
        if self.cfg.after == "move":
            folder = next(f for f in self.folders if f.watched == path.parent)
            moved = await anyio.to_thread.run_sync(move_into, path, folder.processing)
            if moved is None:  # another daemon watching the same folder renamed it first
                log.info("hot folder file taken elsewhere", path=shown(path))
                return
            source = moved
            await anyio.to_thread.run_sync(move_along, path, folder.processing)  # its options travel along
        self._busy.add(source)
        try:
            await self._submit_file(source, dropped=path, initial=initial, settled_at=settled_at,
                                    settled=settled, ahead=ahead)
        finally:
            self._busy.discard(source)

    async def _recover(self, path: Path) -> None:
        """A file left in processing/ by an earlier run: finish moving it, or submit it."""
        self._busy.add(path)
        try:
            await _contained("recover", path, self._submit_file(
                path, dropped=path, initial=True, settled_at=None, settled=None, ahead=None))
        finally:
            self._busy.discard(path)

    async def _submit_file(self, source: Path, *, dropped: Path, initial: bool, settled_at: float | None,
                           settled: Sig | None, ahead: _Ahead | None) -> None:
        try:  # a name no job can carry, or a link out of the roots, is refused before it is read
            check_path_text(str(dropped))
            await anyio.to_thread.run_sync(check_source, source, self.submitter.input_roots)
            # its folder's rule and its own options file (beside it, in processing/ after a move)
            options = await anyio.to_thread.run_sync(drop_options, self.cfg, self._folder_of(source).watched,
                                                     source, self.submitter.profiles)
        except SubmitError as e:
            if (now := await anyio.to_thread.run_sync(stat_regular, source)) is not None:
                await self._refused(source, dropped, now, str(e), code=e.code)
            return
        sig, digest = await self._stable_hash(source, dropped, settled, ahead)
        if sig is None or digest is None:
            return  # gone, or refused because it cannot be read (reported)
        backoff = Backoff()
        while True:
            try:
                await self.gate.wait_open()
                async with self._lock:
                    await self._submit_locked(source, dropped, sig, digest, initial, settled_at, options)
                return
            except StoreUnavailable as e:
                delay = backoff.next()
                log.warning("store unavailable; the dropped file waits", path=shown(dropped),
                            retry_in=delay, error=str(e))
                await anyio.sleep(delay)
            except Exception as e:  # anything else the store or a folder raised ends this file alone
                log.error("hot folder file failed", code="hotfolder_entry_error", path=shown(dropped),
                          error=f"{type(e).__name__}: {str(e)[:300]}")
                await self._refused(source, dropped, sig, f"{shown(dropped)}: could not be submitted"
                                    f" ({type(e).__name__}: {str(e)[:300]}); drop it again to retry",
                                    code="internal")
                return

    async def _submit_locked(self, source: Path, dropped: Path, sig: Sig, digest: str, initial: bool,
                             settled_at: float | None, options: dict[str, Any]) -> None:
        resolved = str(source.resolve())
        own = self._own_job(resolved, sig) if initial else None
        existing = own or await self.store.find_by_hash(digest, self.cfg.profile)
        if existing is not None and not _same_file(existing, resolved, sig) and _asked(existing) != options:
            existing = None  # the same content, asked for something else (other profiles, a reel)
        if existing is not None and _same_file(existing, resolved, sig):
            # this very file was submitted before a restart (a rename keeps the inode): nothing new
            self._handled[dropped] = sig
            if existing.state in (JobState.FAILED, JobState.CANCELLED):
                log.info("left alone: its job ended before the restart; drop it again to retry",
                         path=shown(dropped), job_id=existing.id, state=str(existing.state))
            if existing.state in TERMINAL_STATES:
                await on_job_finished(self.cfg, existing)
            return
        if existing is not None:
            log.info("same content already submitted; not submitted again", path=shown(dropped),
                     job_id=existing.id, content_hash=digest)
            await self.submitter.emit(existing.id, EventKind.HOTFOLDER_DUPLICATE,
                                      duplicate(str(dropped), digest))
            self._handled[dropped] = sig
            if self.cfg.after == "move":
                try:
                    await anyio.to_thread.run_sync(move_into, source, self._folder_of(source).done)
                    await anyio.to_thread.run_sync(move_along, source, self._folder_of(source).done)
                except OSError as e:
                    INTAKE_ERRORS.labels(task="hotfolder", code="move_failed").inc()
                    log.error("duplicate not moved to done/", code="move_failed", path=shown(source),
                              error=e.strerror)
            return
        spec = JobSpec(source=str(source), profile=self.cfg.profile, origin="hotfolder",
                       options={**options, "hotfolder": {"dropped": str(dropped), "file": list(sig)}})
        try:
            job = await self.submitter.submit(spec, content_hash=digest)
        except SubmitError as e:
            await self._refused(source, dropped, sig, str(e), code=e.code)
            return
        self._handled[dropped] = sig
        pickup = None if settled_at is None else round(time.monotonic() - settled_at, 3)
        log.info("hot folder file submitted", job_id=job.id, path=shown(dropped), pickup_seconds=pickup)

    async def _refused(self, source: Path, dropped: Path, sig: Sig, reason: str, *,
                       code: str = "bad_submission") -> None:
        log.warning("hot folder file refused", path=shown(dropped), code=code, error=reason)
        INTAKE_REFUSED.labels(source="hotfolder", code=code).inc()
        self._handled[dropped] = sig
        if self.cfg.after == "move":
            failed = self._folder_of(source).failed
            try:
                await anyio.to_thread.run_sync(move_into, source, failed, f"refused: {reason}")
                await anyio.to_thread.run_sync(move_along, source, failed)
            except OSError as e:  # stays in processing/: the next start-up tries it again
                INTAKE_ERRORS.labels(task="hotfolder", code="move_failed").inc()
                log.error("refused file not moved to failed/", code="move_failed", path=shown(source),
                          folder=shown(failed), error=e.strerror)

    def _folder_of(self, path: Path) -> Folder:
        return next(f for f in self.folders if path.parent in (f.watched, f.processing))

    async def _stable_hash(self, source: Path, dropped: Path, settled: Sig | None,
                           ahead: _Ahead | None) -> tuple[Sig | None, str | None]:
        """The file's content hash, taken while it did not change; (None, None) when it is gone.

        Normally one pass: the file is as it settled and its hash is ready (or computed now).
        A file written to again after settling (or one found in processing/ at start-up) must
        show the same size/mtime/inode twice ``settle_seconds`` apart before it is hashed.
        """
        expect = settled
        while True:
            sig = await anyio.to_thread.run_sync(stat_regular, source)
            if sig is None:
                return None, None
            if sig == expect:
                digest = None
                if ahead is not None and ahead.sig == sig:
                    await ahead.done.wait()
                    digest = ahead.digest
                try:
                    digest = digest or await self._hash(source, sig)
                except FileNotFoundError:
                    return None, None
                except OSError as e:
                    await self._refused(source, dropped, sig, f"{shown(source)}: cannot be read"
                                        f" ({e.strerror}); let the montage user read it")
                    return sig, None
                if digest is not None:
                    return sig, digest
                log.info("file changed while it was hashed; waiting for it to settle again",
                         path=shown(source))
            expect = sig
            await anyio.sleep(self.cfg.settle_seconds)

    async def _hash(self, path: Path, sig: Sig, cancel: threading.Event | None = None) -> str | None:
        """Hash of the file as ``sig`` describes it (from the store's cache when known)."""
        key = f"{sig.dev}:{sig.ino}:{sig.size}:{sig.mtime_ns}"
        try:
            cached = await self.store.get_result(HASH_CACHE_STAGE, key)
        except Exception as e:  # a cache: unavailable or refusing, the file is hashed instead
            log.debug("hash cache not read", error=f"{type(e).__name__}: {e}")
            cached = None
        if isinstance(cached, dict) and isinstance(cached.get("sha256"), str):
            return str(cached["sha256"])
        digest = await anyio.to_thread.run_sync(hash_file, path, sig, cancel, limiter=self._hash_limiter)
        if digest is None:
            return None
        try:
            await self.store.put_result(HASH_CACHE_STAGE, key, {"sha256": digest, "path": shown(path)})
        except Exception as e:  # a cache: the file is hashed again next time
            log.debug("hash not cached", error=f"{type(e).__name__}: {e}")
        return digest

    def _own_job(self, source: str, sig: Sig) -> Job | None:
        """The job submitted for this very file before the restart (any state), if recent."""
        return next((j for j in self._startup_jobs.get(source, ()) if _same_file(j, source, sig)), None)

    async def _load_startup_jobs(self) -> None:
        """Recent hot-folder jobs, so files already there at start-up are matched to their own job
        (find_by_hash may name another job with the same content, and skips failed ones)."""
        try:
            jobs = await self.store.list(limit=STARTUP_LOOKBACK)
        except StoreUnavailable as e:
            log.warning("store unavailable at start-up; matching files by content only", error=str(e))
            return
        for job in jobs:
            if job.spec.origin == "hotfolder":
                self._startup_jobs.setdefault(job.spec.source, []).append(job)

    async def _sweep_processing(self, *, startup: bool) -> None:
        """Files in processing/: at start-up each is matched to its job (or submitted: the daemon
        died between rename and submit); later, files whose job ended on another daemon (whose
        events we never see) move on to done/ or failed/."""
        files: dict[Path, Sig] = {}
        for f in self.folders:
            files.update(await anyio.to_thread.run_sync(self._regular_files, f.processing))
        files = {p: s for p, s in files.items() if p not in self._busy}
        if not files:
            return
        assert self._tg is not None
        if startup:
            for path in files:
                self._tg.start_soon(self._recover, path, name=f"hotfolder-recover:{path.name}")
            return
        try:
            ended = [j for state in (JobState.DONE, JobState.FAILED, JobState.CANCELLED)
                     for j in await self.store.list(state, limit=SWEEP_LOOKBACK)
                     if j.spec.origin == "hotfolder"]
        except StoreUnavailable:
            return
        for path, sig in files.items():
            job = next((j for j in ended if _same_file(j, str(path), sig)), None)
            if job is not None and path not in self._busy:
                await on_job_finished(self.cfg, job)


async def run_hotfolder(
    cfg: HotFolderConfig,
    submitter: Submitter,
    *,
    gate: IntakeGate,
    task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Watch ``cfg.paths`` until cancelled; ``task_status.started()`` once watching."""
    await HotFolder(cfg, submitter, gate=gate).run(task_status=task_status)


async def _contained(task: str, path: Path | None, work: Awaitable[None]) -> None:
    """Run one file's (or one pass's) work; an error ends that work alone, logged and counted.
    The next rescan looks at the file again, so a passing fault (a full disk) heals."""
    try:
        await work
    except Exception as e:
        INTAKE_ERRORS.labels(task=f"hotfolder_{task}", code=error_code(e)).inc()
        log.error("hot folder error contained", code=error_code(e), task=task,
                  path=shown(path) if path is not None else None, error=f"{type(e).__name__}: {str(e)[:300]}")
