"""The language-model comparison's bookkeeping (README: "English text and zero-shot evaluation").

collect NAME RUN_DIR EVAL_DIR OUT.json
    On the training machine, after `assocmem train` and the two evaluations: one JSON with the run's
    result.json (tokens/s, peak memory, validation loss), its log.csv rows, EVAL_DIR/NAME.wikitext2.json and
    EVAL_DIR/NAME.zeroshot.json (whichever exist; a missing one is recorded as missing).
table JSON [JSON ...] --out RESULT.json
    Here: the table (validation perplexity, WikiText-2 word perplexity and bits per byte, zero-shot
    accuracies, tokens/s, peak memory) printed as Markdown, RESULT.json with every number, and RESULT.png
    with the training-loss and validation-loss curves of all models.
"""

import argparse
import csv
import json
import sys
from pathlib import Path

TASKS = ("arc_easy", "arc_challenge", "piqa", "hellaswag", "openbookqa")


def _json_or_missing(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {"missing": str(path)}


def collect(name: str, run_dir: Path, eval_dir: Path, out: Path) -> dict:
    log = run_dir / "log.csv"
    rows = []
    if log.is_file():
        with open(log, newline="") as f:
            rows = [{k: (float(v) if v not in ("", None) else None) for k, v in r.items()} for r in csv.DictReader(f)]
    record = {
        "model": name,
        "result": _json_or_missing(run_dir / "result.json"),
        "log": rows,
        "wikitext2": _json_or_missing(eval_dir / f"{name}.wikitext2.json"),
        "zero_shot": _json_or_missing(eval_dir / f"{name}.zeroshot.json"),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=1))
    return record


def row_of(record: dict) -> dict:
    result, wt2, zs = record["result"], record["wikitext2"], record["zero_shot"]
    row = {
        "model": record["model"],
        "params_m": result["parameters"] / 1e6 if result.get("parameters") else None,
        "tokens": result.get("tokens"),
        "val_ppl": result.get("val_ppl"),
        **_best_validation(record["log"]),
        "wikitext2_word_ppl": wt2.get("word_ppl"),
        "wikitext2_bits_per_byte": wt2.get("bits_per_byte"),
        "tokens_per_s": result.get("tokens_per_s"),
        "peak_memory_gb": result.get("peak_memory_gb"),
    }
    tasks = zs.get("tasks", {})
    for task in TASKS:
        metric = "acc_norm" if task in ("hellaswag", "openbookqa", "arc_challenge") else "acc"
        row[task] = tasks.get(task, {}).get(metric)
    return row


def _best_validation(log: list[dict]) -> dict:
    """The lowest validation perplexity among the periodic evaluations, and its step (the corpus repeats:
    past some epoch the held-out loss rises while the training loss falls)."""
    evals = [(x["val_ppl"], x["step"]) for x in log if x.get("val_ppl") is not None]
    if not evals:
        return {"best_val_ppl": None, "best_step": None}
    ppl, step = min(evals)
    return {"best_val_ppl": ppl, "best_step": int(step)}


def _fmt(value, spec):
    return "—" if value is None else format(value, spec)


def table(paths: list[Path], out: Path) -> list[dict]:
    records = [json.loads(Path(p).read_text()) for p in paths]
    rows = [row_of(r) for r in records]
    head = ["model", "params M", "val ppl", "best val ppl (step)", "WT-2 word ppl", "WT-2 bits/byte", *TASKS,
            "tokens/s", "peak GB"]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for r in rows:
        cells = [r["model"], _fmt(r["params_m"], ".1f"), _fmt(r["val_ppl"], ".2f"),
                 f'{_fmt(r["best_val_ppl"], ".2f")} ({_fmt(r["best_step"], "d")})',
                 _fmt(r["wikitext2_word_ppl"], ".1f"),
                 _fmt(r["wikitext2_bits_per_byte"], ".3f"), *(_fmt(r[t], ".3f") for t in TASKS),
                 _fmt(r["tokens_per_s"], ",.0f"), _fmt(r["peak_memory_gb"], ".1f")]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    print("\n".join(lines))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"rows": rows, "runs": records}, indent=1))
    _plot(records, out.with_suffix(".png"))
    return rows


def _plot(records, png: Path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (train_ax, val_ax) = plt.subplots(1, 2, figsize=(12, 4.5))
    for r in records:
        log = [x for x in r["log"] if x.get("tokens")]
        train = [(x["tokens"] / 1e6, x["loss"]) for x in log if x.get("loss") is not None]
        val = [(x["tokens"] / 1e6, x["val_loss"]) for x in log if x.get("val_loss") is not None]
        if train:
            train_ax.plot(*zip(*train), label=r["model"], lw=1)
        if val:
            val_ax.plot(*zip(*val), marker="o", label=r["model"])
    for ax, title in ((train_ax, "training loss"), (val_ax, "validation loss")):
        ax.set_xlabel("tokens (M)")
        ax.set_ylabel("nats / token")
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(png, dpi=120)
    plt.close(fig)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="what", required=True)
    c = sub.add_parser("collect")
    c.add_argument("name")
    c.add_argument("run_dir", type=Path)
    c.add_argument("eval_dir", type=Path)
    c.add_argument("out", type=Path)
    t = sub.add_parser("table")
    t.add_argument("json", type=Path, nargs="+")
    t.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    if args.what == "collect":
        collect(args.name, args.run_dir, args.eval_dir, args.out)
    else:
        table(args.json, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
