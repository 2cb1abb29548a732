"""The trainer: losses fall, a resumed run equals an uninterrupted one, checkpoints are atomic and loadable,
bad input is refused without overwriting anything, the commands around it work."""

import csv
import json
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

from assocmem.cli import main
from assocmem.train import train
from assocmem.train.checkpoint import list_checkpoints, write_atomically
from assocmem.train.config import TrainConfig


def losses(run_dir) -> dict[int, float]:
    with open(Path(run_dir) / "log.csv", newline="") as f:
        return {int(r["step"]): float(r["loss"]) for r in csv.DictReader(f) if r["loss"]}


def test_training_writes_checkpoints_logs_and_a_loadable_model(tiny_config):
    cfg = tiny_config(max_steps=12, lr=1e-2)
    result = train(cfg)
    run = Path(cfg.out_dir)
    curve = losses(run)
    assert sorted(curve) == list(range(1, 13))
    assert curve[12] < curve[1] - 0.5  # it learns the toy language
    assert [p.name for p in list_checkpoints(run)] == ["checkpoint-0000009", "checkpoint-0000012"]  # keep_last=2
    assert (run / "loss.png").stat().st_size > 0 and (run / "tensorboard").is_dir()
    import assocmem  # noqa: F401 - registers the model type

    model = AutoModelForCausalLM.from_pretrained(run / "final")
    assert model.config.vocab_size == 320
    assert result["val_ppl"] == pytest.approx(torch.tensor(result["val_loss"]).exp().item())
    assert result["parameters"] == sum(p.numel() for p in model.parameters())
    assert isinstance(result["sample"], str) and result["sample"]


def test_interrupted_and_resumed_run_equals_uninterrupted_run(tiny_config, tmp_path, monkeypatch):
    full = tiny_config(out_dir=str(tmp_path / "full"), save_every=100)
    train(full)
    from assocmem.train import trainer

    real = trainer.global_indices

    def ctrl_c_at_step_4(seqs, step, batch_size):
        if step == 3:
            raise KeyboardInterrupt
        return real(seqs, step, batch_size)

    monkeypatch.setattr(trainer, "global_indices", ctrl_c_at_step_4)
    split = tiny_config(out_dir=str(tmp_path / "split"), save_every=100)
    with pytest.raises(KeyboardInterrupt):
        train(split)
    assert [p.name for p in list_checkpoints(tmp_path / "split")] == ["checkpoint-0000003"]  # saved on Ctrl-C
    monkeypatch.setattr(trainer, "global_indices", real)
    train(split, resume=str(tmp_path / "split"))
    a, b = losses(tmp_path / "full"), losses(tmp_path / "split")
    assert sorted(a) == sorted(b) == list(range(1, 7))
    for step in a:
        assert a[step] == pytest.approx(b[step], rel=1e-6, abs=1e-6), step


def test_sigterm_saves_a_checkpoint_and_the_run_resumes(tiny_config, tmp_path, monkeypatch):
    """`timeout`, `kill` or a scheduler's preemption (SIGTERM) stops a run like Ctrl-C: checkpoint, then exit."""
    import os
    import signal

    from assocmem.train import trainer

    real = trainer.global_indices

    def terminated_at_step_4(seqs, step, batch_size):
        if step == 3:
            os.kill(os.getpid(), signal.SIGTERM)
        return real(seqs, step, batch_size)

    monkeypatch.setattr(trainer, "global_indices", terminated_at_step_4)
    cfg = tiny_config(out_dir=str(tmp_path / "run"), save_every=100)
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(KeyboardInterrupt):
        train(cfg)
    assert signal.getsignal(signal.SIGTERM) is before  # the handler is the trainer's only while it runs
    assert [p.name for p in list_checkpoints(tmp_path / "run")] == ["checkpoint-0000003"]
    monkeypatch.setattr(trainer, "global_indices", real)
    assert train(cfg, resume=cfg.out_dir)["steps"] == 6


def test_resume_refuses_a_changed_config(tiny_config, tmp_path):
    train(tiny_config(max_steps=3))
    with pytest.raises(ValueError, match="lr"):
        train(tiny_config(lr=1e-4), resume=tiny_config().out_dir)


