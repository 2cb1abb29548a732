"""Multiple-instance learning: the loaders read the real sets, the model ignores padding, the protocol runs."""

import json

import numpy as np
import pytest
import torch

from assocmem.cli import main
from assocmem.experiments.mil import MAT_SETS, MILNet, MILSetup, default_data_dir, evaluate, load_bags

HAVE_MAT = (default_data_dir() / "tiger_100x100_matlab.mat").exists()
needs_mat = pytest.mark.skipif(not HAVE_MAT, reason="../shared/data/mil (the project's shared data) is not here")


@pytest.mark.parametrize(
    "name, bags, features, positives",
    [("tiger", 200, 230, 100), ("fox", 200, 230, 100), ("elephant", 200, 230, 100), ("ucsb", 58, 708, 26),
     ("musk1", 92, 166, 47)],
)
def test_loaders_read_the_published_sets(name, bags, features, positives):
    if name in MAT_SETS and not HAVE_MAT:
        pytest.skip("../shared/data/mil (the project's shared data) is not here")
    X, y = load_bags(name)
    assert len(X) == bags and len(y) == bags
    assert all(b.shape[1] == features and b.dtype == np.float32 for b in X)
    assert int(y.sum()) == positives and set(y.tolist()) == {0, 1}


def test_unknown_dataset_and_missing_folder_say_what_is_wrong(tmp_path):
    with pytest.raises(ValueError, match="unknown dataset 'cats'"):
        load_bags("cats")
    with pytest.raises(FileNotFoundError, match="tiger_100x100_matlab.mat not found"):
        load_bags("tiger", tmp_path)


@pytest.mark.parametrize("pooling", ["hopfield", "mean"])
def test_model_ignores_padded_instances(pooling):
    torch.manual_seed(0)
    model = MILNet(10, 16, pooling, heads=2, beta_scale=1.0, dropout=0.0).eval()
    bag = torch.randn(1, 5, 10)
    padded = torch.cat([bag, 100 * torch.randn(1, 3, 10)], 1)
    mask = torch.tensor([[True] * 5 + [False] * 3])
    with torch.no_grad():
        a = model(bag, torch.ones(1, 5, dtype=torch.bool))
        b = model(padded, mask)
    assert torch.allclose(a, b, atol=1e-5)


@needs_mat
def test_protocol_runs_on_a_tiny_setting():
    setup = MILSetup(datasets=("elephant",), folds=2, repeats=2, epochs=2, grid={"lr": [1e-3], "beta_scale": [1.0],
                     "hidden": [16]})  # fmt: skip
    row = evaluate("elephant", setup)
    for model in ("hopfield", "mean"):
        assert len(row[model]["fold_aucs"]) == 4
        assert all(0.0 <= a <= 1.0 for a in row[model]["fold_aucs"])
    assert row["paper_auc"]["mean"] == pytest.approx(0.949)


def test_cli_mil_writes_json_and_png(tmp_path):
    out = tmp_path / "mil.json"
    assert main(["mil", "--datasets", "musk1", "--folds", "2", "--repeats", "1", "--epochs", "1",
                 "--out", str(out)]) == 0
    saved = json.loads(out.read_text())
    assert saved["rows"][0]["dataset"] == "musk1" and (tmp_path / "mil.png").exists()


