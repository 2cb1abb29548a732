"""Zero-shot tasks: the four raw formats normalised, and lm-eval's `hf` model on one of our checkpoints
agreeing with the log-likelihoods computed here by hand."""

import bz2
import importlib.util
import json

import pytest
import torch

from assocmem.eval.zero_shot import TASKS, evaluate, load_task, prepare

ARC = [("What melts ice?", ["Heat", "Cold", "Salt water", "Wind"], "A"),
       ("Which is a mammal?", ["Trout", "Whale", "Frog", "Crab"], "B"),
       ("What do plants need?", ["Light", "Plastic", "Noise"], "1")]  # fmt: skip


def write_raw(root):
    (root / "arc").mkdir(parents=True)
    for name, items in (("ARC-Easy-Test.jsonl", ARC), ("ARC-Challenge-Test.jsonl", ARC[:2])):
        lines = []
        for stem, texts, key in items:
            labels = ["1", "2", "3"] if key == "1" else ["A", "B", "C", "D"][: len(texts)]
            choices = [{"text": t, "label": lab} for t, lab in zip(texts, labels)]
            lines.append(json.dumps({"id": stem, "question": {"stem": stem, "choices": choices}, "answerKey": key}))
        (root / "arc" / name).write_text("\n".join(lines) + "\n")
    (root / "piqa").mkdir()
    goals = [{"goal": "Open a jar", "sol1": "Twist the lid", "sol2": "Eat the lid"},
             {"goal": "Dry a towel", "sol1": "Soak it", "sol2": "Hang it in the sun"}]  # fmt: skip
    (root / "piqa" / "valid.jsonl").write_text("".join(json.dumps(g) + "\n" for g in goals))
    (root / "piqa" / "valid-labels.lst").write_text("0\n1\n")
    (root / "hellaswag").mkdir()
    hs = "Cooking: A man cracks an egg. he\n2\nflies away.\nsings loudly.\npours it into a pan.\nreads a book.\n" * 2
    (root / "hellaswag" / "hellaswag_val_full.txt.bz2").write_bytes(bz2.compress(hs.encode()))
    (root / "openbookqa").mkdir()
    rows = ["ID\tQuestion Stem\tChoices\tComplete Question\tAnswer Key",
            "1\tThe sun is a\t(A) star (B) planet (C) moon (D) comet\tx\tA",
            "2\tFog forms near\t(A) a desert (B) a marsh (C) lava (D) space\tx\tB"]  # fmt: skip
    (root / "openbookqa" / "test.tsv").write_text("\n".join(rows) + "\n")


def test_raw_formats_become_query_choices_gold(tmp_path):
    write_raw(tmp_path)
    arc = load_task("arc_easy", tmp_path)
    assert arc[0] == {"query": "Question: What melts ice?\nAnswer:", "choices": ["Heat", "Cold", "Salt water", "Wind"],
                      "gold": 0}  # fmt: skip
    assert arc[1]["gold"] == 1 and arc[2]["gold"] == 0 and len(arc[2]["choices"]) == 3  # numeric labels too
    assert len(load_task("arc_challenge", tmp_path)) == 2
    assert load_task("piqa", tmp_path)[1] == {"query": "Question: Dry a towel\nAnswer:",
                                              "choices": ["Soak it", "Hang it in the sun"], "gold": 1}  # fmt: skip
    hs = load_task("hellaswag", tmp_path)
    assert len(hs) == 2 and hs[0]["query"] == "Cooking: A man cracks an egg. he" and hs[0]["gold"] == 2
    assert hs[0]["choices"][2] == "pours it into a pan."
    obqa = load_task("openbookqa", tmp_path)
    assert obqa[1] == {"query": "Fog forms near", "choices": ["a desert", "a marsh", "lava", "space"], "gold": 1}
    paths = prepare(TASKS, tmp_path, tmp_path / "prepared")
    assert [json.loads(x) for x in paths["openbookqa"].read_text().splitlines()] == obqa


