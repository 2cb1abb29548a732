"""`assocmem hopfield capacity`: how many random patterns each kind of Hopfield network retrieves.

Networks (all store the same random patterns ξ_μ ∈ {-1, +1}^d, μ = 1..N):
- classical: Hebbian weights W = Σ ξ ξᵀ / d with zero diagonal, synchronous sign updates;
- dense associative memory (Krotov and Hopfield): energy -Σ_μ F(ξ_μᵀx), each unit set to the sign that
  lowers it, F(z) = z^n ("poly", n = 3) or F(z) = exp(z) ("exp"), synchronous sweeps;
- modern continuous (Ramsauer et al.): one update ξ ← X softmax(β Xᵀξ) (`assocmem.ops.hopfield.retrieve`).

A query is a stored pattern with a fraction of its signs flipped; a retrieval succeeds when the network
ends on the stored pattern exactly (for the continuous network: the signs of its result). The capacity at
(d, β) is the largest N on the grid at which at least `threshold` of the queries succeed.

Theorem 3 of the modern-Hopfield paper gives a lower bound for patterns on a sphere of radius M = K √(d-1)
(±1 patterns have M = √d): with failure probability p, a = 2/(d-1) (1 + ln(2 β K² p (d-1))),
b = 2 K² β / 5 and c = b / W₀(exp(a + ln b)) (W₀: the principal branch of Lambert W), at least
√p c^((d-1)/4) patterns can be stored, provided c ≥ (2/√p)^(4/(d-1)).
"""

import math
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from ..ops.hopfield import retrieve

KINDS = ("classical", "dense-poly", "dense-exp", "modern")


@dataclass
class CapacitySetup:
    dims: tuple[int, ...] = (8, 12, 16, 20, 24, 28, 32)
    betas: tuple[float, ...] = (1.0, 4.0, 16.0)
    kinds: tuple[str, ...] = KINDS
    flip: float = 0.1
    queries: int = 50
    threshold: float = 0.9
    max_patterns: int = 2**18
    poly_degree: int = 3
    sweeps: int = 10
    seed: int = 0
    failure_probability: float = 0.1


def theorem3_bound(d: int, beta: float, K: float = 1.0, p: float = 0.1) -> float | None:
    """√p c^((d-1)/4), or None where the theorem's condition on c does not hold."""
    from scipy.special import lambertw

    a = 2.0 / (d - 1) * (1.0 + math.log(2.0 * beta * K * K * p * (d - 1)))
    b = 2.0 * K * K * beta / 5.0
    c = b / lambertw(math.exp(a + math.log(b))).real
    if c < (2.0 / math.sqrt(p)) ** (4.0 / (d - 1)):
        return None
    return math.sqrt(p) * c ** ((d - 1) / 4.0)


def _patterns(N, d, generator):
    return torch.randint(0, 2, (N, d), generator=generator, dtype=torch.float64) * 2 - 1


def _queries(X, n, flip, generator):
    """n stored patterns (indices) with round(flip * d) signs flipped each."""
    N, d = X.shape
    idx = torch.randint(0, N, (n,), generator=generator)
    q = X[idx].clone()
    k = max(1, round(flip * d))
    for row in range(n):
        pos = torch.randperm(d, generator=generator)[:k]
        q[row, pos] *= -1
    return idx, q


def _sign(x):
    return torch.where(x >= 0, 1.0, -1.0).to(x.dtype)


def _classical(X, q, sweeps):
    d = X.shape[1]
    W = X.T @ X / d
    W.fill_diagonal_(0)
    for _ in range(sweeps):
        new = _sign(q @ W)
        if torch.equal(new, q):
            break
        q = new
    return q


def _dense(X, q, sweeps, kind, degree, chunk=8):
    """Synchronous sweeps: unit i takes the sign s that maximises Σ_μ F(ξ_μᵀx with x_i = s)."""
    out = []
    for part in q.split(chunk):
        x = part
        for _ in range(sweeps):
            overlap = x @ X.T  # [Q, N]
            # overlap without unit i, for every i: [Q, N, d]
            rest = overlap[:, :, None] - X[None] * x[:, None, :]
            plus, minus = rest + X[None], rest - X[None]
            if kind == "dense-poly":
                gain = (plus.pow(degree) - minus.pow(degree)).sum(1)
            else:
                gain = torch.logsumexp(plus, 1) - torch.logsumexp(minus, 1)
            new = _sign(gain)
            if torch.equal(new, x):
                break
            x = new
        out.append(x)
    return torch.cat(out)


