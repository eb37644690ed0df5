"""Accelerator set-up: use a visible GPU, growing its memory as needed."""

from __future__ import annotations

import contextlib

import tensorflow as tf


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
