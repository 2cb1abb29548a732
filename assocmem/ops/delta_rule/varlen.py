"""Packed variable-length sequences (`cu_seqlens`) to a zero-padded batch and back.

Padding is harmless to the delta rule: a padded step has beta = 0 and k = 0, so it leaves the state
unchanged, and the state after the padding is the state after the sequence's last token.
"""

import torch


class VarlenIndex:
    """Where each packed token goes in the padded batch [N, T_max, ...]."""

    def __init__(self, cu_seqlens: torch.Tensor):
        cu_seqlens = cu_seqlens.long()
        lengths = cu_seqlens[1:] - cu_seqlens[:-1]
        self.num_seqs = lengths.shape[0]
        self.max_len = int(lengths.max()) if self.num_seqs else 0
        self.total = int(cu_seqlens[-1])
        self.seq_id = torch.repeat_interleave(torch.arange(self.num_seqs, device=cu_seqlens.device), lengths)
        self.pos = torch.arange(self.total, device=cu_seqlens.device) - cu_seqlens[self.seq_id]

    def pad(self, x_1T: torch.Tensor) -> torch.Tensor:
        """[1, T_total, ...] -> [N, T_max, ...], zeros where no token is."""
        out = x_1T.new_zeros(self.num_seqs, self.max_len, *x_1T.shape[2:])
        out[self.seq_id, self.pos] = x_1T[0]
        return out

    def unpad(self, x_NT: torch.Tensor) -> torch.Tensor:
        """[N, T_max, ...] -> [1, T_total, ...]."""
        return x_NT[self.seq_id, self.pos][None]
