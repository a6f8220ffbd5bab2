"""Render the Kubernetes objects of one experiment: a KubeRay ``RayJob`` and what it needs.

``render_experiment`` (behind ``python -m pipeline k8s render``) returns the complete
file: ServiceAccount, NetworkPolicies, spec ConfigMap and RayJob, named from the spec
name, plus the prerequisites it cannot hold (the storage Secret, a claim, the KubeRay
operator). It refuses storage that dies with the pods. ``render_rayjob`` below builds
only the ConfigMap and RayJob (pods use the template's ServiceAccount).

Pure Python (PyYAML + stdlib, no Ray import). The RayJob is built from the
template ``k8s/base/rayjob.yaml`` of this repository, so it keeps that file's
shape and security settings (token auth, non-root containers, emptyDir ``/tmp``
and ``/dev/shm``, service account, submitter pod template); only the name,
image, spec ConfigMap, deadlines and worker groups change.

Worker groups are sized from the trial resources so that ``max_concurrent``
trials fit at once:

* ``gpu_per_trial == 0``: only the ``cpu`` group, with
  ``ceil(max_concurrent * cpu_per_trial / cpus_per_worker)`` replicas of
  ``cpus_per_worker`` CPUs (more if trials don't pack evenly, e.g. 3-CPU trials on
  4-CPU workers: one trial per worker).
* ``gpu_per_trial > 0``: only the ``gpu`` group, with
  ``ceil(max_concurrent * gpu_per_trial / gpus_per_worker)`` replicas (same
  packing rule) of ``gpus_per_worker`` GPUs (``nvidia.com/gpu`` requests ==
  limits) and enough CPUs for the trials each worker hosts.

The size is fixed (``replicas == minReplicas == maxReplicas``), so the in-tree
autoscaler is switched off and the head pod mounts no API token.

Example (run as a doctest by tests/test_k8s_manifests.py)::

    >>> from cluster.k8s_render import render_rayjob, dump_yaml
    >>> cm, job = render_rayjob(
    ...     name="digits-tpe",
    ...     spec_text="name: digits-tpe\\nsearch:\\n  max_concurrent: 4\\n",
    ...     cpu_per_trial=1, gpu_per_trial=0, max_concurrent=4,
    ... )
    >>> cm["kind"], cm["metadata"]["name"], job["kind"], job["metadata"]["name"]
    ('ConfigMap', 'digits-tpe-spec', 'RayJob', 'digits-tpe')
    >>> [(g["groupName"], g["replicas"]) for g in job["spec"]["rayClusterSpec"]["workerGroupSpecs"]]
    [('cpu', 1)]
    >>> _, gjob = render_rayjob(name="digits-gpu", spec_text="name: x\\n",
    ...                         cpu_per_trial=2, gpu_per_trial=0.5, max_concurrent=4)
    >>> g = gjob["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]
    >>> g["groupName"], g["replicas"], g["template"]["spec"]["containers"][0]["resources"]["limits"]
    ('gpu', 2, {'cpu': '4', 'memory': '32Gi', 'nvidia.com/gpu': '1'})
    >>> text = dump_yaml([cm, job])
    >>> text.count("\\n---\\n")
    1

Write the result with ``pathlib.Path("job.yaml").write_text(dump_yaml(objs))`` and
apply it with ``kubectl apply -f job.yaml``.
"""

from __future__ import annotations

import copy
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import yaml

__all__ = ["render_rayjob", "render_experiment", "Rendered", "Prerequisite", "RenderError", "dump_yaml",
           "k8s_name", "DEFAULT_IMAGE", "TEMPLATE_PATH"]

DEFAULT_IMAGE = "ghcr.io/example/keras-ray-tune:0.1.0"
# The template lives in the source tree (k8s/ is not part of the installed
# package): use a checkout / editable install, or pass template_path.
TEMPLATE_PATH = Path(__file__).resolve().parents[1] / "k8s" / "base" / "rayjob.yaml"

SPEC_KEY = "spec.yaml"
SPEC_VOLUME = "spec"
GPU_RESOURCE = "nvidia.com/gpu"

# KubeRay validates RayJob names as DNS-1035 labels (a DNS-1123 label that starts
# with a letter) of at most 47 characters (it appends "-xxxxx" for the cluster and
# cluster names are capped at 53).
MAX_RAYJOB_NAME = 47
_DNS1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_DNS1123 = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")

