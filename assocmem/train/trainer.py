"""The training loop: data, model, optimizer, schedule, logging, evaluation, checkpoints, resumption."""

import contextlib
import json
import math
import random
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..bench.common import machine_info
from ..data.corpus import load_corpus, split_documents
from ..data.tokenizer import get_tokenizer
from ..data.tokens import PackedSequences, build_token_cache
from ..models import AssocMemForCausalLM, preset_config
from ..models.modeling import AssocMemBlock
from ..modules.loss import next_token_loss
from .checkpoint import list_checkpoints, load_trainer_state, resolve_checkpoint, save_checkpoint, write_atomically
from .config import TrainConfig
from .logs import RunLog, plot_loss_curve
from .parallel import Distributed, parallelize, setup_distributed, teardown_distributed
from .schedule import build_optimizer, warmup_cosine

# Keys that may differ between a run and its resumption without changing the loss curve's meaning.
RESUMABLE_CHANGES = {"out_dir", "progress", "log_every", "eval_every", "save_every", "keep_last", "threads",
                     "max_steps", "sample_tokens", "sample_prompt", "eval_batches", "device", "compile",
                     "activation_checkpointing"}


@dataclass
class Data:
    tokenizer: object
    train: PackedSequences
    val: PackedSequences


def resolve_device(cfg: TrainConfig, distributed: Distributed) -> torch.device:
    kind = cfg.device
    if kind == "auto":
        kind = "cuda" if torch.cuda.is_available() else "cpu"
    if kind == "cuda":
        if not torch.cuda.is_available():
            raise ValueError("device = 'cuda' but no CUDA device is available")
        return torch.device("cuda", distributed.local_rank)
    return torch.device("cpu")


def prepare_data(cfg: TrainConfig, distributed: Distributed, tokenizer=None) -> Data:
    """Corpus, split, tokenizer and token caches; the main process builds the caches, the others wait."""
    cache_dir = Path(cfg.cache_dir).expanduser()
    docs = load_corpus(cfg.corpus)
    train_docs, val_docs = split_documents(docs, cfg.val_fraction, cfg.seed)
    for turn in ("main", "others"):
        if (turn == "main") == distributed.is_main:
            if tokenizer is None:
                tokenizer = get_tokenizer(train_docs, cfg.vocab_size, cache_dir, cfg.tokenizer or None)
            train_cache = build_token_cache(train_docs, tokenizer, cache_dir, "train")
            val_cache = build_token_cache(val_docs, tokenizer, cache_dir, "val")
        distributed.barrier()
    val = PackedSequences(val_cache, min(cfg.seq_len, len(val_cache)), cfg.seed)
    return Data(tokenizer, PackedSequences(train_cache, cfg.seq_len, cfg.seed), val)


def model_class(name: str = ""):
    """Our AssocMemForCausalLM, or the Hugging Face causal LM class named "module:Class"."""
    if not name:
        return AssocMemForCausalLM
    import importlib

    module, _, attr = name.partition(":")
    try:
        cls = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as error:
        raise ValueError(f"model_class {name!r} cannot be imported: {error}") from error
    if not hasattr(cls, "config_class") or not hasattr(cls, "from_pretrained"):
        raise ValueError(f"model_class {name!r} is not a Hugging Face PreTrainedModel")
    return cls


def build_model(cfg: TrainConfig, tokenizer):
    ids = dict(vocab_size=len(tokenizer), eos_token_id=tokenizer.eos_token_id, bos_token_id=tokenizer.eos_token_id,
               pad_token_id=tokenizer.pad_token_id)  # fmt: skip
    return model_from_config(cfg, **ids)


def model_from_config(cfg: TrainConfig, **ids):
    """A fresh model of `cfg` (ours, or its `model_class`) with the token ids given (vocab_size, eos, ...)."""
    if cfg.model_class:
        cls = model_class(cfg.model_class)
        return cls(cls.config_class(**{**cfg.model, **ids}))
    return AssocMemForCausalLM(preset_config(cfg.preset, **ids, **cfg.model))


def _blocks_of(model) -> type:
    """The repeated block's class (for activation checkpointing and FSDP): ours, or the first entry of the
    `layers` list that Hugging Face causal LMs keep (model.model.layers, model.backbone.layers, ...)."""
    if isinstance(model, AssocMemForCausalLM):
        return AssocMemBlock
    for name, module in model.named_modules():
        if name.endswith("layers") and isinstance(module, torch.nn.ModuleList) and len(module):
            return type(module[0])
    raise ValueError(f"{type(model).__name__}: no `layers` list of blocks found")


