"""scripts/lm_compare.py on a real (tiny) run: collect what a GPU call brings back, then the table."""

import importlib.util
import json
from pathlib import Path

from assocmem.train.trainer import train

_spec = importlib.util.spec_from_file_location("lm_compare", Path(__file__).parents[2] / "scripts" / "lm_compare.py")
lm_compare = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(lm_compare)


def test_collect_then_table(tiny_config, tmp_path, capsys):
    cfg = tiny_config(max_steps=6, eval_every=3, sample_tokens=0)
    result = train(cfg)
    evals = tmp_path / "evals"
    evals.mkdir()
    (evals / "a.wikitext2.json").write_text(json.dumps({"word_ppl": 123.4, "bits_per_byte": 1.5}))
    tasks = {t: {"acc": 0.3, "acc_norm": 0.35} for t in lm_compare.TASKS}
    (evals / "a.zeroshot.json").write_text(json.dumps({"tasks": tasks}))
    a = lm_compare.collect("a", Path(cfg.out_dir), evals, tmp_path / "compare_a.json")
    b = lm_compare.collect("b", Path(cfg.out_dir), tmp_path / "nowhere", tmp_path / "compare_b.json")
    assert len(a["log"]) == 6 and a["result"]["val_ppl"] == result["val_ppl"]
    assert "missing" in b["wikitext2"] and "missing" in b["zero_shot"]
    rows = lm_compare.table([tmp_path / "compare_a.json", tmp_path / "compare_b.json"], tmp_path / "lm.json")
    assert rows[0]["wikitext2_word_ppl"] == 123.4 and rows[0]["hellaswag"] == 0.35 and rows[0]["piqa"] == 0.3
    assert rows[1]["piqa"] is None and rows[0]["params_m"] == result["parameters"] / 1e6
    evals_logged = [(x["val_ppl"], x["step"]) for x in a["log"] if x.get("val_ppl") is not None]
    assert len(evals_logged) == 2 and (rows[0]["best_val_ppl"], rows[0]["best_step"]) == min(evals_logged)
    assert (tmp_path / "lm.png").stat().st_size > 0
    assert json.loads((tmp_path / "lm.json").read_text())["rows"] == rows
    printed = capsys.readouterr().out
    assert "| a |" in printed and "123.4" in printed
