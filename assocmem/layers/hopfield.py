"""Hopfield layers: associate two sets (Hopfield), pool a set with learned queries (HopfieldPooling),
look up a learned memory (HopfieldLayer). All retrieve through `assocmem.ops.hopfield.retrieve`.

Legend: B batch, L state patterns, S stored patterns, H heads, d head size, e value head size.
"""

import math

import torch
import torch.nn as nn

from ..ops.hopfield import association, retrieve


class Hopfield(nn.Module):
    """Associate state patterns R [B, L, state_size] with stored patterns Y [B, S, stored_size].

    Per head: ξ = W_Q R, X = W_K Y, X_v = W_V Y (values default to Y), then `steps` updates
    ξ ← X softmax(β Xᵀξ), the last reading out through X_v; heads are concatenated and, if
    `out_proj`, projected to `output_size`.

    Args:
        state_size: size of the state patterns R.
        stored_size: size of the stored patterns Y (default: state_size).
        value_size: size of the value patterns (default: stored_size).
        num_heads, head_size: heads and the size of the association space per head
            (default head_size: state_size // num_heads).
        value_head_size: size of each head's read-out (default: head_size).
        output_size: size after the output projection (default: state_size).
        beta: inverse temperature; default 1 / sqrt(head_size).
        learn_beta: learn one beta per head (kept positive through its logarithm).
        steps, tol, grad: as in `retrieve`: the number of updates (the cap when `tol` is set),
            the early-stopping tolerance, and "all" or "last" for the updates backpropagated through.
        normalize_state, normalize_stored, normalize_values: LayerNorm on R, Y and the value
            patterns before their projections.
        normalize_projected: LayerNorm on ξ and X (per head) after the projections.
        project_state, project_stored, project_values: False uses the patterns as they are
            ("static" patterns): their size must then be num_heads * head_size (value_head_size).
        out_proj: apply the output projection; without it the output has num_heads * value_head_size.
        bias: biases in the projections.
        dropout: dropout on the association weights.
    """

    def __init__(
        self,
        state_size: int,
        *,
        stored_size: int | None = None,
        value_size: int | None = None,
        num_heads: int = 1,
        head_size: int | None = None,
        value_head_size: int | None = None,
        output_size: int | None = None,
        beta: float | None = None,
        learn_beta: bool = False,
        steps: int = 1,
        tol: float | None = None,
        grad: str = "all",
        normalize_state: bool = True,
        normalize_stored: bool = True,
        normalize_values: bool = True,
        normalize_projected: bool = False,
        project_state: bool = True,
        project_stored: bool = True,
        project_values: bool = True,
        out_proj: bool = True,
        bias: bool = True,
        dropout: float = 0.0,
    ):
        super().__init__()
        for name, value in (("state_size", state_size), ("num_heads", num_heads)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"Hopfield: `{name}` must be a positive integer, got {value!r}")
        stored_size = state_size if stored_size is None else stored_size
        value_size = stored_size if value_size is None else value_size
        if head_size is None:
            if state_size % num_heads:
                raise ValueError(
                    f"Hopfield: `num_heads` ({num_heads}) must divide `state_size` ({state_size}) "
                    "unless `head_size` is given"
                )
            head_size = state_size // num_heads
        value_head_size = head_size if value_head_size is None else value_head_size
        output_size = state_size if output_size is None else output_size
        for name, value in (
            ("stored_size", stored_size),
            ("value_size", value_size),
            ("head_size", head_size),
            ("value_head_size", value_head_size),
            ("output_size", output_size),
        ):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"Hopfield: `{name}` must be a positive integer, got {value!r}")
        if beta is not None and not (isinstance(beta, (int, float)) and beta > 0 and math.isfinite(beta)):
            raise ValueError(f"Hopfield: `beta` must be a positive number or None, got {beta!r}")
        if not isinstance(steps, int) or steps < 1:
            raise ValueError(f"Hopfield: `steps` must be an integer >= 1, got {steps!r}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"Hopfield: `dropout` must be in [0, 1), got {dropout!r}")
        if grad not in ("all", "last"):
            raise ValueError(f"Hopfield: `grad` must be 'all' or 'last', got {grad!r}")
        inner, inner_v = num_heads * head_size, num_heads * value_head_size
        for flag, name, size, needed in (
            (project_state, "state_size", state_size, inner),
            (project_stored, "stored_size", stored_size, inner),
            (project_values, "value_size", value_size, inner_v),
        ):
            if not flag and size != needed:
                raise ValueError(
                    f"Hopfield: without its projection `{name}` must equal num_heads * head size = {needed}, got {size}"
                )

        self.num_heads, self.head_size, self.value_head_size = num_heads, head_size, value_head_size
        self.steps, self.tol, self.grad, self.dropout = steps, tol, grad, dropout
        self.norm_state = nn.LayerNorm(state_size) if normalize_state else nn.Identity()
        self.norm_stored = nn.LayerNorm(stored_size) if normalize_stored else nn.Identity()
        self.norm_values = nn.LayerNorm(value_size) if normalize_values else nn.Identity()
        self.q_proj = nn.Linear(state_size, inner, bias=bias) if project_state else nn.Identity()
        self.k_proj = nn.Linear(stored_size, inner, bias=bias) if project_stored else nn.Identity()
        self.v_proj = nn.Linear(value_size, inner_v, bias=bias) if project_values else nn.Identity()
        self.norm_projected = nn.LayerNorm(head_size) if normalize_projected else nn.Identity()
        self.out_proj = nn.Linear(inner_v, output_size, bias=bias) if out_proj else nn.Identity()
        self.output_size = output_size if out_proj else inner_v

        beta = 1.0 / math.sqrt(head_size) if beta is None else float(beta)
        if learn_beta:
            self.log_beta = nn.Parameter(torch.full((num_heads,), math.log(beta)))
        else:
            self.register_buffer("log_beta", torch.full((num_heads,), math.log(beta)), persistent=False)
        self.learn_beta = learn_beta

    @property
    def beta(self) -> torch.Tensor:
        """The inverse temperature of each head, [H]."""
        return self.log_beta.exp()

    def _split(self, x, size):
        return x.reshape(*x.shape[:2], self.num_heads, size)

    def forward(
        self,
        state: torch.Tensor,
        stored: torch.Tensor | None = None,
        values: torch.Tensor | None = None,
        *,
        mask: torch.Tensor | None = None,
        return_association: bool = False,
    ):
        """state [B, L, state_size]; stored [B, S, stored_size] (default: state, self-association);
        values [B, S, value_size] (default: stored); mask bool [B, S] or [B, L, S], True = may be
        retrieved. Returns [B, L, output_size], and the association matrix [B, H, L, S] of the last
        update if `return_association`.
        """
        stored = state if stored is None else stored
        values = stored if values is None else values
        for name, x in (("state", state), ("stored", stored), ("values", values)):
            if not isinstance(x, torch.Tensor) or x.dim() != 3:
                shape = list(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
                raise ValueError(f"Hopfield: `{name}` must be a 3-D tensor [B, N, size], got {shape}")
        if values.shape[:2] != stored.shape[:2]:
            raise ValueError(
                f"Hopfield: `values` must have the [B, S] of `stored` {list(stored.shape[:2])}, "
                f"got {list(values.shape)}"
            )
        xi = self.norm_projected(self._split(self.q_proj(self.norm_state(state)), self.head_size))
        X = self.norm_projected(self._split(self.k_proj(self.norm_stored(stored)), self.head_size))
        Xv = self._split(self.v_proj(self.norm_values(values)), self.value_head_size)
        beta = self.beta
        out = retrieve(
            xi,
            X,
            Xv,
            beta=beta,
            steps=self.steps,
            tol=self.tol,
            mask=mask,
            grad=self.grad,
            dropout=self.dropout if self.training else 0.0,
        )
        out = self.out_proj(out.reshape(*out.shape[:2], -1))
        if not return_association:
            return out
        if self.steps > 1:
            # The association of the last update is taken at the state the moving updates reached.
            with torch.no_grad():
                xi = retrieve(xi, X, beta=beta, steps=self.steps - 1, tol=self.tol, mask=mask)
        return out, association(xi, X, beta=beta, mask=mask)


class HopfieldPooling(nn.Module):
    """Pool a set Y [B, S, input_size] into `num_queries` vectors with learned state patterns.

    The learned queries live in the association space (num_heads * head_size); all other arguments are
    those of `Hopfield`. Returns [B, num_queries, output_size].
    """

    def __init__(
        self, input_size: int, *, num_queries: int = 1, num_heads: int = 1, head_size: int | None = None, **kw
    ):
        super().__init__()
        if not isinstance(num_queries, int) or num_queries < 1:
            raise ValueError(f"HopfieldPooling: `num_queries` must be a positive integer, got {num_queries!r}")
        head_size = head_size or max(1, input_size // num_heads)
        inner = num_heads * head_size
        self.hopfield = Hopfield(
            inner,
            stored_size=input_size,
            num_heads=num_heads,
            head_size=head_size,
            project_state=False,
            normalize_state=False,
            **kw,
        )
        self.queries = nn.Parameter(torch.randn(num_queries, inner) / math.sqrt(inner))
        self.output_size = self.hopfield.output_size

    def forward(self, stored, values=None, *, mask=None, return_association=False):
        """stored [B, S, input_size]; mask bool [B, S] (True = a member of the set)."""
        if not isinstance(stored, torch.Tensor) or stored.dim() != 3:
            raise ValueError(
                f"HopfieldPooling: `stored` must be [B, S, input_size], got {getattr(stored, 'shape', stored)}"
            )
        queries = self.queries.expand(stored.shape[0], *self.queries.shape)
        return self.hopfield(queries, stored, values, mask=mask, return_association=return_association)


class HopfieldLayer(nn.Module):
    """A learned lookup memory: each state pattern R [B, L, input_size] retrieves from `num_patterns`
    learned stored patterns and reads out their learned targets.

    All other arguments are those of `Hopfield`. Returns [B, L, output_size].
    """

    def __init__(
        self,
        input_size: int,
        *,
        num_patterns: int,
        num_heads: int = 1,
        head_size: int | None = None,
        value_head_size: int | None = None,
        **kw,
    ):
        super().__init__()
        if not isinstance(num_patterns, int) or num_patterns < 1:
            raise ValueError(f"HopfieldLayer: `num_patterns` must be a positive integer, got {num_patterns!r}")
        head_size = head_size or max(1, input_size // num_heads)
        value_head_size = value_head_size or head_size
        inner, inner_v = num_heads * head_size, num_heads * value_head_size
        self.hopfield = Hopfield(
            input_size,
            stored_size=inner,
            value_size=inner_v,
            num_heads=num_heads,
            head_size=head_size,
            value_head_size=value_head_size,
            project_stored=False,
            project_values=False,
            normalize_stored=False,
            normalize_values=False,
            **kw,
        )
        self.patterns = nn.Parameter(torch.randn(num_patterns, inner) / math.sqrt(inner))
        self.targets = nn.Parameter(torch.randn(num_patterns, inner_v) / math.sqrt(inner_v))
        self.output_size = self.hopfield.output_size

    def forward(self, state, *, return_association=False):
        """state [B, L, input_size]."""
        if not isinstance(state, torch.Tensor) or state.dim() != 3:
            raise ValueError(f"HopfieldLayer: `state` must be [B, L, input_size], got {getattr(state, 'shape', state)}")
        B, L = state.shape[:2]
        if not return_association:
            # Every state pattern looks up the same memory independently: fold the batch into one
            # sequence of B·L queries instead of copying the memory B times (and summing B gradients).
            out = self.hopfield(state.reshape(1, B * L, -1), self.patterns[None], self.targets[None])
            return out.reshape(B, L, -1)
        stored = self.patterns.expand(B, *self.patterns.shape)
        targets = self.targets.expand(B, *self.targets.shape)
        return self.hopfield(state, stored, targets, return_association=return_association)
