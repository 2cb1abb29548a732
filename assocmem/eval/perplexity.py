"""Held-out perplexity of a trained model on its run's validation split (or another corpus)."""

import json
import math
from pathlib import Path

import torch

from ..train.checkpoint import resolve_checkpoint
from ..train.config import TrainConfig
from ..train.parallel import Distributed
from ..train.trainer import evaluate, prepare_data


def model_dir_of(path: str | Path) -> tuple[Path, Path]:
    """(Hugging Face model folder, train_config.json) of a final model folder, checkpoint or run folder."""
    path = Path(path)
    if (path / "final" / "config.json").exists():
        path = path / "final"
    if (path / "config.json").exists() and (path / "train_config.json").exists():
        return path, path / "train_config.json"
    checkpoint = resolve_checkpoint(path)
    return checkpoint / "model", checkpoint / "train_config.json"


def load_for_inference(path: str | Path, device: torch.device):
    from transformers import AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    from ..train.trainer import model_class

    model_dir, config_path = model_dir_of(path)
    saved = json.loads(config_path.read_text())
    try:
        model = model_class(saved.get("model_class", "")).from_pretrained(model_dir)
    except Exception as error:  # noqa: BLE001 - report any unreadable model as such
        raise ValueError(f"{str(model_dir)!r} does not hold a loadable model: {error}") from error
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    if len(tokenizer) != model.config.vocab_size:
        raise ValueError(f"tokenizer/vocabulary mismatch in {str(model_dir)!r}: the tokenizer has {len(tokenizer)} "
                         f"tokens, the model {model.config.vocab_size}")
    return model.to(device).eval(), tokenizer, saved


def pick_device(name: str = "auto") -> torch.device:
    """"auto": CUDA where there is a GPU, else the CPU; any other name as given."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def perplexity(path: str | Path, *, corpus: str | None = None, batches: int = 50, device: str = "auto") -> dict:
    device = pick_device(device)
    model, tokenizer, saved = load_for_inference(path, device)
    cfg = TrainConfig.from_dict({**saved, **({"corpus": corpus} if corpus else {})})
    data = prepare_data(cfg, Distributed(), tokenizer)
    autocast = device.type == "cuda"
    loss = evaluate(model, data.val, cfg, device, autocast, Distributed(), batches=batches)
    tokens = min(data.val.count, batches * max(1, cfg.batch_size // cfg.grad_accum)) * data.val.seq_len
    return {"val_loss": loss, "val_ppl": math.exp(loss), "tokens": tokens, "corpus": cfg.corpus}
