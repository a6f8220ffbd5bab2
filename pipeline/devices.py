"""Fence a trial inside its CPU and GPU share, before the framework starts.

A trial given ``gpu: 0.25`` must stay inside a quarter of its device: Ray only
schedules fractions, it does not enforce them. Before TensorFlow (or JAX, or
torch) touches the GPU, the trial's memory is capped:

* TensorFlow: a logical device with ``memory_limit`` = fraction x total memory
  (read with NVML), or memory growth when ``resources.gpu_memory_growth``;
* JAX: ``XLA_PYTHON_CLIENT_MEM_FRACTION`` (and no preallocation beyond it);
* torch: ``torch.cuda.set_per_process_memory_fraction``.

CPU threads are sized to the trial's CPU share.

Example:
    >>> gpu_memory_limit_mb(total_bytes=80 * 1024**3, fraction=0.25)
    19968
    >>> jax_env(0.5)["XLA_PYTHON_CLIENT_MEM_FRACTION"]
    '0.480'
    >>> cpu_threads(0.5), cpu_threads(2)
    (1, 2)
"""

from __future__ import annotations

import math
import os

# Left free on a shared device for the CUDA context and allocator slack, per trial.
HEADROOM_MB = 512
JAX_HEADROOM = 0.02


def cpu_threads(cpu: float) -> int:
    return max(1, int(math.ceil(cpu)))


def gpu_memory_limit_mb(total_bytes: int, fraction: float) -> int:
    """Memory a trial with ``fraction`` of a device may use, in MiB (TF's unit)."""
    if not 0 < fraction <= 1:
        raise ValueError(f"gpu fraction must be in (0, 1], got {fraction}")
    share = int(total_bytes * fraction) // (1024 * 1024)
    return max(256, share - HEADROOM_MB) if fraction < 1 else share


def jax_env(fraction: float) -> dict[str, str]:
    """Environment for a JAX-backend trial with a fraction of a GPU (set before importing jax)."""
    value = max(0.01, fraction - JAX_HEADROOM) if fraction < 1 else 0.9
    return {"XLA_PYTHON_CLIENT_MEM_FRACTION": f"{value:.3f}", "XLA_PYTHON_CLIENT_PREALLOCATE": "true"}


def device_total_bytes(index: int = 0) -> int | None:
    """Total memory of the visible GPU ``index`` through NVML, or None without one."""
    try:
        import pynvml
    except ImportError:
        return None
    try:
        pynvml.nvmlInit()
        try:
            visible = os.environ.get("CUDA_VISIBLE_DEVICES", "")
            ids = [v for v in visible.split(",") if v.strip()]
            physical = int(ids[index]) if ids and ids[index].isdigit() else index
            return int(pynvml.nvmlDeviceGetMemoryInfo(pynvml.nvmlDeviceGetHandleByIndex(physical)).total)
        finally:
            pynvml.nvmlShutdown()
    except Exception:  # noqa: BLE001 - no driver, no device: nothing to fence
        return None


def configure(cpu: float, gpu: float, memory_growth: bool = False) -> dict[str, object]:
    """Fence the current (trial) process; call before the framework initializes.

    Returns what was applied, for logging and tests.
    """
    import keras

    threads = cpu_threads(cpu)
    applied: dict[str, object] = {"threads": threads}
    backend = keras.backend.backend()
    if backend == "jax" and 0 < gpu < 1:
        os.environ.update(jax_env(gpu))
        applied["jax_env"] = jax_env(gpu)
    if backend == "tensorflow":
        import tensorflow as tf

        try:
            tf.config.threading.set_intra_op_parallelism_threads(threads)
            tf.config.threading.set_inter_op_parallelism_threads(min(2, threads))
        except RuntimeError:
            pass  # a reused worker: already configured for the same share
        from pipeline.quiet import filtered_stderr

        with filtered_stderr(gpu=gpu > 0):  # no driver, no GPU asked for: not an error to show
            gpus = tf.config.list_physical_devices("GPU")
        if gpus and gpu > 0:
            try:
                if memory_growth:
                    for device in gpus:
                        tf.config.experimental.set_memory_growth(device, True)
                    applied["memory_growth"] = True
                elif gpu < 1 and (total := device_total_bytes()) is not None:
                    limit = gpu_memory_limit_mb(total, gpu)
                    tf.config.set_logical_device_configuration(
                        gpus[0], [tf.config.LogicalDeviceConfiguration(memory_limit=limit)])
                    applied["memory_limit_mb"] = limit
            except RuntimeError:
                pass  # already initialized in this reused worker
    if backend == "torch" and 0 < gpu < 1:
        import torch

        if torch.cuda.is_available():
            torch.cuda.set_per_process_memory_fraction(gpu)
            applied["torch_fraction"] = gpu
    return applied