# Memory sizing per worker CPU, and the share of it given to /dev/shm (Ray's object
# store defaults to 30% of the memory it sees).
_MEM_GI_PER_CPU = 4
_MEM_GI_PER_CPU_GPU = 8
_SHM_FRACTION = 0.3
_EPS = 1e-9


def _check_label(field: str, value: object, *, max_len: int, dns1035: bool) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{field}: must be a string, got {type(value).__name__}")
    kind = "DNS-1035" if dns1035 else "DNS-1123"
    pattern = _DNS1035 if dns1035 else _DNS1123
    if not value or len(value) > max_len or not pattern.match(value):
        raise ValueError(
            f"{field}: {value!r} is not a valid {kind} label (lowercase letters, digits "
            f"and '-', {'starting with a letter, ' if dns1035 else ''}ending with a "
            f"letter or digit, at most {max_len} characters)"
        )
    return value


def _check_number(field: str, value: object, *, minimum: float, strict: bool = False,
                  integer: bool = False) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{field}: must be a number, got {value!r}")
    if integer and not isinstance(value, int):
        raise ValueError(f"{field}: must be an integer, got {value!r}")
    if not math.isfinite(value):
        raise ValueError(f"{field}: must be finite, got {value!r}")
    if (strict and value <= minimum) or (not strict and value < minimum):
        op = ">" if strict else ">="
        raise ValueError(f"{field}: must be {op} {minimum}, got {value!r}")


def _per_worker(amount_per_worker: float, per_trial: float) -> int:
    """How many trials needing ``per_trial`` fit in ``amount_per_worker``."""
    return int(math.floor(amount_per_worker / per_trial + _EPS))


def _gi(n: float) -> str:
    return f"{max(1, int(math.ceil(n - _EPS)))}Gi"


def _containers(pod_spec: dict) -> list[dict]:
    return list(pod_spec.get("containers") or []) + list(pod_spec.get("initContainers") or [])


def _pod_specs(job: dict) -> list[dict]:
    spec = job["spec"]
    rc = spec["rayClusterSpec"]
    pods = [rc["headGroupSpec"]["template"]["spec"]]
    pods += [g["template"]["spec"] for g in rc.get("workerGroupSpecs") or []]
    if spec.get("submitterPodTemplate"):
        pods.append(spec["submitterPodTemplate"]["spec"])
    return pods


def _size_group(group: dict, *, replicas: int, cpus: int, gpus: int, mem_gi: int) -> None:
    group["replicas"] = replicas
    group["minReplicas"] = replicas
    group["maxReplicas"] = replicas
    params = {str(k): str(v) for k, v in (group.get("rayStartParams") or {}).items()}
    params["num-cpus"] = str(cpus)
    if gpus:
        params["num-gpus"] = str(gpus)
    group["rayStartParams"] = params
    pod = group["template"]["spec"]
    container = pod["containers"][0]
    amounts: dict[str, str] = {"cpu": str(cpus), "memory": f"{mem_gi}Gi"}
    if gpus:
        amounts[GPU_RESOURCE] = str(gpus)
    # requests == limits (Guaranteed QoS; mandatory for nvidia.com/gpu).
    container["resources"] = {"requests": dict(amounts), "limits": dict(amounts)}
    for vol in pod.get("volumes") or []:
        empty_dir = vol.get("emptyDir")
        if empty_dir is not None and empty_dir.get("medium") == "Memory":
            empty_dir["sizeLimit"] = _gi(mem_gi * _SHM_FRACTION)


