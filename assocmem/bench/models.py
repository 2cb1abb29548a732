"""`assocmem bench models`: tokens per second of the language-model presets.

For each preset: forward (no grad) and forward+backward (loss on next-token labels) over a batch of
random tokens, and decoding (one token per step from the cache, after a prompt), with the peak memory
of forward+backward on a GPU. Before timing, each model's cached decoding is checked against its full
forward. Transformer++ of the same size is the in-house baseline (ratios are against it); on a GPU,
flash-linear-attention's DeltaNet model of the same shape joins when it is importable.
With `compile`, our models' forward and forward+backward run under torch.compile (the way the trainer runs
them with `compile = true`; decoding and the cache check stay eager); fla's model runs as it ships (eager, its
own Triton kernels for every layer part), and each row's note says which.
"""

import copy
from pathlib import Path

import torch

from ..models import AssocMemForCausalLM, parameter_count_formula, preset_config
from ..models.presets import ARCHITECTURES
from .common import RESULTS_DIR, CudaPeakMemory, format_table, machine_info, save_results, time_call

COLUMNS = [
    ("model", "model", "s"),
    ("params_m", "params M", ".1f"),
    ("forward_tok_s", "fwd tok/s", ",.0f"),
    ("train_tok_s", "fwd+bwd tok/s", ",.0f"),
    ("train_vs_transformer", "fwd+bwd vs T++", ".2f"),
    ("decode_tok_s", "decode tok/s", ",.0f"),
    ("decode_ms_per_step", "decode ms/step", ".2f"),
    ("decode_vs_transformer", "decode vs T++", ".2f"),
    ("train_peak_gb", "fwd+bwd peak GB", ".2f"),
    ("note", "note", "s"),
]


def _check_cache(model, prompt):
    """Cached decoding of the prompt's second half must give the full forward's logits.

    In float32 within 1e-4 (relative); in a low precision, its error against a float32 copy of the
    model may be at most twice the error of the full forward in that precision (STYLE.md's rule).
    """

    def logits(m):
        with torch.no_grad():
            full = m(prompt, use_cache=False).logits.float()
            split = prompt.shape[1] // 2
            out = m(prompt[:, :split], use_cache=True)
            steps = [out.logits.float()]
            for t in range(split, prompt.shape[1]):
                out = m(prompt[:, t : t + 1], cache=out.cache, use_cache=True)
                steps.append(out.logits.float())
        return full, torch.cat(steps, 1)

    rel = lambda a, b: ((a - b).norm() / b.norm()).item()
    full, cached = logits(model)
    if next(model.parameters()).dtype == torch.float32:
        err, limit = rel(cached, full), 1e-4
    else:
        reference, _ = logits(copy.deepcopy(model).float())
        err, limit = rel(cached, reference), max(2 * rel(full, reference), 1e-3)
    if not err < limit:
        raise RuntimeError(f"cached decoding disagrees with the full forward: relative error {err:.2e} >= {limit:.2e}")
    return err


def _decode_fn(model, prompt, new_tokens):
    """A callable that decodes `new_tokens` greedily from fresh copies of the prompt's cache."""
    with torch.no_grad():
        first = model(prompt, use_cache=True)
    next_ids = first.logits[:, -1:].argmax(-1)

    def decode():
        cache = copy.deepcopy(first.cache)
        ids = next_ids
        with torch.no_grad():
            for _ in range(new_tokens):
                ids = model(ids, cache=cache, use_cache=True).logits[:, -1:].argmax(-1)
        return ids

    return decode


def _fla_deltanet(config, device, dtype):
    """flash-linear-attention's DeltaNet language model of the same shape, or (None, reason)."""
    try:
        from fla.models import DeltaNetConfig, DeltaNetForCausalLM
    except Exception as error:  # noqa: BLE001 - any import failure means the peer is absent
        return None, f"fla not importable: {type(error).__name__}: {error}"
    fla_config = DeltaNetConfig(
        hidden_size=config.hidden_size,
        num_hidden_layers=config.num_hidden_layers,
        num_heads=config.num_heads,
        vocab_size=config.vocab_size,
        intermediate_size=config.intermediate_size,
        use_short_conv=True,
        conv_size=config.conv_size,
        use_gate=False,
        tie_word_embeddings=config.tie_word_embeddings,
    )
    return DeltaNetForCausalLM(fla_config).to(device=device, dtype=dtype), None


