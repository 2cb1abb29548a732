import json

import pytest
import torch

from assocmem.data.mqar import IGNORE, mqar
from assocmem.experiments import recall
from assocmem.experiments.recall import RecallSetup, best_per_point, model_config, run, train_one

TINY = dict(vocab_size=32, seq_len=16, num_kv_pairs=2, batch=32, test_examples=200, head_size=16)


def test_mixers_map_to_the_right_models():
    setup = RecallSetup(**TINY)
    assert model_config("attention", 32, setup).mixer_types == ["attention", "attention"]
    linear = model_config("linear", 32, setup)
    assert linear.layer_types == ["deltanet", "deltanet"] and not linear.use_delta_rule and linear.use_short_conv
    noconv = model_config("deltanet-noconv", 64, setup)
    assert noconv.use_delta_rule and not noconv.use_short_conv and noconv.num_heads == 4
    with pytest.raises(ValueError, match="mixer"):
        model_config("mamba", 32, setup)
    assert model_config("deltanet", 32, setup).delta_rule_backend == "auto"
    two = RecallSetup(**{**TINY, "num_heads": 2})
    assert [model_config("deltanet", w, two).num_heads for w in (32, 64)] == [2, 2]
    with pytest.raises(ValueError, match="num_heads"):
        model_config("deltanet", 30, RecallSetup(**{**TINY, "num_heads": 4}))
    assert model_config("deltanet", 32, RecallSetup(delta_rule_backend="chunk", **TINY)).delta_rule_backend == "chunk"


def test_a_tiny_model_learns_recall_above_chance():
    # 2 pairs, values drawn from 16 tokens: chance is 1/16.
    r = train_one("deltanet", 32, 3e-3, RecallSetup(steps=300, **TINY))
    assert r["steps_done"] == 300 and not r["diverged"] and not r["stopped_early"]
    assert r["accuracy"] > 0.25, r  # 4x chance
    assert r["loss_curve"][-1][1] < r["loss_curve"][0][1]


def test_answer_positions_give_the_same_loss_as_the_answer_mask():
    """The fixed-shape gather of the answers (used in training) equals boolean indexing, in order."""
    from assocmem.models import AssocMemForCausalLM

    torch.manual_seed(0)
    model = AssocMemForCausalLM(model_config("deltanet", 32, RecallSetup(**TINY)))
    batch = mqar(4, seed=1, vocab_size=TINY["vocab_size"], seq_len=TINY["seq_len"], num_kv_pairs=TINY["num_kv_pairs"])
    positions = recall._answer_positions(batch.labels, TINY["num_kv_pairs"])
    assert positions.shape == (4, TINY["num_kv_pairs"])
    assert (batch.labels.gather(1, positions) != IGNORE).all()
    assert (positions.diff(dim=1) > 0).all()  # in sequence order
    masked = recall._answer_loss(model, batch.inputs, batch.labels)
    gathered = recall._answer_loss(model, batch.inputs, batch.labels, positions)
    assert torch.equal(masked[2], gathered[2]) and torch.allclose(masked[1], gathered[1], atol=1e-6)
    assert abs(masked[0].item() - gathered[0].item()) < 1e-6
    # every sequence has exactly its number of pairs as answers, the count the gather relies on
    assert ((batch.labels != IGNORE).sum(1) == TINY["num_kv_pairs"]).all()


def test_compiled_training_forward_learns_too():
    r = train_one("deltanet", 32, 3e-3, RecallSetup(steps=150, compile=True, **TINY))
    assert r["steps_done"] == 150 and not r["diverged"]
    assert r["loss_curve"][-1][1] < r["loss_curve"][0][1]


def test_command_writes_table_json_and_picks_the_best_lr(tmp_path):
    setup = RecallSetup(mixers=("linear", "attention"), widths=(16,), lrs=(1e-3, 3e-3), steps=3, **TINY)
    out = tmp_path / "mqar.json"
    lines = []
    result = run(setup, out, plot=False, log=lines.append)
    saved = json.loads(out.read_text())
    assert len(saved["runs"]) == 4 and "partial" not in saved
    assert [(b["mixer"], b["width"]) for b in saved["best"]] == [("linear", 16), ("attention", 16)]
    for b in result["best"]:
        same = [r["accuracy"] for r in result["runs"] if r["mixer"] == b["mixer"]]
        assert b["accuracy"] == max(same)
    assert any("MQAR accuracy" in line for line in lines)
    assert best_per_point([]) == []


def test_time_budget_ends_a_run_and_is_recorded():
    r = train_one("linear", 16, 1e-3, RecallSetup(steps=10**6, max_minutes=0.02, **TINY))
    assert r["stopped_early"] and 0 < r["steps_done"] < 10**6
    # A time-limited run still logs its curve (every 50 steps), not only its first step.
    logged = [step for step, _ in r["loss_curve"]]
    assert logged[0] == 0 and all(b - a == 50 for a, b in zip(logged, logged[1:]))
    assert len(logged) == 1 + (r["steps_done"] - 1) // 50


def test_merge_keeps_every_run_and_takes_the_best_over_calls(tmp_path):
    from assocmem.experiments.recall import merge, save_merged

    def result(lr, accs, **setup):
        runs = [{"mixer": m, "width": 16, "lr": lr, "accuracy": a, "params": 1, "steps_done": 5}
                for m, a in accs.items()]  # fmt: skip
        return {"setup": {**vars(RecallSetup(**TINY)), "lrs": [lr], **setup}, "machine": None, "runs": runs}

    a = result(1e-3, {"linear": 0.2, "deltanet": 0.9}, max_minutes=2.0)
    b = result(3e-4, {"deltanet": 0.5, "attention": 1.0})
    merged = merge([a, b])
    assert len(merged["runs"]) == 4 and [r["call"] for r in merged["runs"]] == [0, 0, 1, 1]
    assert merged["calls"][merged["runs"][0]["call"]]["setup"]["max_minutes"] == 2.0
    assert merged["setup"]["lrs"] == [3e-4, 1e-3]
    assert merged["setup"]["mixers"] == ["deltanet", "linear", "attention"]
    best = {(x["mixer"], x["lr"]): x["accuracy"] for x in merged["best"]}
    assert best == {("deltanet", 1e-3): 0.9, ("linear", 1e-3): 0.2, ("attention", 3e-4): 1.0}
    with pytest.raises(ValueError, match="one task"):
        merge([a, result(1e-3, {}, seq_len=32)])
    with pytest.raises(ValueError, match="one task"):  # zero fillers (the default) vs random ones
        merge([a, result(1e-3, {}, random_fillers=True)])
    old = result(1e-3, {})
    del old["setup"]["random_fillers"]  # written before the option existed: random fillers
    assert len(merge([result(1e-3, {}, random_fillers=True), old])["calls"]) == 2
    paths = []
    for i, r in enumerate((a, b)):
        paths.append(tmp_path / f"{i}.json")
        paths[-1].write_text(json.dumps(r))
    save_merged(paths, tmp_path / "m.json", plot=False, log=lambda line: None)
    assert json.loads((tmp_path / "m.json").read_text())["best"] == merged["best"]
