"""`assocmem molecules`: the modern-Hopfield paper's drug-design experiment at our scale.

Data (no download): the MoleculeNet classification sets in `../shared/data/moleculenet/` as SMILES +
labels: HIV (41,127 molecules, 1 task), BACE (1,513, 1 task), BBBP (2,039, 1 task), SIDER (1,427, 27
tasks). Molecules RDKit cannot parse are dropped and counted.

Features: RDKit Morgan fingerprints (radius 2, 1024 bits, the ECFP4 family), one 0/1 vector per molecule.

Protocol, the same for every method: `splits` random stratified 80/10/10 train/validation/test splits
(stratified on the first task); hyperparameters chosen by validation ROC-AUC, the chosen model scored on
the test split. Reported: test ROC-AUC mean ± std over the splits (for SIDER the mean over its 27 tasks
per split). Methods:

- HopfieldLayer classifier: x → linear (hidden) → HopfieldLayer (learned stored patterns and their
  targets) → linear → one logit per task, binary cross-entropy, AdamW with mini-batches; the epoch with
  the best validation AUC is kept; grid over the number of stored patterns and the learning rate.
- SVM: RBF kernel, C from {1, 10}, one per task; on HIV it is trained on a stratified subsample of at most
  `svm_max_train` training molecules (kernel SVMs grow quadratically with the training set; recorded).
- Random forest: `trees` trees, multi-output over the tasks, max_features from {sqrt, 0.2}.
"""

import csv
import gzip
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..layers import HopfieldLayer

DATASETS = {  # file, SMILES column, label columns (None: every column but the SMILES)
    "hiv": ("HIV.csv.gz", "smiles", ["HIV_active"]),
    "bace": ("bace.csv", "mol", ["Class"]),
    "bbbp": ("BBBP.csv", "smiles", ["p_np"]),
    "sider": ("sider.csv", "smiles", None),
}
PAPER_AUC = {"hiv": 0.815, "bace": 0.902, "bbbp": 0.910, "sider": 0.672}
METHODS = ("hopfield", "svm", "random_forest")
DEFAULT_DATA_DIR = Path("../shared/data/moleculenet")


@dataclass
class MoleculeSetup:
    datasets: tuple[str, ...] = ("hiv", "bace", "bbbp", "sider")
    splits: int = 3
    bits: int = 1024
    radius: int = 2
    epochs: int = 30
    batch: int = 128
    trees: int = 500
    svm_max_train: int = 10000
    max_molecules: int | None = None  # cap per dataset (tests)
    seed: int = 0
    data_dir: str | None = None


def load(name: str, data_dir: str | Path | None = None, max_molecules: int | None = None):
    """(smiles list, labels [N, tasks] float32, task names) of one dataset."""
    if name not in DATASETS:
        raise ValueError(f"molecules: unknown dataset {name!r}; expected one of {sorted(DATASETS)}")
    file, smiles_col, label_cols = DATASETS[name]
    path = Path(data_dir or DEFAULT_DATA_DIR) / file
    if not path.exists():
        raise FileNotFoundError(f"molecules: {path} not found (pass --data-dir, the folder of the MoleculeNet CSVs)")
    opener = gzip.open if file.endswith(".gz") else open
    with opener(path, "rt", newline="") as f:
        rows = list(csv.DictReader(f))
    tasks = label_cols or [c for c in rows[0] if c != smiles_col]
    if max_molecules is not None:
        rows = rows[:max_molecules]
    smiles = [r[smiles_col] for r in rows]
    labels = np.array([[float(r[t]) for t in tasks] for r in rows], dtype=np.float32)
    return smiles, labels, tasks


def fingerprints(smiles: list[str], bits: int = 1024, radius: int = 2):
    """(features [M, bits] uint8, indices of the M molecules RDKit parsed)."""
    from rdkit import Chem, RDLogger
    from rdkit.Chem import rdFingerprintGenerator

    RDLogger.DisableLog("rdApp.*")  # unparsable SMILES are counted, not printed
    generator = rdFingerprintGenerator.GetMorganGenerator(radius=radius, fpSize=bits)
    feats, kept = [], []
    for i, s in enumerate(smiles):
        mol = Chem.MolFromSmiles(s)
        if mol is None:
            continue
        feats.append(generator.GetFingerprintAsNumPy(mol).astype(np.uint8))
        kept.append(i)
    return np.stack(feats) if feats else np.zeros((0, bits), np.uint8), np.array(kept, dtype=np.int64)


