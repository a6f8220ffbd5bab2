"""Render a KubeRay ``RayJob`` (plus its spec ``ConfigMap``) for one experiment.

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
from pathlib import Path
from typing import Any, Iterable

import yaml

__all__ = ["render_rayjob", "dump_yaml", "DEFAULT_IMAGE", "TEMPLATE_PATH"]

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