def render_rayjob(
    *,
    name: str,
    spec_text: str,
    cpu_per_trial: float,
    gpu_per_trial: float,
    max_concurrent: int,
    image: str = DEFAULT_IMAGE,
    namespace: str | None = None,
    cpus_per_worker: int = 4,
    gpus_per_worker: int = 1,
    active_deadline_s: int = 86400,
    backoff_limit: int = 2,
    template_path: str | Path | None = None,
) -> list[dict]:
    """Return ``[ConfigMap, RayJob]`` manifests (plain dicts) for one experiment.

    ``spec_text`` is the experiment spec (YAML text), stored in ConfigMap
    ``<name>-spec`` under ``spec.yaml`` and mounted at ``/config`` in every Ray pod.
    Raises ``ValueError`` naming the offending argument when an input is invalid
    (for example ``name`` not being a DNS label, or a trial that needs more CPUs
    or GPUs than one worker has). See the module docstring for the sizing rules.
    For GPU trials pass the CUDA image, e.g. ``image=DEFAULT_IMAGE + "-gpu"``
    (built as described in k8s/README.md); the default image is CPU-only.
    """
    _check_label("name", name, max_len=MAX_RAYJOB_NAME, dns1035=True)
    if namespace is not None:
        _check_label("namespace", namespace, max_len=63, dns1035=False)
    if not isinstance(image, str) or not image.strip() or any(c.isspace() for c in image):
        raise ValueError(f"image: must be a non-empty image reference, got {image!r}")
    if not isinstance(spec_text, str) or not spec_text.strip():
        raise ValueError("spec_text: must be a non-empty YAML document")
    try:
        parsed = yaml.safe_load(spec_text)
    except yaml.YAMLError as exc:
        raise ValueError(f"spec_text: not valid YAML ({exc})") from exc
    if not isinstance(parsed, dict):
        raise ValueError("spec_text: must be a YAML mapping (the experiment spec)")
    _check_number("cpu_per_trial", cpu_per_trial, minimum=0)
    _check_number("gpu_per_trial", gpu_per_trial, minimum=0)
    _check_number("max_concurrent", max_concurrent, minimum=1, integer=True)
    _check_number("cpus_per_worker", cpus_per_worker, minimum=1, integer=True)
    _check_number("gpus_per_worker", gpus_per_worker, minimum=1, integer=True)
    _check_number("active_deadline_s", active_deadline_s, minimum=1, integer=True)
    _check_number("backoff_limit", backoff_limit, minimum=0, integer=True)

    path = Path(template_path) if template_path is not None else TEMPLATE_PATH
    if not path.is_file():
        raise FileNotFoundError(
            f"RayJob template {path} not found; render from a source checkout or pass template_path"
        )
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
    templates = [d for d in docs if d.get("kind") == "RayJob"]
    if len(templates) != 1:
        raise ValueError(f"template_path: expected exactly one RayJob in {path}, found {len(templates)}")
    job: dict[str, Any] = copy.deepcopy(templates[0])

    groups = {g["groupName"]: g for g in job["spec"]["rayClusterSpec"]["workerGroupSpecs"]}
    if gpu_per_trial > 0:
        if gpu_per_trial > gpus_per_worker + _EPS:
            raise ValueError(
                f"gpu_per_trial: {gpu_per_trial} GPUs per trial do not fit on a worker "
                f"with gpus_per_worker={gpus_per_worker}"
            )
        per_worker = min(_per_worker(gpus_per_worker, gpu_per_trial), max_concurrent)
        replicas = max(
            math.ceil(max_concurrent * gpu_per_trial / gpus_per_worker - _EPS),
            math.ceil(max_concurrent / per_worker),
        )
        cpus = max(1, math.ceil(per_worker * cpu_per_trial - _EPS))
        group = groups["gpu"]
        _size_group(group, replicas=replicas, cpus=cpus, gpus=gpus_per_worker,
                    mem_gi=cpus * _MEM_GI_PER_CPU_GPU)
    else:
        if cpu_per_trial <= 0:
            raise ValueError("cpu_per_trial: must be > 0 when gpu_per_trial is 0")
        if cpu_per_trial > cpus_per_worker + _EPS:
            raise ValueError(
                f"cpu_per_trial: {cpu_per_trial} CPUs per trial do not fit on a worker "
                f"with cpus_per_worker={cpus_per_worker}"
            )
        per_worker = _per_worker(cpus_per_worker, cpu_per_trial)
        replicas = max(
            math.ceil(max_concurrent * cpu_per_trial / cpus_per_worker - _EPS),
            math.ceil(max_concurrent / per_worker),
        )
        group = groups["cpu"]
        _size_group(group, replicas=replicas, cpus=cpus_per_worker, gpus=0,
                    mem_gi=cpus_per_worker * _MEM_GI_PER_CPU)
    rc = job["spec"]["rayClusterSpec"]
    rc["workerGroupSpecs"] = [group]

    # Fixed size: no autoscaler sidecar, so the head needs no API token either.
    rc["enableInTreeAutoscaling"] = False
    rc.pop("autoscalerOptions", None)
    rc["headGroupSpec"]["template"]["spec"]["automountServiceAccountToken"] = False
    rc["headGroupSpec"]["rayStartParams"] = {
        str(k): str(v) for k, v in (rc["headGroupSpec"].get("rayStartParams") or {}).items()
    }

    cm_name = f"{name}-spec"
    for pod in _pod_specs(job):
        for container in _containers(pod):
            container["image"] = image
        for vol in pod.get("volumes") or []:
            if vol.get("name") == SPEC_VOLUME and "configMap" in vol:
                vol["configMap"]["name"] = cm_name

    template_meta = job.get("metadata") or {}
    meta: dict[str, Any] = {"name": name}
    if namespace is not None:
        meta["namespace"] = namespace
    meta.update({k: v for k, v in template_meta.items() if k not in ("name", "namespace")})
    meta["labels"] = {**(template_meta.get("labels") or {}), "app.kubernetes.io/instance": name}
    job["metadata"] = meta
    job["spec"]["activeDeadlineSeconds"] = int(active_deadline_s)
    job["spec"]["backoffLimit"] = int(backoff_limit)

    cm_meta: dict[str, Any] = {"name": cm_name}
    if namespace is not None:
        cm_meta["namespace"] = namespace
    cm_meta["labels"] = {"app.kubernetes.io/name": "keras-ray-tune", "app.kubernetes.io/instance": name}
    configmap: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": cm_meta,
        "data": {SPEC_KEY: spec_text if spec_text.endswith("\n") else spec_text + "\n"},
    }
    return [configmap, job]