def _modern(X, q, beta):
    out = retrieve(q[None].float(), X[None].float(), beta=beta)[0]
    return _sign(out.double())


def success_rate(kind, N, d, beta, setup: CapacitySetup, generator) -> float:
    X = _patterns(N, d, generator)
    idx, q = _queries(X, setup.queries, setup.flip, generator)
    if kind == "classical":
        out = _classical(X, q, setup.sweeps)
    elif kind.startswith("dense"):
        out = _dense(X, q, setup.sweeps, kind, setup.poly_degree)
    elif kind == "modern":
        out = _modern(X, q, beta)
    else:
        raise ValueError(f"capacity: unknown network kind {kind!r}; expected one of {KINDS}")
    return (out == X[idx]).all(1).double().mean().item()


def _grid(max_patterns):
    n, grid = 2.0, []
    while round(n) <= max_patterns:
        if not grid or round(n) != grid[-1]:
            grid.append(round(n))
        n *= 2**0.5
    return grid


def capacity_curve(kind, d, beta, setup: CapacitySetup):
    """Success rate over the N grid (stopping two points after it falls below the threshold)."""
    generator = torch.Generator().manual_seed(setup.seed * 100003 + d * 101 + int((beta or 0) * 7) + KINDS.index(kind))
    points, below = [], 0
    for N in _grid(setup.max_patterns):
        if kind.startswith("dense") and N * d * setup.queries > 4e8:
            break  # the [queries, N, d] sweep would not fit a laptop's memory and time
        rate = success_rate(kind, N, d, beta, setup, generator)
        points.append({"N": N, "success": rate})
        below = below + 1 if rate < setup.threshold else 0
        if below >= 2:
            break
    ok = [p["N"] for p in points if p["success"] >= setup.threshold]
    reached_end = bool(points) and points[-1]["success"] >= setup.threshold
    return {"curve": points, "capacity": max(ok) if ok else 0, "capacity_is_lower_bound": reached_end}


def run(setup: CapacitySetup, out: Path | None, plot: bool = True) -> dict:
    torch.manual_seed(setup.seed)
    rows = []
    for d in setup.dims:
        for kind in setup.kinds:
            betas = setup.betas if kind == "modern" else (None,)
            for beta in betas:
                res = capacity_curve(kind, d, beta, setup)
                row = {"kind": kind, "d": d, "beta": beta, **res}
                if kind == "modern":
                    row["theorem3_bound"] = theorem3_bound(d, beta, K=math.sqrt(d / (d - 1)),
                                                           p=setup.failure_probability)  # fmt: skip
                rows.append(row)
                more = "≥" if res["capacity_is_lower_bound"] else ""
                label = kind if beta is None else f"{kind} β={beta:g}"
                print(f"d={d:3d}  {label:18s} capacity {more}{res['capacity']}", flush=True)
    result = {"experiment": "hopfield_capacity", "setup": asdict(setup), "rows": rows}
    if out is not None:
        from ..bench.common import save_results

        save_results(result, out, (lambda png: _plot(rows, setup, png)) if plot else None)
    return result


def _plot(rows, setup, path):
    from ..bench.common import pyplot

    plt = pyplot()
    if plt is None:
        return None
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for i, (kind, beta) in enumerate(sorted({(r["kind"], r["beta"] or 0.0) for r in rows})):
        sel = sorted((r for r in rows if r["kind"] == kind and (r["beta"] or 0.0) == beta), key=lambda r: r["d"])
        label = kind if kind != "modern" else f"modern, β={beta:g}"
        ds = [r["d"] for r in sel]
        ax.plot(ds, [max(r["capacity"], 1) for r in sel], marker="o", color=f"C{i}", label=label)
        for r in sel:
            if r["capacity_is_lower_bound"]:
                ax.annotate("≥", (r["d"], r["capacity"]), color=f"C{i}", fontsize=8)
        if kind == "modern":
            bound = [(r["d"], r["theorem3_bound"]) for r in sel if r["theorem3_bound"]]
            if bound:
                ax.plot(*zip(*bound), ":", color=f"C{i}", label=f"Theorem 3 bound, β={beta:g}")
    ax.set_yscale("log", base=2)
    ax.set_xlabel("pattern dimension d")
    ax.set_ylabel(f"patterns retrieved ({setup.threshold:.0%} of queries, {setup.flip:.0%} flipped)")
    ax.set_title("storage capacity: classical, dense and modern Hopfield networks")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
