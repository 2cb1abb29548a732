"""Triton kernels for the delta rule (GPU; on the CPU only under the interpreter, TRITON_INTERPRET=1).

`available()` says whether the kernels can run on a device; the import of this package never fails
for lack of Triton, the kernel modules are imported on first use.
"""

import functools
import importlib.util
import os

import torch


def interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


# Looked up once, at import: `available` is asked on every decoding step and inside compiled graphs, where
# torch.compile reads a module constant but cannot trace importlib (torch 2.11 refuses it under fullgraph).
_INSTALLED = importlib.util.find_spec("triton") is not None


def available(device: torch.device) -> bool:
    """True when Triton is importable and can run on `device` (CUDA, or the CPU under the interpreter)."""
    if not _INSTALLED:
        return False
    if device.type == "cuda":
        return True
    return device.type == "cpu" and interpreting()


def on_input_device(fn):
    """Run `fn(q, ...)` with q's GPU as the current device: Triton launches on the current device, so a
    tensor on cuda:1 while cuda:0 is current would otherwise be refused (or read from the wrong card)."""

    @functools.wraps(fn)
    def wrapper(q, *args, **kwargs):
        if q.is_cuda and q.device.index != torch.cuda.current_device():
            with torch.cuda.device(q.device):
                return fn(q, *args, **kwargs)
        return fn(q, *args, **kwargs)

    return wrapper
