"""The model benchmark checks cached decoding before timing and writes rows with ratios to Transformer++."""

import json

import pytest

from assocmem.bench import models as bench
from assocmem.cli import main


def test_run_writes_rows_with_ratios(tmp_path):
    out = tmp_path / "m.json"
    result = bench.run(batch=2, seq_len=64, prompt_len=16, new_tokens=4, out=out)
    saved = json.loads(out.read_text())
    assert saved["rows"] == result["rows"]
    assert [r["model"] for r in saved["rows"]] == [f"{a}-tiny" for a in bench.ARCHITECTURES]
    baseline = next(r for r in saved["rows"] if r["model"] == "transformer++-tiny")
    for row in saved["rows"]:
        assert row["cache_rel_err"] < 1e-4
        assert row["forward_tok_s"] > 0 and row["train_tok_s"] > 0 and row["decode_tok_s"] > 0
        assert row["train_vs_transformer"] == pytest.approx(row["train_tok_s"] / baseline["train_tok_s"])
        assert row["decode_ms_per_step"] == pytest.approx(1e3 / row["decode_tok_s"], rel=1e-6)  # decode batch 1
    assert out.with_suffix(".png").stat().st_size > 0


def test_a_broken_cache_is_refused(monkeypatch):
    def broken(model, prompt, new_tokens):
        raise AssertionError("must not time a model whose cache check failed")

    monkeypatch.setattr(bench, "_decode_fn", broken)
    real_forward = bench.AssocMemForCausalLM.forward

    def forward_that_forgets(self, *args, cache=None, **kwargs):
        if cache is not None:
            cache.seen_tokens = 0
            cache.states = [None] * len(cache.states)
        return real_forward(self, *args, cache=cache, **kwargs)

    monkeypatch.setattr(bench.AssocMemForCausalLM, "forward", forward_that_forgets)
    with pytest.raises(RuntimeError, match="cached decoding disagrees"):
        bench.run(architectures=("deltanet",), batch=1, seq_len=32, prompt_len=16, new_tokens=2, out=None)


def test_cli_prints_the_table(capsys):
    main(["bench", "models", "--arch", "deltanet-swa", "--batch", "1", "--seq-len", "32", "--prompt-len", "8",
          "--new-tokens", "2", "--no-save"])
    assert "deltanet-swa-tiny" in capsys.readouterr().out


def test_compile_times_the_compiled_model(monkeypatch, tmp_path):
    """--compile: our models' forward and forward+backward run through torch.compile's module (here with the
    eager backend, to keep the test fast), and each row and the setup say so."""
    import torch

    compiled_calls = []
    real_compile = torch.compile

    def compile_and_count(model, **kwargs):
        wrapped = real_compile(model, backend="eager", **kwargs)
        real_forward = wrapped.forward

        def counted(*args, **kw):
            compiled_calls.append(kw.get("labels") is not None)
            return real_forward(*args, **kw)

        wrapped.forward = counted
        return wrapped

    monkeypatch.setattr(torch, "compile", compile_and_count)
    result = bench.run(architectures=("deltanet",), batch=1, seq_len=32, prompt_len=8, new_tokens=2,
                       out=tmp_path / "c.json", compile=True)
    (row,) = result["rows"]
    assert row["note"] == "compiled" and row["train_tok_s"] > 0 and row["decode_tok_s"] > 0
    assert True in compiled_calls and False in compiled_calls  # both the training step and the forward
    assert result["setup"]["compile"].startswith("ours under torch.compile")
    assert bench.run(architectures=("deltanet",), batch=1, seq_len=16, prompt_len=8, new_tokens=1,
                     out=None)["setup"]["compile"] == "eager"
