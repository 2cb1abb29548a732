"""`assocmem recall`: multi-query associative recall (MQAR) across token mixers and model widths.

The DeltaNet paper's Figure 2 setting: two-layer models, sequences of 512 tokens holding 64 key–value
pairs, vocabulary 8192, model widths 64…512, the best accuracy over a small learning-rate sweep per point.
Mixers (everything else equal: embeddings, SwiGLU MLPs, RMSNorm, head size 64 or the width if smaller, or a
fixed number of heads):

- `deltanet`: DeltaNet layers (delta rule, short convolutions, L2-normalised q and k);
- `linear`: the same layer with the delta rule switched off (additive update S += k v^T);
- `attention`: global causal softmax attention (rotary positions);
- `deltanet-noconv`: DeltaNet without the short convolutions.

Training: fresh MQAR batches every step, drawn on the training device (the stream is a function of the
seed and the kind of device; the held-out set is drawn on the CPU, the same everywhere), AdamW (weight decay
0.1, betas 0.9/0.98), linear warm-up over the first 10 % then cosine decay to zero, bf16 autocast on
CUDA. A run ends after `steps` steps or, with `max_minutes`, when that much training time has passed,
whichever comes first; the schedule follows whichever is further along, so the learning rate always
decays to zero (the steps done are recorded). With `train_kv_pairs` the training batches cycle through
those numbers of pairs (a mixture of easier and harder sequences of the same length, as Zoology's standard
training mixture does); the test set always has `num_kv_pairs`. The loss and the accuracy count only the
answers.
Accuracy: the share of answers whose argmax is the right value on a fixed held-out set of sequences,
measured at the end of training.

Runs are independent; `workers` > 1 runs several at once in separate processes (the small models leave
most of a GPU idle); on CUDA run i goes to GPU i mod (number of GPUs). A partial JSON is written after
each finished run.
"""

import math
import os
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from ..data.mqar import IGNORE, mqar

MIXERS = ("deltanet", "linear", "attention", "deltanet-noconv")


@dataclass
class RecallSetup:
    mixers: tuple[str, ...] = MIXERS
    widths: tuple[int, ...] = (64, 128, 256, 512)
    lrs: tuple[float, ...] = (1e-3, 3e-3)
    vocab_size: int = 8192
    seq_len: int = 512
    num_kv_pairs: int = 64
    steps: int = 2000
    batch: int = 64
    test_examples: int = 1000
    head_size: int = 64
    num_heads: int | None = None  # a fixed number of heads at every width instead (Zoology's runs use 2)
    max_minutes: float | None = None  # per run: training time budget (see the module docstring)
    train_kv_pairs: tuple[int, ...] | None = None  # a mixture of easier tasks for training (test: num_kv_pairs)
    random_fillers: bool = False  # filler tokens drawn at random instead of token 0 (data/mqar.py)
    seed: int = 0
    device: str = "cpu"
    workers: int = 1
    delta_rule_backend: str = "auto"  # "chunk" forces the PyTorch path (e.g. to rule the Triton kernels out)
    compile: bool = False  # torch.compile the training forward (fewer kernel launches for these small models)


