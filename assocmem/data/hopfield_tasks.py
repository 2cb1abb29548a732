"""Two small classification tasks for Hopfield layers, generated in code and deterministic by seed.

- Bit-pattern multiple-instance learning: a bag is a set of random ±1 bit patterns; a bag is positive
  when one of its instances is the task's hidden signal pattern.
- Latch: a sequence of one-hot tokens whose first token (one of two signal tokens) decides the class;
  every later token is noise drawn from the rest of the vocabulary. The model must hold on to one early
  token among many.
"""

from dataclasses import dataclass

import torch


@dataclass
class SetTask:
    inputs: torch.Tensor  # [N, set size, features]
    labels: torch.Tensor  # [N] int64


def bit_pattern_mil(
    num_bags: int, *, bag_size: int = 8, bits: int = 16, seed: int = 0, signal_seed: int = 1234
) -> SetTask:
    """Bags [num_bags, bag_size, bits] of ±1 patterns; half the bags hold the signal pattern once."""
    signal = torch.randint(0, 2, (bits,), generator=torch.Generator().manual_seed(signal_seed)) * 2.0 - 1
    g = torch.Generator().manual_seed(seed)
    bags = torch.randint(0, 2, (num_bags, bag_size, bits), generator=g) * 2.0 - 1
    # A random instance equal to the signal would make a "negative" bag positive: flip one bit.
    clash = (bags == signal).all(-1)
    bags[clash, 0] = -bags[clash, 0]
    labels = torch.randint(0, 2, (num_bags,), generator=g)
    where = torch.randint(0, bag_size, (num_bags,), generator=g)
    positive = labels.bool()
    bags[positive, where[positive]] = signal
    return SetTask(bags, labels)


def latch(num_sequences: int, *, length: int = 20, vocab: int = 12, seed: int = 0) -> SetTask:
    """One-hot sequences [num_sequences, length, vocab]; token 0 or 1 first (the label), noise after."""
    if vocab < 3:
        raise ValueError(f"latch: `vocab` must be at least 3 (two signal tokens and noise), got {vocab}")
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 2, (num_sequences,), generator=g)
    tokens = torch.randint(2, vocab, (num_sequences, length), generator=g)
    tokens[:, 0] = labels
    return SetTask(torch.nn.functional.one_hot(tokens, vocab).float(), labels)
