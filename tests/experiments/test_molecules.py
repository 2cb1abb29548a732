import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("rdkit")
pytest.importorskip("sklearn")

from assocmem.experiments.molecules import (  # noqa: E402
    DEFAULT_DATA_DIR,
    MoleculeSetup,
    fingerprints,
    load,
    mean_auc,
    run,
    split,
)


def _write_toy_bbbp(folder: Path, n: int = 120) -> None:
    """A BBBP-shaped CSV whose label is 'has a nitrogen', so that every method can learn it."""
    rng = np.random.default_rng(0)
    lines = ["smiles,p_np"]
    for _ in range(n):
        chain = "C" * int(rng.integers(2, 9))
        ring = rng.choice(["c1ccccc1", "C1CCCC1", "c1ccncc1", "C1CCNCC1"])
        group = rng.choice(["O", "N", "Cl", "C(=O)O", "CN"])
        smiles = f"{chain}{ring}{group}"
        lines.append(f"{smiles},{int('N' in smiles or 'n' in smiles)}")
    lines.append("not_a_molecule,1")
    (folder / "BBBP.csv").write_text("\n".join(lines) + "\n")


def test_fingerprints_drop_what_rdkit_cannot_parse():
    X, kept = fingerprints(["CCO", "xyz", "c1ccccc1"], bits=256)
    assert X.shape == (2, 256) and kept.tolist() == [0, 2] and set(np.unique(X)) <= {0, 1}
    assert not np.array_equal(X[0], X[1])


def test_split_is_stratified_and_disjoint():
    y = np.zeros((200, 1), np.float32)
    y[:20] = 1
    tr, va, te = split(y, seed=0)
    assert len(tr) == 160 and len(va) == 20 and len(te) == 20
    assert not set(tr) & set(va) and not set(va) & set(te)
    assert y[te].sum() == 2 and y[va].sum() == 2
    assert mean_auc(np.array([[0], [1], [1]]), np.array([[0.1], [0.9], [0.8]])) == 1.0


def test_command_on_a_toy_set_learns_and_writes_json(tmp_path):
    _write_toy_bbbp(tmp_path)
    setup = MoleculeSetup(datasets=("bbbp",), splits=2, epochs=8, batch=32, trees=30, data_dir=str(tmp_path))
    out = tmp_path / "molecules.json"
    lines = []
    result = run(setup, out, plot=False, log=lines.append)
    row = json.loads(out.read_text())["rows"][0]
    assert row["molecules"] == 121 and row["parsed"] == 120 and row["tasks"] == 1
    for method in ("hopfield", "svm", "random_forest"):
        assert len(row[method]["auc"]) == 2 and row[method]["mean"] > 0.8, (method, row[method])
    assert result["rows"][0]["paper_hopfield"] == 0.910 and "bbbp" in lines[0]


def test_unknown_dataset_and_missing_folder_are_named(tmp_path):
    with pytest.raises(ValueError, match="dataset"):
        load("tox99")
    with pytest.raises(FileNotFoundError, match="data-dir"):
        load("bace", tmp_path)


@pytest.mark.skipif(not (DEFAULT_DATA_DIR / "sider.csv").exists(), reason="needs ../shared/data/moleculenet")
def test_the_real_sets_load_with_their_tasks():
    smiles, y, tasks = load("sider", max_molecules=50)
    assert len(smiles) == 50 and y.shape == (50, 27) and len(tasks) == 27
    smiles, y, tasks = load("hiv", max_molecules=50)
    assert y.shape == (50, 1) and tasks == ["HIV_active"]