def global_indices(seqs: PackedSequences, step: int, batch_size: int) -> list[int]:
    """The windows of optimizer step `step` (0-based): the data position is a function of the step."""
    first = step * batch_size
    out = []
    for g in range(first, first + batch_size):
        epoch, offset = divmod(g, seqs.count)
        out.append(int(seqs.order(epoch)[offset]))
    return out


def make_batch(seqs: PackedSequences, indices, document_masking: bool) -> dict:
    if document_masking:
        return seqs.batch(indices)
    ids = torch.stack([seqs.window(int(i))[0] for i in indices])
    return {"input_ids": ids, "cu_seqlens": None, "labels": ids.clone()}


def count_targets(batch: dict) -> int:
    return int((batch["labels"][:, 1:] != -100).sum())


def loss_sum(model, batch: dict, device: torch.device, autocast: bool) -> torch.Tensor:
    ids = batch["input_ids"].to(device)
    cu = batch["cu_seqlens"].to(device) if batch["cu_seqlens"] is not None else None
    extra = {} if cu is None else {"cu_seqlens": cu}  # only with document masking, which only ours take
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
        logits = model(input_ids=ids, use_cache=False, **extra).logits
    labels = batch["labels"].to(device)
    return next_token_loss(logits, labels, reduction="sum")


@torch.no_grad()
def evaluate(model, seqs: PackedSequences, cfg: TrainConfig, device, autocast, distributed: Distributed,
             batches: int | None = None) -> float:
    """Mean next-token cross-entropy over the first windows of `seqs` (a fixed set), in nats per token."""
    per_batch = max(1, cfg.batch_size // cfg.grad_accum)
    total = min(seqs.count, (batches or cfg.eval_batches) * per_batch)
    mine = list(range(total))[distributed.rank :: distributed.world_size]
    was_training = model.training
    model.eval()
    sums = torch.zeros(2, dtype=torch.float64, device=device)
    for start in range(0, len(mine), per_batch):
        batch = make_batch(seqs, mine[start : start + per_batch], cfg.document_masking)
        sums[0] += loss_sum(model, batch, device, autocast).double()
        sums[1] += count_targets(batch)
    distributed.all_reduce_sum(sums)
    model.train(was_training)
    return (sums[0] / sums[1].clamp_min(1)).item()


def _rng_state() -> dict:
    return {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}


def _set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _check_resumable(saved: dict, cfg: TrainConfig) -> None:
    now = cfg.to_dict()
    defaults = TrainConfig().to_dict()  # keys added since the checkpoint was written had their defaults
    saved = {**defaults, **saved}
    changed = sorted(k for k in now if k not in RESUMABLE_CHANGES and saved.get(k) != now[k])
    if changed:
        details = ", ".join(f"{k}: {saved.get(k)!r} -> {now[k]!r}" for k in changed)
        raise ValueError(f"cannot resume: the config differs from the checkpoint's in {details}")


def sample_text(model_dir: Path, prompt: str, max_new_tokens: int, device: torch.device, seed: int = 0,
                model_class_name: str = "") -> str:  # fmt: skip
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = model_class(model_class_name).from_pretrained(model_dir).to(device).eval()
    ids = tokenizer(prompt, return_tensors="pt", add_special_tokens=False)["input_ids"].to(device)
    torch.manual_seed(seed)
    out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens, do_sample=True,
                         temperature=0.8, top_k=40, pad_token_id=tokenizer.pad_token_id)
    return tokenizer.decode(out[0], skip_special_tokens=True)


def train(cfg: TrainConfig, resume: str | None = None) -> dict:
    """Train per `cfg`; with `resume` (a checkpoint or run folder) continue exactly where it stopped."""
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # our own bar is the one to watch
    out_dir = Path(cfg.out_dir)
    checkpoint, trainer_state, tokenizer = None, None, None
    if resume:
        checkpoint = resolve_checkpoint(resume)
        trainer_state = load_trainer_state(checkpoint)
        _check_resumable(json.loads((checkpoint / "train_config.json").read_text()), cfg)
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(checkpoint / "model")
    elif list_checkpoints(out_dir):
        raise ValueError(f"{str(out_dir)!r} already holds checkpoints; pass --resume to continue that run, or "
                         "choose another out_dir (nothing was overwritten)")
    probe = "cuda" if (cfg.device == "cuda" or (cfg.device == "auto" and torch.cuda.is_available())) else "cpu"
    distributed = setup_distributed(cfg.parallel, probe)
    try:
        with _terminate_as_interrupt():
            return _train(cfg, out_dir, distributed, checkpoint, trainer_state, tokenizer)
    finally:
        teardown_distributed()


