"""Checkpoints: written into a temporary folder, then renamed into place, so a crash never leaves a
half-written checkpoint under a final name and never touches the last good one.

A checkpoint folder `checkpoint-0000200/` holds `model/` (a Hugging Face directory: config, safetensors
weights, tokenizer), `trainer.pt` (optimizer, schedule, RNG states, step) and `train_config.json`.
"""

import json
import os
import shutil
from pathlib import Path

import torch

PREFIX = "checkpoint-"


def _fsync_tree(folder: Path) -> None:
    for path in folder.rglob("*"):
        if path.is_file():
            with open(path, "rb") as f:
                os.fsync(f.fileno())


def write_atomically(final: Path, fill) -> Path:
    """Call fill(tmp_folder), then rename tmp_folder to `final` (replacing an older one of that name)."""
    final = Path(final)
    tmp = final.with_name(f".{final.name}.tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    fill(tmp)
    _fsync_tree(tmp)
    if final.exists():
        old = final.with_name(f".{final.name}.old")
        if old.exists():
            shutil.rmtree(old)
        final.rename(old)
        tmp.rename(final)
        shutil.rmtree(old)
    else:
        tmp.rename(final)
    return final


def save_checkpoint(out_dir: Path, step: int, *, model, model_state: dict, tokenizer, trainer_state: dict,
                    train_config: dict, keep_last: int) -> Path:
    def fill(tmp: Path) -> None:
        model.save_pretrained(tmp / "model", state_dict=model_state)
        tokenizer.save_pretrained(tmp / "model")
        torch.save(trainer_state, tmp / "trainer.pt")
        (tmp / "train_config.json").write_text(json.dumps(train_config, indent=2))

    path = write_atomically(Path(out_dir) / f"{PREFIX}{step:07d}", fill)
    for old in list_checkpoints(out_dir)[:-keep_last]:
        shutil.rmtree(old)
    return path


def list_checkpoints(out_dir: Path) -> list[Path]:
    """Complete checkpoints in out_dir, oldest first."""
    folder = Path(out_dir)
    if not folder.is_dir():
        return []
    found = [p for p in folder.iterdir() if p.is_dir() and p.name.startswith(PREFIX) and p.name[len(PREFIX):].isdigit()]
    return sorted(found, key=lambda p: int(p.name[len(PREFIX):]))


def resolve_checkpoint(path_or_run: str | Path) -> Path:
    """A checkpoint folder, or a run folder (its newest checkpoint)."""
    path = Path(path_or_run)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint {str(path)!r} does not exist")
    if not (path / "trainer.pt").exists():
        found = list_checkpoints(path)
        if not found:
            raise FileNotFoundError(f"{str(path)!r} is neither a checkpoint folder nor a run folder holding one")
        path = found[-1]
    for needed in ("trainer.pt", "train_config.json", "model/config.json", "model/model.safetensors"):
        if not (path / needed).exists():
            raise ValueError(f"checkpoint {str(path)!r} is incomplete: {needed} is missing")
    return path


def load_trainer_state(path: Path) -> dict:
    try:
        state = torch.load(Path(path) / "trainer.pt", map_location="cpu", weights_only=False)
    except Exception as error:  # noqa: BLE001 - any unreadable file is a corrupt checkpoint
        raise ValueError(f"checkpoint {str(path)!r}: trainer.pt is unreadable ({type(error).__name__}: {error})") \
            from error
    for key in ("step", "optimizer", "scheduler", "rng"):
        if key not in state:
            raise ValueError(f"checkpoint {str(path)!r}: trainer.pt has no {key!r}; it is not an assocmem checkpoint")
    return state
