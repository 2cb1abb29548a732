"""`assocmem hopfield retrieve`: store real images, query with masked or noisy ones, look at the fixed points.

The images are scikit-learn's bundled handwritten digits (8x8, 1797 of them; no download), scaled to
[-1, 1]. `per_class` images of every digit are stored; each query is a stored image with its lower half
blanked ("masked") or with Gaussian noise added ("noisy"), updated by ξ ← X softmax(β Xᵀξ) until it stops
moving. The weights softmax(β Xᵀξ) at the fixed point say which of the paper's three kinds it is:
- global: an average over (almost) all stored images (effective count 1 / Σ p² ≥ N / 2),
- metastable: an average over a few similar images (between 1.5 and N / 2),
- single: one stored image (below 1.5).
"""

from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from ..ops.hopfield import association, retrieve


@dataclass
class RetrieveSetup:
    per_class: int = 20
    betas: tuple[float, ...] = (0.1, 0.5, 0.8, 3.0)
    noise: float = 0.6
    steps: int = 20
    queries_shown: int = 6
    seed: int = 0


def load_digits_patterns(per_class: int, seed: int):
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = torch.tensor(digits.data, dtype=torch.float32) / 8.0 - 1.0  # [1797, 64] in [-1, 1]
    labels = torch.tensor(digits.target)
    g = torch.Generator().manual_seed(seed)
    chosen = []
    for c in range(10):
        idx = (labels == c).nonzero().flatten()
        chosen.append(idx[torch.randperm(len(idx), generator=g)[:per_class]])
    chosen = torch.cat(chosen)
    return images[chosen], labels[chosen]


def kind_of(weights: torch.Tensor, N: int) -> list[str]:
    effective = 1.0 / weights.pow(2).sum(-1)
    return ["global" if e >= N / 2 else "metastable" if e >= 1.5 else "single" for e in effective.tolist()]


def run(setup: RetrieveSetup, out: Path | None, plot: bool = True) -> dict:
    X, labels = load_digits_patterns(setup.per_class, setup.seed)
    N = X.shape[0]
    g = torch.Generator().manual_seed(setup.seed + 1)
    masked = X.clone().view(N, 8, 8)
    masked[:, 4:] = 0.0
    masked = masked.view(N, 64)
    noisy = X + setup.noise * torch.randn(X.shape, generator=g)
    rows, shown = [], {}
    for name, queries in (("masked", masked), ("noisy", noisy)):
        for beta in setup.betas:
            fixed = retrieve(queries[None], X[None], beta=beta, steps=setup.steps, tol=1e-5)[0]
            weights = association(fixed[None], X[None], beta=beta)[0]
            kinds = kind_of(weights, N)
            nearest = (fixed @ X.T).argmax(-1)
            same_image = (nearest == torch.arange(N)).float().mean().item()
            # mass of the weights on the query's own digit class
            own = (weights * (labels[None, :] == labels[:, None])).sum(-1).mean().item()
            error = ((fixed - X).norm(dim=-1) / X.norm(dim=-1)).mean().item()
            row = {
                "query": name, "beta": beta, "stored": N,
                "global": kinds.count("global") / N, "metastable": kinds.count("metastable") / N,
                "single": kinds.count("single") / N,
                "effective_patterns_median": (1.0 / weights.pow(2).sum(-1)).median().item(),
                "weight_on_own_class": own, "nearest_is_the_original": same_image,
                "relative_error_to_original": error,
            }  # fmt: skip
            rows.append(row)
            shown[(name, beta)] = fixed[0 : setup.queries_shown * setup.per_class : setup.per_class]
            print(
                f"{name:6s} β={beta:<6g} global {row['global']:.0%}  metastable {row['metastable']:.0%}  "
                f"single {row['single']:.0%}  effective patterns {row['effective_patterns_median']:.1f}  "
                f"own class {own:.0%}  original recovered {same_image:.0%}",
                flush=True,
            )
    result = {"experiment": "hopfield_retrieve", "data": "scikit-learn digits (8x8)", "setup": asdict(setup),
              "rows": rows}  # fmt: skip
    if out is not None:
        from ..bench.common import save_results

        pick = slice(0, setup.queries_shown * setup.per_class, setup.per_class)  # one image of each digit
        originals = X[pick]
        queries = {"masked": masked[pick], "noisy": noisy[pick]}
        save_results(result, out, (lambda png: _plot(originals, queries, shown, setup, png)) if plot else None)
    return result


def _plot(originals, queries, shown, setup, path):
    from ..bench.common import pyplot

    plt = pyplot()
    if plt is None:
        return None
    n = originals.shape[0]
    cols = 2 + len(setup.betas)
    fig, axes = plt.subplots(2 * n, cols, figsize=(1.3 * cols, 1.3 * 2 * n))
    for block, name in enumerate(("masked", "noisy")):
        for i in range(n):
            r = block * n + i
            images = [originals[i], queries[name][i]] + [shown[(name, b)][i] for b in setup.betas]
            titles = ["stored", f"{name} query"] + [f"β={b:g}" for b in setup.betas]
            for c, (img, title) in enumerate(zip(images, titles)):
                ax = axes[r, c]
                ax.imshow(img.view(8, 8).numpy(), cmap="gray_r", vmin=-1, vmax=1)
                ax.set_xticks([])
                ax.set_yticks([])
                if r == 0 or (block == 1 and i == 0):
                    ax.set_title(title, fontsize=7)
    fig.suptitle("query → fixed point: global average (small β), metastable (medium), single image (large)",
                 fontsize=8)  # fmt: skip
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