@contextlib.contextmanager
def _terminate_as_interrupt():
    """SIGTERM (a scheduler's preemption, `timeout`, `kill`) is handled like Ctrl-C: the run saves a checkpoint
    at the step it reached and stops; `--resume` continues it. Only the main thread can own a signal handler,
    so elsewhere nothing changes."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _train(cfg, out_dir, distributed, checkpoint, trainer_state, tokenizer) -> dict:
    device = resolve_device(cfg, distributed)
    if cfg.batch_size % (distributed.world_size * cfg.grad_accum):
        raise ValueError(f"batch_size ({cfg.batch_size}) must be a multiple of processes x grad_accum "
                         f"({distributed.world_size} x {cfg.grad_accum})")
    autocast = cfg.precision == "bf16" or (cfg.precision == "auto" and device.type == "cuda")
    torch.manual_seed(cfg.seed)
    random.seed(cfg.seed)
    np.random.seed(cfg.seed)
    data = prepare_data(cfg, distributed, tokenizer)
    if checkpoint is not None:
        model = model_class(cfg.model_class).from_pretrained(checkpoint / "model")
        if model.config.vocab_size != len(data.tokenizer):
            raise ValueError(f"tokenizer/vocabulary mismatch: the checkpoint's model has {model.config.vocab_size} "
                             f"tokens, its tokenizer {len(data.tokenizer)}")
    else:
        model = build_model(cfg, data.tokenizer)
    model.to(device)
    parameters = sum(p.numel() for p in model.parameters())  # before sharding: the whole model's
    trained = parallelize(model, block_type=_blocks_of(model), activation_checkpointing=cfg.activation_checkpointing,
                          compile=cfg.compile, parallel=cfg.parallel, distributed=distributed, device=device)
    optimizer = build_optimizer(model, lr=cfg.lr, weight_decay=cfg.weight_decay, betas=(cfg.beta1, cfg.beta2))
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: warmup_cosine(
        s, warmup_steps=cfg.warmup_steps, max_steps=cfg.max_steps, min_lr_ratio=cfg.min_lr_ratio))
    step = 0
    if trainer_state is not None:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

        set_optimizer_state_dict(model, optimizer, trainer_state["optimizer"],
                                 options=StateDictOptions(full_state_dict=True))
        schedule.load_state_dict(trainer_state["scheduler"])
        # The learning rate follows this run's schedule (max_steps may have been changed on resumption).
        for group, base, factor in zip(optimizer.param_groups, schedule.base_lrs, schedule.lr_lambdas):
            group["lr"] = base * factor(schedule.last_epoch)
        _set_rng_state(trainer_state["rng"])
        step = trainer_state["step"]

    out_dir.mkdir(parents=True, exist_ok=True)
    log = RunLog(out_dir, resume_step=step) if distributed.is_main else None
    if distributed.is_main:
        what = f"{cfg.preset} {model.config.mixer_types}" if not cfg.model_class else cfg.model_class
        print(f"assocmem train: {what} ({parameters / 1e6:.2f}M parameters), "
              f"{len(data.train.cache):,} training tokens, vocabulary {len(data.tokenizer)}, device {device}, "
              f"{distributed.world_size} process(es), {'bf16 autocast' if autocast else 'fp32'}", flush=True)

    def checkpoint_now(at_step: int) -> Path | None:
        from torch.distributed.checkpoint.state_dict import (
            StateDictOptions,
            get_model_state_dict,
            get_optimizer_state_dict,
        )

        options = StateDictOptions(full_state_dict=True, cpu_offload=True)
        model_state = get_model_state_dict(model, options=options)
        optim_state = get_optimizer_state_dict(model, optimizer, options=options)
        path = None
        if distributed.is_main:
            path = save_checkpoint(out_dir, at_step, model=model, model_state=model_state, tokenizer=data.tokenizer,
                                   trainer_state={"step": at_step, "optimizer": optim_state,
                                                  "scheduler": schedule.state_dict(), "rng": _rng_state()},
                                   train_config=cfg.to_dict(), keep_last=cfg.keep_last)
        distributed.barrier()
        return path

    per_rank = cfg.batch_size // distributed.world_size
    micro = per_rank // cfg.grad_accum
    tokens_per_step = cfg.batch_size * cfg.seq_len
    from tqdm.auto import tqdm

    bar = tqdm(total=cfg.max_steps, initial=step, disable=not (distributed.is_main and cfg.progress),
               unit="step", dynamic_ncols=True)
    trained.train()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    speeds: list[float] = []
    started, window_start, window_tokens = time.perf_counter(), time.perf_counter(), 0
    val_loss = None
    try:
        while step < cfg.max_steps:
            indices = global_indices(data.train, step, cfg.batch_size)
            n_targets = data.train.targets(indices, cfg.document_masking)
            mine = indices[distributed.rank * per_rank : (distributed.rank + 1) * per_rank]
            step_loss = torch.zeros((), dtype=torch.float64, device=device)
            for a in range(cfg.grad_accum):
                batch = make_batch(data.train, mine[a * micro : (a + 1) * micro], cfg.document_masking)
                loss = loss_sum(trained, batch, device, autocast)
                # Gradient of the global mean: DDP and FSDP average over processes, hence the world size.
                (loss * distributed.world_size / n_targets).backward()
                step_loss += loss.detach().double()
            grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            lr = schedule.get_last_lr()[0]
            schedule.step()
            step += 1
            step_loss = distributed.all_reduce_sum(step_loss).item() / n_targets
            if not math.isfinite(step_loss):
                raise FloatingPointError(f"the training loss became {step_loss} at step {step}")
            window_tokens += tokens_per_step
            bar.update(1)
            row = None
            if step % cfg.log_every == 0 or step == cfg.max_steps:
                now = time.perf_counter()
                speed = window_tokens / (now - window_start)
                speeds.append(speed)
                window_start, window_tokens = now, 0
                row = {"step": step, "tokens": step * tokens_per_step, "loss": step_loss, "lr": lr,
                       "grad_norm": float(grad_norm), "tokens_per_s": speed, "elapsed_s": now - started}
                bar.set_postfix(loss=f"{step_loss:.3f}", tok_s=f"{speed:,.0f}")
            if step % cfg.eval_every == 0 or step == cfg.max_steps:
                val_loss = evaluate(trained, data.val, cfg, device, autocast, distributed)
                row = row or {"step": step, "tokens": step * tokens_per_step, "loss": step_loss}
                row.update(val_loss=val_loss, val_ppl=math.exp(val_loss))
                bar.write(f"step {step}: train loss {step_loss:.3f}, validation loss {val_loss:.3f} "
                          f"(perplexity {math.exp(val_loss):.1f})")
            if row is not None and log is not None:
                log.write(row)
            if step % cfg.save_every == 0 and step < cfg.max_steps:
                checkpoint_now(step)
    except KeyboardInterrupt:
        bar.close()
        if cfg.parallel == "fsdp" and distributed.active:
            print(f"interrupted at step {step}; FSDP needs every process to save, so no checkpoint was written")
        else:
            path = checkpoint_now(step)
            if path is not None:
                print(f"interrupted: saved {path}; continue with --resume {out_dir}")
        raise
    finally:
        bar.close()
        if log is not None:
            log.close()

    last = checkpoint_now(step)
    result = {"steps": step, "tokens": step * tokens_per_step, "parameters": parameters, "val_loss": val_loss,
              "val_ppl": math.exp(val_loss) if val_loss is not None else None, "checkpoint": str(last),
              # Training speed: the median over logging windows after the first (which holds warm-up).
              "tokens_per_s": float(np.median(speeds[1:] if len(speeds) > 1 else speeds)) if speeds else None,
              "peak_memory_gb": torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None,
              "peak_rss_gb": _peak_rss_gb(), "processes": distributed.world_size, "device": str(device),
              "machine": machine_info(device), "config": cfg.to_dict()}
    if distributed.is_main:
        final = write_atomically(out_dir / "final", lambda tmp: _copy_model(last, tmp))
        result["final"] = str(final)
        png = plot_loss_curve(out_dir / "log.csv", out_dir / "loss.png",
                              f"{cfg.model_class or cfg.preset}, {result['tokens']:,} tokens, {cfg.corpus}")
        result["loss_png"] = str(png) if png else None
        if cfg.sample_tokens:
            result["sample"] = sample_text(final, cfg.sample_prompt, cfg.sample_tokens, device, cfg.seed,
                                           cfg.model_class)  # fmt: skip
        (out_dir / "result.json").write_text(json.dumps(result, indent=2))
    return result


def _peak_rss_gb() -> float | None:
    """The process's resident-set high-water mark (Linux: KiB), everything since start included."""
    try:
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    except (ImportError, AttributeError):
        return None


def _copy_model(checkpoint: Path, dst: Path) -> None:
    """The final model: the last checkpoint's Hugging Face directory, with the run's config beside it."""
    import shutil

    for item in (checkpoint / "model").iterdir():
        shutil.copy2(item, dst / item.name)
    shutil.copy2(checkpoint / "train_config.json", dst / "train_config.json")
