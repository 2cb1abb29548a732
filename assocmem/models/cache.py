"""The generation cache of our language models: one decoding state per layer.

DeltaNet layers keep their recurrent state and short-convolution inputs (constant size); attention
layers keep keys and values (all of them, or the last window_size - 1 for sliding windows).
"""

import torch

from ..layers import AttentionState, DeltaNetState


class AssocMemCache:
    """States of every layer after `seen_tokens` tokens (padding included) of a batch."""

    def __init__(self, num_layers: int):
        self.states: list[DeltaNetState | AttentionState | None] = [None] * num_layers
        self.seen_tokens = 0

    def __len__(self) -> int:
        return len(self.states)

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return self.seen_tokens

    def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
        """Keep batch rows `beam_idx` of every state (used by beam search)."""
        for state in self.states:
            if state is not None:
                state.select(beam_idx)

    def __repr__(self) -> str:
        kinds = [type(s).__name__ if s is not None else None for s in self.states]
        return f"AssocMemCache(seen_tokens={self.seen_tokens}, states={kinds})"
