"""The markers tests get from what they use (tests/markers.py), and the media locator's rules.

The functions below live under tests/, as real tests and helpers do, so ``markers`` follows them
the same way; two tests check their own markers, as ``-m`` selects them.
"""

from __future__ import annotations

import sys
import types
from collections.abc import Callable
from pathlib import Path

import daemon_harness
import markers
import media
import pytest
from conftest import REDIS_URL


def _speech() -> Path:
    return daemon_harness.JFK


def _through_a_helper() -> None:
    _speech()


def _by_a_local_import() -> bool:
    from daemon_harness import JFK

    return JFK.exists()


def _by_default(speech: Path = daemon_harness.JFK) -> Path:
    return speech


def _no_recording() -> bool:
    return Path("/tmp").exists() and bool(REDIS_URL)


def _refers(func: object, hit: Callable[[str, object], bool]) -> bool:
    assert isinstance(func, types.FunctionType)
    return markers._refers(func, frozenset(), hit, set())


@pytest.mark.parametrize("func", [_speech, _through_a_helper, _by_a_local_import, _by_default])
def test_a_recording_is_found_through_helpers_imports_and_defaults(func: object) -> None:
    assert _refers(func, markers._is_media)


def test_code_without_a_recording_is_not_media() -> None:
    assert not _refers(_no_recording, markers._is_media)
    assert _refers(_no_recording, markers._is_service)


def test_a_test_naming_the_shared_redis_is_marked_services(request: pytest.FixtureRequest) -> None:
    assert REDIS_URL.startswith("redis")
    assert request.node.get_closest_marker("services") is not None
    assert request.node.get_closest_marker("media") is None


def test_a_test_using_a_recording_is_marked_media(request: pytest.FixtureRequest) -> None:
    assert _speech().is_file()  # runs only where the recordings are (the marker skips it elsewhere)
    assert request.node.get_closest_marker("media") is not None


def test_a_slow_entry_its_file_lacks_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    module = sys.modules[__name__]
    monkeypatch.setitem(markers.SLOW, Path(__file__).name, frozenset({"test_renamed_long_ago"}))
    with pytest.raises(pytest.UsageError, match="test_renamed_long_ago"):
        markers._check_slow_names(module, set())


def test_missing_recordings_say_where_and_how(tmp_path: Path) -> None:
    reason = media.missing(root=tmp_path / "absent")
    assert reason is not None and str(tmp_path / "absent") in reason and media.ENV_VAR in reason
    (tmp_path / "audio").mkdir()
    assert media.missing(root=tmp_path) is None
    assert "audio/jfk.flac" in (media.missing("audio/jfk.flac", root=tmp_path) or "")


@pytest.mark.parametrize(("in_ci", "code"), [(False, 0), (True, 1)])
def test_a_script_without_recordings_says_so_in_one_line_and_exits(
    in_ci: bool,
    code: int,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setattr(media, "IN_CI", in_ci)
    with pytest.raises(SystemExit) as done:
        media.for_script("audio/jfk.flac", root=tmp_path / "absent")
    assert done.value.code == code
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and "skipped, real recordings not found" in out


def test_the_environment_variable_names_the_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(media.ENV_VAR, str(tmp_path))
    assert media.media_root() == tmp_path.resolve()
    monkeypatch.delenv(media.ENV_VAR)
    assert media.media_root() == media.ROOT.parent / "shared" / "media"