def test_a_crash_while_saving_leaves_the_last_checkpoint_intact(tmp_path):
    good = write_atomically(tmp_path / "checkpoint-0000001", lambda d: (d / "weights").write_text("good"))

    def crash(folder):
        (folder / "weights").write_text("half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        write_atomically(tmp_path / "checkpoint-0000001", crash)
    assert (good / "weights").read_text() == "good"
    with pytest.raises(RuntimeError):
        write_atomically(tmp_path / "checkpoint-0000002", crash)
    assert not (tmp_path / "checkpoint-0000002").exists()
    assert [p.name for p in list_checkpoints(tmp_path)] == ["checkpoint-0000001"]


def test_bad_input_is_refused_and_nothing_is_overwritten(tiny_config, tmp_path, capsys):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        train(tiny_config(corpus=str(tmp_path / "missing")))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="no non-empty text files"):
        train(tiny_config(corpus=str(empty)))
    assert main(["train", "--set", "learning_rate=0.1"]) == 2
    assert "unknown config key" in capsys.readouterr().err
    cfg = tiny_config(max_steps=3)
    train(cfg)
    before = {p: p.stat().st_mtime_ns for p in Path(cfg.out_dir).rglob("*") if p.is_file()}
    with pytest.raises(ValueError, match="already holds checkpoints"):
        train(cfg)
    after = {p: p.stat().st_mtime_ns for p in Path(cfg.out_dir).rglob("*") if p.is_file()}
    assert before == after
    checkpoint = list_checkpoints(cfg.out_dir)[-1]
    (checkpoint / "trainer.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="unreadable"):
        train(tiny_config(max_steps=6), resume=str(checkpoint))
    (checkpoint / "model" / "model.safetensors").unlink()
    with pytest.raises(ValueError, match="incomplete"):
        train(tiny_config(max_steps=6), resume=str(checkpoint))


def test_tokenizer_vocabulary_mismatch_is_refused(tiny_config, tmp_path):
    cfg = tiny_config(max_steps=3)
    train(cfg)
    final = Path(cfg.out_dir) / "final"
    config = json.loads((final / "config.json").read_text())
    config["vocab_size"] = 999
    (final / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="mismatch"):
        from assocmem.eval.perplexity import load_for_inference

        load_for_inference(final, torch.device("cpu"))


def test_eval_and_generate_commands(tiny_config, capsys):
    cfg = tiny_config(max_steps=3)
    train(cfg)
    capsys.readouterr()
    assert main(["eval", cfg.out_dir, "--batches", "2"]) == 0
    assert "perplexity" in capsys.readouterr().out
    assert main(["generate", cfg.out_dir, "--prompt", "the delta", "--max-new-tokens", "5", "--greedy"]) == 0
    assert capsys.readouterr().out.startswith("the delta")


@pytest.mark.parametrize("option", [{"grad_accum": 2}, {"activation_checkpointing": True}, {"compile": True}],
                         ids=["accumulation", "checkpointing", "compile"])
def test_execution_options_leave_the_losses_unchanged(option, tiny_config, tmp_path):
    steps = 2 if "compile" in option else 4
    base = tiny_config(out_dir=str(tmp_path / "base"), max_steps=steps, save_every=100, sample_tokens=0)
    train(base)
    other = tiny_config(out_dir=str(tmp_path / "other"), max_steps=steps, save_every=100, sample_tokens=0, **option)
    train(other)
    a, b = losses(base.out_dir), losses(other.out_dir)
    assert sorted(a) == sorted(b) == list(range(1, steps + 1))
    for step in a:
        assert a[step] == pytest.approx(b[step], rel=1e-4), step
    saved = AutoModelForCausalLM.from_pretrained(Path(other.out_dir) / "final").state_dict().keys()
    assert saved == AutoModelForCausalLM.from_pretrained(Path(base.out_dir) / "final").state_dict().keys()


def test_target_count_without_reading_tokens(tiny_config):
    from assocmem.train.parallel import Distributed
    from assocmem.train.trainer import count_targets, make_batch, prepare_data

    data = prepare_data(tiny_config(), Distributed())
    indices = list(range(min(6, data.train.count)))
    for masking in (True, False):
        assert data.train.targets(indices, masking) == count_targets(make_batch(data.train, indices, masking))


LLAMA = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=2,
             max_position_embeddings=128)  # fmt: skip


def test_trainer_takes_another_hugging_face_causal_lm(tiny_config, tmp_path, capsys):
    """model_class names any Hugging Face causal LM (here transformers' Llama); it trains, checkpoints,
    resumes, is evaluated and sampled like ours."""
    cfg = tiny_config(model_class="transformers:LlamaForCausalLM", model=LLAMA, document_masking=False, max_steps=12,
                      lr=1e-2, activation_checkpointing=True)  # fmt: skip
    result = train(cfg)
    curve = losses(Path(cfg.out_dir))
    assert curve[12] < curve[1] - 0.5 and isinstance(result["sample"], str)
    model = AutoModelForCausalLM.from_pretrained(Path(cfg.out_dir) / "final")
    assert type(model).__name__ == "LlamaForCausalLM" and model.config.vocab_size == 320
    longer = TrainConfig.from_dict({**cfg.to_dict(), "max_steps": 14})
    assert train(longer, resume=cfg.out_dir)["steps"] == 14
    capsys.readouterr()
    assert main(["eval", cfg.out_dir, "--batches", "2"]) == 0
    assert "perplexity" in capsys.readouterr().out


def test_another_model_class_is_checked(tiny_config):
    with pytest.raises(ValueError, match="document_masking"):
        tiny_config(model_class="transformers:LlamaForCausalLM", model=LLAMA)
    with pytest.raises(ValueError, match="module:Class"):
        tiny_config(model_class="LlamaForCausalLM", document_masking=False)
    with pytest.raises(ValueError, match="cannot be imported"):
        train(tiny_config(model_class="transformers:NoSuchModel", document_masking=False))


def test_comparison_configs_build_models_of_the_same_size():
    """configs/compare/*.toml (the paper's comparison at our scale): every config parses and builds a model
    of 58 ± 3M parameters at the 16,384-token vocabulary (on the meta device: nothing is allocated)."""
    from assocmem.train.config import load_config
    from assocmem.train.trainer import build_model

    class Tokenizer:
        eos_token_id, pad_token_id = 0, 1

        def __len__(self):
            return 16384

    configs = sorted((Path(__file__).resolve().parents[2] / "configs" / "compare").glob("*.toml"))
    assert len(configs) == 7
    for path in configs:
        cfg = load_config(path)
        assert cfg.max_steps * cfg.batch_size * cfg.seq_len >= 100_000_000 and not cfg.document_masking
        with torch.device("meta"):
            model = build_model(cfg, Tokenizer())
        assert abs(sum(p.numel() for p in model.parameters()) - 58e6) < 3e6, path.name
