"""Perplexity on WikiText-2's word-level files (`../shared/data/eval/wikitext2/{test,valid}.txt`).

How it is scored (the same for every model, whatever its tokenizer):
1. The word-level file is detokenized by fixed rules (`detokenize`): the `@-@`, `@,@`, `@.@` markers
   join their neighbours, spaces before punctuation and inside brackets and quotes are removed, section
   titles (`= = Title = =`) keep their `=` marks. `<unk>` stays as it is written.
2. The detokenized text is encoded as one stream with the model's tokenizer and cut into disjoint windows
   of `seq_len` tokens; each window starts after the end-of-text token and every one of its tokens is
   scored (the first token of a window sees no earlier context).
3. Reported: the summed negative log-likelihood, token perplexity exp(NLL / tokens) (comparable only
   between models with one tokenizer), word perplexity exp(NLL / words) with the word count of the
   word-level benchmark (its whitespace-separated tokens, `<unk>` and the `@-@` markers included, plus one
   end-of-line per line: 241,211 + 4,358 = 245,569 in test, the count word-level results are quoted
   over), and bits per byte of the detokenized UTF-8 text. Word perplexity and bits per byte compare across
   tokenizers.
"""

import math
import re
from pathlib import Path

import torch

from ..data.shared import shared_data_dir

# (pattern, replacement) applied in order; each undoes one habit of the word-level file.
_RULES = [
    (r" @(.)@ ", r"\1"),  # 1 @,@ 000 -> 1,000; well @-@ known -> well-known
    (r" ([.,;:!?%)\]}])", r"\1"),  # no space before closing punctuation
    (r"([(\[{]) ", r"\1"),  # none after opening brackets
    (r" (n't|'s|'re|'ve|'m|'ll|'d)\b", r"\1"),  # contractions and possessives
    (r'" ([^"\n]*?) "', r'"\1"'),  # quoted spans
]


def detokenize(text: str) -> str:
    for pattern, replacement in _RULES:
        text = re.sub(pattern, replacement, text)
    return text


def wikitext_words(text: str) -> int:
    """The word-level benchmark's token count: whitespace-separated tokens plus one end-of-line per line."""
    return len(text.split()) + len(text.splitlines())


def read_split(split: str = "test", data_dir: str | Path | None = None) -> str:
    if split not in ("test", "valid"):
        raise ValueError(f"wikitext2: split must be 'test' or 'valid', got {split!r}")
    folder = Path(data_dir) if data_dir is not None else shared_data_dir("eval") / "wikitext2"
    path = folder / f"{split}.txt"
    if not path.is_file():
        raise FileNotFoundError(f"wikitext2: {path} not found (the word-level {split} file of WikiText-2)")
    return path.read_text(encoding="utf-8")


@torch.no_grad()
def score(model, tokenizer, text: str, *, seq_len: int, batch: int = 8, device=None) -> dict:
    """The numbers of the module docstring for one word-level text."""
    if seq_len < 2:
        raise ValueError(f"wikitext2: seq_len must be >= 2, got {seq_len}")
    device = device or next(model.parameters()).device
    detok = detokenize(text)
    ids = tokenizer(detok, add_special_tokens=False)["input_ids"]
    bos = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else tokenizer.bos_token_id
    if bos is None:
        raise ValueError("wikitext2: the tokenizer has neither an end-of-text nor a beginning-of-text token")
    windows = [ids[i : i + seq_len] for i in range(0, len(ids), seq_len)]
    nll, scored = 0.0, 0
    autocast = torch.device(device).type == "cuda"
    for start in range(0, len(windows), batch):
        group = windows[start : start + batch]
        width = max(len(w) for w in group)
        inputs = torch.full((len(group), width + 1), bos, dtype=torch.long)
        labels = torch.full((len(group), width + 1), -100, dtype=torch.long)
        for row, window in enumerate(group):
            inputs[row, 1 : len(window) + 1] = torch.tensor(window)
            labels[row, 1 : len(window) + 1] = torch.tensor(window)
        inputs, labels = inputs.to(device), labels.to(device)
        with torch.autocast(torch.device(device).type, dtype=torch.bfloat16, enabled=autocast):
            logits = model(input_ids=inputs[:, :-1], use_cache=False).logits.float()  # as in training: no state kept
        target = labels[:, 1:]
        losses = torch.nn.functional.cross_entropy(logits.transpose(1, 2), target, ignore_index=-100,
                                                   reduction="sum")  # fmt: skip
        nll += losses.item()
        scored += int((target != -100).sum())
    words = wikitext_words(text)
    size = len(detok.encode("utf-8"))
    return {
        "nll": nll, "tokens": scored, "words": words, "bytes": size, "seq_len": seq_len,
        "token_ppl": math.exp(nll / scored), "word_ppl": math.exp(nll / words),
        "bits_per_byte": nll / (size * math.log(2)),
    }  # fmt: skip


def evaluate(path, *, split: str = "test", data_dir=None, seq_len: int | None = None, batch: int = 8,
             device: str = "auto") -> dict:  # fmt: skip
    """Score a trained model (run folder, checkpoint or final folder) on WikiText-2's `split`."""
    from .perplexity import load_for_inference, pick_device

    device = pick_device(device)
    model, tokenizer, saved = load_for_inference(path, device)
    seq_len = seq_len or int(saved.get("seq_len", 1024))
    result = score(model, tokenizer, read_split(split, data_dir), seq_len=seq_len, batch=batch, device=device)
    return {"split": split, "checkpoint": str(path), **result}
