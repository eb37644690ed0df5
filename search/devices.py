"""Accelerator set-up: use the visible GPUs, growing their memory as needed, and tell an
out-of-memory error from other errors, through the active Keras backend's runtime.

`configure_devices` must run before anything starts the backend's device runtime (building a
model, creating a tensor): memory growth and memory limits can only be set before, and a
process whose growth was not set reserves nearly all of a GPU's memory, leaving none to other
workers.
"""

from __future__ import annotations

import keras

from search.console import log
from search.runtime import get_runtime

FLOAT16_COMPUTE_CAPABILITY = (7, 0)  # Volta and later have float16 tensor cores


def configure_devices(memory_limit_mb: int | None = None) -> list[str]:
    """Turn on memory growth for every GPU, limit each to `memory_limit_mb` MiB when given (so
    several processes can share one GPU), and describe the devices trials will run on."""
    gpus = get_runtime().configure_devices(memory_limit_mb, warn=log.warning)
    if memory_limit_mb and not gpus:
        log.info(f"--gpu-memory-mb {memory_limit_mb} ignored: no GPU is visible")
    return gpus or ["CPU"]


def is_out_of_memory(error: BaseException) -> bool:
    """Whether `error` is a failed device allocation, which a smaller batch may avoid."""
    return get_runtime().is_out_of_memory(error)


def configure_precision(mode: str) -> str:
    """Set Keras's global dtype policy from --mixed-precision and return its name.

    "auto" is mixed_float16 only on GPUs of compute capability 7.0 or higher, where float16
    runs on tensor cores; elsewhere it is slower than float32. Output layers stay float32
    (spaces/blocks.classifier) and Keras adds loss scaling when it compiles.
    """
    on = mode == "on" or (mode == "auto" and _has_float16_gpu())
    policy = "mixed_float16" if on else "float32"
    keras.mixed_precision.set_global_policy(policy)
    return policy


def _has_float16_gpu() -> bool:
    capabilities = get_runtime().gpu_compute_capabilities()
    return any(capability >= FLOAT16_COMPUTE_CAPABILITY for capability in capabilities)
