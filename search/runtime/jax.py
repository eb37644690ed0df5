"""The JAX runtime: JAX's devices, XLA's out-of-memory error, and the portable input pipeline
(search.runtime.portable).

JAX reads its GPU memory settings from the environment when it starts, which is when Keras is
imported: `memory_environment` gives them, and the command line sets them before that."""

from __future__ import annotations

import re
from collections.abc import Callable

import jax

from search.runtime.portable import PortableRuntime

_OUT_OF_MEMORY = re.compile(r"RESOURCE_EXHAUSTED|out of memory", re.IGNORECASE)


def memory_environment(memory_limit_mb: int | None, gpu_memory_mb: int | None) -> dict[str, str]:
    """XLA's allocator settings: no preallocation of 75% of the GPU (the default), so several
    workers can share one, and with `memory_limit_mb` a memory fraction of the GPU's
    `gpu_memory_mb` MiB (JAX takes a fraction, not a size)."""
    settings = {"XLA_PYTHON_CLIENT_PREALLOCATE": "false"}
    if memory_limit_mb and gpu_memory_mb:
        fraction = min(1.0, memory_limit_mb / gpu_memory_mb)
        settings["XLA_PYTHON_CLIENT_MEM_FRACTION"] = f"{fraction:.3f}"
    return settings


class JaxRuntime(PortableRuntime):
    """search.runtime.Runtime on JAX."""

    name = "jax"

    def start(self) -> None:
        self._gpus()

    def configure_devices(
        self, memory_limit_mb: int | None, *, warn: Callable[[str], None]
    ) -> list[str]:
        """Memory is set up from the environment before JAX started (memory_environment);
        this only names the GPUs."""
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
