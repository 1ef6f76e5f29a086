"""The Grafana dashboard and Prometheus alert rules: valid PromQL, unit-tested alerts, and only
metrics (and labels) the daemon really exports."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml
from conftest import ROOT
from prometheus_client.metrics import MetricWrapperBase
from system_tools import run_tool

from montaged import metrics

DEPLOY = ROOT / "deploy"
ALERTS = DEPLOY / "prometheus" / "alerts.yml"
ALERTS_TEST = DEPLOY / "prometheus" / "alerts_test.yml"
DASHBOARD = DEPLOY / "grafana" / "montage.json"

# Series Prometheus makes itself, not the daemon.
BUILTIN = {"up"}
# Named by the dashboard and the rules, declared and updated in the daemon by the change that
# wires them (see docs/scaling.md, "Metrics the dashboard expects"). Remove a name once
# montaged/metrics.py declares it; the test below then holds it to its labels like the rest.
AWAITING: set[str] = set()
# Labels every scraped series carries, or that histograms add.
SCRAPE_LABELS = {"job", "instance", "le", "__name__"}

_SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum"), "gauge": ("",),
             "info": ("_info",), "summary": ("_count", "_sum", "")}


def _exported() -> dict[str, tuple[str, set[str]]]:
    """Series name → (family name, label names) for every metric in montaged/metrics.py."""
    out: dict[str, tuple[str, set[str]]] = {}
    for value in vars(metrics).values():
        if isinstance(value, MetricWrapperBase):
            family = value._name
            labels = set(value._labelnames)
            for suffix in _SUFFIXES[value._type]:
                out[family + suffix] = (family, labels)
    return out


def _alert_rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load(ALERTS.read_text())
    return [rule for group in doc["groups"] for rule in group["rules"]]


def _dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


def _dashboard_exprs() -> list[str]:
    return [t["expr"] for p in _dashboard()["panels"] for t in p.get("targets", [])]


def _concrete(expr: str) -> str:
    """A dashboard query with Grafana's variables filled in, as Prometheus would receive it."""
    return expr.replace("$__rate_interval", "5m").replace('"$instance"', '".*"')


_SELECTOR = re.compile(r"\b(montage_[a-z0-9_]+|up)\b(\{[^}]*\})?")
_MATCHER = re.compile(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)")


def _selectors(expr: str) -> list[tuple[str, set[str]]]:
    """(series name, label names matched) for each series selector in a PromQL expression."""
    return [(m.group(1), set(_MATCHER.findall(m.group(2) or ""))) for m in _SELECTOR.finditer(expr)]


def test_promtool_checks_the_rules() -> None:
    proc = run_tool("promtool", "check", "rules", str(ALERTS))
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_promtool_unit_tests_every_alert() -> None:
    proc = run_tool("promtool", "test", "rules", ALERTS_TEST.name, cwd=ALERTS_TEST.parent)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    tested = {case["alertname"] for test in yaml.safe_load(ALERTS_TEST.read_text())["tests"]
              for case in test.get("alert_rule_test", [])}
    assert tested == {r["alert"] for r in _alert_rules()}


def test_alerts_cover_what_operators_page_on() -> None:
    names = {r["alert"] for r in _alert_rules()}
    assert {"MontageDaemonDown", "MontageBudgetNearlyExhausted", "MontageBudgetExhausted",
            "MontageJobFailureRate", "MontageQueueTimeHigh", "MontageDependencyDegraded",
            "MontageRestartStorm", "MontageClipQualityDegraded"} <= names
    for rule in _alert_rules():
        assert rule["labels"]["severity"] in {"warning", "critical"}, rule["alert"]
        assert rule["annotations"]["summary"] and rule["annotations"]["description"], rule["alert"]


def test_dashboard_queries_are_valid_promql(tmp_path: Path) -> None:
    """Each dashboard query as a recording rule, so promtool parses it the way Prometheus will."""
    rules = [{"record": f"montage_dashboard:query{i}", "expr": _concrete(e)}
             for i, e in enumerate(_dashboard_exprs())]
    path = tmp_path / "dashboard_rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    proc = run_tool("promtool", "check", "rules", str(path))
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_every_metric_named_is_exported_with_those_labels() -> None:
    exported = _exported()
    families = {family for family, _ in exported.values()}
    exprs = [r["expr"] for r in _alert_rules()] + [_concrete(e) for e in _dashboard_exprs()]
    unknown: set[str] = set()
    for expr in exprs:
        for name, labels in _selectors(expr):
            if name in BUILTIN:
                continue
            if name not in exported:
                if not any(name.startswith(a) for a in AWAITING):
                    unknown.add(name)
                continue
            _, known = exported[name]
            assert labels <= known | SCRAPE_LABELS, f"{name}: labels {labels - known} not exported ({expr})"
    assert not unknown, f"not exported by montaged/metrics.py: {sorted(unknown)}"
    assert not AWAITING & families, f"now exported, drop from AWAITING: {sorted(AWAITING & families)}"


def test_dashboard_layout() -> None:
    dash = _dashboard()
    assert dash["uid"] == "montage" and dash["title"] == "Montage"
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
    cells: set[tuple[int, int]] = set()
    for p in dash["panels"]:
        g = p["gridPos"]
        assert g["x"] + g["w"] <= 24, p["title"]
        mine = {(g["y"] + dy, g["x"] + dx) for dy in range(g["h"]) for dx in range(g["w"])}
        assert not mine & cells, f"panel {p['title']!r} overlaps another"
        cells |= mine
        if p["type"] != "row":
            assert p["datasource"]["uid"] == "${datasource}" and p["targets"] and p["description"], p["title"]
    titles = " ".join(p["title"].lower() for p in dash["panels"])
    for topic in ("jobs by state", "stage time p50", "stage time p95", "processing ratio", "queue depth",
                  "queue time", "clips written", "budget", "cloud", "task restarts", "pool restarts",
                  "framing confidence"):
        assert topic in titles, topic