class _Dumper(yaml.SafeDumper):
    """SafeDumper that writes multi-line strings as literal blocks."""


def _str_representer(dumper: yaml.SafeDumper, data: str) -> yaml.Node:
    if "\n" in data:
        return dumper.represent_scalar("tag:yaml.org,2002:str", data, style="|")
    return dumper.represent_scalar("tag:yaml.org,2002:str", data)


_Dumper.add_representer(str, _str_representer)


def dump_yaml(objs: Iterable[dict]) -> str:
    """Serialise manifests as one multi-document YAML string (``---`` separated)."""
    return yaml.dump_all(
        list(objs), Dumper=_Dumper, sort_keys=False, default_flow_style=False,
        explicit_start=False, width=1000,
    )


# --------------------------------------------------------------------------- a complete, appliable file

BASE_DIR = TEMPLATE_PATH.parent
APP_LABEL = "app.kubernetes.io/name"
INSTANCE_LABEL = "app.kubernetes.io/instance"
APP = "keras-ray-tune"
# Where a PersistentVolumeClaim holding a relative storage folder is mounted; the
# pipeline resolves relative folders against PIPELINE_STORAGE_BASE.
PVC_MOUNT = "/mnt/storage"
PVC_VOLUME = "storage"
GCS_KEY_DIR = "/var/run/secrets/storage"
_DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_LOOPBACK = ("localhost", "127.", "[::1]", "0.0.0.0")


class RenderError(ValueError):
    """Bad input for ``k8s render``; the message starts with the field it is about."""


@dataclass(frozen=True)
class Prerequisite:
    """An object the rendered file refers to but cannot hold (it carries credentials or data)."""

    kind: str
    name: str
    why: str
    command: str


@dataclass
class Rendered:
    name: str
    namespace: str | None
    objects: list[dict]
    prerequisites: list[Prerequisite] = field(default_factory=list)

    def text(self) -> str:
        """The file: a comment naming the prerequisites, then the objects."""
        head = [f"# keras-ray-tune experiment {self.name}: rendered by `python -m pipeline k8s render`."]
        if self.prerequisites:
            head.append("# Before applying, these must exist (this file cannot create them):")
            head += [f"#   {p.kind} {p.name} ({p.why}): {p.command}" for p in self.prerequisites]
        return "\n".join(head) + "\n" + dump_yaml(self.objects)


def k8s_name(spec_name: str) -> str:
    """The object name derived from a spec name: lowercase, '_' and '.' become '-'."""
    return spec_name.lower().replace("_", "-").replace(".", "-")


def _kubectl(namespace: str | None) -> str:
    return f"kubectl -n {namespace}" if namespace else "kubectl"


def _storage_kind(path: str) -> str:
    if "://" not in path or path.startswith("file://"):
        return "local"
    return {"gcs": "gs"}.get(path.split("://", 1)[0], path.split("://", 1)[0])


