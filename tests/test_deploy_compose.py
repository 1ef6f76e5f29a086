"""deploy/compose.yaml: valid against the Compose schema, and what it tells montaged is a valid
configuration with the drain, sandbox and sharing the daemon needs."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import ROOT
from system_tools import run_tool

from montaged.config import SECRET_KEYS, load

DEPLOY = ROOT / "deploy"
COMPOSE = DEPLOY / "compose.yaml"
PROMETHEUS = DEPLOY / "compose" / "prometheus.yml"
PROVISIONING = DEPLOY / "compose" / "grafana" / "provisioning"


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return doc


def _docker_compose(*args: str, file: Path = COMPOSE, **env: str) -> subprocess.CompletedProcess[str]:
    return run_tool("docker-compose", "-f", str(file), *args, env={"PATH": "/usr/bin:/bin", **env})


def test_compose_file_passes_the_compose_schema(tmp_path: Path) -> None:
    """docker-compose validates against the Compose specification's JSON schema it ships."""
    proc = _docker_compose("config", "-q")
    assert proc.returncode == 0, proc.stderr
    rendered = yaml.safe_load(_docker_compose("config", MONTAGE_REPLICAS="3").stdout)
    assert rendered["services"]["montaged"]["deploy"]["replicas"] == 3
    # The validator really validates: a misspelt key is refused.
    broken = tmp_path / "compose.yaml"
    broken.write_text(COMPOSE.read_text().replace("stop_grace_period:", "stop_grace_periods:"))
    proc = _docker_compose("config", "-q", file=broken)
    assert proc.returncode != 0 and "stop_grace_periods" in proc.stderr


def test_the_stack_has_every_part(compose: dict[str, Any]) -> None:
    assert set(compose["services"]) == {"montaged", "postgres", "redis", "prometheus", "grafana"}
    daemon = compose["services"]["montaged"]
    assert daemon["deploy"]["replicas"] == "${MONTAGE_REPLICAS:-2}"
    assert {"media-in:/in", "media-out:/out"} <= set(daemon["volumes"])
    assert "/data" in daemon["volumes"]  # per-replica state (anonymous volume)
    assert daemon["read_only"] is True and "/tmp" in daemon["tmpfs"] and "/run/montage" in daemon["tmpfs"]
    for dep in ("postgres", "redis"):
        assert daemon["depends_on"][dep]["condition"] == "service_healthy"
        assert compose["services"][dep]["healthcheck"]["test"]
    assert "9464" not in str(daemon.get("ports", ""))  # metrics stay on the compose network


def _image_env() -> dict[str, str]:
    """The MONTAGE_* defaults the Containerfile's runtime stage sets."""
    text = ROOT.joinpath("Containerfile").read_text()
    return {k: v.strip("'\"") for k, v in re.findall(r"(MONTAGE_[A-Z_]+)=(\S+)", text)}


def test_daemon_environment_is_a_valid_configuration(compose: dict[str, Any], tmp_path: Path) -> None:
    daemon = compose["services"]["montaged"]
    env = {**_image_env(), **{k: str(v) for k, v in daemon["environment"].items()}}
    files = {k for k in env if k.endswith("_FILE")}
    assert {k.removeprefix("MONTAGE_").removesuffix("_FILE").lower() for k in files} <= set(SECRET_KEYS)
    mounted = {f"/run/secrets/{s}" for s in daemon["secrets"]}
    assert {env[k] for k in files} <= mounted
    assert set(daemon["secrets"]) <= set(compose["secrets"])
    empty = tmp_path / "empty.toml"
    empty.write_text("")
    settings = load(empty, env={"HOME": str(tmp_path), **{k: v for k, v in env.items() if k not in files}})
    assert settings.store_url().startswith("postgresql://montage@postgres")
    assert settings.redis_intake.enabled and settings.hotfolder.after == "move"
    assert settings.hotfolder.force_polling  # a shared folder: inotify does not see other writers
    assert settings.metrics.host == "0.0.0.0"
    grace = settings.daemon.shutdown_grace_seconds
    stop = int(daemon["stop_grace_period"].removesuffix("s"))
    assert stop >= grace + 15, f"stop_grace_period {stop}s must outlast the {grace}s drain"


def test_prometheus_scrapes_the_replicas_with_the_rules(compose: dict[str, Any], tmp_path: Path) -> None:
    config = yaml.safe_load(PROMETHEUS.read_text())
    (job,) = config["scrape_configs"]
    assert job["job_name"] == "montage"  # what alerts.yml and the dashboard select
    assert job["dns_sd_configs"][0]["names"] == ["montaged"] and job["dns_sd_configs"][0]["port"] == 9464
    volumes = compose["services"]["prometheus"]["volumes"]
    mounts = dict(v.rsplit(":", 2)[:2] for v in volumes if v.startswith("./"))
    assert mounts["./prometheus/alerts.yml"] in config["rule_files"]
    # promtool resolves rule files itself: point it at the repository's copy.
    shutil.copy(DEPLOY / "prometheus" / "alerts.yml", tmp_path / "alerts.yml")
    config["rule_files"] = ["alerts.yml"]
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    proc = run_tool("promtool", "check", "config", "prometheus.yml", cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_grafana_provisions_the_dashboard(compose: dict[str, Any]) -> None:
    grafana = compose["services"]["grafana"]
    mounts = {v.split(":")[0]: v.split(":")[1] for v in grafana["volumes"] if v.startswith("./")}
    provider = yaml.safe_load((PROVISIONING / "dashboards" / "montage.yml").read_text())["providers"][0]
    assert mounts["./grafana"] == provider["options"]["path"]
    assert (DEPLOY / "grafana" / "montage.json").is_file()
    assert mounts["./compose/grafana/provisioning"] == "/etc/grafana/provisioning"
    (source,) = yaml.safe_load((PROVISIONING / "datasources" / "prometheus.yml").read_text())["datasources"]
    assert source["type"] == "prometheus" and source["isDefault"]
    assert source["url"] == "http://prometheus:9090"
    assert grafana["environment"]["GF_SECURITY_ADMIN_PASSWORD__FILE"] == "/run/secrets/grafana_admin_password"
