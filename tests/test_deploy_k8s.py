"""deploy/k8s: the kustomize base and the GPU overlay, rendered and validated offline.

Built-in kinds are checked by kubernetes-validate (the API's own OpenAPI schemas, strict); KEDA's
and the Prometheus operator's resources by the JSON Schemas in deploy/k8s/schemas. Then what
matters to Montage: the settings the pods get are a valid configuration, the drain fits in the
termination grace, probes, sandbox, volumes, and a KEDA query that works on the real store schema.
"""

from __future__ import annotations

import copy
import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import anyio
import jsonschema
import kubernetes_validate
import pytest
import yaml
from conftest import ROOT

from montaged.config import SECRET_KEYS, Settings, load
from montaged.model import JobSpec
from montaged.store import open_store

K8S = ROOT / "deploy" / "k8s"
BASE = K8S / "base"
GPU = K8S / "overlays" / "gpu"
KUBE_VERSION = "1.31.0"
CUSTOM = {
    "keda.sh/v1alpha1": K8S / "schemas" / "keda.sh_v1alpha1.json",
    "monitoring.coreos.com/v1": K8S / "schemas" / "monitoring.coreos.com_v1.json",
}
CLUSTER_SCOPED = {"Namespace"}


# ---- a renderer for the kustomize features deploy/k8s uses ----------------------------------------

def _merge(base: Any, patch: Any) -> Any:
    """Strategic merge as kustomize does it for these manifests: maps merge, lists of named maps
    merge by name (containers, env, volumes), other lists are replaced."""
    if isinstance(base, dict) and isinstance(patch, dict):
        out = dict(base)
        for k, v in patch.items():
            out[k] = _merge(base[k], v) if k in base else copy.deepcopy(v)
        return out
    named = isinstance(base, list) and isinstance(patch, list) and all(
        isinstance(x, dict) and "name" in x for x in [*base, *patch])
    if named and _is_merge_list(base):
        merged = [copy.deepcopy(x) for x in base]
        added = []
        for item in patch:
            match = next((i for i, x in enumerate(merged) if x["name"] == item["name"]), None)
            if match is None:
                added.append(copy.deepcopy(item))  # kustomize puts new entries first
            else:
                merged[match] = _merge(merged[match], item)
        return added + merged
    return copy.deepcopy(patch)


def _is_merge_list(items: list[dict[str, Any]]) -> bool:
    # Core kinds only: a CRD's lists (KEDA triggers) have no merge key and are replaced.
    return not any("type" in x and "metadata" in x for x in items)


def render(directory: Path) -> list[dict[str, Any]]:
    k = yaml.safe_load((directory / "kustomization.yaml").read_text())
    docs: list[dict[str, Any]] = []
    for entry in k.get("resources", []):
        path = directory / entry
        if path.is_dir():
            docs += render(path)
        else:
            docs += [d for d in yaml.safe_load_all(path.read_text()) if d]
    for gen in k.get("configMapGenerator", []):
        data = {Path(f).name: (directory / f).read_text() for f in gen["files"]}
        meta = {"name": gen["name"]}
        docs.append({"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": data})
    for p in k.get("patches", []):
        patch = yaml.safe_load((directory / p["path"]).read_text())
        target = next(d for d in docs if d["kind"] == patch["kind"]
                      and d["metadata"]["name"] == patch["metadata"]["name"])
        docs[docs.index(target)] = _merge(target, patch)
    for doc in docs:
        if "namespace" in k and doc["kind"] not in CLUSTER_SCOPED:
            doc["metadata"]["namespace"] = k["namespace"]
        for label in k.get("labels", []):
            doc["metadata"].setdefault("labels", {}).update(label["pairs"])
        for image in k.get("images", []):
            for c in _pod_spec(doc).get("containers", []) if doc["kind"] == "Deployment" else []:
                if c["image"].split(":")[0] == image["name"]:
                    c["image"] = f"{image['name']}:{image['newTag']}"
    return docs


