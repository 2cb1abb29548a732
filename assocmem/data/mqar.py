"""Multi-query associative recall (MQAR), the synthetic recall task of the Zoology / "Based" line of work.

A sequence of `seq_len` tokens starts with `num_kv_pairs` key–value pairs (k1 v1 k2 v2 ...). The rest of
the sequence is filler, except that every key is asked again once, at a position drawn from a power law
that favours short distances (P(gap = g) ∝ g^(a - 1), a = `power_a`, gaps in whole pairs and distinct):
the model must then predict the key's value as the next token. The loss and the accuracy count only those
`num_kv_pairs` answers per sequence (the label is -100 everywhere else).

Keys come from the lower half of the vocabulary and values from the upper half (token 0 excluded from
both); the keys of one sequence are distinct, values may repeat. The filler is token 0, as in the Zoology
configurations behind the DeltaNet paper's Figure 2 (`random_non_queries=False`); with `random_fillers`
it is drawn uniformly from the whole vocabulary instead, so that a filler can look like a key (never
scored). That variant is much harder for the delta rule: every token writes to the memory, and writes
under random keys erase what earlier writes stored, where linear attention only adds noise.
Everything is a function of the arguments: the same seed gives the same tensors.
"""

from dataclasses import dataclass

import torch

IGNORE = -100


@dataclass
class MQAR:
    inputs: torch.Tensor  # [N, seq_len] int64
    labels: torch.Tensor  # [N, seq_len] int64, IGNORE except at the answers (label at t = token t + 1)

    def __len__(self) -> int:
        return self.inputs.shape[0]


def _check(name: str, value: int, low: int):
    if not isinstance(value, int) or value < low:
        raise ValueError(f"mqar: `{name}` must be an integer >= {low}, got {value!r}")


def mqar(
    num_examples: int,
    *,
    vocab_size: int = 8192,
    seq_len: int = 512,
    num_kv_pairs: int = 64,
    power_a: float = 0.01,
    seed: int = 0,
    random_fillers: bool = False,
    device: str | torch.device = "cpu",
) -> MQAR:
    """`num_examples` MQAR sequences; see the module docstring for the layout.

    `device`: where the tensors are drawn and live (a CUDA device draws a training stream in microseconds;
    the same seed gives the same tensors on one kind of device, not across kinds)."""
    _check("num_examples", num_examples, 1)
    _check("vocab_size", vocab_size, 4)
    _check("seq_len", seq_len, 4)
    _check("num_kv_pairs", num_kv_pairs, 1)
    if not 0 < power_a <= 1:
        raise ValueError(f"mqar: `power_a` must be in (0, 1], got {power_a}")
    half = vocab_size // 2
    if num_kv_pairs > half - 1:
        raise ValueError(
            f"mqar: `num_kv_pairs` ({num_kv_pairs}) must be below vocab_size / 2 ({half}): keys are distinct"
        )
    context = 2 * num_kv_pairs
    slots = (seq_len - context) // 2  # query slots: a key at an even offset after the context, its value next
    if slots < num_kv_pairs:
        raise ValueError(
            f"mqar: seq_len ({seq_len}) too short for {num_kv_pairs} pairs and their queries: "
            f"needs at least {4 * num_kv_pairs}"
        )
    device = torch.device(device)
    g = torch.Generator(device).manual_seed(seed)
    N, P = num_examples, num_kv_pairs
    # Distinct keys per sequence, in random order: the P largest of half-1 uniform draws (a random P-subset).
    keys = torch.rand(N, half - 1, generator=g, device=device).topk(P, dim=1).indices + 1
    values = torch.randint(half, vocab_size, (N, P), generator=g, device=device)
    # Query slots: P distinct slots per sequence, slot s drawn with weight (s + 1)^(a - 1).
    weights = torch.arange(1, slots + 1, dtype=torch.float64, device=device) ** (power_a - 1)
    gaps = torch.multinomial(weights.expand(N, slots), P, replacement=False, generator=g)
    if random_fillers:
        inputs = torch.randint(0, vocab_size, (N, seq_len), generator=g, device=device)
    else:
        inputs = torch.zeros(N, seq_len, dtype=torch.int64, device=device)
    labels = torch.full((N, seq_len), IGNORE, dtype=torch.int64, device=device)
    inputs[:, 0:context:2] = keys
    inputs[:, 1:context:2] = values
    at = context + 2 * gaps  # where each key is asked again
    inputs.scatter_(1, at, keys)
    inputs.scatter_(1, at + 1, values)
    labels.scatter_(1, at, values)  # the token after the repeated key is its value
    return MQAR(inputs, labels)
