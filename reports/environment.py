"""What a run ran on, as the report and the model card name it."""

from __future__ import annotations


def keras_backend_text(info: dict) -> str:
    """The run's Keras backend and its library's version, e.g. "torch 2.13.0"; a run from
    before the choice existed ran on TensorFlow, whose version run.json kept."""
    name = info.get("keras_backend", "tensorflow")
    version = info.get("keras_backend_version") or info.get("versions", {}).get(name)
    return f"{name} {version}" if version else name
