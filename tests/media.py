"""Where the real recordings for tests and benchmarks are: found in one place, missing by one rule.

The recordings (speech with transcripts and speaker turns, people on camera) live outside the
repository, in a folder described by its ``MANIFEST.md``: ``$MONTAGE_TEST_MEDIA`` when set, else
``../shared/media`` beside the checkout (where CI puts it). Tests reach it through
``conftest.need_media`` or the ``media_dir`` fixture, and tests that use it get the ``media``
marker (see ``conftest.pytest_collection_modifyitems``); benchmarks call ``for_script``.
When the folder is absent a test skips saying where it looked and how to provide it; with
``CI=true`` it fails instead, because CI must prove everything. A benchmark prints one line and
exits 0 (1 with ``CI=true``).

Why nothing is vendored into the repository: the media folder's owner asks that its files not be
copied into the project ("Do not copy them into the project repository"), whatever their licence.
Going by the MANIFEST's licence column, most could be redistributed (faster-whisper's and
pyannote's audio and face_recognition's clip: MIT; pocketsphinx's LibriVox readings: BSD-style
and public domain; video-retalking's and SadTalker's talking heads: Apache-2.0; auto-editor's
example: Unlicense), but the two VisualVoice videos (the two-speaker interview and the noisy
restaurant) are CC BY-NC 4.0, which forbids commercial redistribution, and tests lean on the
interview for two real faces and voices at once. So the folder stays the single source, named
by one setting; a checkout without it runs every test that needs no recording.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

ENV_VAR = "MONTAGE_TEST_MEDIA"
ROOT = Path(__file__).resolve().parents[1]
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
"""CI=true: whatever a test needs from outside the checkout must be there (fail, never skip)."""

HOW = (
    f"set {ENV_VAR} to the recordings folder or place it at ../shared/media beside the checkout "
    "(README.md, section Tests)"
)


def media_root() -> Path:
    """``$MONTAGE_TEST_MEDIA``, else ``../shared/media`` beside the checkout (it may not exist)."""
    given = os.environ.get(ENV_VAR, "").strip()
    return Path(given).expanduser().resolve() if given else ROOT.parent / "shared" / "media"


MEDIA = media_root()


def missing(relpath: str = "", *, root: Path = MEDIA) -> str | None:
    """Why ``root / relpath`` cannot be used, or None when it can."""
    if not root.is_dir():
        return f"real recordings not found at {root}: {HOW}"
    if relpath and not (root / relpath).exists():
        return f"{relpath} is missing from the recordings at {root} (its MANIFEST.md lists every file)"
    return None


def for_script(*relpaths: str, root: Path = MEDIA) -> Path:
    """The recordings folder for a benchmark or script; when it or a file is absent, say so in one
    line and exit: 0 (nothing to measure here, not a failure), or 1 with CI=true."""
    for rel in relpaths or ("",):
        reason = missing(rel, root=root)
        if reason is not None:
            print(f"{Path(sys.argv[0]).name}: skipped, {reason}", flush=True)
            raise SystemExit(1 if IN_CI else 0)
    return root
