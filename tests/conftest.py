"""Shared fixtures: fresh buffers are filled with NaN, so an output a kernel forgets to write fails loudly."""

import os

import torch

# Without a GPU the Triton kernels run under Triton's interpreter. Triton reads the switch when it is first
# imported (torch may import it early), so it is set here, before any test module.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402
import torch.utils._device  # noqa: E402

_real_empty = torch.empty
_real_empty_like = torch.empty_like
_real_new_empty = torch.Tensor.new_empty


def _nan_fill(x):
    if x.is_floating_point() and x.numel():
        with torch.no_grad():  # (a leaf made with requires_grad=True, as torch.compile's passes make, too)
            x.fill_(float("nan"))
    return x


# torch.device(...) as a context manager recognises factory functions through a set it builds once; build
# it now, from the real functions, so that it never records the NaN-filling wrappers below.
torch.utils._device._device_constructors()  # noqa: SLF001


@pytest.fixture(autouse=True)
def nan_filled_empty(monkeypatch):
    monkeypatch.setattr(torch, "empty", lambda *a, **kw: _nan_fill(_real_empty(*a, **kw)))
    monkeypatch.setattr(torch, "empty_like", lambda *a, **kw: _nan_fill(_real_empty_like(*a, **kw)))
    monkeypatch.setattr(torch.Tensor, "new_empty", lambda self, *a, **kw: _nan_fill(_real_new_empty(self, *a, **kw)))
    yield


@pytest.fixture(autouse=True)
def seeded():
    torch.manual_seed(0)
    yield