def test_missing_files_and_bad_labels_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="arc_easy.*ARC-Easy-Test.jsonl"):
        load_task("arc_easy", tmp_path)
    write_raw(tmp_path)
    (tmp_path / "piqa" / "valid-labels.lst").write_text("0\n")
    with pytest.raises(ValueError, match="2 questions but 1 labels"):
        load_task("piqa", tmp_path)
    with pytest.raises(ValueError, match="unknown task 'mmlu'"):
        load_task("mmlu", tmp_path)


def _tiny_checkpoint(folder, texts):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    from assocmem.data.tokenizer import EOS, PAD, as_hf_tokenizer
    from assocmem.models import AssocMemConfig, AssocMemForCausalLM

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    trainer = trainers.BpeTrainer(vocab_size=320, special_tokens=[EOS, PAD], initial_alphabet=alphabet)
    tok.train_from_iterator(texts, trainer)
    hf_tok = as_hf_tokenizer(tok)
    torch.manual_seed(0)
    config = AssocMemConfig(vocab_size=len(hf_tok), hidden_size=32, num_heads=2, layer_types=["deltanet", "attention"],
                            mlp_multiple_of=16)  # fmt: skip
    model = AssocMemForCausalLM(config).eval()
    with torch.no_grad():  # sharper than the initialisation so that choices differ clearly
        model.lm_head.weight.mul_(20)
    model.save_pretrained(folder)
    hf_tok.save_pretrained(folder)
    return model, hf_tok


def _by_hand(model, tok, docs):
    """lm-eval's recipe: continuation = tokens of (query + " " + choice) after those of the query."""
    right = []
    for d in docs:
        scores = []
        for choice in d["choices"]:
            ctx = tok(d["query"], add_special_tokens=False)["input_ids"]
            whole = tok(d["query"] + " " + choice, add_special_tokens=False)["input_ids"]
            ids = torch.tensor([whole])
            with torch.no_grad():
                logp = model(ids).logits.log_softmax(-1)[0]
            scores.append(sum(logp[i - 1, whole[i]].item() for i in range(len(ctx), len(whole))))
        right.append(max(range(len(scores)), key=scores.__getitem__) == d["gold"])
    return sum(right) / len(right)


@pytest.mark.skipif(importlib.util.find_spec("lm_eval") is None, reason="lm-eval is not installed (eval extra)")
def test_lm_eval_hf_model_on_our_checkpoint_matches_the_likelihoods_by_hand(tmp_path):
    write_raw(tmp_path / "raw")
    docs = {t: load_task(t, tmp_path / "raw") for t in TASKS}
    texts = [d["query"] + " " + c for ds in docs.values() for d in ds for c in d["choices"]]
    model, tok = _tiny_checkpoint(tmp_path / "model", texts)
    result = evaluate(tmp_path / "model", TASKS, data_dir=tmp_path / "raw", device="cpu", batch_size=4)
    for task, r in result["tasks"].items():
        assert r["n"] == len(docs[task])
        assert r["acc"] == pytest.approx(_by_hand(model, tok, docs[task])), task
    with pytest.raises(ValueError, match="unknown task"):
        evaluate(tmp_path / "model", ["arc_easy", "lambada"], data_dir=tmp_path / "raw")


def test_a_task_yaml_without_its_data_placeholder_is_refused(tmp_path, monkeypatch):
    """evaluate() points each YAML at its prepared file; a YAML that no longer names the placeholder path
    must fail rather than let lm-eval read whatever lies at the repository path."""
    from assocmem.eval import zero_shot

    (tmp_path / "tasks").mkdir()
    (tmp_path / "tasks" / "assocmem_piqa.yaml").write_text("task: assocmem_piqa\ndataset_path: json\n")
    monkeypatch.setattr(zero_shot, "TASK_DIR", tmp_path / "tasks")
    with pytest.raises(ValueError, match="no longer names"):
        zero_shot._task_configs({"piqa": tmp_path / "piqa.jsonl"}, tmp_path)