def split(labels: np.ndarray, seed: int):
    """A random 80/10/10 split stratified on the first task: (train, valid, test) index arrays."""
    from sklearn.model_selection import train_test_split

    idx = np.arange(len(labels))
    strat = labels[:, 0]
    train, rest = train_test_split(idx, test_size=0.2, random_state=seed, stratify=strat)
    valid, test = train_test_split(rest, test_size=0.5, random_state=seed, stratify=strat[rest])
    return train, valid, test


def mean_auc(y: np.ndarray, scores: np.ndarray) -> float:
    """ROC-AUC averaged over the tasks that have both classes in `y`."""
    from sklearn.metrics import roc_auc_score

    aucs = [roc_auc_score(y[:, t], scores[:, t]) for t in range(y.shape[1]) if 0 < y[:, t].sum() < len(y)]
    return float(np.mean(aucs)) if aucs else float("nan")


class HopfieldMoleculeClassifier(nn.Module):
    def __init__(self, features: int, tasks: int, num_patterns: int, hidden: int = 256, dropout: float = 0.1):
        super().__init__()
        self.inp = nn.Sequential(nn.Dropout(dropout), nn.Linear(features, hidden))
        self.memory = HopfieldLayer(hidden, num_patterns=num_patterns, dropout=dropout)
        self.out = nn.Linear(self.memory.output_size, tasks)

    def forward(self, x):
        return self.out(self.memory(self.inp(x)[:, None])[:, 0])


HOPFIELD_GRID = [{"num_patterns": p, "lr": lr} for p in (64, 512) for lr in (1e-3, 3e-4)]


def _scores(model, X, batch=4096):
    model.eval()
    with torch.no_grad():
        out = torch.cat([model(torch.from_numpy(X[i : i + batch]).float()) for i in range(0, len(X), batch)])
    model.train()
    return out.numpy()


def fit_hopfield(X, y, tr, va, params, setup: MoleculeSetup, seed: int):
    """Train on `tr`, keep the epoch with the best validation AUC; (model state, validation AUC)."""
    torch.manual_seed(seed)
    model = HopfieldMoleculeClassifier(X.shape[1], y.shape[1], params["num_patterns"])
    opt = torch.optim.AdamW(model.parameters(), lr=params["lr"], weight_decay=1e-2)
    g = torch.Generator().manual_seed(seed)
    Xtr, ytr = torch.from_numpy(X[tr]).float(), torch.from_numpy(y[tr])
    best_auc, best_state = -1.0, None
    for _ in range(setup.epochs):
        for b in torch.randperm(len(tr), generator=g).split(setup.batch):
            loss = nn.functional.binary_cross_entropy_with_logits(model(Xtr[b]), ytr[b])
            opt.zero_grad()
            loss.backward()
            opt.step()
        auc = mean_auc(y[va], _scores(model, X[va]))
        if auc > best_auc:
            best_auc, best_state = auc, {k: v.clone() for k, v in model.state_dict().items()}
    model.load_state_dict(best_state)
    return model, best_auc


def run_hopfield(X, y, tr, va, te, setup, seed):
    best = None
    for params in HOPFIELD_GRID:
        model, auc = fit_hopfield(X, y, tr, va, params, setup, seed)
        if best is None or auc > best[1]:
            best = (model, auc, params)
    model, _, params = best
    return mean_auc(y[te], _scores(model, X[te])), params


def run_svm(X, y, tr, va, te, setup, seed):
    from sklearn.svm import SVC

    rng = np.random.default_rng(seed)
    if len(tr) > setup.svm_max_train:  # stratified subsample on the first task
        pos, neg = tr[y[tr, 0] == 1], tr[y[tr, 0] != 1]
        n_pos = max(1, round(setup.svm_max_train * len(pos) / len(tr)))
        tr = np.concatenate([rng.choice(pos, n_pos, replace=False),
                             rng.choice(neg, setup.svm_max_train - n_pos, replace=False)])  # fmt: skip
    test_scores, chosen = np.zeros((len(te), y.shape[1])), []
    for t in range(y.shape[1]):
        if not 0 < y[tr, t].sum() < len(tr):  # one class only in training: a constant score
            chosen.append(None)
            continue
        best = None
        for C in (1.0, 10.0):
            model = SVC(kernel="rbf", C=C, random_state=seed).fit(X[tr], y[tr, t])
            auc = mean_auc(y[va][:, [t]], model.decision_function(X[va])[:, None])
            if best is None or auc > best[0]:
                best = (auc, C, model)
        chosen.append(best[1])
        test_scores[:, t] = best[2].decision_function(X[te])
    return mean_auc(y[te], test_scores), {"C": chosen if len(chosen) > 1 else chosen[0], "train": len(tr)}