def _storage_hint(namespace: str | None) -> str:
    return ("use storage the pods do not own: --storage s3://BUCKET/PREFIX (credentials from a "
            "Secret this command names), --storage gs://BUCKET/PREFIX, or keep the folder on a "
            "PersistentVolumeClaim every Ray pod mounts: --pvc CLAIM (ReadWriteMany, "
            f"created beforehand in the namespace{' ' + namespace if namespace else ''})")


def _override_storage(raw: dict, storage: str) -> dict:
    raw = dict(raw)
    current = raw.get("storage")
    raw["storage"] = {**current, "path": storage} if isinstance(current, dict) else {"path": storage}
    return raw


def _pod_templates(job: dict) -> list[dict]:
    spec = job["spec"]
    rc = spec["rayClusterSpec"]
    out = [rc["headGroupSpec"]["template"]] + [g["template"] for g in rc["workerGroupSpecs"]]
    return out + ([spec["submitterPodTemplate"]] if spec.get("submitterPodTemplate") else [])


def _labels(name: str) -> dict:
    return {APP_LABEL: APP, INSTANCE_LABEL: name}


def _meta(name: str, namespace: str | None, labels: dict) -> dict:
    meta: dict[str, Any] = {"name": name}
    if namespace is not None:
        meta["namespace"] = namespace
    meta["labels"] = labels
    return meta


def _base_doc(filename: str, kind: str, name: str) -> dict:
    path = BASE_DIR / filename
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found; render from a source checkout")
    for doc in yaml.safe_load_all(path.read_text()):
        if doc and doc.get("kind") == kind and doc["metadata"]["name"] == name:
            return copy.deepcopy(doc)
    raise ValueError(f"{path}: no {kind} {name}")


def _network_policies(name: str, namespace: str | None) -> list[dict]:
    """The base's two policies, narrowed to this experiment's pods (label instance=name)."""
    out = []
    for suffix in ("ray-internal", "head-ingress"):
        np = _base_doc("networkpolicy.yaml", "NetworkPolicy", f"{APP}-{suffix}")
        np["metadata"] = _meta(f"{name}-{suffix}", namespace, _labels(name))
        np["spec"]["podSelector"]["matchLabels"][INSTANCE_LABEL] = name
        for rule in np["spec"].get("ingress") or []:
            for peer in rule.get("from") or []:
                sel = (peer.get("podSelector") or {}).get("matchLabels") or {}
                if sel.get(APP_LABEL) == APP and "namespaceSelector" not in peer:
                    sel[INSTANCE_LABEL] = name  # Ray pods of this experiment only
        out.append(np)
    return out


def _operator_prerequisites(policies: list[dict]) -> list[Prerequisite]:
    """The pods outside the file a policy lets in: the KubeRay operator (it follows the job)."""
    out = []
    for np in policies:
        for rule in np["spec"].get("ingress") or []:
            for peer in rule.get("from") or []:
                ns = ((peer.get("namespaceSelector") or {}).get("matchLabels") or {}).get(
                    "kubernetes.io/metadata.name")
                if ns is None:
                    continue
                labels = (peer.get("podSelector") or {}).get("matchLabels") or {}
                selector = ",".join(f"{k}={v}" for k, v in labels.items())
                out.append(Prerequisite(
                    "KubeRay operator", ns,
                    f"KubeRay >= 1.5, in namespace {ns}; NetworkPolicy {np['metadata']['name']} lets "
                    "its pods reach the head's dashboard port",
                    f"kubectl get pods -n {ns} -l {selector}"))
    return out


