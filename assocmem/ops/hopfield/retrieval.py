"""Modern Hopfield retrieval: the update ξ ← X softmax(β Xᵀξ), its energy, and iteration to a fixed point.

Legend: B batch, L state (query) patterns, S stored patterns, H heads, d pattern size, e value size.
Tensors come as [B, L, H, d] (or [B, L, d] for a single head); inside, they are moved to the
[B, H, L, d] layout of `scaled_dot_product_attention`, which computes the update without ever holding
the [L, S] association matrix (unless `association` is asked for it explicitly).
"""

import math

import torch
import torch.nn.functional as F

GRAD_MODES = ("all", "last")


def _heads_first(x: torch.Tensor) -> torch.Tensor:
    """[B, N, H, d] -> [B, H, N, d]."""
    return x.transpose(1, 2)


def _check(state, stored, values, beta, steps, tol, mask, grad, dropout=0.0):
    for name, x in (("state", state), ("stored", stored)):
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"hopfield: `{name}` must be a torch.Tensor, got {type(x).__name__}")
        if x.dim() not in (3, 4):
            raise ValueError(f"hopfield: `{name}` must be [B, N, d] or [B, N, H, d], got shape {list(x.shape)}")
        if not x.is_floating_point():
            raise TypeError(f"hopfield: `{name}` must be a float tensor, got {x.dtype}")
    if stored.dim() != state.dim():
        raise ValueError(
            f"hopfield: `stored` must have as many dimensions as `state` ({state.dim()}), "
            f"got shape {list(stored.shape)}"
        )
    if stored.shape[0] != state.shape[0] or stored.shape[-1] != state.shape[-1]:
        raise ValueError(
            f"hopfield: `stored` must be [B, S, (H,) d] with B = {state.shape[0]} and d = {state.shape[-1]} "
            f"as in `state`, got {list(stored.shape)}"
        )
    if state.dim() == 4 and stored.shape[2] != state.shape[2]:
        raise ValueError(f"hopfield: `stored` must have H = {state.shape[2]} heads as `state`, got {stored.shape[2]}")
    if values is not None:
        if not isinstance(values, torch.Tensor):
            raise TypeError(f"hopfield: `values` must be a torch.Tensor or None, got {type(values).__name__}")
        if values.dim() != stored.dim() or values.shape[:-1] != stored.shape[:-1]:
            expected = list(stored.shape[:-1]) + ["e"]
            raise ValueError(f"hopfield: `values` must have shape {expected} like `stored`, got {list(values.shape)}")
    if isinstance(beta, torch.Tensor):
        if beta.numel() != 1 and (state.dim() == 3 or beta.shape != (state.shape[2],)):
            raise ValueError(f"hopfield: a tensor `beta` must be a scalar or [H], got shape {list(beta.shape)}")
    elif not isinstance(beta, (int, float)) or not beta > 0 or not math.isfinite(beta):
        raise ValueError(f"hopfield: `beta` must be a positive finite number or a tensor, got {beta!r}")
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"hopfield: `steps` must be an integer >= 1, got {steps!r}")
    if tol is not None and (not isinstance(tol, (int, float)) or tol < 0):
        raise ValueError(f"hopfield: `tol` must be a number >= 0 or None, got {tol!r}")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"hopfield: `dropout` must be in [0, 1), got {dropout!r}")
    if grad not in GRAD_MODES:
        raise ValueError(f"hopfield: `grad` must be one of {GRAD_MODES}, got {grad!r}")
    if mask is not None:
        if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool:
            raise TypeError("hopfield: `mask` must be a bool tensor (True = the stored pattern takes part)")
        B, L, S = state.shape[0], state.shape[1], stored.shape[1]
        allowed = [(B, S), (B, L, S)] + ([(B, state.shape[2], L, S)] if state.dim() == 4 else [])
        if tuple(mask.shape) not in allowed:
            raise ValueError(f"hopfield: `mask` must have one of the shapes {allowed}, got {tuple(mask.shape)}")


def _sdpa_mask(mask):
    """[B, S] / [B, L, S] / [B, H, L, S] -> broadcastable to [B, H, L, S]."""
    if mask is None:
        return None
    if mask.dim() == 2:
        return mask[:, None, None, :]
    if mask.dim() == 3:
        return mask[:, None]
    return mask


def _beta_scale(beta, H, like):
    """SDPA takes a float scale; a per-head or learnable beta is applied to the queries instead."""
    if isinstance(beta, torch.Tensor):
        beta_H = beta.to(like.dtype).reshape(-1).expand(H)
        return like * beta_H[None, :, None, None], 1.0
    return like, float(beta)


def _update(xi_BHLd, stored_BHSd, values_BHSe, beta, mask, dropout=0.0):
    q, scale = _beta_scale(beta, xi_BHLd.shape[1], xi_BHLd)
    return F.scaled_dot_product_attention(q, stored_BHSd, values_BHSe, attn_mask=mask, scale=scale, dropout_p=dropout)


def _iterate(xi, X, beta, mask, max_updates, tol, made=0, dropout=0.0):
    """Up to `max_updates` updates ξ ← X softmax(β Xᵀξ), stopping when none moves more than `tol`."""
    for _ in range(max_updates):
        new = _update(xi, X, X, beta, mask, dropout)
        made += 1
        converged = tol is not None and bool((new - xi).abs().max() <= tol)
        xi = new
        if converged:
            break
    return xi, made


