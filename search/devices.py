"""Accelerator set-up: use a visible GPU, growing its memory as needed."""

from __future__ import annotations

import contextlib

import keras
import tensorflow as tf

FLOAT16_COMPUTE_CAPABILITY = (7, 0)  # Volta and later have float16 tensor cores


def configure_devices() -> list[str]:
    """Turn on memory growth for every GPU and describe the devices trials will run on.

    Also silences TensorFlow's retracing warnings, which every new trial model triggers.
    """
    tf.get_logger().setLevel("ERROR")
    gpus = tf.config.list_physical_devices("GPU")
    for gpu in gpus:
        # RuntimeError: the GPU was initialised earlier in this process, with growth set then.
        with contextlib.suppress(RuntimeError):
            tf.config.experimental.set_memory_growth(gpu, True)
    if not gpus:
        return ["CPU"]
    return [tf.config.experimental.get_device_details(g).get("device_name", g.name) for g in gpus]


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
