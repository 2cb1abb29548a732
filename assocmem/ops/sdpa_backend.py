"""Which kernel `scaled_dot_product_attention` should try first on a GPU.

PyTorch tries cuDNN attention first on Hopper GPUs; its host-side cost per call (~0.3 ms measured on
an H200 with torch 2.11, benchmarks/results/gpu_check.log) exceeds the kernel time of small problems.
We ask for flash attention first, then memory-efficient attention, then cuDNN, then the math path.
"""

import contextlib

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

_ORDER = [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.CUDNN_ATTENTION, SDPBackend.MATH]


def preferred_sdpa(device: torch.device):
    """Context in which SDPA on CUDA tries flash attention first; does nothing elsewhere."""
    if device.type != "cuda":
        return contextlib.nullcontext()
    return sdpa_kernel(_ORDER, set_priority=True)
