"""Token caches (memory-mapped arrays) and packing into fixed-length training sequences.

Legend: N documents, T sequence length. A cache holds every document's tokens, each followed by the
end-of-text token, back to back (`tokens.bin`), and where each document starts (`starts.npy`, N + 1).
A training sequence is a window of T tokens; `cu_seqlens` marks where documents begin inside it, so that
a DeltaNet state (and attention) can reset there.
"""

import json
from pathlib import Path

import numpy as np
import torch

from .corpus import Document, fingerprint


def build_token_cache(docs: list[Document], tokenizer, cache_dir: Path, name: str) -> "TokenCache":
    """Tokenise `docs` once; reuse the cache while the documents and the tokenizer stay the same."""
    vocab = len(tokenizer)
    key = fingerprint(docs, name, vocab, tokenizer.backend_tokenizer.to_str())
    folder = Path(cache_dir) / f"tokens-{name}-{key}"
    if not (folder / "meta.json").exists():
        dtype = np.uint16 if vocab <= 2**16 else np.uint32
        eos = tokenizer.eos_token_id
        ids, starts = [], [0]
        for doc in docs:
            doc_ids = tokenizer(doc.load(), add_special_tokens=False)["input_ids"] + [eos]
            ids.append(np.asarray(doc_ids, dtype=dtype))
            starts.append(starts[-1] + len(doc_ids))
        tmp = folder.with_name(folder.name + ".tmp")
        tmp.mkdir(parents=True, exist_ok=True)
        np.concatenate(ids).tofile(tmp / "tokens.bin")
        np.save(tmp / "starts.npy", np.asarray(starts, dtype=np.int64))
        meta = {"dtype": np.dtype(dtype).name, "vocab": vocab, "documents": len(docs)}
        (tmp / "meta.json").write_text(json.dumps(meta))
        tmp.replace(folder)
    return TokenCache(folder)


class TokenCache:
    def __init__(self, folder: Path):
        meta = json.loads((folder / "meta.json").read_text())
        self.folder, self.vocab = folder, meta["vocab"]
        self.tokens = np.memmap(folder / "tokens.bin", dtype=meta["dtype"], mode="r")
        self.starts = np.load(folder / "starts.npy")

    def __len__(self) -> int:
        return len(self.tokens)


class PackedSequences:
    """Non-overlapping windows of `seq_len` tokens over a TokenCache, in a seeded order per epoch."""

    def __init__(self, cache: TokenCache, seq_len: int, seed: int):
        if len(cache) < seq_len:
            raise ValueError(f"the corpus has {len(cache)} tokens, fewer than one sequence of {seq_len}")
        self.cache, self.seq_len, self.seed = cache, seq_len, seed
        self.count = len(cache) // seq_len

    def order(self, epoch: int) -> np.ndarray:
        return np.random.default_rng([self.seed, epoch]).permutation(self.count)

    def window(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(tokens [T] int64, document starts inside the window [k] int64, always beginning with 0)."""
        lo, hi = index * self.seq_len, (index + 1) * self.seq_len
        ids = torch.from_numpy(self.cache.tokens[lo:hi].astype(np.int64))
        starts = self.cache.starts
        inside = starts[(starts > lo) & (starts < hi)] - lo
        return ids, torch.from_numpy(np.concatenate([[0], inside]).astype(np.int64))

    def targets(self, indices, document_masking: bool) -> int:
        """How many next-token targets the batch of these windows holds, without reading its tokens: each
        window loses its first token, and with document masking every document start inside it too."""
        if not document_masking:
            return len(indices) * (self.seq_len - 1)
        starts = self.cache.starts
        total = 0
        for index in indices:
            lo, hi = int(index) * self.seq_len, (int(index) + 1) * self.seq_len
            total += self.seq_len - 1 - int(((starts > lo) & (starts < hi)).sum())
        return total

    def batch(self, indices) -> dict:
        """Windows packed into one row: input_ids [1, B*T], cu_seqlens over documents and windows, labels
        with -100 where a token starts a document (nothing before it in its document predicts it)."""
        ids, bounds = [], []
        for n, index in enumerate(indices):
            window_ids, window_starts = self.window(int(index))
            ids.append(window_ids)
            bounds.append(window_starts + n * self.seq_len)
        input_ids = torch.cat(ids)[None]
        starts = torch.cat(bounds)
        cu_seqlens = torch.cat([starts, torch.tensor([input_ids.shape[1]])]).to(torch.int64)
        labels = input_ids.clone()
        labels[0, starts] = -100
        return {"input_ids": input_ids, "cu_seqlens": cu_seqlens, "labels": labels}
