"""Accelerator set-up: use the visible GPUs, growing their memory as needed, and tell an
out-of-memory error from other errors.

`configure_devices` must run before anything starts TensorFlow's runtime (building a model,
creating a tensor): memory growth and memory limits can only be set before, and a process
whose growth was not set reserves nearly all of a GPU's memory, leaving none to other workers.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import keras
import tensorflow as tf

from search.console import log

FLOAT16_COMPUTE_CAPABILITY = (7, 0)  # Volta and later have float16 tensor cores
# cuDNN and cuBLAS report a failed allocation as an internal or unknown error, not as
# ResourceExhaustedError; these words in its text say it was memory.
_OUT_OF_MEMORY = re.compile(
    r"out of memory|\bOOM\b|CUDNN_STATUS_ALLOC_FAILED|CUBLAS_STATUS_ALLOC_FAILED", re.IGNORECASE
)


def configure_devices(memory_limit_mb: int | None = None) -> list[str]:
    """Turn on memory growth for every GPU, limit each to `memory_limit_mb` MiB when given (so
    several processes can share one GPU), and describe the devices trials will run on.

    Also silences TensorFlow's retracing warnings, which every new trial model triggers.
    """
    tf.get_logger().setLevel("ERROR")
    gpus = tf.config.list_physical_devices("GPU")
    if memory_limit_mb and not gpus:
        log.info(f"--gpu-memory-mb {memory_limit_mb} ignored: no GPU is visible")
    for gpu in gpus:
        _before_start(
            f"memory growth is not on for {gpu.name}: this process may reserve the whole GPU",
            tf.config.experimental.set_memory_growth,
            gpu,
            True,
        )
        if memory_limit_mb:
            _before_start(
                f"--gpu-memory-mb {memory_limit_mb} is not applied to {gpu.name}",
                tf.config.set_logical_device_configuration,
                gpu,
                [tf.config.LogicalDeviceConfiguration(memory_limit=memory_limit_mb)],
            )
    if not gpus:
        return ["CPU"]
    return [tf.config.experimental.get_device_details(g).get("device_name", g.name) for g in gpus]


def _before_start(consequence: str, setting: Callable[..., None], *args) -> None:
    """Apply a device setting; TensorFlow refuses it (RuntimeError) once its runtime has
    started, which only a bug in the order of start-up causes: say what that costs."""
    try:
        setting(*args)
    except RuntimeError as error:
        log.warning(f"warning: {consequence} (TensorFlow's runtime had already started: {error})")


def is_out_of_memory(error: BaseException) -> bool:
    """Whether `error` is a failed device allocation, which a smaller batch may avoid."""
    if isinstance(error, tf.errors.ResourceExhaustedError):
        return True
    if isinstance(error, tf.errors.InternalError | tf.errors.UnknownError):
        return bool(_OUT_OF_MEMORY.search(str(error)))
    return False


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
    for gpu in tf.config.list_physical_devices("GPU"):
        capability = tf.config.experimental.get_device_details(gpu).get("compute_capability")
        if capability and tuple(capability) >= FLOAT16_COMPUTE_CAPABILITY:
            return True
    return False
