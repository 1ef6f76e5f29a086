"""Write ``config/montage.example.toml`` from the settings models, so it can never go stale.

Every key of :class:`montaged.config.Settings` is written in model order with its default value and
the docstring under its field (parsed from the source: ``use_attribute_docstrings`` is off), plus
its allowed values or range. Keys without a default (null) and keys whose default depends on the
machine (home folder, XDG or systemd directories) are written commented out, with why.
``tests/test_example_config.py`` fails when the committed file differs from this output.

Usage: ``python scripts/gen_example_config.py`` (write), ``--check`` (exit 1 with a diff if stale),
``--output PATH``. ``make config`` runs the first.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import difflib
import inspect
import itertools
import json
import os
import re
import sys
import textwrap
import types
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import annotated_types
from pydantic import BaseModel
from pydantic.fields import FieldInfo

from montaged.config import Settings

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUTPUT = ROOT / "config" / "montage.example.toml"
ENV_PREFIX = "MONTAGE_"

HEADER = """\
# Montage configuration: every key, its default and what it does.
#
# GENERATED from the settings models in montaged/config.py by scripts/gen_example_config.py
# (`make config`); tests/test_example_config.py fails when this file is stale. Do not edit it by
# hand: change the docstring or default in montaged/config.py and regenerate.
#
# Where the file is read from: `--config FILE`, else $MONTAGE_CONFIG, else
# /etc/montage/montage.toml when it exists, else only the built-in defaults below.
# Copy only the keys you change: every key left out keeps its default.
#
# Environment variables override this file: MONTAGE_<SECTION>__<KEY>, e.g.
#   MONTAGE_WHISPER__MODEL=tiny.en   MONTAGE_METRICS__HOST=0.0.0.0
#   MONTAGE_PATHS__INPUT_ROOTS='["/srv/in"]'   (lists and tables as JSON)
#   MONTAGE_PROFILES__VERTICAL__CRF=20
# Unknown keys and bad values are errors; `montaged --check-config` lists them all.
#
# Secrets are never read from this file (a secret key here is an error). Set them in the
# environment (MONTAGE_DEEPGRAM_API_KEY, MONTAGE_DATABASE_PASSWORD, MONTAGE_REDIS_PASSWORD, or
# MONTAGE_<NAME>_FILE=path) or as files in $CREDENTIALS_DIRECTORY (systemd LoadCredential=):
# deepgram_api_key, database_password, redis_password.
#
# Keys shown commented out have no value by default (null) or a default that depends on the
# machine; uncomment and set them to change that.
"""

# Two environments that differ in everything a default may read: a key whose default differs
# between them depends on the machine. SHOWN is the one whose values are printed.
_PROBE_ENV = {"HOME": "/home/probe-a"}
_PROBE_ENV_B = {
    "HOME": "/home/probe-b", "XDG_STATE_HOME": "/xdg-state", "XDG_RUNTIME_DIR": "/xdg-run",
    "XDG_CACHE_HOME": "/xdg-cache", "STATE_DIRECTORY": "/state", "RUNTIME_DIRECTORY": "/run-dir",
    "CACHE_DIRECTORY": "/cache",
}
_SHOWN_HOME = "/__home__"  # printed as ~
_SHOWN_ENV = {"HOME": _SHOWN_HOME}
MACHINE_NOTE = (
    "Default depends on the machine (home folder, $XDG_* variables, systemd's $STATE_DIRECTORY).\n"
    "For a user with none of those variables set it is:"
)
_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


@contextlib.contextmanager
def _environ(env: dict[str, str]) -> Iterator[None]:
    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update(env)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def field_docs(cls: type[BaseModel]) -> dict[str, str]:
    """Docstrings written under fields (``x: int = 1`` then ``\"\"\"doc\"\"\"``), base classes first."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not (isinstance(klass, type) and issubclass(klass, BaseModel)) or klass.__module__.startswith(
            "pydantic"
        ):
            continue
        try:
            tree = ast.parse(textwrap.dedent(inspect.getsource(klass)))
        except (OSError, TypeError):
            continue
        body = tree.body[0].body if tree.body and isinstance(tree.body[0], ast.ClassDef) else []
        for stmt, nxt in itertools.pairwise(body):
            if (
                isinstance(stmt, ast.AnnAssign)
                and isinstance(stmt.target, ast.Name)
                and isinstance(nxt, ast.Expr)
                and isinstance(nxt.value, ast.Constant)
                and isinstance(nxt.value.value, str)
            ):
                docs[stmt.target.id] = inspect.cleandoc(nxt.value.value)
    return docs


def _default(info: FieldInfo, env: dict[str, str]) -> Any:
    with _environ(env):
        return info.get_default(call_default_factory=True)


def _plain(value: Any) -> Any:
    """Models to dicts, paths to strings: what TOML can hold (None stays None)."""
    if isinstance(value, BaseModel):
        return {k: _plain(v) for k, v in value.model_dump().items()}
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set):
        return [_plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def toml_value(value: Any, *, octal: bool = False) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return f"0o{value:o}" if octal else str(value)
    if isinstance(value, float):
        return repr(value) if value == value and value not in (float("inf"), float("-inf")) else (
            "nan" if value != value else ("inf" if value > 0 else "-inf"))
    if isinstance(value, str | Path):
        return json.dumps(str(value), ensure_ascii=False)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_value(_plain(v)) for v in value) + "]"
    if isinstance(value, dict):
        if not value:
            return "{}"
        items = ", ".join(f"{toml_key(str(k))} = {toml_value(_plain(v))}" for k, v in value.items())
        return "{ " + items + " }"
    raise TypeError(f"cannot write {value!r} ({type(value).__name__}) as TOML")