def test_grid_parsing_and_what_each_pooling_sweeps():
    from assocmem.experiments.mil import _configs, _fit_score, parse_grid

    grid = parse_grid(["lr=1e-3,3e-4", "beta_scale=1,4", "hidden=16", "dropout=0.1,0.5", "epochs=1,3"])
    assert grid == {"lr": [1e-3, 3e-4], "beta_scale": [1.0, 4.0], "hidden": [16], "dropout": [0.1, 0.5],
                    "epochs": [1, 3]}  # fmt: skip
    assert len(_configs(grid, "hopfield")) == 16
    mean = _configs(grid, "mean")  # beta_scale means nothing without Hopfield pooling: no duplicate runs
    assert len(mean) == 8 and all("beta_scale" not in c for c in mean)
    for bad in (["lr"], ["lr="], ["temperature=1"]):
        with pytest.raises(ValueError, match="KEY=V1,V2"):
            parse_grid(bad)
    with pytest.raises(ValueError, match="needs 'lr' and 'hidden'"):
        _configs({"lr": [1e-3]})
    # a grid's epochs and dropout reach the training run
    rng = np.random.default_rng(0)
    bags = [rng.normal(size=(4, 6)).astype(np.float32) + (i % 2) for i in range(16)]
    y = np.array([i % 2 for i in range(16)])
    setup = MILSetup(batch=8)
    base = {"lr": 1e-2, "hidden": 16, "beta_scale": 1.0, "dropout": 0.0}
    short = _fit_score(bags, y, bags, "hopfield", {**base, "epochs": 0}, setup, seed=0)
    trained = _fit_score(bags, y, bags, "hopfield", {**base, "epochs": 30}, setup, seed=0)
    gap = lambda s: s[y == 1].mean() - s[y == 0].mean()  # noqa: E731
    assert gap(trained) > gap(short) + 1.0
    # batch and a per-epoch learning-rate decay too: a decay of 0 leaves only the first epoch's updates
    assert parse_grid(["batch=4,8", "lr_decay=0.98"]) == {"batch": [4, 8], "lr_decay": [0.98]}
    one = _fit_score(bags, y, bags, "hopfield", {**base, "epochs": 1}, setup, seed=0)
    frozen = _fit_score(bags, y, bags, "hopfield", {**base, "epochs": 30, "lr_decay": 0.0}, setup, seed=0)
    assert np.allclose(one, frozen, atol=1e-5)
    small = _fit_score(bags, y, bags, "hopfield", {**base, "epochs": 1, "batch": 2}, setup, seed=0)
    assert not np.allclose(one, small)
    # head_size sets the association space apart from the instance width (Hopfield only)
    assert parse_grid(["head_size=8,32"]) == {"head_size": [8, 32]}
    assert all("head_size" not in c for c in _configs({"lr": [1e-3], "hidden": [16], "head_size": [8, 32]}, "mean"))
    from assocmem.experiments.mil import MILNet

    wide = MILNet(6, 16, "hopfield", heads=2, beta_scale=1.0, dropout=0.0, head_size=32)
    assert wide.pool.queries.shape == (1, 64)  # heads x head_size
    assert wide(torch.zeros(3, 5, 6), torch.ones(3, 5, dtype=torch.bool)).shape == (3,)
    wide_scores = _fit_score(bags, y, bags, "hopfield", {**base, "epochs": 2, "head_size": 32}, setup, seed=0)
    assert wide_scores.shape == (16,) and np.isfinite(wide_scores).all()
    # norm_projected: LayerNorm on the projected patterns inside the pooling (Hopfield only)
    assert parse_grid(["norm_projected=0,1"]) == {"norm_projected": [0, 1]}
    assert all("norm_projected" not in c for c in _configs({"lr": [1e-3], "hidden": [16], "norm_projected": [0, 1]},
                                                          "mean"))  # fmt: skip
    normed = MILNet(6, 16, "hopfield", heads=2, beta_scale=1.0, dropout=0.0, norm_projected=True)
    assert isinstance(normed.pool.hopfield.norm_projected, torch.nn.LayerNorm)
    assert isinstance(wide.pool.hopfield.norm_projected, torch.nn.Identity)
    normed_scores = _fit_score(bags, y, bags, "hopfield", {**base, "epochs": 2, "norm_projected": 1}, setup, seed=0)
    assert not np.allclose(normed_scores, _fit_score(bags, y, bags, "hopfield", {**base, "epochs": 2}, setup, seed=0))


def test_inner_cross_validation_splits_the_outer_training_fold():
    from assocmem.experiments.mil import _inner_splits

    y = np.array([0, 1] * 10)
    tr = np.arange(2, 20)
    one = _inner_splits(tr, y, MILSetup(), seed=0)
    assert len(one) == 1 and len(one[0][1]) == 4  # 20 % of 18 bags, stratified
    five = _inner_splits(tr, y, MILSetup(inner_folds=3), seed=0)
    assert len(five) == 3
    validated = np.sort(np.concatenate([va for _, va in five]))
    assert np.array_equal(validated, tr)  # every training bag is validated once, and only training bags
    for itr, va in five:
        assert not set(itr) & set(va) and set(itr) | set(va) == set(tr) and set(y[va]) == {0, 1}


