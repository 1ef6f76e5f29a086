"""Configuration: file < environment, strict keys, secrets only from env/files, nulls, profiles."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from montaged.config import Secrets, load
from montaged.errors import ConfigError


def _toml(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "montage.toml"
    path.write_text(text)
    return path


def test_environment_beats_file(tmp_path: Path) -> None:
    cfg = _toml(tmp_path, '[whisper]\nmodel = "base"\nbeam_size = 5\n')
    s = load(cfg, env={"MONTAGE_WHISPER__MODEL": "tiny.en"})
    assert (s.whisper.model, s.whisper.beam_size) == ("tiny.en", 5)


def test_every_problem_is_reported_with_key_and_value(tmp_path: Path) -> None:
    cfg = _toml(tmp_path, '[whisper]\nbeam_size = 0\n[select]\nmin_seconds = "soon"\n[nope]\nx = 1\n')
    with pytest.raises(ConfigError) as err:
        load(cfg, env={})
    lines = str(err.value).splitlines()
    assert "whisper.beam_size: Input should be greater than or equal to 1 (got 0)" in lines
    assert any(line.startswith("select.min_seconds:") and "(got 'soon')" in line for line in lines)
    assert "nope: unknown key (got {'x': 1})" in lines


def test_unknown_environment_section_is_an_error() -> None:
    with pytest.raises(ConfigError, match="MONTAGE_WISPER__MODEL"):
        load(None, env={"MONTAGE_WISPER__MODEL": "base"})
    load(None, env={"MONTAGE_TEST_PG": "postgresql://x"})  # reserved for the test suite


def test_secrets_never_from_the_file(tmp_path: Path) -> None:
    cfg = _toml(tmp_path, '[store]\ndatabase_password = "hunter2"\n')
    with pytest.raises(ConfigError) as err:
        load(cfg, env={})
    assert "store.database_password: secrets are not read from the config file" in str(err.value)
    assert "hunter2" not in str(err.value)


def test_secret_sources(tmp_path: Path) -> None:
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "deepgram_api_key").write_text("from-credentials\n")
    key = Secrets(env={"CREDENTIALS_DIRECTORY": str(creds)}).get("deepgram_api_key")
    assert key is not None and key.get_secret_value() == "from-credentials"
    assert "from-credentials" not in repr(key)
    env_first = Secrets(env={"CREDENTIALS_DIRECTORY": str(creds), "MONTAGE_DEEPGRAM_API_KEY": "from-env"})
    assert env_first.get("deepgram_api_key").get_secret_value() == "from-env"  # type: ignore[union-attr]
    (creds / "deepgram_api_key").write_text("")  # the empty placeholder systemd-tmpfiles creates
    assert Secrets(env={"CREDENTIALS_DIRECTORY": str(creds)}).get("deepgram_api_key") is None


def test_null_spelled_for_toml_and_env(tmp_path: Path) -> None:
    cfg = _toml(tmp_path, '[whisper]\nlanguage = "auto"\n[profiles.vertical]\nfps = "source"\n')
    s = load(cfg, env={"MONTAGE_SELECT__TARGET_SECONDS": ""})
    assert s.whisper.language is None and s.profiles["vertical"].fps is None
    assert s.select.target_seconds is None


def test_a_profile_table_changes_only_its_keys(tmp_path: Path) -> None:
    cfg = _toml(tmp_path, "[profiles.square]\ncrf = 20\n[profiles.story]\naspect = \"9:16\"\nwidth = 720\n"
                "height = 1280\n")
    s = load(cfg, env={})
    assert set(s.profiles) == {"vertical", "square", "portrait", "landscape", "draft", "social", "master",
                               "story"}
    square = s.profiles["square"]
    assert (square.aspect, square.width, square.height, square.crf) == ("1:1", 1080, 1080, 20)
    assert s.profiles["story"].width == 720


def test_load_reads_the_given_environment_and_leaves_the_process_one_alone(monkeypatch):
    """``load(env=...)`` is a settings source of its own: the process environment is neither read
    nor rewritten (a thread reading os.environ meanwhile must never see it emptied)."""
    monkeypatch.setenv("MONTAGE_DAEMON__POLL_SECONDS", "7")
    before = dict(os.environ)
    s = load(None, env={"MONTAGE_DAEMON__POLL_SECONDS": "3"})
    assert s.daemon.poll_seconds == 3
    assert load(None, env={}).daemon.poll_seconds == 1.0
    monkeypatch.setenv("STATE_DIRECTORY", "/process/state")
    before = dict(os.environ)
    # the path defaults follow the given environment too (systemd's STATE_DIRECTORY, HOME)
    assert load(None, env={"STATE_DIRECTORY": "/given/state"}).paths.state_dir == Path("/given/state")
    assert load(None, env={"HOME": "/home/given"}).paths.state_dir == Path("/home/given/.local/state/montage")
    assert dict(os.environ) == before
