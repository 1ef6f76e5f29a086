"""config/montage.example.toml: loads, names every setting, and is exactly what the generator writes."""

from __future__ import annotations

import importlib.util
import re
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from pydantic import BaseModel

from montaged.config import Settings, load

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "config" / "montage.example.toml"
GENERATOR = ROOT / "scripts" / "gen_example_config.py"
ENV = {"HOME": "/home/example"}  # a fixed, XDG-free environment: defaults do not depend on the runner
_HEADER = re.compile(r"^\[([^\]]+)\]\s*$")
_KEY = re.compile(r"^(?:#\s?)?([A-Za-z0-9_\"/.-]+)\s*=")  # `key = …` or commented `# key = …`


@pytest.fixture(scope="module")
def generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gen_example_config", GENERATOR)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _field_paths(model: type[BaseModel], value: Any, prefix: tuple[str, ...]) -> Iterator[tuple[str, ...]]:
    """Every leaf key of a settings model, recursing into sections and dicts of sections."""
    for name, info in model.model_fields.items():
        sub = getattr(value, name)
        annotation = info.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            yield from _field_paths(annotation, sub, (*prefix, name))
        elif isinstance(sub, dict) and sub and all(isinstance(v, BaseModel) for v in sub.values()):
            for key, item in sub.items():
                yield from _field_paths(type(item), item, (*prefix, name, key))
        else:
            yield (*prefix, name)


def _keys_in_file(text: str) -> set[tuple[str, ...]]:
    """(table…, key) for every key line, commented or not, under its table header."""
    table: tuple[str, ...] = ()
    found = set()
    for line in text.splitlines():
        if m := _HEADER.match(line):
            table = tuple(m.group(1).split("."))
        elif (m := _KEY.match(line)) and table:
            found.add((*table, m.group(1).strip('"')))
    return found


def test_example_loads_and_holds_the_defaults(tmp_path: Path) -> None:
    settings = load(EXAMPLE, env=ENV)
    empty = tmp_path / "empty.toml"
    empty.write_text("")
    defaults = load(empty, env=ENV)
    # Every value written in the file is the real default: loading it changes nothing.
    assert settings.model_dump() == defaults.model_dump()
    assert tomllib.loads(EXAMPLE.read_text())  # plain TOML too, for other tools


def test_every_setting_appears() -> None:
    settings = load(EXAMPLE, env=ENV)
    wanted = set(_field_paths(Settings, settings, ()))
    found = _keys_in_file(EXAMPLE.read_text())
    missing = sorted(".".join(p) for p in wanted - found)
    assert not missing, f"keys missing from {EXAMPLE.name} (run `make config`): {missing}"
    assert len(wanted) > 100  # the walk really went through every section


def test_sections_in_model_order() -> None:
    headers = [m.group(1).split(".")[0] for line in EXAMPLE.read_text().splitlines()
               if (m := _HEADER.match(line))]
    order = list(dict.fromkeys(headers))
    assert order == list(Settings.model_fields)


def test_committed_file_is_what_the_generator_writes(generator: ModuleType) -> None:
    assert EXAMPLE.read_text() == generator.render(), (
        f"{EXAMPLE} is stale: run `make config` and commit the result")


def test_generator_output_does_not_depend_on_the_environment(
    generator: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    baseline = generator.render()
    monkeypatch.setenv("HOME", "/elsewhere")
    monkeypatch.setenv("XDG_STATE_HOME", "/var/xdg")
    monkeypatch.setenv("STATE_DIRECTORY", "/var/lib/montage")
    assert generator.render() == baseline


def test_machine_dependent_and_unset_keys_are_commented_out() -> None:
    text = EXAMPLE.read_text()
    assert re.search(r"^# state_dir = \"~/\.local/state/montage\"$", text, re.M)
    assert re.search(r"^# input_roots = \[\"~\"\]$", text, re.M)
    assert re.search(r"^# output_dir = .*unset by default", text, re.M)
    assert "/root" not in text and "/home/" not in text  # nothing of the machine that generated it


def test_docstrings_become_comments() -> None:
    text = EXAMPLE.read_text()
    # A docstring from config.py, as a comment right above its key.
    assert re.search(
        r"# On SIGTERM, running stages get this long to finish before they are cancelled\.\n"
        r"# \(>= 0\)\nshutdown_grace_seconds = 30\.0\n", text)
    assert "socket_mode = 0o660" in text