def test_protocol_with_inner_cross_validation_on_synthetic_bags(monkeypatch):
    import assocmem.experiments.mil as mil

    rng = np.random.default_rng(1)
    y = np.array([i % 2 for i in range(24)])
    bags = [(rng.normal(size=(3 + i % 4, 5)) + 2.0 * y[i] * (np.arange(5) == 0)).astype(np.float32) for i in range(24)]
    monkeypatch.setattr(mil, "load_bags", lambda name, data_dir=None: (bags, y))
    setup = MILSetup(datasets=("tiger",), folds=2, repeats=1, epochs=12, inner_folds=2,
                     grid={"lr": [1e-2, 1e-3], "hidden": [8], "batch": [4]})  # fmt: skip
    row = mil.evaluate("tiger", setup)
    for model in ("hopfield", "mean"):
        assert len(row[model]["fold_aucs"]) == 2 and len(row[model]["chosen"]) == 2
        assert all(c["lr"] in (1e-2, 1e-3) for c in row[model]["chosen"])
        assert row[model]["auc_mean"] > 0.6  # the first feature carries the label


def test_ensemble_averages_the_scores_of_several_seeds(monkeypatch):
    """--ensemble N: each outer fold's chosen setting is retrained with N seeds and their scores averaged
    (the validation choice is unchanged)."""
    import assocmem.experiments.mil as mil

    rng = np.random.default_rng(2)
    y = np.array([i % 2 for i in range(20)])
    bags = [(rng.normal(size=(3, 4)) + 1.5 * y[i] * (np.arange(4) == 0)).astype(np.float32) for i in range(20)]
    monkeypatch.setattr(mil, "load_bags", lambda name, data_dir=None: (bags, y))
    seeds, real = [], mil._fit_score

    def recording(train_bags, train_y, test_bags, pooling, params, setup, seed):
        seeds.append((len(test_bags), seed))
        return real(train_bags, train_y, test_bags, pooling, params, setup, seed)

    monkeypatch.setattr(mil, "_fit_score", recording)
    setup = MILSetup(datasets=("tiger",), folds=2, repeats=1, epochs=3, ensemble=3, models=("mean",),
                     grid={"lr": [1e-2], "hidden": [8]})  # fmt: skip
    row = mil.evaluate("tiger", setup)
    finals = [s for n, s in seeds if n == 10]  # the outer test folds hold 10 bags, the inner validation 2
    assert len(finals) == 2 * 3 and len(set(finals)) == 6  # three distinct seeds per outer fold
    assert len(row["mean"]["fold_aucs"]) == 2
    with pytest.raises(SystemExit, match="--ensemble"):
        main(["mil", "--ensemble", "0", "--no-save"])


def test_bag_dropout_leaves_out_instances_but_never_a_whole_bag():
    from assocmem.experiments.mil import _configs, _fit_score, drop_instances, parse_grid

    mask = torch.zeros(200, 30, dtype=torch.bool)
    lengths = torch.randint(1, 31, (200,), generator=torch.Generator().manual_seed(1))
    for i, n in enumerate(lengths):
        mask[i, :n] = True
    g = torch.Generator().manual_seed(0)
    kept = drop_instances(mask, 0.75, g)
    assert not (kept & ~mask).any()  # padding stays out
    assert kept.any(1).all()  # every bag keeps an instance
    assert 0.2 < kept.sum() / mask.sum() < 0.32  # about a quarter kept (bags that would lose all keep all)
    assert torch.equal(drop_instances(mask, 0.0, g), mask)
    with pytest.raises(ValueError, match="bag_dropout"):
        drop_instances(mask, 1.0, g)
    # a grid key for both poolings, and it reaches training
    assert parse_grid(["bag_dropout=0,0.75"]) == {"bag_dropout": [0.0, 0.75]}
    assert all("bag_dropout" in c for c in _configs({"lr": [1e-3], "hidden": [16], "bag_dropout": [0.5]}, "mean"))
    rng = np.random.default_rng(0)
    bags = [rng.normal(size=(6, 5)).astype(np.float32) + (i % 2) for i in range(12)]
    y = np.array([i % 2 for i in range(12)])
    base = {"lr": 1e-2, "hidden": 8, "beta_scale": 1.0, "epochs": 2}
    plain = _fit_score(bags, y, bags, "hopfield", base, MILSetup(batch=4), seed=0)
    dropped = _fit_score(bags, y, bags, "hopfield", {**base, "bag_dropout": 0.5}, MILSetup(batch=4), seed=0)
    assert np.isfinite(dropped).all() and not np.allclose(plain, dropped)