def render_experiment(
    spec_path: str | Path,
    *,
    name: str | None = None,
    namespace: str | None = None,
    image: str | None = None,
    storage: str | None = None,
    pvc: str | None = None,
    secret: str | None = None,
    cpus_per_worker: int = 4,
    gpus_per_worker: int = 1,
) -> Rendered:
    """Everything one experiment needs in a namespace, as one appliable file.

    ``ServiceAccount``, two ``NetworkPolicy`` objects (the base's, narrowed to this
    experiment's pods), the spec ``ConfigMap`` and the ``RayJob``, all named from the
    spec name (``<name>``, ``<name>-ray-internal``, ``<name>-head-ingress``,
    ``<name>-spec``) and in ``namespace`` when given. What it cannot hold (a Secret
    with storage credentials, a PersistentVolumeClaim with data) is returned as
    ``prerequisites`` with the command that creates or checks it.

    ``storage`` replaces the spec's ``storage.path``. Storage must outlive the pods:
    ``s3://`` / ``gs://`` (credentials from Secret ``secret``, default
    ``<name>-storage``) or a local folder on PersistentVolumeClaim ``pvc``; anything
    else raises :class:`RenderError` (``storage: ...``), as do names that are not
    Kubernetes object names and trials a worker cannot hold. Raises
    ``pipeline.spec.SpecError`` for an invalid spec.
    """
    from pipeline.spec import load_spec, parse_spec

    spec_path = Path(spec_path)
    spec = load_spec(spec_path)
    spec_text = spec_path.read_text()
    if storage is not None:
        raw = _override_storage(yaml.safe_load(spec_text), storage)
        spec = parse_spec(raw, source=f"{spec_path} with --storage {storage}")
        # the file's name only, so that the ConfigMap does not depend on where render ran
        spec_text = (f"# {spec_path.name} with storage.path replaced by `k8s render --storage`\n"
                     + yaml.safe_dump(raw, sort_keys=False, default_flow_style=False))

    if name is None:
        name = k8s_name(spec.name)
        if not (_DNS1035.match(name) and len(name) <= MAX_RAYJOB_NAME):
            raise RenderError(
                f"name: the spec name {spec.name!r} gives {name!r}, which is not a valid Kubernetes "
                f"RayJob name (a letter first, then lowercase letters, digits and '-', at most "
                f"{MAX_RAYJOB_NAME} characters); pass --name")
    try:
        _check_label("name", name, max_len=MAX_RAYJOB_NAME, dns1035=True)
        if namespace is not None:
            _check_label("namespace", namespace, max_len=63, dns1035=False)
    except ValueError as exc:
        raise RenderError(str(exc)) from None
    for field_name, value in (("--pvc", pvc), ("--secret", secret)):
        if value is not None and (len(value) > 253 or not _DNS1123_SUBDOMAIN.match(value)):
            raise RenderError(f"{field_name}: {value!r} is not a valid Kubernetes object name "
                              "(lowercase letters, digits, '-' and '.', at most 253 characters)")

    for flag, count in (("--cpus-per-worker", cpus_per_worker), ("--gpus-per-worker", gpus_per_worker)):
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            raise RenderError(f"{flag}: must be a whole number >= 1, got {count!r}")
    cpu, gpu = spec.resources.cpu, spec.resources.gpu
    if gpu > gpus_per_worker + _EPS:
        raise RenderError(
            f"resources.gpu: {gpu:g} GPUs per trial do not fit a rendered GPU worker of "
            f"{gpus_per_worker} GPU(s); lower resources.gpu or pass --gpus-per-worker {math.ceil(gpu)}")
    if gpu == 0 and cpu > cpus_per_worker + _EPS:
        raise RenderError(
            f"resources.cpu: {cpu:g} CPUs per trial do not fit a rendered worker of {cpus_per_worker} "
            f"CPUs; lower resources.cpu or pass --cpus-per-worker {math.ceil(cpu)}")
    if image is None:
        image = DEFAULT_IMAGE + ("-gpu" if gpu > 0 else "")

    path, kubectl = spec.storage.path, _kubectl(namespace)
    kind = _storage_kind(path)
    prerequisites: list[Prerequisite] = []
    env: list[dict] = []
    env_from: list[dict] = []
    volumes: list[dict] = []
    mounts: list[dict] = []
    if kind == "local":
        if pvc is None:
            raise RenderError(
                f"storage: {path!r} is a folder in the pods' own filesystem: KubeRay deletes the "
                "pods, with every result and checkpoint, ttlSecondsAfterFinished (600 s) after the "
                f"job ends, and a retried attempt cannot resume from it; {_storage_hint(namespace)}")
        local = path.removeprefix("file://")
        mount = local if local.startswith("/") else PVC_MOUNT
        if not local.startswith("/"):
            env.append({"name": "PIPELINE_STORAGE_BASE", "value": PVC_MOUNT})
        volumes.append({"name": PVC_VOLUME, "persistentVolumeClaim": {"claimName": pvc}})
        mounts.append({"name": PVC_VOLUME, "mountPath": mount})
        prerequisites.append(Prerequisite(
            "PersistentVolumeClaim", pvc,
            "holds the results; ReadWriteMany, so that the head and every worker mount it",
            f"{kubectl} get pvc {pvc}"))
    else:
        if pvc is not None:
            raise RenderError(f"--pvc: storage is {path!r}, not a local folder; drop --pvc "
                              "(or pass --storage with a relative folder to keep on the claim)")
        if kind not in ("s3", "gs"):
            raise RenderError(f"storage: {path!r}: k8s render supports s3:// and gs:// storage, or a "
                              f"local folder on a claim; {_storage_hint(namespace)}")
        endpoint = spec.storage.endpoint_override or ""
        host = endpoint.split("://", 1)[-1]
        if endpoint and host.startswith(_LOOPBACK):
            raise RenderError(
                f"storage.endpoint_override: {endpoint!r} is the pod itself inside the cluster; use an "
                "address the pods reach (for MinIO in the cluster: http://minio.<namespace>:9000)")
        secret = secret or f"{name}-storage"
        if kind == "s3":
            env_from.append({"secretRef": {"name": secret}})
            prerequisites.append(Prerequisite(
                "Secret", secret, "S3 credentials, as environment variables of the Ray pods",
                f'{kubectl} create secret generic {secret} --from-literal=AWS_ACCESS_KEY_ID="$AWS_ACCESS_KEY_ID" '
                f'--from-literal=AWS_SECRET_ACCESS_KEY="$AWS_SECRET_ACCESS_KEY"'))
        else:
            volumes.append({"name": "storage-credentials", "secret": {"secretName": secret}})
            mounts.append({"name": "storage-credentials", "mountPath": GCS_KEY_DIR, "readOnly": True})
            env.append({"name": "GOOGLE_APPLICATION_CREDENTIALS", "value": f"{GCS_KEY_DIR}/key.json"})
            prerequisites.append(Prerequisite(
                "Secret", secret, "Google Cloud service account key, mounted into the Ray pods",
                f'{kubectl} create secret generic {secret} '
                f'--from-file=key.json="$GOOGLE_APPLICATION_CREDENTIALS"'))

    try:
        configmap, job = render_rayjob(
            name=name, spec_text=spec_text, cpu_per_trial=cpu, gpu_per_trial=gpu,
            # unset, the rendered cluster holds 2 trials at a time (its size is fixed); a trial
            # of N workers (resources.workers) is sized as N one-worker trials of cpu/gpu each
            max_concurrent=(spec.search.max_concurrent or min(2, spec.num_trials)) * spec.resources.workers,
            image=image, namespace=namespace, cpus_per_worker=cpus_per_worker,
            gpus_per_worker=gpus_per_worker)
    except ValueError as exc:
        raise RenderError(str(exc)) from None

    configmap["metadata"]["labels"] = _labels(name)
    job["metadata"]["labels"] = {**job["metadata"]["labels"], INSTANCE_LABEL: name}
    rc = job["spec"]["rayClusterSpec"]
    ray_pods = [rc["headGroupSpec"]["template"]] + [g["template"] for g in rc["workerGroupSpecs"]]
    for template in _pod_templates(job):
        template.setdefault("metadata", {}).setdefault("labels", {})[INSTANCE_LABEL] = name
        pod = template["spec"]
        pod["serviceAccountName"] = name
        for container in _containers(pod):
            # the template's shared, optional credentials Secret is replaced by this experiment's
            container.pop("envFrom", None)
    for template in ray_pods:
        pod = template["spec"]
        pod["volumes"] = list(pod.get("volumes") or []) + copy.deepcopy(volumes)
        container = pod["containers"][0]
        if env_from:
            container["envFrom"] = copy.deepcopy(env_from)
        if env:
            container["env"] = list(container.get("env") or []) + copy.deepcopy(env)
        container["volumeMounts"] = list(container.get("volumeMounts") or []) + copy.deepcopy(mounts)

    sa = _base_doc("serviceaccount.yaml", "ServiceAccount", APP)
    sa["metadata"] = _meta(name, namespace, _labels(name))
    policies = _network_policies(name, namespace)
    prerequisites += _operator_prerequisites(policies)
    objects = [sa, *policies, configmap, job]
    return Rendered(name=name, namespace=namespace, objects=objects, prerequisites=prerequisites)
