"""Zero-shot multiple choice with lm-eval on local copies of ARC, PIQA, HellaSwag and OpenBookQA.

The raw files in `../shared/data/eval/` come in four formats; `prepare` turns each into one JSON object
per line, {"query": prompt, "choices": [continuations], "gold": index}, which the task definitions in
`assocmem/eval/tasks/*.yaml` read (lm-eval scores log P(choice | query) for every choice: `acc`, and
`acc_norm` divides by the choice's length in bytes). `evaluate` runs lm-eval's Hugging Face model class
(`--model hf`) on one of our checkpoints; `import assocmem` has registered our model with the Auto
classes, so lm-eval loads it like any causal LM.

Prompts (zero-shot, the usual ones for these sets):
- ARC-Easy / ARC-Challenge (test split): "Question: {stem}\\nAnswer:" → " {choice}";
- PIQA (validation; its test labels are not public): "Question: {goal}\\nAnswer:" → " {solution}";
- HellaSwag (validation): "{activity}: {context}" → " {ending}";
- OpenBookQA (test): "{stem}" → " {choice}".
"""

import bz2
import csv
import json
import re
import tempfile
from pathlib import Path

from ..data.shared import shared_data_dir

TASKS = ("arc_easy", "arc_challenge", "piqa", "hellaswag", "openbookqa")
TASK_DIR = Path(__file__).parent / "tasks"
CHANCE = {"arc_easy": 0.25, "arc_challenge": 0.25, "piqa": 0.5, "hellaswag": 0.25, "openbookqa": 0.25}


def default_data_dir() -> Path:
    return shared_data_dir("eval")


def _arc(path: Path) -> list[dict]:
    docs = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        item = json.loads(line)
        labels = [c["label"] for c in item["question"]["choices"]]
        docs.append({"query": f"Question: {item['question']['stem']}\nAnswer:",
                     "choices": [c["text"] for c in item["question"]["choices"]],
                     "gold": labels.index(item["answerKey"])})  # fmt: skip
    return docs


def _piqa(folder: Path) -> list[dict]:
    items = [json.loads(line) for line in (folder / "valid.jsonl").read_text(encoding="utf-8").splitlines() if line]
    labels = [int(x) for x in (folder / "valid-labels.lst").read_text().split()]
    if len(items) != len(labels):
        raise ValueError(f"piqa: {len(items)} questions but {len(labels)} labels in {folder}")
    return [{"query": f"Question: {it['goal']}\nAnswer:", "choices": [it["sol1"], it["sol2"]], "gold": y}
            for it, y in zip(items, labels)]  # fmt: skip


def _hellaswag(path: Path) -> list[dict]:
    """Six lines per item: the context, the index of the right ending, the four endings."""
    lines = bz2.decompress(path.read_bytes()).decode("utf-8").split("\n")
    lines = lines[: len(lines) - len(lines) % 6]
    docs = []
    for i in range(0, len(lines), 6):
        context, gold, endings = lines[i].strip(), int(lines[i + 1]), [e.strip() for e in lines[i + 2 : i + 6]]
        docs.append({"query": context, "choices": endings, "gold": gold})
    return docs


def _openbookqa(path: Path) -> list[dict]:
    docs = []
    with open(path, encoding="utf-8", newline="") as f:
        for row in csv.DictReader(f, delimiter="\t"):
            parts = re.split(r"\(([A-Z])\)\s*", row["Choices"])[1:]  # label, text, label, text, ...
            labels, texts = parts[0::2], [t.strip() for t in parts[1::2]]
            docs.append({"query": row["Question Stem"].strip(), "choices": texts,
                         "gold": labels.index(row["Answer Key"].strip())})  # fmt: skip
    return docs