def model_config(mixer: str, width: int, setup: RecallSetup):
    from ..models import AssocMemConfig

    if mixer not in MIXERS:
        raise ValueError(f"recall: unknown mixer {mixer!r}; expected one of {MIXERS}")
    if setup.num_heads is not None:
        if setup.num_heads < 1 or width % setup.num_heads:
            raise ValueError(f"recall: num_heads ({setup.num_heads}) must be >= 1 and divide the width ({width})")
        heads = setup.num_heads
    else:
        heads = max(1, width // setup.head_size)
    return AssocMemConfig(
        vocab_size=setup.vocab_size,
        hidden_size=width,
        num_heads=heads,
        layer_types=["attention" if mixer == "attention" else "deltanet"] * 2,
        mlp_multiple_of=16,
        max_position_embeddings=setup.seq_len,
        use_short_conv=mixer != "deltanet-noconv",
        use_delta_rule=mixer != "linear",
        tie_word_embeddings=False,
        delta_rule_backend=setup.delta_rule_backend,
    )


def _lr_at(progress: float, lr: float) -> float:
    """Warm-up over the first 10 % of training, then cosine to zero; progress in [0, 1]."""
    if progress < 0.1:
        return lr * max(progress, 1e-3) / 0.1
    return 0.5 * lr * (1 + math.cos(math.pi * min(1.0, (progress - 0.1) / 0.9)))


def _answer_positions(labels: torch.Tensor, count: int) -> torch.Tensor:
    """[B, count] positions of the answers, in order, for batches where every sequence has `count` answers
    (MQAR asks each key once: count = its number of pairs). A fixed shape known to the host: no sync, and
    torch.compile sees no data-dependent size (boolean indexing would give it one)."""
    where = (labels != IGNORE).to(torch.int8)
    return torch.argsort(where, dim=1, descending=True, stable=True)[:, :count]


def _answer_loss(model, inputs, labels, positions=None):
    """Cross-entropy over the answers only: the LM head runs on the answered positions alone (`positions`
    from `_answer_positions`, or a boolean mask of the answers when it is None: any number per sequence)."""
    hidden = model.model(inputs, use_cache=False).last_hidden_state
    if positions is None:
        where = labels != IGNORE
        picked, answers = hidden[where], labels[where]
    else:
        picked = hidden.gather(1, positions[..., None].expand(-1, -1, hidden.shape[-1])).flatten(0, 1)
        answers = labels.gather(1, positions).flatten()
    logits = model.lm_head(picked).float()
    return F.cross_entropy(logits, answers), logits, answers


@torch.no_grad()
def accuracy(model, task, device, batch: int = 100, autocast: bool = False) -> float:
    model.eval()
    right = total = 0
    for i in range(0, len(task), batch):
        x, y = task.inputs[i : i + batch].to(device), task.labels[i : i + batch].to(device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
            _, logits, answers = _answer_loss(model, x, y)
        right += (logits.argmax(-1) == answers).sum().item()
        total += answers.numel()
    model.train()
    return right / max(1, total)


def train_one(mixer: str, width: int, lr: float, setup: RecallSetup, index: int = 0) -> dict:
    """Train one model on the MQAR stream and return its held-out accuracy (and how the run went)."""
    from ..models import AssocMemForCausalLM

    device = torch.device(setup.device)
    if device.type == "cuda" and torch.cuda.device_count() > 1:
        device = torch.device("cuda", index % torch.cuda.device_count())
        torch.cuda.set_device(device)
    if setup.workers > 1:
        # The cores shared out: more threads than cores make small CPU ops spin (two 2-thread runs on 2
        # cores had not finished in five times their one-thread time).
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // setup.workers))
    torch.manual_seed(setup.seed)
    model = AssocMemForCausalLM(model_config(mixer, width, setup)).to(device)
    params = sum(p.numel() for p in model.parameters())
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=lr, betas=(0.9, 0.98))  # fmt: skip
    task_args = dict(vocab_size=setup.vocab_size, seq_len=setup.seq_len, num_kv_pairs=setup.num_kv_pairs,
                     random_fillers=setup.random_fillers)  # fmt: skip
    test = mqar(setup.test_examples, seed=10**6 + setup.seed, **task_args)
    autocast = device.type == "cuda"
    loss_fn = torch.compile(_answer_loss) if setup.compile else _answer_loss
    start = time.perf_counter()
    budget = None if setup.max_minutes is None else 60 * setup.max_minutes
    losses, window, window_steps, stopped_early, step = [], 0.0, 0, False, 0
    log_every = max(1, min(setup.steps // 100, 50))  # a time-limited run has a huge `steps`: log every 50
    for step in range(setup.steps):
        progress = step / setup.steps
        if budget is not None:
            by_time = (time.perf_counter() - start) / budget
            if by_time >= 1:
                stopped_early = True
                break
            progress = max(progress, by_time)
        mixture = setup.train_kv_pairs or (setup.num_kv_pairs,)
        pairs = mixture[step % len(mixture)]
        batch = mqar(setup.batch, seed=setup.seed * 10**7 + step, device=device,
                     **{**task_args, "num_kv_pairs": pairs})  # fmt: skip
        for group in opt.param_groups:
            group["lr"] = _lr_at(progress, lr)
        inputs, labels = batch.inputs.to(device), batch.labels.to(device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
            loss, _, _ = loss_fn(model, inputs, labels, _answer_positions(labels, pairs))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        window, window_steps = window + loss.detach(), window_steps + 1  # summed on the device: no sync per step
        if step % log_every == 0 or step == setup.steps - 1:
            # The mean over the steps since the last entry: a mixture's tasks all count. Divergence is
            # checked here, not every step (a check is a host sync).
            mean = float(window) / window_steps
            losses.append([step, round(mean, 4) if math.isfinite(mean) else float("nan")])
            window, window_steps = 0.0, 0
            if not math.isfinite(mean):
                break
    else:
        step += 1
    seconds = time.perf_counter() - start
    return {
        "mixer": mixer, "width": width, "lr": lr, "heads": model.config.num_heads, "params": params, "steps_done": step,
        "stopped_early": stopped_early, "diverged": bool(losses) and math.isnan(losses[-1][1]),
        "accuracy": accuracy(model, test, device, autocast=autocast), "train_seconds": round(seconds, 1),
        "loss_curve": losses,  # [step, mean training loss of the steps since the previous entry]
    }  # fmt: skip


def best_per_point(runs: list[dict]) -> list[dict]:
    best = {}
    for r in runs:
        key = (r["mixer"], r["width"])
        if key not in best or r["accuracy"] > best[key]["accuracy"]:
            best[key] = r
    return [
        {"mixer": m, "width": w, "accuracy": r["accuracy"], "lr": r["lr"], "params": r["params"]}
        for (m, w), r in sorted(best.items(), key=lambda kv: (MIXERS.index(kv[0][0]), kv[0][1]))
    ]


def run(setup: RecallSetup, out: Path | None = None, plot: bool = True, log=print) -> dict:
    from ..bench.common import machine_info, save_results, write_json

    # The most telling points first, so that a run cut short still answers the main question.
    points = [(m, w, lr) for w in sorted(setup.widths) for m in setup.mixers for lr in setup.lrs]
    jobs = [(m, w, lr, setup, i) for i, (m, w, lr) in enumerate(points)]
    machine = machine_info(torch.device(setup.device))
    result = {"experiment": "mqar_recall", "setup": asdict(setup), "machine": machine, "runs": []}

    def finished(r):
        result["runs"].append(r)
        flag = " (time budget reached first)" if r["stopped_early"] else ""
        log(f"{r['mixer']:16s} width {r['width']:4d} lr {r['lr']:.0e}: accuracy {100 * r['accuracy']:5.1f} %  "
            f"[{r['steps_done']} steps, {r['train_seconds']:.0f} s]{flag}")  # fmt: skip
        if out is not None:
            write_json(Path(out), {**result, "partial": True, "best": best_per_point(result["runs"])})

    if setup.workers > 1:
        import multiprocessing

        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=setup.workers, mp_context=ctx) as pool:
            for future in as_completed([pool.submit(train_one, *job) for job in jobs]):
                finished(future.result())
    else:
        for job in jobs:
            finished(train_one(*job))
    result["best"] = best_per_point(result["runs"])
    log("")
    log(format_best(result["best"], setup))
    save_results(result, out, (lambda png: _plot(result, png)) if plot else None)
    return result


def merge(results: list[dict]) -> dict:
    """One result from several runs of the grid on the same task (e.g. one learning rate per GPU call):
    every run kept (with the index of the call it came from: `calls[i]` holds that call's setup and machine),
    the best per point taken over all of them."""
    if not results:
        raise ValueError("recall: merge needs at least one result")
    task = ("vocab_size", "seq_len", "num_kv_pairs", "train_kv_pairs", "batch", "random_fillers")
    # Results written before `random_fillers` existed used random fillers.
    of = lambda r: tuple(r["setup"].get(k, True) if k == "random_fillers" else r["setup"][k] for k in task)  # noqa: E731
    for r in results[1:]:
        if of(r) != of(results[0]):
            raise ValueError(f"recall: merge takes results of one task; these differ in {task}")
    runs = [{**run, "call": i} for i, r in enumerate(results) for run in r["runs"]]
    setup = dict(results[0]["setup"])
    setup["mixers"] = [m for m in MIXERS if any(run["mixer"] == m for run in runs)]
    setup["widths"] = sorted({run["width"] for run in runs})
    setup["lrs"] = sorted({run["lr"] for run in runs})
    calls = [{"setup": r["setup"], "machine": r.get("machine")} for r in results]
    return {"experiment": "mqar_recall", "setup": setup, "calls": calls, "runs": runs, "best": best_per_point(runs)}


def save_merged(paths: list[Path], out: Path | None, plot: bool = True, log=print) -> dict:
    import json

    from ..bench.common import save_results

    result = merge([json.loads(Path(p).read_text()) for p in paths])
    s = result["setup"]
    log(format_best(result["best"], RecallSetup(**{**s, "mixers": tuple(s["mixers"])})))
    save_results(result, out, (lambda png: _plot(result, png)) if plot else None)
    return result


def format_best(best: list[dict], setup: RecallSetup) -> str:
    widths = sorted({b["width"] for b in best})
    title = f"MQAR accuracy % (best lr), seq_len {setup.seq_len}, {setup.num_kv_pairs} pairs, vocab {setup.vocab_size}"
    lines = [title, f"{'mixer':16s}" + "".join(f"{w:>9d}" for w in widths)]
    for mixer in setup.mixers:
        cells = {b["width"]: b["accuracy"] for b in best if b["mixer"] == mixer}
        lines.append(f"{mixer:16s}" + "".join(f"{100 * cells[w]:9.1f}" if w in cells else f"{'-':>9s}" for w in widths))
    return "\n".join(lines)


def _plot(result, path: Path):
    from ..bench.common import pyplot

    plt = pyplot()
    if plt is None:
        return None
    fig, ax = plt.subplots(figsize=(5.5, 4))
    for mixer in result["setup"]["mixers"]:
        sel = [b for b in result["best"] if b["mixer"] == mixer]
        if sel:
            ax.plot([b["width"] for b in sel], [100 * b["accuracy"] for b in sel], marker="o", label=mixer)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("model width")
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(0, 102)
    s = result["setup"]
    steps = [r["steps_done"] for r in result["runs"]] or [0]
    span = f"{min(steps)}" if min(steps) == max(steps) else f"{min(steps)}–{max(steps)}"
    ax.set_title(f"MQAR: T={s['seq_len']}, {s['num_kv_pairs']} KV pairs, {span} steps per run",
                 fontsize=9)  # fmt: skip
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
