"""One decoding step of the delta rule, batched over batch and heads (the recurrence for T = 1).

Legend: B batch, H heads, K key size, V value size.
"""

import torch

from . import triton as _triton
from .naive import l2_normalize


def delta_rule_step(
    q_BHK: torch.Tensor,
    k_BHK: torch.Tensor,
    v_BHV: torch.Tensor,
    beta_BH: torch.Tensor,
    state_BHKV: torch.Tensor,
    *,
    scale: float | None = None,
    qk_l2norm: bool = False,
    inplace: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """S' = S + beta k (v - S^T k)^T,  o = S'^T (scale q). Returns (o [B, H, V] in v's dtype, S' float32).

    The same update as `delta_rule` on a single token, without its chunk padding; used to decode.
    With `inplace=True` S' is written into `state_BHKV` (which must be a contiguous float32 tensor) and
    returned; on CUDA, without autograd, that runs the fused Triton kernel (one launch per step).
    """
    if scale is None:
        scale = q_BHK.shape[-1] ** -0.5
    if inplace:
        if state_BHKV.dtype != torch.float32 or not state_BHKV.is_contiguous():
            raise ValueError(
                "delta_rule_step: inplace=True needs a contiguous float32 `state_BHKV`, "
                f"got {state_BHKV.dtype}, contiguous={state_BHKV.is_contiguous()}"
            )
        grad = torch.is_grad_enabled() and any(x.requires_grad for x in (q_BHK, k_BHK, v_BHV, beta_BH, state_BHKV))
        on_gpu = q_BHK.device.type == "cuda" and _triton.available(q_BHK.device)
        if not grad and q_BHK.dtype != torch.float64 and on_gpu:
            from .triton.recurrent import recurrent_step_

            o = recurrent_step_(q_BHK.unsqueeze(1), k_BHK.unsqueeze(1), v_BHV.unsqueeze(1), beta_BH.unsqueeze(1),
                                state_BHKV, float(scale), qk_l2norm=qk_l2norm)  # fmt: skip
            return o.squeeze(1), state_BHKV
        o, new_state = delta_rule_step(q_BHK, k_BHK, v_BHV, beta_BH, state_BHKV, scale=scale, qk_l2norm=qk_l2norm)
        return o, state_BHKV.copy_(new_state)
    math = torch.float64 if state_BHKV.dtype == torch.float64 else torch.float32
    q, k, v, beta = (x.to(math) for x in (q_BHK, k_BHK, v_BHV, beta_BH))
    if qk_l2norm:
        q, k = l2_normalize(q), l2_normalize(k)
    state = state_BHKV.to(math)
    predicted_BHV = torch.einsum("bhk,bhkv->bhv", k, state)
    state = state + torch.einsum("bhk,bhv->bhkv", beta[..., None] * k, v - predicted_BHV)
    o = torch.einsum("bhk,bhkv->bhv", q * scale, state)
    return o.to(v_BHV.dtype), state
