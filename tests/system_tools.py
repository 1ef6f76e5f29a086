"""System tools the deployment tests run (installed by scripts/bootstrap.sh from Debian packages)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from conftest import unavailable

# command → the Debian package that provides it
PACKAGES = {"systemd-analyze": "systemd", "promtool": "prometheus", "docker-compose": "docker-compose"}


def require_tool(command: str) -> str:
    """The tool's path; skips the test locally and fails it in CI when the tool is missing."""
    path = shutil.which(command)
    if path is None:
        unavailable(f"{command} not installed (Debian package {PACKAGES[command]}, "
                    "from scripts/bootstrap.sh)")
    assert path is not None
    return path


def run_tool(command: str, *args: str, cwd: Path | None = None,
             env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Runs the tool to the end (2 minutes at most) and returns what it printed."""
    return subprocess.run([require_tool(command), *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=120, check=False)