def test_clip_bounds_the_standardised_features():
    from assocmem.experiments.mil import _fit_score, _pad

    bags = [np.array([[0.0, 1.0], [100.0, 1.0]], dtype=np.float32), np.array([[1.0, -50.0]], dtype=np.float32)]
    mean, std = np.zeros(2, np.float32), np.ones(2, np.float32)
    x, mask = _pad(bags, mean, std, clip=3.0)
    assert x.abs().max() == 3.0 and x[0, 0, 1] == 1.0 and x[1, 0, 1] == -3.0
    assert _pad(bags, mean, std)[0].abs().max() == 100.0
    rng = np.random.default_rng(0)
    train = [rng.standard_t(1, size=(5, 4)).astype(np.float32) + (i % 2) for i in range(10)]
    y = np.array([i % 2 for i in range(10)])
    params = {"lr": 1e-2, "hidden": 8, "beta_scale": 1.0, "epochs": 2}
    clipped = _fit_score(train, y, train, "hopfield", params, MILSetup(batch=4, clip=1.0), seed=0)
    plain = _fit_score(train, y, train, "hopfield", params, MILSetup(batch=4), seed=0)
    assert np.isfinite(clipped).all() and not np.allclose(clipped, plain)
    with pytest.raises(SystemExit, match="--clip must be > 0"):
        main(["mil", "--datasets", "musk1", "--clip", "0"])


def test_pooling_script_over_fold_draws(tmp_path):
    """scripts/mil_pool.py: per-run mean ± std over repeats, the mean of the runs' means and the mean ± std over
    all runs' repeats, from `assocmem mil` files; runs of different datasets are refused."""
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location("mil_pool", Path(__file__).parents[2] / "scripts" / "mil_pool.py")
    pool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(pool)
    folds = [[0.8, 1.0], [0.6, 0.6]], [[0.9, 0.9], [0.7, 0.9], [1.0, 1.0]]  # two runs: 2 and 3 repeats of 2 folds
    paths = []
    for seed, run in enumerate(folds):
        row = {"dataset": "ucsb", "hopfield": {"fold_aucs": sum(run, [])}, "mean": {"fold_aucs": sum(run, [])}}
        paths.append(tmp_path / f"run{seed}.json")
        paths[-1].write_text(json.dumps({"setup": {"folds": 2, "seed": seed}, "rows": [row]}))
    out = pool.pool([str(p) for p in paths])
    entry = out["models"]["hopfield"]
    assert [r["mean"] for r in entry["per_run"]] == pytest.approx([0.75, 0.9])
    assert entry["per_run"][0]["std"] == pytest.approx(0.15)
    assert entry["mean_of_run_means"] == pytest.approx(0.825)
    assert entry["pooled_repeats"]["mean"] == pytest.approx(np.mean([0.9, 0.6, 0.9, 0.8, 1.0]))
    assert entry["pooled_repeats"]["n"] == 5
    other = tmp_path / "fox.json"
    other.write_text(json.dumps({"setup": {"folds": 2, "seed": 9}, "rows": [{"dataset": "fox", "hopfield": {
        "fold_aucs": [0.5, 0.5]}}]}))
    with pytest.raises(ValueError, match="different datasets"):
        pool.pool([str(paths[0]), str(other)])
