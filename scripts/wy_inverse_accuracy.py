"""How far the WY forward's A = (I + strict_tril(beta K K^T))^-1 lands from its float64 value when its four
[64, 64] products (A = Dinv - F A, F = Dinv E; wy_fwd_kernel) run in tf32 or in three tf32 passes, beside the
error of A's bf16 storage. tf32 is emulated on the CPU (operands rounded to 10 mantissa bits, nearest even,
products in float64); the diagonal blocks' inverses by the kernel's forward substitution in float32.
Two kinds of chunks: random unit keys with beta ~ U(0, 1), and nearly parallel unit keys with beta = 1.
Errors are max |A - A64| / max |A64| over 20 chunks of each kind.
Usage: python scripts/wy_inverse_accuracy.py OUT.json
"""

import json
import sys

import torch


def tf32(x: torch.Tensor) -> torch.Tensor:
    bits = x.float().view(torch.int32)
    bits = (bits + 0x0FFF + ((bits >> 13) & 1)) & ~0x1FFF
    return bits.view(torch.float32)


def product(a: torch.Tensor, b: torch.Tensor, precision: str) -> torch.Tensor:
    if precision == "tf32":
        return (tf32(a).double() @ tf32(b).double()).float()
    ah, bh = tf32(a).double(), tf32(b).double()  # tf32x3: the big parts' product and both cross terms
    return (ah @ bh + ah @ tf32(b - bh.float()).double() + tf32(a - ah.float()).double() @ bh).float()


def diagonal_inverse(L: torch.Tensor) -> torch.Tensor:
    r = torch.arange(64)
    block = (r[:, None] // 16) == (r[None, :] // 16)
    M = -torch.where(block & (r[:, None] > r[None, :]), L, 0.0)
    X = M.clone()
    for i in range(1, 16):
        sel = (r % 16) == i
        m = torch.where(sel[:, None], M, 0.0).sum(0)
        X = torch.where(sel[:, None] & block, (m + (m[:, None] * X).sum(0))[None, :], X)
    return X + torch.eye(64)


def kernel_a(L: torch.Tensor, precision: str) -> torch.Tensor:
    r = torch.arange(64)
    dinv = diagonal_inverse(L)
    F = product(dinv, torch.where((r[:, None] // 16) > (r[None, :] // 16), L, 0.0), precision)
    A = dinv
    for _ in range(3):
        A = dinv - product(F, A, precision)
    return A


def chunk(kind: str, gen: torch.Generator):
    if kind == "parallel":
        k = torch.randn(1, 128, generator=gen) + 0.05 * torch.randn(64, 128, generator=gen)
        beta = torch.ones(64)
    else:
        k = torch.randn(64, 128, generator=gen)
        beta = torch.rand(64, generator=gen)
    k = torch.nn.functional.normalize(k, dim=-1).bfloat16().float()
    L = torch.tril(beta[:, None] * (k.double() @ k.double().T), -1).float()
    return L, torch.linalg.inv(torch.eye(64, dtype=torch.float64) + L.double())


def main(out: str) -> None:
    gen = torch.Generator().manual_seed(0)
    report = {"chunks_per_kind": 20, "errors": {}}
    for kind in ("random", "parallel"):
        worst = {"tf32": 0.0, "tf32x3": 0.0, "bf16_storage": 0.0}
        for _ in range(20):
            L, exact = chunk(kind, gen)
            scale = exact.abs().max().item()
            for precision in ("tf32", "tf32x3"):
                err = (kernel_a(L, precision).double() - exact).abs().max().item() / scale
                worst[precision] = max(worst[precision], err)
            stored = (exact.float().bfloat16().double() - exact).abs().max().item() / scale
            worst["bf16_storage"] = max(worst["bf16_storage"], stored)
        report["errors"][kind] = worst
        print(kind, "  ".join(f"{name} {err:.2e}" for name, err in worst.items()))
    with open(out, "w") as f:
        json.dump(report, f, indent=1)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(sys.argv[1])