def load_task(task: str, data_dir: str | Path | None = None) -> list[dict]:
    """The normalised documents of one task from the raw files under `data_dir`."""
    root = Path(data_dir or default_data_dir())
    readers = {
        "arc_easy": lambda: _arc(root / "arc" / "ARC-Easy-Test.jsonl"),
        "arc_challenge": lambda: _arc(root / "arc" / "ARC-Challenge-Test.jsonl"),
        "piqa": lambda: _piqa(root / "piqa"),
        "hellaswag": lambda: _hellaswag(root / "hellaswag" / "hellaswag_val_full.txt.bz2"),
        "openbookqa": lambda: _openbookqa(root / "openbookqa" / "test.tsv"),
    }
    if task not in readers:
        raise ValueError(f"eval: unknown task {task!r}; expected some of {TASKS}")
    try:
        docs = readers[task]()
    except FileNotFoundError as error:
        raise FileNotFoundError(f"eval: {task}: {error.filename} not found; `data_dir` must hold "
                                "../shared/data/eval's arc/, piqa/, hellaswag/, openbookqa/") from error  # fmt: skip
    for d in docs:
        if not 0 <= d["gold"] < len(d["choices"]):
            raise ValueError(f"eval: {task}: answer index {d['gold']} outside the {len(d['choices'])} choices")
    return docs


def prepare(tasks, data_dir=None, out_dir: str | Path = ".cache/eval") -> dict[str, Path]:
    """Write each task's normalised JSONL into `out_dir` (the path the committed YAMLs name)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {}
    for task in tasks:
        paths[task] = out / f"{task}.jsonl"
        paths[task].write_text("".join(json.dumps(d) + "\n" for d in load_task(task, data_dir)), encoding="utf-8")
    return paths


def _task_configs(paths: dict[str, Path], folder: Path) -> None:
    """Copies of the committed YAMLs whose data_files name the prepared files by absolute path."""
    for task, data in paths.items():
        text = (TASK_DIR / f"assocmem_{task}.yaml").read_text()
        placeholder = f"test: .cache/eval/{task}.jsonl"
        if placeholder not in text:  # else lm-eval would silently read whatever lies at the repository path
            raise ValueError(f"eval: {TASK_DIR / f'assocmem_{task}.yaml'} no longer names {placeholder!r}")
        text = text.replace(placeholder, f"test: {json.dumps(str(data.resolve()))}")
        (folder / f"assocmem_{task}.yaml").write_text(text)


def evaluate(checkpoint: str | Path, tasks=TASKS, *, data_dir=None, limit: int | None = None,
             device: str = "auto", batch_size: int = 16) -> dict:  # fmt: skip
    """lm-eval's `hf` model on our checkpoint (a folder with config, weights and tokenizer): accuracy
    per task, with the number of questions and chance. `device`: "auto" (CUDA where there is a GPU), "cpu",
    "cuda"."""
    import lm_eval
    from lm_eval.tasks import TaskManager

    import assocmem  # noqa: F401 - registers our model with the Auto classes

    from .perplexity import model_dir_of, pick_device

    bad = [t for t in tasks if t not in TASKS]
    if bad:
        raise ValueError(f"eval: unknown task(s) {bad}; expected some of {TASKS}")
    device = pick_device(device).type
    path = Path(checkpoint)
    model_dir = path if (path / "config.json").is_file() else model_dir_of(path)[0]
    with tempfile.TemporaryDirectory() as tmp:
        paths = prepare(tasks, data_dir, Path(tmp) / "data")
        (Path(tmp) / "tasks").mkdir()
        _task_configs(paths, Path(tmp) / "tasks")
        dtype = "bfloat16" if device == "cuda" else "float32"
        manager = TaskManager(include_path=str(Path(tmp) / "tasks"), include_defaults=False)
        output = lm_eval.simple_evaluate(
            model="hf", model_args={"pretrained": str(model_dir), "dtype": dtype},
            tasks=[f"assocmem_{t}" for t in tasks], task_manager=manager, device=device, batch_size=batch_size,
            limit=limit, log_samples=False,
        )  # fmt: skip
    results = {}
    for t in tasks:
        r = output["results"][f"assocmem_{t}"]
        n = output["n-samples"][f"assocmem_{t}"]["effective"]
        results[t] = {"acc": r["acc,none"], "acc_stderr": r.get("acc_stderr,none"), "acc_norm": r["acc_norm,none"],
                      "n": n, "chance": CHANCE[t]}  # fmt: skip
    return {"checkpoint": str(checkpoint), "limit": limit, "tasks": results,
            "lm_eval_version": getattr(lm_eval, "__version__", "unknown")}  # fmt: skip
