"""The capacity and retrieval experiments on tiny settings: they run, write JSON + PNG, and say something true."""

import json
import math

import torch

from assocmem.cli import main
from assocmem.experiments.capacity import CapacitySetup, _dense, success_rate, theorem3_bound
from assocmem.experiments.capacity import run as run_capacity
from assocmem.experiments.retrieve import RetrieveSetup, kind_of
from assocmem.experiments.retrieve import run as run_retrieve


def test_theorem3_bound_grows_exponentially_with_d_and_checks_its_condition():
    bounds = [theorem3_bound(d, beta=4.0, K=1.0, p=0.1) for d in (32, 64, 128, 256)]
    assert all(b is not None for b in bounds)
    ratios = [b2 / b1 for b1, b2 in zip(bounds, bounds[1:])]
    assert all(r2 > r1 > 1 for r1, r2 in zip(ratios, ratios[1:]))  # doubling d squares the growth
    # small beta: c = b / W0(b e^a) falls below the required (2 / sqrt(p))^(4 / (d - 1))
    assert theorem3_bound(8, beta=0.05, K=1.0, p=0.1) is None


def test_lambert_w_constant_solves_its_equation():
    from scipy.special import lambertw

    b, a = 1.6, 0.3
    w = lambertw(math.exp(a + math.log(b))).real
    assert abs(w * math.exp(w) - b * math.exp(a)) < 1e-9


def test_dense_exponential_update_moves_a_flipped_unit_back():
    X = torch.tensor([[1.0, 1, 1, 1, 1, 1], [1, -1, 1, -1, 1, -1]], dtype=torch.float64)
    q = X[:1].clone()
    q[0, 2] = -1
    for kind in ("dense-exp", "dense-poly"):
        assert torch.equal(_dense(X, q, 5, kind, 3), X[:1])


def test_modern_network_outlasts_the_classical_one():
    setup = CapacitySetup(queries=40)
    g = torch.Generator().manual_seed(0)
    assert success_rate("modern", 64, 16, 8.0, setup, g) >= 0.9
    assert success_rate("classical", 64, 16, None, setup, g) <= 0.2


def test_capacity_run_writes_json_and_png(tmp_path):
    setup = CapacitySetup(dims=(8, 12), betas=(4.0,), queries=10, max_patterns=64)
    result = run_capacity(setup, tmp_path / "cap.json")
    saved = json.loads((tmp_path / "cap.json").read_text())
    assert (tmp_path / "cap.png").stat().st_size > 0
    assert saved["rows"] == json.loads(json.dumps(result["rows"]))
    assert {r["kind"] for r in saved["rows"]} == {"classical", "dense-poly", "dense-exp", "modern"}
    for r in saved["rows"]:
        assert all(0.0 <= p["success"] <= 1.0 for p in r["curve"])


def test_retrieval_shows_the_three_kinds_of_fixed_points(tmp_path):
    setup = RetrieveSetup(per_class=5, betas=(0.02, 0.35, 20.0), queries_shown=3)
    result = run_retrieve(setup, tmp_path / "ret.json")
    assert (tmp_path / "ret.png").stat().st_size > 0
    rows = {(r["query"], r["beta"]): r for r in result["rows"]}
    assert rows[("noisy", 0.02)]["global"] == 1.0
    assert rows[("noisy", 0.35)]["metastable"] > 0.5
    assert rows[("noisy", 20.0)]["single"] == 1.0
    assert rows[("noisy", 20.0)]["weight_on_own_class"] > rows[("noisy", 0.02)]["weight_on_own_class"]


def test_kind_of_reads_the_effective_number_of_patterns():
    w = torch.zeros(3, 8)
    w[0] = 1 / 8
    w[1, :2] = 0.5
    w[2, 3] = 1.0
    assert kind_of(w, 8) == ["global", "metastable", "single"]


def test_cli_runs_both_experiments(tmp_path, capsys):
    assert main(["hopfield", "capacity", "--d", "8", "--kinds", "classical", "modern", "--beta", "4",
                 "--queries", "5", "--max-patterns", "16", "--out", str(tmp_path / "c.json"), "--no-plot"]) == 0
    assert main(["hopfield", "retrieve", "--per-class", "2", "--beta", "0.1", "5",
                 "--out", str(tmp_path / "r.json"), "--no-plot"]) == 0
    assert (tmp_path / "c.json").exists() and (tmp_path / "r.json").exists()
    assert "capacity" in capsys.readouterr().out
