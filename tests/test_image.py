"""The container image, built and run for real with podman.

`scripts/build_image.sh` builds `Containerfile` (or keeps the image already built from the same
sources); then one container runs it the way the README says: non-root, read-only root file
system, /data, /in and /out as volumes, tmpfs for /tmp and the control socket, no network. Its
HEALTHCHECK must pass, a talk dropped into /in must come out as clips in /out, and `montagectl`
inside the container must reach the daemon. Locally a missing podman skips; with CI=true it fails.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import ROOT, make_talk_clip, unavailable
from daemon_harness import JFK

IMAGE = os.environ.get("MONTAGE_TEST_IMAGE", "localhost/montage:latest")
UID = 10001  # the Containerfile's USER
BUILD_TIMEOUT = 2400.0  # a cold build on a loaded 2-core machine, with every download
# What `podman run` needs on hosts like this one (cgroup v1 in hybrid mode, rlimits not settable).
CONTAINERS_CONF = '[containers]\ndefault_ulimits = []\n'
PODMAN_GLOBAL = ("--runtime", "runc", "--cgroup-manager", "cgroupfs")
# The daemon's settings for a quick run: the small English model, one worker per stage, and no
# diarizer (loading it costs over a minute on a busy 2-core machine; its own tests cover it).
QUICK = {
    "MONTAGE_DIARIZE__BACKEND": "none",
    "MONTAGE_WHISPER__MODEL": "tiny.en",
    "MONTAGE_WHISPER__WORKERS": "1",
    "MONTAGE_FRAME__WORKERS": "1",
    "MONTAGE_RENDER__PRESET": "ultrafast",
    "MONTAGE_HOTFOLDER__SETTLE_SECONDS": "1",
}

pytestmark = pytest.mark.timeout(BUILD_TIMEOUT + 900)


@dataclass(frozen=True)
class Podman:
    """podman with the flags and the containers.conf that let it run containers on this host."""

    env: dict[str, str]

    def __call__(self, *args: str, timeout: float = 120.0,
                 check: bool = True) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(["podman", *PODMAN_GLOBAL, *args], capture_output=True, text=True,
                              timeout=timeout, check=False, env=self.env)
        if check:
            assert proc.returncode == 0, f"podman {' '.join(args)}: {proc.stderr[-3000:]}"
        return proc


@dataclass(frozen=True)
class Container:
    name: str
    root: Path  # holds the data, in and out folders mounted at /data, /in, /out
    podman: Podman

    def running(self) -> bool:
        state = self.podman("inspect", "--format", "{{.State.Status}}", self.name).stdout.strip()
        assert state == "running", f"container {self.name} is {state}; see its log below"
        return True


def _wait(what: str, timeout: float, probe: Callable[[], object]) -> None:
    """Polls ``probe()`` until it is truthy; generous deadlines, the machine may be loaded."""
    deadline = time.monotonic() + timeout
    while not probe():
        assert time.monotonic() < deadline, f"{what}: not within {timeout:.0f} s"
        time.sleep(2.0)


@pytest.fixture(scope="module")
def podman(tmp_path_factory: pytest.TempPathFactory) -> Podman:
    if shutil.which("podman") is None:
        unavailable("podman not installed (Debian packages podman buildah runc debootstrap, "
                    "from scripts/bootstrap.sh)")
    conf = tmp_path_factory.mktemp("podman") / "containers.conf"
    conf.write_text(CONTAINERS_CONF)
    return Podman({**os.environ, "CONTAINERS_CONF": str(conf)})


@pytest.fixture(scope="module")
def image(podman: Podman) -> str:
    """The image built from this checkout (kept when its source digest is current)."""
    started = time.monotonic()
    proc = subprocess.run(["bash", str(ROOT / "scripts" / "build_image.sh")], cwd=ROOT,
                          env={**podman.env, "IMAGE": IMAGE}, capture_output=True, text=True,
                          timeout=BUILD_TIMEOUT, check=False)
    assert proc.returncode == 0, f"build_image.sh failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    print(f"image {IMAGE}: ready in {time.monotonic() - started:.0f} s; {proc.stderr.strip()}")
    return IMAGE


@pytest.fixture(scope="module")
def container(podman: Podman, image: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Container]:
    """One running container of the image, as deployed: non-root, read-only, volumes, no network."""
    root = tmp_path_factory.mktemp("container")
    for folder in ("data", "in", "out"):
        (root / folder).mkdir()
    name = f"montage-test-{uuid.uuid4().hex[:8]}"
    settings = [a for k, v in QUICK.items() for a in ("-e", f"{k}={v}")]
    podman(
        "run", "-d", "--name", name, "--network", "none", "--read-only",
        "--tmpfs", "/tmp:rw,nosuid,nodev",
        # U: owned by the container's user (the socket's folder must be the daemon's own)
        "--tmpfs", "/run/montage:rw,nosuid,nodev,U",
        "-v", f"{root / 'data'}:/data:U", "-v", f"{root / 'in'}:/in:U", "-v", f"{root / 'out'}:/out:U",
        *settings, image,
    )
    try:
        yield Container(name, root, podman)
    finally:
        logs = podman("logs", name, check=False)
        print(f"container log (tail):\n{logs.stdout[-3000:]}{logs.stderr[-3000:]}")
        podman("rm", "-f", "-t", "60", name, check=False, timeout=180)


def test_image_keeps_its_healthcheck(podman: Podman, image: str) -> None:
    info = json.loads(podman("image", "inspect", image).stdout)[0]
    assert "http://127.0.0.1:9464/healthz" in " ".join(info["Healthcheck"]["Test"])  # docker format kept it
    assert info["Config"]["User"] == f"{UID}:{UID}"


def test_container_is_unprivileged_and_read_only(container: Container) -> None:
    podman, name = container.podman, container.name
    info = json.loads(podman("inspect", name).stdout)[0]
    assert info["HostConfig"]["ReadonlyRootfs"] is True
    assert podman("exec", name, "id", "-u").stdout.strip() == str(UID)
    denied = podman("exec", name, "touch", "/opt/montage/probe", check=False)
    assert denied.returncode != 0 and "Read-only file system" in denied.stderr


def test_healthcheck_passes(container: Container) -> None:
    # The image's own HEALTHCHECK (GET /healthz from inside): healthy once the daemon is up.
    _wait("podman healthcheck run", 240, lambda: container.running() and container.podman(
        "healthcheck", "run", container.name, check=False).returncode == 0)


def test_a_talk_dropped_into_in_comes_out_as_clips(container: Container, tmp_path: Path) -> None:
    inbox, out = container.root / "in", container.root / "out"
    talk = make_talk_clip(tmp_path / "talk.mp4", seconds=12, size="640x360", speech=JFK)
    shutil.copy(talk, inbox / ".talk.mp4")  # hidden while copied: the hot folder ignores it
    (inbox / ".talk.mp4").rename(inbox / "talk.mp4")

    def jobs() -> list[dict[str, object]]:
        container.running()
        listed = container.podman("exec", container.name, "montagectl", "--json", "list", check=False)
        assert listed.returncode == 0, f"montagectl in the container: {listed.stderr[-2000:]}"
        found: list[dict[str, object]] = json.loads(listed.stdout)["jobs"]
        return found

    _wait("the hot folder's job to end", 900,
          lambda: any(j["state"] in ("done", "failed", "cancelled") for j in jobs()))
    (job,) = jobs()
    assert job["state"] == "done", job
    clips = sorted(p for p in out.rglob("*.mp4") if not p.name.startswith("."))
    assert clips, f"job done but no clips in {out}"
    for clip in clips:
        probe = subprocess.run(
            ["ffprobe", "-v", "error", "-show_entries", "format=duration:stream=codec_type",
             "-of", "json", str(clip)], capture_output=True, text=True, timeout=60, check=True)
        info = json.loads(probe.stdout)
        assert float(info["format"]["duration"]) > 1.0
        assert {s["codec_type"] for s in info["streams"]} == {"video", "audio"}
