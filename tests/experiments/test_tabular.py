"""The tabular comparison on a tiny setting; loaders; ranks."""

import json

import numpy as np
import pytest

from assocmem.cli import main
from assocmem.experiments.tabular import (
    MLBENCH_SETS,
    SKLEARN_SETS,
    TabularSetup,
    average_ranks,
    evaluate,
    find_mlbench,
    load_dataset,
)


@pytest.mark.parametrize("name", SKLEARN_SETS)
def test_sklearn_sets_load(name):
    X, y = load_dataset(name)
    assert X.dtype == np.float32 and len(X) == len(y) and y.min() == 0


@pytest.mark.skipif(find_mlbench() is None, reason="r-cran-mlbench is not installed (scripts/fetch_mlbench.sh)")
@pytest.mark.parametrize("name, shape", [("sonar", (208, 60)), ("glass", (214, 9)), ("pima", (768, 8)),
                                         ("breast_cancer_wisconsin", (683, 9))])  # fmt: skip
def test_mlbench_sets_load(name, shape):
    X, y = load_dataset(name)
    assert X.shape == shape and np.isfinite(X).all() and name in MLBENCH_SETS


def test_unknown_dataset_is_named():
    with pytest.raises(ValueError, match="unknown dataset 'cars'"):
        load_dataset("cars")


def test_average_ranks_share_ties():
    rows = [
        {m: {"accuracy_mean": a} for m, a in zip(("hopfield", "svm", "random_forest"), (0.9, 0.8, 0.7))},
        {m: {"accuracy_mean": a} for m, a in zip(("hopfield", "svm", "random_forest"), (0.5, 0.9, 0.9))},
    ]
    assert average_ranks(rows) == {"hopfield": 2.0, "svm": 1.75, "random_forest": 2.25}


def test_iris_tiny_run_learns_something():
    row = evaluate("iris", TabularSetup(folds=2, repeats=1, epochs=40, trees=20))
    for method in ("hopfield", "svm", "random_forest"):
        assert row[method]["accuracy_mean"] > 0.8, method


def test_cli_tabular(tmp_path):
    out = tmp_path / "t.json"
    assert main(["tabular", "--datasets", "wine", "--folds", "2", "--repeats", "1", "--epochs", "5",
                 "--out", str(out)]) == 0
    saved = json.loads(out.read_text())
    assert saved["rows"][0]["dataset"] == "wine" and set(saved["average_rank"]) == {"hopfield", "svm", "random_forest"}
