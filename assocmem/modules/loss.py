"""Next-token cross-entropy over a language model's logits, in float32, keeping only the logits for its backward.

`F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), labels[:, 1:].flatten())` is the specification. Through
autograd it copies the shifted logits, makes a float32 copy of them and keeps float32 log-probabilities for the
backward: at a 32,000-token vocabulary 128 KB a token besides the logits themselves. Here the targets are shifted
instead of the logits (the last position of each row gets `ignore_index`), the float32 work runs over
`CHUNK_ROWS` rows at a time, and the backward keeps the logits (which the caller holds anyway) and one float32
log-sum-exp per position; it forms softmax - one-hot again, chunk by chunk, in float32, and returns the gradient
in the logits' dtype.
"""

import torch
import torch.nn.functional as F

CHUNK_ROWS = 4096  # rows of float32 work at a time: 0.5 GB at a 32,000-token vocabulary


class _NextTokenCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, logits_NV: torch.Tensor, targets_N: torch.Tensor, ignore_index: int, mean: bool):
        keep_N = targets_N != ignore_index
        safe_N = torch.where(keep_N, targets_N, 0)
        lse_N = torch.empty(logits_NV.shape[0], dtype=torch.float32, device=logits_NV.device)
        total = logits_NV.new_zeros((), dtype=torch.float32)
        for s in range(0, logits_NV.shape[0], CHUNK_ROWS):
            x = logits_NV[s : s + CHUNK_ROWS].float()
            lse_N[s : s + CHUNK_ROWS] = torch.logsumexp(x, -1)
            picked = x.gather(1, safe_N[s : s + CHUNK_ROWS, None])[:, 0]
            total = total + ((lse_N[s : s + CHUNK_ROWS] - picked) * keep_N[s : s + CHUNK_ROWS]).sum()
        count = keep_N.sum()
        ctx.save_for_backward(logits_NV, safe_N, keep_N, lse_N, count)
        ctx.mean = mean
        return total / count if mean else total

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        logits_NV, safe_N, keep_N, lse_N, count = ctx.saved_tensors
        scale = grad.float() / count if ctx.mean else grad.float()
        out = torch.empty_like(logits_NV)
        for s in range(0, logits_NV.shape[0], CHUNK_ROWS):
            rows = slice(s, s + CHUNK_ROWS)
            p = (logits_NV[rows].float() - lse_N[rows, None]).exp_()
            p.scatter_add_(1, safe_N[rows, None], -torch.ones_like(lse_N[rows, None]))
            out[rows] = (p * (keep_N[rows, None] * scale)).to(out.dtype)
        return out, None, None, None


def next_token_loss(logits_BTV: torch.Tensor, labels_BT: torch.Tensor, *, ignore_index: int = -100,
                    reduction: str = "mean") -> torch.Tensor:  # fmt: skip
    """Cross-entropy of logits[:, t] against labels[:, t + 1] (labels equal to ignore_index are skipped), in
    float32; reduction "mean" (over the counted targets: NaN when there are none, as F.cross_entropy) or "sum".
    Under torch.compile it is the specification, whose saved tensors the compiler plans itself (as
    ops/delta_rule/l2norm.py's function: torch 2.11 compiled one of ours wrongly on the GPU)."""
    if reduction not in ("mean", "sum"):
        raise ValueError(f"next_token_loss: reduction must be 'mean' or 'sum', got {reduction!r}")
    if logits_BTV.dim() != 3 or labels_BT.shape != logits_BTV.shape[:2]:
        raise ValueError(f"next_token_loss: expected logits [B, T, V] and labels [B, T], got "
                         f"{tuple(logits_BTV.shape)} and {tuple(labels_BT.shape)}")  # fmt: skip
    labels_BT = labels_BT.to(logits_BTV.device)
    if torch.compiler.is_compiling():
        return F.cross_entropy(logits_BTV[:, :-1].flatten(0, 1).float(), labels_BT[:, 1:].flatten(),
                               ignore_index=ignore_index, reduction=reduction)  # fmt: skip
    targets_BT = torch.cat([labels_BT[:, 1:], labels_BT.new_full((labels_BT.shape[0], 1), ignore_index)], 1)
    logits_NV = logits_BTV.reshape(-1, logits_BTV.shape[-1])
    return _NextTokenCrossEntropy.apply(logits_NV, targets_BT.reshape(-1), ignore_index, reduction == "mean")