def _measure(model, tokens, prompt, new_tokens, device, compiled=None) -> dict:
    """Forward, forward+backward (and its peak memory on a GPU) and, given a prompt, decoding. `compiled`: the
    model under torch.compile, which then runs the forward and forward+backward (the first calls compile)."""
    row = {}
    run = model if compiled is None else compiled
    batch, seq_len = tokens.shape
    model.eval()
    if prompt is not None:
        row["cache_rel_err"] = _check_cache(model, prompt)

    def forward():
        with torch.no_grad():
            return run(tokens, use_cache=False).logits

    row["forward_tok_s"] = batch * seq_len / time_call(forward, device)
    model.train()

    def train_step():
        model.zero_grad(set_to_none=True)
        loss = run(tokens, labels=tokens, use_cache=False).loss
        loss.backward()
        return loss

    if not torch.isfinite(train_step()):
        raise RuntimeError("the training loss is not finite")
    row["train_tok_s"] = batch * seq_len / time_call(train_step, device)
    if device.type == "cuda":
        with CudaPeakMemory(device) as mem:
            train_step()
        row["train_peak_gb"] = mem.peak_bytes / 2**30
    model.zero_grad(set_to_none=True)
    model.eval()
    if prompt is not None:
        seconds = time_call(_decode_fn(model, prompt, new_tokens), device)
        row["decode_tok_s"] = prompt.shape[0] * new_tokens / seconds
        row["decode_ms_per_step"] = seconds / new_tokens * 1e3
    return row


def run(
    size: str = "tiny",
    architectures=ARCHITECTURES,
    batch: int = 4,
    seq_len: int = 512,
    decode_batch: int = 1,
    prompt_len: int = 64,
    new_tokens: int = 64,
    device: str = "cpu",
    with_fla: bool = True,
    out: Path | None = RESULTS_DIR / "models_cpu.json",
    compile: bool = False,
) -> dict:
    device = torch.device(device)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    generator = torch.Generator().manual_seed(0)
    rows = []
    models = [(f"{arch}-{size}", None) for arch in architectures]
    if device.type == "cuda" and with_fla and "deltanet" in architectures:
        models.append((f"fla-deltanet-{size}", f"deltanet-{size}"))
    for name, fla_of in models:
        torch.manual_seed(0)
        config = preset_config(fla_of or name)
        row = {"model": name}
        if fla_of:
            model, reason = _fla_deltanet(config, device, dtype)
            if model is None:
                print(f"{name}: skipped ({reason})")
                rows.append(dict(row, note=reason))
                continue
        else:
            model = AssocMemForCausalLM(config).to(device=device, dtype=dtype)
        row["params_m"] = sum(p.numel() for p in model.parameters()) / 1e6
        if not fla_of:
            assert sum(p.numel() for p in model.parameters()) == parameter_count_formula(config)
        tokens = torch.randint(0, config.vocab_size, (batch, seq_len), generator=generator).to(device)
        prompt = None
        if not fla_of:
            prompt = torch.randint(0, config.vocab_size, (decode_batch, prompt_len), generator=generator).to(device)
        if fla_of:
            try:
                row.update(_measure(model, tokens, prompt, new_tokens, device))
            except Exception as error:  # noqa: BLE001 - the peer failing is recorded, ours failing is not
                row["note"] = f"fla failed: {type(error).__name__}: {str(error)[:200]}"
        else:
            compiled = torch.compile(model) if compile else None
            row.update(_measure(model, tokens, prompt, new_tokens, device, compiled))
            if compile:
                row["note"] = "compiled"
        if fla_of and "note" not in row:
            row["note"] = "eager (fla's kernels)"
        rows.append(row)
        print(format_table([row], COLUMNS), flush=True)
        del model
        if device.type == "cuda":
            torch.cuda.empty_cache()

    baseline = next((r for r in rows if r["model"].startswith("transformer++")), None)
    for row in rows:
        if baseline is None:
            break
        for key, ratio in (("train_tok_s", "train_vs_transformer"), ("decode_tok_s", "decode_vs_transformer")):
            if row.get(key) and baseline.get(key):
                row[ratio] = row[key] / baseline[key]

    result = {
        "benchmark": "models",
        "machine": machine_info(device),
        "setup": {
            "size": size,
            "batch": batch,
            "seq_len": seq_len,
            "decode_batch": decode_batch,
            "prompt_len": prompt_len,
            "new_tokens": new_tokens,
            "dtype": str(dtype).replace("torch.", ""),
            "timing": "median; CUDA events on a GPU, wall time on the CPU",
            "decode": "greedy, one token per forward from the cache (its copy is part of the timed call)",
            "compile": "ours under torch.compile (forward, forward+backward)" if compile else "eager",
        },
        "rows": rows,
    }
    print()
    print(format_table(rows, COLUMNS))
    save_results(result, out, lambda png: _plot(rows, png, result))
    return result


def _plot(rows, path, result):
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no plot")
        return None
    measured = [r for r in rows if r.get("train_tok_s")]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    for ax, key, title in zip(axes, ("forward_tok_s", "train_tok_s", "decode_tok_s"),
                              ("forward", "forward+backward", f"decode (batch {result['setup']['decode_batch']})")):
        names = [r["model"] for r in measured if r.get(key)]
        ax.barh(names, [r[key] for r in measured if r.get(key)], color="tab:blue")
        ax.set_title(f"{title}: tokens/s")
        ax.invert_yaxis()
        ax.grid(True, axis="x", alpha=0.3)
    machine = result["machine"]
    fig.suptitle(f"{machine.get('gpu', machine['cpu'])}, torch {machine['torch']}, "
                 f"{result['setup']['dtype']}, batch {result['setup']['batch']} x {result['setup']['seq_len']}",
                 fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