def toml_key(key: str) -> str:
    return key if _BARE_KEY.match(key) else json.dumps(key)


def _strip_optional(annotation: Any) -> list[Any]:
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return [a for a in typing.get_args(annotation) if a is not type(None)]
    return [annotation]


def _model_of(annotation: Any) -> type[BaseModel] | None:
    return annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None


def _dict_of_models(annotation: Any) -> type[BaseModel] | None:
    if typing.get_origin(annotation) is dict:
        args = typing.get_args(annotation)
        return _model_of(args[1]) if len(args) == 2 else None
    return None


_KIND_WORDS: dict[Any, str] = {
    Path: "a path", str: "a string", int: "an integer", float: "a number", bool: "true or false",
    list: "a list", dict: "a table",
}


def _kind(annotation: Any) -> str:
    """A few words for a value's type, for keys shown without a value."""
    names = []
    for a in _strip_optional(annotation):
        origin = typing.get_origin(a)
        if origin is Literal:
            names.append("one of " + ", ".join(json.dumps(v) for v in typing.get_args(a)))
        else:
            names.append(_KIND_WORDS.get(origin or a, getattr(a, "__name__", str(a))))
    return " or ".join(names)


def constraints(info: FieldInfo) -> str:
    """Allowed values or range from Literal types and Field(gt=…, le=…), e.g. ``>= 0, <= 1``."""
    parts: list[str] = []
    for a in _strip_optional(info.annotation):
        if typing.get_origin(a) is Literal:
            parts.append("one of: " + ", ".join(json.dumps(v) for v in typing.get_args(a)))
    bounds = []
    for m in info.metadata:
        for attr, sym in (("gt", ">"), ("ge", ">="), ("lt", "<"), ("le", "<=")):
            if isinstance(m, getattr(annotated_types, attr.capitalize())):
                bound = getattr(m, attr)
                bounds.append(f"{sym} {bound:g}" if isinstance(bound, float) else f"{sym} {bound}")
    if bounds:
        parts.append(", ".join(bounds))
    return "; ".join(parts)


def _comment(text: str) -> list[str]:
    text = text.replace("``", "`")
    return [f"# {line}".rstrip() for line in text.splitlines()]


