"""The PyTorch runtime: CUDA devices through torch.cuda and its caching allocator, PyTorch's
out-of-memory error, ONNX through Keras's own export (torch.onnx) in this process, and the
portable input pipeline (search.runtime.portable)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

import torch

from search.runtime.onnx_export import keras_onnx_bytes
from search.runtime.portable import PortableRuntime

if TYPE_CHECKING:
    import keras

MIB = 1 << 20


class TorchRuntime(PortableRuntime):
    """search.runtime.Runtime on PyTorch."""

    name = "torch"
    runs_steps_per_execution = False
    compiler = "torch.compile"

    def start(self) -> None:
        """Also keeps torch.compile's recompilation warnings (--jit on) off the terminal: Keras's
        layers recompile as they are called in new ways, which a user cannot act on."""
        logging.getLogger("torch._dynamo").setLevel(logging.ERROR)
        torch.cuda.is_available()

    def configure_devices(
        self, memory_limit_mb: int | None, *, warn: Callable[[str], None]
    ) -> list[str]:
        """PyTorch's caching allocator grows as needed already; `memory_limit_mb` caps it
        through the per-process memory fraction, which makes an allocation past it fail as
        out of memory instead of taking another worker's share."""
        if not torch.cuda.is_available():
            return []
        names = []
        for index in range(torch.cuda.device_count()):
            properties = torch.cuda.get_device_properties(index)
            if memory_limit_mb:
                fraction = min(1.0, memory_limit_mb * MIB / properties.total_memory)
                torch.cuda.set_per_process_memory_fraction(fraction, index)
            names.append(properties.name)
        return names

    def gpu_compute_capabilities(self) -> list[tuple[int, int]]:
        if not torch.cuda.is_available():
            return []
        return [torch.cuda.get_device_capability(i) for i in range(torch.cuda.device_count())]

    def is_out_of_memory(self, error: BaseException) -> bool:
        return isinstance(error, torch.OutOfMemoryError) or "CUDA out of memory" in str(error)

    def onnx_bytes(self, model: keras.Model) -> bytes:
        return keras_onnx_bytes(model)
