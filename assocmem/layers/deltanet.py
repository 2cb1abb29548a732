"""The DeltaNet token mixer: projections, short convolutions, the delta rule, gated output norm.

Legend: B batch, T tokens, C hidden size, H heads, K key/query head size, V value head size.
"""

import torch
import torch.nn.functional as F
from torch import nn

from ..modules import GatedRMSNorm, RMSNorm, ShortConvolution
from ..ops.delta_rule import delta_rule, delta_rule_step
from ..ops.delta_rule.naive import l2_normalize
from ..ops.linear_attention import linear_attention, linear_attention_step
from .state import DeltaNetState


class DeltaNet(nn.Module):
    """DeltaNet layer (linear attention with the delta-rule update).

    q, k, v = SiLU(ShortConv(W x)) (bias-free projections, depthwise causal conv of width `conv_size`),
    q and k L2-normalised per head, beta = sigmoid(W_beta x) per head (2 * sigmoid with
    `allow_neg_eigval`, so that I - beta k k^T may have a negative eigenvalue), o = delta_rule(q, k, v, beta),
    then a per-head RMSNorm (times SiLU(W_g x) with `use_output_gate`) and the output projection.
    `use_delta_rule=False` switches the correction off: the state grows by k v^T (plain linear attention,
    `ops.linear_attention`; no beta), everything else unchanged — the baseline of the recall benchmark.

    forward(x [B, T, C], attention_mask [B, T'] (1 = token; its last T columns are used), cu_seqlens (packed,
    B = 1), state, use_cache) -> (y [B, T, C], new state or None). Padded tokens write nothing into the
    state (their beta is zero and their conv input is zero), so left and right padding equal unpadded runs.
    """

    def __init__(
        self,
        hidden_size: int,
        num_heads: int,
        *,
        use_short_conv: bool = True,
        conv_size: int = 4,
        allow_neg_eigval: bool = False,
        use_output_gate: bool = False,
        use_delta_rule: bool = True,
        norm_eps: float = 1e-6,
        backend: str = "auto",
        chunk_size: int = 64,
    ):
        super().__init__()
        if hidden_size % num_heads:
            raise ValueError(f"DeltaNet: num_heads ({num_heads}) must divide hidden_size ({hidden_size})")
        self.hidden_size, self.num_heads = hidden_size, num_heads
        self.head_dim = hidden_size // num_heads
        self.use_short_conv, self.allow_neg_eigval = use_short_conv, allow_neg_eigval
        self.use_output_gate, self.use_delta_rule = use_output_gate, use_delta_rule
        self.backend, self.chunk_size = backend, chunk_size
        self.q_proj = nn.Linear(hidden_size, hidden_size, bias=False)
        self.k_proj = nn.Linear(hidden_size, hidden_size, bias=False)
        self.v_proj = nn.Linear(hidden_size, hidden_size, bias=False)
        if use_delta_rule:
            self.b_proj = nn.Linear(hidden_size, num_heads, bias=False)
        if use_short_conv:
            self.q_conv = ShortConvolution(hidden_size, conv_size)
            self.k_conv = ShortConvolution(hidden_size, conv_size)
            self.v_conv = ShortConvolution(hidden_size, conv_size)
        if use_output_gate:
            self.g_proj = nn.Linear(hidden_size, hidden_size, bias=False)
            self.o_norm = GatedRMSNorm(self.head_dim, eps=norm_eps)
        else:
            self.o_norm = RMSNorm(self.head_dim, eps=norm_eps)
        self.o_proj = nn.Linear(hidden_size, hidden_size, bias=False)

    def forward(
        self,
        x_BTC: torch.Tensor,
        *,
        attention_mask: torch.Tensor | None = None,
        cu_seqlens: torch.Tensor | None = None,
        state: DeltaNetState | None = None,
        use_cache: bool = False,
        positions: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, DeltaNetState | None]:
        del positions  # DeltaNet needs no position embedding; the argument keeps mixers interchangeable
        B, T, C = x_BTC.shape
        H, D = self.num_heads, self.head_dim
        if state is not None and cu_seqlens is not None:
            raise ValueError("DeltaNet: a decoding state cannot be combined with packed sequences (cu_seqlens)")
        mask_BT = None if attention_mask is None else attention_mask[:, attention_mask.shape[1] - T :]
        q, k, v = self.q_proj(x_BTC), self.k_proj(x_BTC), self.v_proj(x_BTC)
        conv_states: tuple = (None, None, None)
        if self.use_short_conv:
            old = (None, None, None) if state is None else (state.conv_q, state.conv_k, state.conv_v)
            q, cq = self.q_conv(q, old[0], cu_seqlens, mask_BT)
            k, ck = self.k_conv(k, old[1], cu_seqlens, mask_BT)
            v, cv = self.v_conv(v, old[2], cu_seqlens, mask_BT)
            conv_states = (cq, ck, cv)
        else:
            q, k, v = F.silu(q), F.silu(k), F.silu(v)
        q, k, v = q.view(B, T, H, D), k.view(B, T, H, D), v.view(B, T, H, D)
        if not self.use_delta_rule:
            o, recurrent = self._linear_attention(q, k, v, mask_BT, cu_seqlens, state, use_cache)
            return self._output(o, x_BTC, recurrent, conv_states, use_cache)
        beta = self.b_proj(x_BTC).float().sigmoid()
        if self.allow_neg_eigval:
            beta = 2 * beta
        if mask_BT is not None:
            beta = beta * mask_BT[..., None].to(beta.dtype)
        if state is not None and T == 1:
            # Decoding one token: the recurrence itself is the cheapest exact path.
            # The state is advanced in place where nothing needs the old one (fused Triton kernel on CUDA).
            recurrent = state.recurrent
            inplace = not torch.is_grad_enabled() and recurrent.dtype == torch.float32 and recurrent.is_contiguous()
            o, recurrent = delta_rule_step(q[:, 0], k[:, 0], v[:, 0], beta[:, 0], recurrent, qk_l2norm=True,
                                           inplace=inplace)  # fmt: skip
            o = o[:, None]
        else:
            o, recurrent = delta_rule(
                q, k, v, beta.to(q.dtype),
                initial_state=None if state is None else state.recurrent,
                output_final_state=use_cache,
                cu_seqlens=cu_seqlens,
                qk_l2norm=True,
                backend=self.backend,
                chunk_size=self.chunk_size,
            )
        return self._output(o, x_BTC, recurrent, conv_states, use_cache)

    def _linear_attention(self, q, k, v, mask_BT, cu_seqlens, state, use_cache):
        """The additive update (use_delta_rule=False): padded tokens write nothing (their k is zero)."""
        q, k = l2_normalize(q.float()).to(q.dtype), l2_normalize(k.float()).to(k.dtype)
        if mask_BT is not None:
            k = k * mask_BT[..., None, None].to(k.dtype)
        if state is not None and q.shape[1] == 1:
            o, recurrent = linear_attention_step(q[:, 0], k[:, 0], v[:, 0], state.recurrent)
            return o[:, None], recurrent
        h0 = None if state is None else state.recurrent
        return linear_attention(q, k, v, initial_state=h0, output_final_state=use_cache,
                                chunk_size=self.chunk_size, cu_seqlens=cu_seqlens)  # fmt: skip

    def _output(self, o, x_BTC, recurrent, conv_states, use_cache):
        B, T, C = x_BTC.shape
        H, D = self.num_heads, self.head_dim
        if self.use_output_gate:
            o = self.o_norm(o, self.g_proj(x_BTC).view(B, T, H, D))
        else:
            o = self.o_norm(o)
        y = self.o_proj(o.reshape(B, T, C))
        new_state = None
        if use_cache:
            new_state = DeltaNetState(recurrent=recurrent, conv_q=conv_states[0], conv_k=conv_states[1],
                                      conv_v=conv_states[2])
        return y, new_state
