"""WikiText-2 scoring: the detokenization rules, the benchmark's word count, and the summed
log-likelihood against a forward pass per window computed here by hand."""

import json
import math

import pytest
import torch

from assocmem.eval.wikitext import detokenize, evaluate, read_split, score, wikitext_words

from .test_zero_shot import _tiny_checkpoint

TEXT = (" \n = Robert <unk> = \n \n Robert <unk> is an English film , television and theatre actor . He had a"
        " guest @-@ starring role in 2 @,@ 000 shows ( in London ) and said \" yes \" . It 's 3 @.@ 5 %"
        " of the time .\n")  # fmt: skip


def test_detokenize_undoes_the_word_level_habits():
    text = " well @-@ known , 1 @,@ 000 ( a ) \" b \" it 's 3 @.@ 5 % ."
    assert detokenize(text) == ' well-known, 1,000 (a) "b" it\'s 3.5%.'
    assert detokenize(" = = Title = = \n") == " = = Title = = \n"  # section marks stay


def test_word_count_is_the_benchmarks():
    # whitespace-separated tokens (markers and <unk> included) plus one end-of-line per line
    assert wikitext_words(" a @-@ b <unk> .\n \n c\n") == 5 + 1 + 3


def test_score_equals_the_likelihood_by_hand(tmp_path):
    model, tok = _tiny_checkpoint(tmp_path / "model", [detokenize(TEXT)] * 3)
    result = score(model, tok, TEXT, seq_len=7, batch=3, device="cpu")
    ids = tok(detokenize(TEXT), add_special_tokens=False)["input_ids"]
    nll = 0.0
    with torch.no_grad():
        for i in range(0, len(ids), 7):
            window = ids[i : i + 7]
            inputs = torch.tensor([[tok.eos_token_id] + window[:-1]])
            logp = model(input_ids=inputs).logits.log_softmax(-1)[0]
            nll -= logp[torch.arange(len(window)), torch.tensor(window)].sum().item()
    assert result["tokens"] == len(ids) and len(ids) % 7 != 0  # the last window is a short one
    assert result["nll"] == pytest.approx(nll, rel=1e-5)
    assert result["words"] == wikitext_words(TEXT)
    assert result["word_ppl"] == pytest.approx(math.exp(nll / result["words"]), rel=1e-5)
    assert result["token_ppl"] == pytest.approx(math.exp(nll / len(ids)), rel=1e-5)
    assert result["bits_per_byte"] == pytest.approx(nll / (len(detokenize(TEXT).encode()) * math.log(2)), rel=1e-5)
    # Through the command's loader: a model folder with its training config (seq_len taken from it).
    (tmp_path / "model" / "train_config.json").write_text(json.dumps({"seq_len": 7}))
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "test.txt").write_text(TEXT)
    loaded = evaluate(tmp_path / "model", data_dir=tmp_path / "data", device="cpu")
    assert loaded["nll"] == pytest.approx(nll, rel=1e-4) and loaded["seq_len"] == 7 and loaded["split"] == "test"


def test_bad_split_and_missing_file_are_named(tmp_path):
    with pytest.raises(ValueError, match="split"):
        read_split("train", tmp_path)
    with pytest.raises(FileNotFoundError, match="valid.txt"):
        read_split("valid", tmp_path)


def test_eval_command_writes_the_numbers(tmp_path, capsys):
    from assocmem.cli import main

    _tiny_checkpoint(tmp_path / "model", [detokenize(TEXT)] * 3)
    (tmp_path / "model" / "train_config.json").write_text(json.dumps({"seq_len": 16}))
    (tmp_path / "eval" / "wikitext2").mkdir(parents=True)
    (tmp_path / "eval" / "wikitext2" / "valid.txt").write_text(TEXT)
    out = tmp_path / "wt2.json"
    argv = ["eval", str(tmp_path / "model"), "--wikitext2", "valid", "--data-dir", str(tmp_path / "eval"),
            "--device", "cpu", "--out", str(out)]  # fmt: skip
    assert main(argv) == 0
    saved = json.loads(out.read_text())
    assert saved["split"] == "valid" and saved["words"] == wikitext_words(TEXT) and saved["word_ppl"] > 1
    assert "word perplexity" in capsys.readouterr().out