def _kubectl_render(directory: Path) -> list[dict[str, Any]] | None:
    exe = shutil.which("kubectl")
    if exe is None:
        return None
    proc = subprocess.run([exe, "kustomize", str(directory)], capture_output=True, text=True, timeout=60,
                          check=False)
    assert proc.returncode == 0, proc.stderr
    return [d for d in yaml.safe_load_all(proc.stdout) if d]


def _pod_spec(doc: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = doc["spec"]["template"]["spec"]
    return spec


def _one(docs: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]
    assert len(found) == 1, f"{len(found)} {kind} {name or ''}"
    return found[0]


@pytest.fixture(scope="module", params=["base", "gpu"])
def rendered(request: pytest.FixtureRequest) -> tuple[str, list[dict[str, Any]]]:
    return request.param, render(BASE if request.param == "base" else GPU)


# ---- validation -------------------------------------------------------------------------------

def test_our_rendering_matches_kubectl_kustomize() -> None:
    """The renderer above is what CI without kubectl relies on: it must agree with kustomize."""
    for directory in (BASE, GPU):
        theirs = _kubectl_render(directory)
        if theirs is None:
            pytest.skip("kubectl not installed: the manifests are rendered by the test's own renderer")
        for doc in theirs:  # the generator's hash suffix, on the ConfigMap and where it is used
            text = re.sub(r"montage-config-[a-z0-9]{10}", "montage-config", json.dumps(doc))
            doc.clear()
            doc.update(json.loads(text))
        ours = render(directory)
        key = lambda d: (d["kind"], d["metadata"]["name"])  # noqa: E731
        assert sorted(map(key, theirs)) == sorted(map(key, ours))
        for doc in theirs:
            mine = next(d for d in ours if key(d) == key(doc))
            assert mine == doc, f"{directory.name}: {key(doc)} differs"


def test_every_resource_passes_its_schema(rendered: tuple[str, list[dict[str, Any]]]) -> None:
    _, docs = rendered
    for doc in docs:
        if doc["apiVersion"] in CUSTOM:
            schema = json.loads(CUSTOM[doc["apiVersion"]].read_text())
            jsonschema.validate(doc, {**schema, "$ref": f"#/$defs/{doc['kind']}"})
        else:
            kubernetes_validate.validate(doc, KUBE_VERSION, strict=True)
    so = _one(docs, "ScaledObject")
    behavior = so["spec"]["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]
    spec = {"scaleTargetRef": {"kind": "Deployment", "name": "x"}, "maxReplicas": 2, "behavior": behavior}
    hpa = {"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler", "metadata": {"name": "x"},
           "spec": spec}
    kubernetes_validate.validate(hpa, KUBE_VERSION, strict=True)


def test_the_schemas_refuse_a_misspelt_field() -> None:
    docs = render(BASE)
    so = copy.deepcopy(_one(docs, "ScaledObject"))
    so["spec"]["maxReplicas"] = 3  # HPA's name, not KEDA's
    schema = json.loads(CUSTOM["keda.sh/v1alpha1"].read_text())
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(so, {**schema, "$ref": "#/$defs/ScaledObject"})
    so = copy.deepcopy(_one(docs, "ScaledObject"))
    so["spec"]["triggers"][0]["metadata"]["lagCount"] = 5  # KEDA wants strings
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(so, {**schema, "$ref": "#/$defs/ScaledObject"})
    deploy = copy.deepcopy(_one(docs, "Deployment"))
    _pod_spec(deploy)["containers"][0]["readinesProbe"] = {"httpGet": {"path": "/healthz", "port": "metrics"}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deploy, KUBE_VERSION, strict=True)


# ---- what Montage needs from them -------------------------------------------------------------

def _container(docs: list[dict[str, Any]]) -> dict[str, Any]:
    (container,) = _pod_spec(_one(docs, "Deployment", "montaged"))["containers"]
    return container


def _settings(docs: list[dict[str, Any]], tmp_path: Path) -> Settings:
    """What montaged loads in the pod: the image's env, the Deployment's env, the ConfigMap."""
    cm = _one(docs, "ConfigMap")
    toml = tmp_path / "montage.toml"
    toml.write_text(cm["data"]["montage.toml"])
    image = dict(re.findall(r"(MONTAGE_[A-Z_]+)=(\S+)", (ROOT / "Containerfile").read_text()))
    env = {k: v.strip("'\"") for k, v in image.items()}
    env |= {e["name"]: e.get("value", "pod-0") for e in _container(docs).get("env", [])}
    return load(toml, env={"HOME": str(tmp_path), **env})


def _mounts(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """mountPath → the volume behind it."""
    volumes = {v["name"]: v for v in _pod_spec(_one(docs, "Deployment"))["volumes"]}
    return {m["mountPath"]: volumes[m["name"]] for m in _container(docs)["volumeMounts"]}


def _under(path: Path, mounts: dict[str, dict[str, Any]]) -> dict[str, Any]:
    best = max((m for m in mounts if path.is_relative_to(m)), key=len, default=None)
    assert best is not None, f"{path} is on the read-only root file system"
    return mounts[best]


def test_pods_get_a_valid_configuration_on_writable_volumes(
    rendered: tuple[str, list[dict[str, Any]]], tmp_path: Path
) -> None:
    variant, docs = rendered
    s = _settings(docs, tmp_path)
    mounts = _mounts(docs)
    assert "emptyDir" in _under(s.paths.state_dir, mounts)
    assert "emptyDir" in _under(s.control.socket().parent, mounts)
    assert "emptyDir" in _under(Path("/tmp"), mounts)
    assert "persistentVolumeClaim" in _under(s.paths.outputs(), mounts)
    for folder in s.hotfolder.paths:
        assert "persistentVolumeClaim" in _under(folder, mounts)
    assert s.hotfolder.after == "move" and s.hotfolder.force_polling  # a folder shared by pods
    assert s.metrics.host == "0.0.0.0"
    # Secrets: files under $CREDENTIALS_DIRECTORY from the Secret, named as the daemon reads them.
    env = {e["name"]: e.get("value") for e in _container(docs)["env"]}
    assert "secret" in mounts[env["CREDENTIALS_DIRECTORY"]]
    assert mounts[env["CREDENTIALS_DIRECTORY"]]["secret"]["secretName"] == "montage-secrets"
    if variant == "gpu":
        assert s.whisper.device == "cuda" and s.render.encoder == "h264_nvenc"
        limits = _container(docs)["resources"]["limits"]
        assert limits["nvidia.com/gpu"] == 1 and _container(docs)["image"].endswith(":gpu")
        assert "video" in env["NVIDIA_DRIVER_CAPABILITIES"]  # NVENC


def test_drain_probes_and_sandbox(rendered: tuple[str, list[dict[str, Any]]], tmp_path: Path) -> None:
    _, docs = rendered
    s = _settings(docs, tmp_path)
    pod = _pod_spec(_one(docs, "Deployment"))
    c = _container(docs)
    assert pod["terminationGracePeriodSeconds"] >= s.daemon.shutdown_grace_seconds + 30
    assert c["lifecycle"]["preStop"]["exec"]["command"] == ["montagectl", "pause"]
    assert c["readinessProbe"]["httpGet"]["path"] == "/healthz"
    # Liveness must not fail on a dependency outage: /healthz is 503 then, /metrics is not.
    assert c["livenessProbe"]["httpGet"]["path"] == "/metrics"
    assert c["startupProbe"]["periodSeconds"] * c["startupProbe"]["failureThreshold"] >= 120
    assert pod["securityContext"]["runAsNonRoot"] and pod["securityContext"]["runAsUser"] == 10001
    assert c["securityContext"] == {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                                    "privileged": False, "capabilities": {"drop": ["ALL"]}}
    assert {"cpu", "memory"} <= set(c["resources"]["requests"]) & set(c["resources"]["limits"])
    assert c["args"] == ["--config", "/etc/montage/montage.toml", "run"]
    assert c["ports"] == [{"name": "metrics", "containerPort": s.metrics.port, "protocol": "TCP"}]


def test_selectors_and_monitoring_line_up(rendered: tuple[str, list[dict[str, Any]]]) -> None:
    _, docs = rendered
    deploy = _one(docs, "Deployment")
    pod_labels = deploy["spec"]["template"]["metadata"]["labels"]
    assert deploy["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    for kind in ("PodDisruptionBudget",):
        assert _one(docs, kind)["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    assert _one(docs, "NetworkPolicy")["spec"]["podSelector"]["matchLabels"].items() <= pod_labels.items()
    service = _one(docs, "Service")
    assert service["spec"]["selector"].items() <= pod_labels.items()
    assert service["spec"]["publishNotReadyAddresses"] is True
    monitor = _one(docs, "ServiceMonitor")
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert monitor["spec"]["endpoints"][0]["port"] == service["spec"]["ports"][0]["name"] == "metrics"
    # The job label the alerts and the dashboard select (job="montage").
    assert service["metadata"]["labels"][monitor["spec"]["jobLabel"]] == "montage"
    ingress = _one(docs, "NetworkPolicy")["spec"]["ingress"]
    ingress_ports = [p["port"] for rule in ingress for p in rule["ports"]]
    assert ingress_ports == ["metrics"]
    for doc in docs:
        if doc["kind"] != "Namespace":
            assert doc["metadata"]["namespace"] == "montage", doc["metadata"]["name"]


def test_keda_scales_the_deployment_on_the_stream_and_the_store(
    rendered: tuple[str, list[dict[str, Any]]], tmp_path: Path
) -> None:
    variant, docs = rendered
    s = _settings(docs, tmp_path)
    so = _one(docs, "ScaledObject")["spec"]
    assert so["scaleTargetRef"]["name"] == _one(docs, "Deployment")["metadata"]["name"]
    assert 1 <= so["minReplicaCount"] < so["maxReplicaCount"] <= 16
    assert so["maxReplicaCount"] == (4 if variant == "gpu" else 8)
    triggers = {t["type"]: t for t in so["triggers"]}
    assert set(triggers) == {"redis-streams", "postgresql"}
    redis = triggers["redis-streams"]["metadata"]
    assert redis["stream"] == s.redis_intake.stream and redis["consumerGroup"] == s.redis_intake.group
    url = urlsplit(s.redis_intake.url or s.cache.redis_url or "")
    assert redis["address"] == f"{url.hostname}:{url.port}"
    assert int(redis["lagCount"]) >= 1
    pg = triggers["postgresql"]["metadata"]
    store = urlsplit(s.store_url())
    assert (pg["host"], int(pg["port"]), pg["userName"], pg["dbName"]) == (
        store.hostname, store.port, store.username, store.path.lstrip("/"))
    auths = {d["metadata"]["name"]: d for d in docs if d["kind"] == "TriggerAuthentication"}
    for t in triggers.values():
        (ref,) = auths[t["authenticationRef"]["name"]]["spec"]["secretTargetRef"]
        assert ref["name"] == "montage-secrets" and ref["key"] in SECRET_KEYS


def test_the_keda_store_query_counts_the_backlog(pg_url: str) -> None:
    """The postgresql trigger's query, run on a store migrated by montaged itself."""
    query = next(t for t in _one(render(BASE), "ScaledObject")["spec"]["triggers"]
                 if t["type"] == "postgresql")["metadata"]["query"]
    schema = pg_url.split("schema=")[1]

    async def main() -> None:
        store = open_store(pg_url)
        await store.migrate()
        try:
            for i in range(3):
                await store.submit(JobSpec(source=f"/in/talk{i}.mp4"))
        finally:
            await store.close()

    anyio.run(main)
    dsn = pg_url.split("?")[0]
    proc = subprocess.run(["psql", dsn, "-At", "-c", f"SET search_path TO {schema}; {query}"],
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "3"