def run_forest(X, y, tr, va, te, setup, seed):
    from sklearn.ensemble import RandomForestClassifier

    def proba(model, Xs):
        out = model.predict_proba(Xs)
        out = out if isinstance(out, list) else [out]
        return np.stack([p[:, 1] if p.shape[1] > 1 else np.zeros(len(Xs)) for p in out], 1)

    best = None
    for max_features in ("sqrt", 0.2):
        model = RandomForestClassifier(n_estimators=setup.trees, max_features=max_features, n_jobs=-1,
                                       random_state=seed)  # fmt: skip
        model.fit(X[tr], y[tr] if y.shape[1] > 1 else y[tr, 0])
        auc = mean_auc(y[va], proba(model, X[va]))
        if best is None or auc > best[0]:
            best = (auc, max_features, model)
    return mean_auc(y[te], proba(best[2], X[te])), {"max_features": best[1]}


RUNNERS = {"hopfield": run_hopfield, "svm": run_svm, "random_forest": run_forest}


def evaluate(name: str, setup: MoleculeSetup, log=print) -> dict:
    smiles, labels, tasks = load(name, setup.data_dir, setup.max_molecules)
    X, kept = fingerprints(smiles, setup.bits, setup.radius)
    y = labels[kept]
    row = {"dataset": name, "molecules": len(smiles), "parsed": len(kept), "tasks": len(tasks),
           "positives": float(y[:, 0].mean()), "paper_hopfield": PAPER_AUC.get(name)}  # fmt: skip
    start = time.perf_counter()
    for method in METHODS:
        aucs, params = [], []
        for s in range(setup.splits):
            seed = setup.seed + s
            tr, va, te = split(y, seed)
            auc, p = RUNNERS[method](X, y, tr, va, te, setup, seed)
            aucs.append(auc)
            params.append(p)
        row[method] = {"auc": aucs, "mean": float(np.mean(aucs)), "std": float(np.std(aucs)), "chosen": params}
    row["seconds"] = round(time.perf_counter() - start, 1)
    paper = f"(paper, Hopfield: {row['paper_hopfield']:.3f})" if row["paper_hopfield"] else ""
    log(f"{name:6s} ROC-AUC  " + "   ".join(f"{m}: {row[m]['mean']:.3f} ± {row[m]['std']:.3f}" for m in METHODS)
        + f"  {paper}  [{row['seconds']:.0f} s, {row['parsed']}/{row['molecules']} parsed]")  # fmt: skip
    return row


def run(setup: MoleculeSetup, out: Path | None, plot: bool = True, log=print) -> dict:
    from ..bench.common import machine_info, save_results, write_json

    for name in setup.datasets:
        if name not in DATASETS:
            raise ValueError(f"molecules: unknown dataset {name!r}; expected one of {sorted(DATASETS)}")
    result = {"experiment": "molecules", "setup": asdict(setup), "machine": machine_info(torch.device("cpu")),
              "rows": []}  # fmt: skip
    for name in setup.datasets:
        result["rows"].append(evaluate(name, setup, log))
        if out is not None:
            write_json(Path(out), {**result, "partial": True})
    save_results(result, out, (lambda png: _plot(result["rows"], png)) if plot else None)
    return result


def _plot(rows, path: Path):
    from ..bench.common import pyplot

    plt = pyplot()
    if plt is None:
        return None
    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    width = 0.2
    xs = np.arange(len(rows))
    for i, method in enumerate(METHODS):
        ax.bar(xs + (i - 1.5) * width, [r[method]["mean"] for r in rows], width,
               yerr=[r[method]["std"] for r in rows], label=method, capsize=2)  # fmt: skip
    ax.bar(xs + 1.5 * width, [r["paper_hopfield"] or 0 for r in rows], width, label="paper (Hopfield)",
           color="lightgray", edgecolor="gray")  # fmt: skip
    ax.set_xticks(xs, [r["dataset"] for r in rows])
    ax.set_ylim(0.5, 1.0)
    ax.set_ylabel("test ROC-AUC")
    ax.legend(fontsize=7, ncol=2)
    ax.grid(True, axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
