"""Byte-level BPE tokenizer, trained offline with the `tokenizers` package and cached by corpus fingerprint."""

from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from .corpus import Document, fingerprint

EOS = "<|endoftext|>"
PAD = "<|pad|>"


def train_bpe(docs: list[Document], vocab_size: int) -> Tokenizer:
    if vocab_size < 300:
        raise ValueError(f"vocab_size must be at least 300 (256 bytes + merges + specials), got {vocab_size}")
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOS, PAD],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator((doc.load() for doc in docs), trainer=trainer, length=len(docs))
    return tokenizer


def as_hf_tokenizer(tokenizer: Tokenizer) -> PreTrainedTokenizerFast:
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token=EOS, pad_token=PAD, bos_token=EOS)


def get_tokenizer(docs: list[Document], vocab_size: int, cache_dir: Path, path: str | None = None):
    """A given tokenizer (a tokenizer.json file or a saved Hugging Face tokenizer folder), or a BPE trained
    on `docs`, cached in cache_dir by the documents' fingerprint and the vocabulary size."""
    if path:
        p = Path(path)
        if p.is_dir():
            from transformers import AutoTokenizer

            tok = AutoTokenizer.from_pretrained(p)
        elif p.is_file():
            tok = as_hf_tokenizer(Tokenizer.from_file(str(p)))
        else:
            raise FileNotFoundError(f"tokenizer {path!r} does not exist")
        if tok.eos_token_id is None:
            raise ValueError(f"tokenizer {path!r} has no end-of-text token to separate documents")
        return tok
    cached = Path(cache_dir) / f"tokenizer-{fingerprint(docs, 'bpe', vocab_size)}.json"
    if not cached.exists():
        cached.parent.mkdir(parents=True, exist_ok=True)
        tmp = cached.with_suffix(".tmp")
        train_bpe(docs, vocab_size).save(str(tmp))
        tmp.replace(cached)
    return as_hf_tokenizer(Tokenizer.from_file(str(cached)))
