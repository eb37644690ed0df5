"""The JAX runtime: JAX's devices, XLA's out-of-memory error, and the portable input pipeline
(search.runtime.portable).

JAX reads its GPU memory settings from the environment when it starts: search.keras_backend
sets them when the backend is chosen, before Keras is imported."""

from __future__ import annotations

import re
from collections.abc import Callable

import jax

from search.runtime.portable import PortableRuntime

_OUT_OF_MEMORY = re.compile(r"RESOURCE_EXHAUSTED|out of memory", re.IGNORECASE)


class JaxRuntime(PortableRuntime):
    """search.runtime.Runtime on JAX."""

    name = "jax"
    runs_steps_per_execution = True
    compiler = "XLA"

    def start(self) -> None:
        self._gpus()

    def configure_devices(
        self, memory_limit_mb: int | None, *, warn: Callable[[str], None]
    ) -> list[str]:
        """Memory was set up from the environment before JAX started
        (search.keras_backend.jax_memory_environment); this only names the GPUs."""
        return [device.device_kind for device in self._gpus()]

    def gpu_compute_capabilities(self) -> list[tuple[int, int]]:
        found = (getattr(device, "compute_capability", None) for device in self._gpus())
        return [tuple(int(part) for part in str(c).split(".")) for c in found if c]

    def is_out_of_memory(self, error: BaseException) -> bool:
        return bool(_OUT_OF_MEMORY.search(f"{type(error).__name__} {error}"))

    @staticmethod
    def _gpus() -> list:
        try:
            return jax.devices("gpu")
        except RuntimeError:  # no GPU backend: JAX runs on the CPU
            return []
