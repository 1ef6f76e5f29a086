"""Job options for files dropped into the hot folder: a folder's rule and a file's own options file.

A rule (``[hotfolder.folder_options."/srv/drop/reels"]``) gives options to everything dropped in
one watched folder. An options file beside a dropped file gives options to that file alone, over
the rule's: ``talk.mp4.montage.json`` (or ``talk.montage.json``), one JSON object of job options
such as ``{"profiles": ["vertical", "landscape"], "reel": {"transition": "dip"}}``. The options
file is never taken as media; with ``after = "move"`` it travels with its file (processing/, then
done/ or failed/). Write it before the media file, or rename it into place: it is read when the
media file is taken. Whatever is wrong with it (unreadable, not JSON, unknown keys, bad values)
refuses the media file with ``failed/<name>.error.txt`` saying what, like any other refusal.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from montaged.config import HotFolderConfig
from montaged.intake import SubmitError, check_options
from montaged.media.source_file import shown
from montaged.options import job_profiles, problems
from montaged.sources import move_into

SUFFIX = ".montage.json"
MAX_BYTES = 64 << 10
"""Largest options file read (the socket's limit for a job's options)."""


def is_options_file(name: str) -> bool:
    """A dropped name that holds options, never media."""
    return name.lower().endswith(SUFFIX)


def options_file(media: Path) -> Path | None:
    """The options file beside ``media``: ``talk.mp4.montage.json``, else ``talk.montage.json``."""
    for candidate in (media.with_name(media.name + SUFFIX), media.with_name(media.stem + SUFFIX)):
        if candidate.is_file():
            return candidate
    return None


def read_options_file(path: Path) -> dict[str, Any]:
    """The options in ``path``; SubmitError naming the file and the problem."""
    try:
        with path.open("rb") as f:
            raw = f.read(MAX_BYTES + 1)
    except OSError as e:
        raise SubmitError(f"{shown(path)}: the options file cannot be read ({e.strerror});"
                          " let the montage user read it") from None
    if len(raw) > MAX_BYTES:
        raise SubmitError(f"{shown(path)}: the options file is over {MAX_BYTES} bytes; it holds a few"
                          " job options only")
    try:
        doc = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise SubmitError(f"{shown(path)}: the options file is not UTF-8 text") from None
    except json.JSONDecodeError as e:
        raise SubmitError(f"{shown(path)}: the options file is not JSON ({e.msg} at line {e.lineno}"
                          f" column {e.colno}); write one object like {{\"reel\": true}}") from None
    except RecursionError:
        raise SubmitError(f"{shown(path)}: the options file is nested too deeply") from None
    try:
        check_options(doc)
    except SubmitError as e:
        raise SubmitError(f"{shown(path)}: {e}") from None
    if found := problems(doc):
        raise SubmitError(f"{shown(path)}: " + "; ".join(found))
    return dict(doc)


def rule_for(cfg: HotFolderConfig, watched: Path) -> dict[str, Any]:
    """The options of ``cfg.folder_options`` for the watched folder ``watched`` (resolved)."""
    for folder, options in cfg.folder_options.items():
        if Path(folder).expanduser().resolve() == watched:
            return dict(options)
    return {}


def drop_options(cfg: HotFolderConfig, watched: Path, media: Path, profiles: set[str]) -> dict[str, Any]:
    """A dropped file's job options: its folder's rule, then its options file's keys over them.
    SubmitError when the options file is wrong (the file is refused); ``profiles``: the configured."""
    found = options_file(media)
    if found is None:
        return rule_for(cfg, watched)
    own = read_options_file(found)
    if unknown := [p for p in job_profiles(cfg.profile, own) if p not in profiles]:
        raise SubmitError(f"{shown(found)}: options.profiles: {', '.join(map(repr, unknown))} not configured;"
                          f" use some of: {', '.join(sorted(profiles))} (got {own['profiles']!r})")
    return {**rule_for(cfg, watched), **own}


def rule_problems(cfg: HotFolderConfig, watched: list[Path], profiles: set[str]) -> list[str]:
    """What is wrong with ``cfg.folder_options`` that the config alone cannot tell: a folder that
    is not watched, a profile that is not configured (the options themselves are checked on load)."""
    found = []
    for folder, options in cfg.folder_options.items():
        where = f"hotfolder.folder_options.{folder!r}"
        if Path(folder).expanduser().resolve() not in watched:
            found.append(f"{where}: not one of hotfolder.paths; give a watched folder")
        for name in job_profiles(cfg.profile, options):
            if name not in profiles:
                found.append(f"{where}.profiles: {name!r} is not configured; use one of:"
                             f" {', '.join(sorted(profiles))}")
    return found


def move_along(media: Path, folder: Path) -> Path | None:
    """Move the options file of ``media`` (its old path) into ``folder``, where the media went."""
    found = options_file(media)
    return move_into(found, folder) if found is not None else None
