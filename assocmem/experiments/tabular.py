"""`assocmem tabular`: small tabular classification, a HopfieldLayer classifier against an SVM and a random forest.

Datasets: the ones scikit-learn ships (breast cancer, wine, iris, digits) and, where Debian's
`r-cran-mlbench` is installed (or its .rda files sit in `--mlbench-dir`; `scripts/fetch_mlbench.sh`
unpacks the Debian package without installing it), the UCI sets Sonar, Ionosphere, Glass, Vehicle,
PimaIndiansDiabetes and BreastCancer, read with the `rdata` package.

Protocol, the same for every method: stratified 5-fold cross-validation repeated twice; inside each
training fold the hyperparameters come from a small grid by 3-fold inner cross-validation (scikit-learn's
GridSearchCV for the SVM and the forest; the same split logic for the Hopfield classifier). Features are
standardised on the training fold. Reported: accuracy mean ± std over the 10 test folds and every method's
average rank over the datasets (1 = best).

The Hopfield classifier: x → HopfieldLayer (a learned memory of `num_patterns` stored patterns whose
targets are read out) → linear → class logits, trained full-batch with AdamW.
"""

import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..layers import HopfieldLayer

SKLEARN_SETS = ("breast_cancer", "wine", "iris", "digits")
MLBENCH_SETS = {
    "sonar": ("Sonar", "Class"),
    "ionosphere": ("Ionosphere", "Class"),
    "glass": ("Glass", "Type"),
    "vehicle": ("Vehicle", "Class"),
    "pima": ("PimaIndiansDiabetes", "diabetes"),
    "breast_cancer_wisconsin": ("BreastCancer", "Class"),
}
MLBENCH_DIRS = ("/usr/lib/R/site-library/mlbench/data", ".cache/mlbench/usr/lib/R/site-library/mlbench/data")
METHODS = ("hopfield", "svm", "random_forest")


@dataclass
class TabularSetup:
    datasets: tuple[str, ...] | None = None  # None: every set that is available
    folds: int = 5
    repeats: int = 2
    epochs: int = 200
    trees: int = 300
    seed: int = 0
    mlbench_dir: str | None = None


def find_mlbench(explicit: str | None = None) -> Path | None:
    for d in ([explicit] if explicit else []) + list(MLBENCH_DIRS):
        if d and (Path(d) / "Sonar.rda").exists():
            return Path(d)
    return None


def load_dataset(name: str, mlbench_dir: str | None = None):
    """(X float32 [n, features], y int64 [n] class indices)."""
    if name in SKLEARN_SETS:
        import sklearn.datasets as skd

        data = getattr(skd, f"load_{name}")()
        return data.data.astype(np.float32), data.target.astype(np.int64)
    if name not in MLBENCH_SETS:
        raise ValueError(f"tabular: unknown dataset {name!r}; expected one of {SKLEARN_SETS + tuple(MLBENCH_SETS)}")
    folder = find_mlbench(mlbench_dir)
    if folder is None:
        raise FileNotFoundError(
            "tabular: r-cran-mlbench's data not found (install it, or run scripts/fetch_mlbench.sh)"
        )
    import rdata

    file, target = MLBENCH_SETS[name]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        frame = next(iter(rdata.read_rda(str(folder / f"{file}.rda")).values()))
    frame = frame.drop(columns=[c for c in ("Id",) if c in frame.columns]).dropna()
    y = frame[target].astype("category").cat.codes.to_numpy().astype(np.int64)
    columns = []
    for col in frame.columns.drop(target):
        series = frame[col]
        if str(series.dtype) == "category":
            # ordered factors (BreastCancer) become their codes; unordered ones too (only binary ones here)
            series = series.cat.codes
        columns.append(series.to_numpy(dtype=np.float64))
    return np.stack(columns, 1).astype(np.float32), y


def available_datasets(mlbench_dir: str | None = None) -> tuple[str, ...]:
    return SKLEARN_SETS + (tuple(MLBENCH_SETS) if find_mlbench(mlbench_dir) else ())


class HopfieldClassifier(nn.Module):
    def __init__(self, features: int, classes: int, num_patterns: int, hidden: int, dropout: float):
        super().__init__()
        self.inp = nn.Linear(features, hidden)
        self.memory = HopfieldLayer(hidden, num_patterns=num_patterns, dropout=dropout)
        self.out = nn.Linear(self.memory.output_size, classes)

    def forward(self, x):
        return self.out(self.memory(self.inp(x)[:, None])[:, 0])


HOPFIELD_GRID = [{"num_patterns": p, "lr": lr} for p in (16, 64) for lr in (1e-2, 3e-3)]


def _fit_hopfield(Xtr, ytr, Xte, params, classes, setup, seed):
    torch.manual_seed(seed)
    model = HopfieldClassifier(Xtr.shape[1], classes, params["num_patterns"], 64, 0.1)
    opt = torch.optim.AdamW(model.parameters(), lr=params["lr"], weight_decay=1e-3)
    x, y = torch.from_numpy(Xtr), torch.from_numpy(ytr)
    for _ in range(setup.epochs):
        model.train()
        loss = nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        return model(torch.from_numpy(Xte)).argmax(-1).numpy()


