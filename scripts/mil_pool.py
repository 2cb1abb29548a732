"""Pool `assocmem mil` results of one dataset over several outer-fold draws (runs with different --seed).

For each pooling model: every run's mean ± std over its repeats, the mean of the runs' means, and the mean ±
std over all runs' repeats together (each repeat's mean AUC over its folds, as `assocmem mil` reports).
Usage: python scripts/mil_pool.py OUT.json RUN.json [RUN.json ...]
Prints a line per model and writes the JSON.
"""

import json
import sys

import numpy as np


def pool(paths: list[str]) -> dict:
    runs = {}
    for path in paths:
        with open(path) as f:
            report = json.load(f)
        rows = report["rows"]
        if len(rows) != 1:
            raise ValueError(f"mil_pool: {path} holds {len(rows)} datasets; expected one")
        runs[path] = (rows[0], report["setup"])
    names = {row["dataset"] for row, _ in runs.values()}
    if len(names) != 1:
        raise ValueError(f"mil_pool: the runs are of different datasets: {sorted(names)}")
    models = [m for m in ("hopfield", "mean") if all(m in row for row, _ in runs.values())]
    out = {"dataset": names.pop(), "runs": list(runs), "models": {}}
    for model in models:
        per_run, repeats = [], []
        for row, setup in runs.values():
            folds = setup["folds"]
            per_repeat = np.array(row[model]["fold_aucs"]).reshape(-1, folds).mean(1)
            per_run.append({"mean": float(per_repeat.mean()), "std": float(per_repeat.std()), "seed": setup["seed"]})
            repeats.extend(per_repeat.tolist())
        repeats = np.array(repeats)
        out["models"][model] = {
            "per_run": per_run,
            "mean_of_run_means": float(np.mean([r["mean"] for r in per_run])),
            "pooled_repeats": {"mean": float(repeats.mean()), "std": float(repeats.std()), "n": len(repeats)},
        }
    return out


def main(argv: list[str]) -> None:
    if len(argv) < 2:
        sys.exit(__doc__)
    out = pool(argv[1:])
    for model, entry in out["models"].items():
        runs = ", ".join(f"seed {r['seed']} {r['mean'] * 100:.1f} ± {r['std'] * 100:.1f}" for r in entry["per_run"])
        pooled = entry["pooled_repeats"]
        print(f"{out['dataset']} {model}: {runs}; mean of runs {entry['mean_of_run_means'] * 100:.1f}; "
              f"pooled repeats {pooled['mean'] * 100:.1f} ± {pooled['std'] * 100:.1f} (n = {pooled['n']})")
    with open(argv[0], "w") as f:
        json.dump(out, f, indent=1)


if __name__ == "__main__":
    main(sys.argv[1:])
