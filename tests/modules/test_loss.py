"""next_token_loss: the float32 next-token cross-entropy that keeps only the logits for its backward."""

import pytest
import torch
import torch.nn.functional as F

from assocmem.modules import loss as loss_module
from assocmem.modules.loss import next_token_loss
from tests.ops.helpers import rel_err

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_next_token_loss_under_torch_compile_equals_eager(reduction):
    """Under torch.compile (the specification there) the loss and the logits' gradient are eager mode's: float32
    within 1e-5 (on the GPU where there is one: torch 2.11 compiled another of our autograd functions wrongly)."""
    torch.manual_seed(0)
    logits = torch.randn(2, 9, 50, device=DEVICE) * 3
    labels = torch.randint(0, 50, (2, 9), device=DEVICE)
    labels[1, 4] = -100
    results = []
    for fn in (next_token_loss, torch.compile(next_token_loss)):
        x = logits.clone().requires_grad_()
        loss = fn(x * 1.5, labels, reduction=reduction)
        loss.backward()
        results.append((loss.detach(), x.grad))
    assert results[0][1].norm() > 0
    assert rel_err(results[1][0], results[0][0]) < 1e-5 and rel_err(results[1][1], results[0][1]) < 1e-5


def _spec(logits, labels, reduction="mean"):
    return F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), labels[:, 1:].flatten(), ignore_index=-100,
                           reduction=reduction)  # fmt: skip


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_next_token_loss_equals_the_specification_in_chunks(dtype, reduction, monkeypatch):
    """Loss and gradient as F.cross_entropy on the shifted, float32 logits (ignored labels skipped), with the
    float32 work cut into chunks of 5 rows: float32 within 1e-6, bf16 gradients within bf16 rounding."""
    monkeypatch.setattr(loss_module, "CHUNK_ROWS", 5)
    torch.manual_seed(0)
    logits = (torch.randn(3, 9, 50) * 4).to(dtype)
    labels = torch.randint(0, 50, (3, 9))
    labels[0, 3] = labels[2, 1] = -100
    a = logits.clone().requires_grad_()
    b = logits.clone().requires_grad_()
    ours, ref = next_token_loss(a, labels, reduction=reduction), _spec(b, labels, reduction)
    assert ours.dtype == torch.float32 and abs(ours.item() - ref.item()) <= 1e-6 * abs(ref.item())
    ours.backward()
    ref.backward()
    assert a.grad.dtype == dtype
    assert rel_err(a.grad.float(), b.grad.float()) < (1e-6 if dtype == torch.float32 else 4e-3)
    assert a.grad[:, -1].abs().sum() == 0  # the last position predicts nothing


def test_next_token_loss_keeps_no_float32_copy_and_checks_its_arguments():
    """The backward keeps the logits themselves and one number per position; bad arguments are named; with no
    target left the mean is NaN, as F.cross_entropy's."""
    logits = torch.randn(2, 6, 40, dtype=torch.bfloat16, requires_grad=True)
    labels = torch.randint(0, 40, (2, 6))
    kept = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: kept.append(t) or t, lambda t: t):
        next_token_loss(logits, labels)
    big = [t for t in kept if t.numel() >= logits.numel()]
    assert len(big) == 1 and big[0].untyped_storage().data_ptr() == logits.untyped_storage().data_ptr()
    assert all(t.numel() <= 12 for t in kept if t is not big[0])
    with pytest.raises(ValueError, match="reduction"):
        next_token_loss(logits, labels, reduction="none")
    with pytest.raises(ValueError, match="labels"):
        next_token_loss(logits, labels[:, :3])
    assert torch.isnan(next_token_loss(logits, torch.full((2, 6), -100)))