def _hopfield_fold(Xtr, ytr, Xte, classes, setup, seed):
    from sklearn.model_selection import StratifiedKFold

    inner = StratifiedKFold(3, shuffle=True, random_state=seed)
    best, best_acc = None, -1.0
    for params in HOPFIELD_GRID:
        accs = [
            (_fit_hopfield(Xtr[a], ytr[a], Xtr[b], params, classes, setup, seed) == ytr[b]).mean()
            for a, b in inner.split(Xtr, ytr)
        ]
        if np.mean(accs) > best_acc:
            best, best_acc = params, float(np.mean(accs))
    return _fit_hopfield(Xtr, ytr, Xte, best, classes, setup, seed), best


def _sklearn_fold(method, Xtr, ytr, Xte, seed, trees):
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.model_selection import GridSearchCV, StratifiedKFold
    from sklearn.svm import SVC

    if method == "svm":
        model, grid = SVC(kernel="rbf"), {"C": [0.1, 1, 10, 100], "gamma": ["scale", 0.01]}
    else:
        model, grid = RandomForestClassifier(n_estimators=trees, random_state=seed), {"max_features": ["sqrt", 0.5]}
    search = GridSearchCV(model, grid, cv=StratifiedKFold(3, shuffle=True, random_state=seed))
    search.fit(Xtr, ytr)
    return search.predict(Xte), search.best_params_


def evaluate(name: str, setup: TabularSetup) -> dict:
    from sklearn.model_selection import RepeatedStratifiedKFold

    X, y = load_dataset(name, setup.mlbench_dir)
    classes = int(y.max()) + 1
    cv = RepeatedStratifiedKFold(n_splits=setup.folds, n_repeats=setup.repeats, random_state=setup.seed)
    accs = {m: [] for m in METHODS}
    start = time.time()
    for k, (tr, te) in enumerate(cv.split(X, y)):
        mean, std = X[tr].mean(0), X[tr].std(0) + 1e-6
        Xtr, Xte = (X[tr] - mean) / std, (X[te] - mean) / std
        seed = setup.seed * 1000 + k
        pred, _ = _hopfield_fold(Xtr, y[tr], Xte, classes, setup, seed)
        accs["hopfield"].append(float((pred == y[te]).mean()))
        for method in ("svm", "random_forest"):
            pred, _ = _sklearn_fold(method, Xtr, y[tr], Xte, seed, setup.trees)
            accs[method].append(float((pred == y[te]).mean()))
    row = {"dataset": name, "samples": int(len(y)), "features": int(X.shape[1]), "classes": classes,
           "seconds": time.time() - start}  # fmt: skip
    for m, a in accs.items():
        row[m] = {"accuracy_mean": float(np.mean(a)), "accuracy_std": float(np.std(a)), "fold_accuracies": a}
    return row


def average_ranks(rows) -> dict:
    ranks = {m: [] for m in METHODS}
    for row in rows:
        scores = np.array([row[m]["accuracy_mean"] for m in METHODS])
        order = (-scores).argsort(kind="stable")
        r = np.empty(len(METHODS))
        r[order] = np.arange(1, len(METHODS) + 1)
        for value in np.unique(scores):  # ties share their average rank
            r[scores == value] = r[scores == value].mean()
        for m, rank in zip(METHODS, r):
            ranks[m].append(float(rank))
    return {m: float(np.mean(v)) for m, v in ranks.items()}


def run(setup: TabularSetup, out: Path | None, plot: bool = True) -> dict:
    names = setup.datasets or available_datasets(setup.mlbench_dir)
    rows = []
    for name in names:
        row = evaluate(name, setup)
        rows.append(row)
        parts = "  ".join(f"{m} {row[m]['accuracy_mean'] * 100:5.1f}" for m in METHODS)
        print(f"{name:24s} {parts}   [{row['seconds']:.0f} s]", flush=True)
    ranks = average_ranks(rows)
    print("average rank: " + "  ".join(f"{m} {r:.2f}" for m, r in ranks.items()))
    result = {"experiment": "tabular", "setup": asdict(setup), "rows": rows, "average_rank": ranks,
              "mlbench": str(find_mlbench(setup.mlbench_dir))}  # fmt: skip
    if out is not None:
        from ..bench.common import save_results

        save_results(result, out, (lambda png: _plot(rows, ranks, png)) if plot else None)
    return result


def _plot(rows, ranks, path):
    from ..bench.common import pyplot

    plt = pyplot()
    if plt is None:
        return None
    names = [r["dataset"] for r in rows]
    fig, ax = plt.subplots(figsize=(1.1 * len(names) + 2, 3.8))
    w = 0.27
    for j, m in enumerate(METHODS):
        ax.bar([i + j * w for i in range(len(names))], [r[m]["accuracy_mean"] * 100 for r in rows], w,
               yerr=[r[m]["accuracy_std"] * 100 for r in rows], label=f"{m} (avg rank {ranks[m]:.2f})")  # fmt: skip
    ax.set_xticks([i + w for i in range(len(names))], names, rotation=30, ha="right", fontsize=7)
    ax.set_ylabel("accuracy %")
    ax.set_ylim(40, 100)
    ax.legend(fontsize=7)
    ax.set_title("small tabular data: 5-fold CV × 2")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