def retrieve(
    state: torch.Tensor,
    stored: torch.Tensor,
    values: torch.Tensor | None = None,
    *,
    beta: float | torch.Tensor,
    steps: int = 1,
    tol: float | None = None,
    mask: torch.Tensor | None = None,
    grad: str = "all",
    dropout: float = 0.0,
    return_steps: bool = False,
):
    """Hopfield retrieval: `steps` updates ξ ← X softmax(β Xᵀξ) starting from ξ = state.

    Args:
        state: [B, L, H, d] (or [B, L, d], one head): the state (query) patterns ξ.
        stored: [B, S, H, d] (or [B, S, d]): the stored patterns X, one per row.
        values: [B, S, H, e] (or [B, S, e]); if given, the last update reads out through them,
            `X_v softmax(β Xᵀξ)`, while the first `steps - 1` updates move ξ among the stored patterns.
        beta: inverse temperature, a positive number, or a tensor (scalar or [H], may be learnable).
        steps: the number of updates, a hard cap when `tol` is set. `steps=1` is exactly one softmax
            attention with scale β.
        tol: stop early once no state pattern moves more than `tol` (max-abs) in one update. The
            read-out through `values` still follows.
        mask: bool, [B, S], [B, L, S] or [B, H, L, S]; True marks the stored patterns a state pattern
            may retrieve (the convention of `scaled_dot_product_attention`).
        grad: "all" backpropagates through every update; "last" runs the updates before the last
            without autograd and differentiates only the last one (memory independent of `steps`).
        dropout: dropout probability on the association weights of every update (pass 0 in eval).
        return_steps: also return the number of updates made.

    Returns:
        the retrieved patterns, shaped like `state` (with e instead of d when `values` is given), and
        the number of updates if `return_steps`.

    Example:
        >>> X = torch.randn(2, 100, 64)                       # 100 stored patterns
        >>> noisy = X[:, :5] + 0.1 * torch.randn(2, 5, 64)    # 5 queries
        >>> out = retrieve(noisy, X, beta=8.0)                # ≈ X[:, :5]
    """
    _check(state, stored, values, beta, steps, tol, mask, grad, dropout)
    multihead = state.dim() == 4
    if not multihead:
        state, stored = state[:, :, None], stored[:, :, None]
        values = None if values is None else values[:, :, None]
    xi, X = _heads_first(state), _heads_first(stored)
    Xv = None if values is None else _heads_first(values)
    sdpa_mask = _sdpa_mask(mask)

    # The first updates move ξ among the stored patterns; with values, the last one reads out through them.
    moving = steps if Xv is None else steps - 1
    untracked = moving if Xv is not None else moving - 1
    made = 0
    if grad == "last":
        with torch.no_grad():
            xi, made = _iterate(xi, X, beta, sdpa_mask, untracked, tol, 0, dropout)
        if made:
            xi = xi.detach()
        moving = made + (1 if Xv is None else 0)
    xi, made = _iterate(xi, X, beta, sdpa_mask, moving - made, tol, made, dropout)
    if Xv is not None:
        xi = _update(xi, X, Xv, beta, sdpa_mask, dropout)
        made += 1
    out = xi.transpose(1, 2)
    if not multihead:
        out = out[:, :, 0]
    return (out, made) if return_steps else out


def association(state, stored, *, beta, mask=None) -> torch.Tensor:
    """The association matrix softmax(β ξᵀX) itself, materialised: [B, L, S] or [B, H, L, S].

    Only for inspection and for the layers' `return_association=True`; `retrieve` never builds it.
    """
    _check(state, stored, None, beta, 1, None, mask, "all")
    multihead = state.dim() == 4
    if not multihead:
        state, stored = state[:, :, None], stored[:, :, None]
    xi, X = _heads_first(state), _heads_first(stored)
    xi, scale = _beta_scale(beta, xi.shape[1], xi)
    logits = scale * xi @ X.transpose(-1, -2)
    if mask is not None:
        logits = logits.masked_fill(~_sdpa_mask(mask), float("-inf"))
    probs = logits.softmax(-1)
    return probs if multihead else probs[:, 0]


def energy(state: torch.Tensor, stored: torch.Tensor, beta: float) -> torch.Tensor:
    """The modern Hopfield energy of each state pattern, constants included:

        E(ξ) = -β⁻¹ log Σ_i exp(β x_iᵀξ) + ½ ξᵀξ + β⁻¹ log S + ½ M²,    M = max_i ‖x_i‖

    state [B, L, (H,) d], stored [B, S, (H,) d] -> E [B, L(, H)]. E >= 0, and the update never raises it.
    """
    _check(state, stored, None, beta, 1, None, None, "all")
    beta = float(beta)
    S = stored.shape[1]
    logits = torch.einsum("bl...d,bs...d->bl...s", state, stored) * beta
    lse = torch.logsumexp(logits, dim=-1) / beta
    max_norm = stored.norm(dim=-1).amax(dim=1, keepdim=True)
    return -lse + 0.5 * state.pow(2).sum(-1) + math.log(S) / beta + 0.5 * max_norm.pow(2)