def render_table(
    model: type[BaseModel], path: list[str], *, values: dict[str, Any] | None = None
) -> list[str]:
    """``[path]`` and its keys; sub-tables (nested models, dicts of models) after the plain keys.

    ``values`` replaces the model's own defaults (a profile in ``profiles`` has its own).
    """
    docs = field_docs(model)
    env_prefix = ENV_PREFIX + "__".join(p.upper() for p in path) + "__"
    lines = [f"[{'.'.join(toml_key(p) for p in path)}]"]
    cls_doc = model.__dict__.get("__doc__")
    if cls_doc and not values:
        lines[:0] = _comment(inspect.cleandoc(cls_doc))
    lines.append(f"# Environment: {env_prefix}<KEY>")
    later: list[str] = []
    for name, info in model.model_fields.items():
        annotation = info.annotation
        sub_model = _model_of(annotation)
        dict_model = _dict_of_models(annotation)
        if values is not None:
            value, machine = values[name], False
        else:
            value = _default(info, _PROBE_ENV)
            machine = _plain(value) != _plain(_default(info, _PROBE_ENV_B))
        if sub_model is not None:
            later += ["", *render_table(sub_model, [*path, name], values=_plain(value))]
            continue
        if dict_model is not None and value:
            for key, item in value.items():
                later += ["", *render_table(dict_model, [*path, name, key], values=_plain(item))]
            continue
        lines.append("")
        if name in docs:
            lines += _comment(docs[name])
        if rule := constraints(info):
            lines.append(f"# ({rule})")
        key = toml_key(name)
        octal = name.endswith("_mode") and isinstance(value, int)
        if machine:
            lines += _comment(MACHINE_NOTE)
            shown = toml_value(_plain(_default(info, _SHOWN_ENV)), octal=octal).replace(_SHOWN_HOME, "~")
            lines.append(f"# {key} = {shown}")
        elif value is None:
            lines.append(f"# {key} =   # unset by default; {_kind(annotation)}")
        else:
            lines.append(f"{key} = {toml_value(_plain(value), octal=octal)}")
    return lines + later


def _dict_note(name: str, model: str, builtins: list[str]) -> str:
    """How a ``[name.<key>]`` table combines with the built-in ones, found out by loading one."""
    import tempfile

    from montaged.config import load

    with tempfile.TemporaryDirectory() as tmp:
        probe = Path(tmp) / "probe.toml"
        probe.write_text(f"[{name}.probe-only]\n")
        with _environ(_PROBE_ENV):
            kept = set(builtins) <= set(getattr(load(probe, env=_PROBE_ENV), name))
    head = f"[{name}.<name>]: named {model} tables; {', '.join(builtins)} are built in."
    if kept:
        return head + "\nAdd your own; a built-in table given here changes only the keys it sets."
    return head + (
        "\nTables given here REPLACE the whole built-in set: copy every built-in you still use,"
        "\nwith all its keys (a table that sets only `crf` gets the defaults for the rest)."
    )


def render() -> str:
    """The whole example file, deterministic whatever the machine or its environment."""
    out = [HEADER]
    for name, info in Settings.model_fields.items():
        annotation = info.annotation
        model = _model_of(annotation)
        dict_model = _dict_of_models(annotation)
        if model is not None:
            out += ["", *render_table(model, [name]), ""]
        elif dict_model is not None:
            default = _default(info, _PROBE_ENV)
            out += ["", *_comment(_dict_note(name, dict_model.__name__, list(default)))]
            for key, item in default.items():
                out += ["", *render_table(dict_model, [name, key], values=_plain(item)), ""]
        else:
            raise TypeError(f"Settings.{name}: top-level keys must be sections (models); got {annotation}")
    text = "\n".join(out)
    return re.sub(r"\n{3,}", "\n\n", text).rstrip() + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Write the documented example config from the settings models.")
    p.add_argument("--output", "-o", type=Path, default=DEFAULT_OUTPUT)
    p.add_argument("--check", action="store_true", help="do not write; exit 1 with a diff when stale")
    args = p.parse_args(argv)
    text = render()
    current = args.output.read_text() if args.output.exists() else ""
    if args.check:
        if current == text:
            print(f"{args.output}: up to date")
            return 0
        sys.stdout.writelines(difflib.unified_diff(
            current.splitlines(keepends=True), text.splitlines(keepends=True),
            str(args.output), "generated"))
        print(f"{args.output} is stale: run `make config`", file=sys.stderr)
        return 1
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(text)
    print(f"wrote {args.output} ({len(text.splitlines())} lines)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
