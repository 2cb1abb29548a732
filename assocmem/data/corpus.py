"""Text corpora: the Python standard library's own sources (no download), a folder, or a Hugging Face dataset.

A corpus is a list of documents, each a (name, text loader) pair; the train/validation split is by
document, fixed by a seed, so the same file never lands on both sides.
"""

import hashlib
import random
import sysconfig
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

TEXT_SUFFIXES = (".txt", ".md", ".rst", ".py", ".text")
_SKIPPED_DIRS = {"site-packages", "dist-packages", "test", "tests", "idlelib", "__pycache__"}


@dataclass(frozen=True)
class Document:
    name: str
    load: Callable[[], str]
    size: int  # bytes, for the fingerprint


def _file_document(path: Path, root: Path) -> Document:
    return Document(str(path.relative_to(root)), lambda: path.read_text(encoding="utf-8", errors="replace"),
                    path.stat().st_size)


def stdlib_corpus() -> list[Document]:
    """The standard library's .py files (test suites and site-packages left out), found through sysconfig."""
    root = Path(sysconfig.get_paths()["stdlib"])
    files = sorted(p for p in root.rglob("*.py") if not (_SKIPPED_DIRS & set(p.relative_to(root).parts[:-1])))
    if not files:
        raise FileNotFoundError(f"corpus 'stdlib': no .py files found under {root}")
    return [_file_document(p, root) for p in files]


def folder_corpus(folder: str | Path, suffixes: tuple[str, ...] = TEXT_SUFFIXES) -> list[Document]:
    """Every text file (by suffix) under `folder`, recursively, in sorted order."""
    root = Path(folder).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"corpus folder {str(root)!r} does not exist or is not a folder")
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in suffixes and p.stat().st_size)
    if not files:
        raise ValueError(f"corpus folder {str(root)!r} holds no non-empty text files (suffixes {suffixes})")
    return [_file_document(p, root) for p in files]


def hf_corpus(name: str, split: str = "train", text_field: str = "text") -> list[Document]:
    """Rows of a Hugging Face dataset (needs the `datasets` package and, for a hub name, a network)."""
    try:
        import datasets
    except ImportError as error:
        raise ImportError("corpus 'hf:...' needs the `datasets` package: pip install datasets") from error
    rows = datasets.load_dataset(name, split=split)
    if text_field not in rows.column_names:
        raise ValueError(f"dataset {name!r} has no column {text_field!r}; columns: {rows.column_names}")
    texts = [t for t in rows[text_field] if t and t.strip()]
    if not texts:
        raise ValueError(f"dataset {name!r} ({split}) has no non-empty {text_field!r} rows")
    return [Document(f"{name}/{i}", (lambda t=t: t), len(t.encode())) for i, t in enumerate(texts)]


def load_corpus(source: str) -> list[Document]:
    """"stdlib", "hf:NAME", or a folder path."""
    if source == "stdlib":
        return stdlib_corpus()
    if source.startswith("hf:"):
        return hf_corpus(source[3:])
    return folder_corpus(source)


def split_documents(docs: list[Document], val_fraction: float, seed: int) -> tuple[list[Document], list[Document]]:
    """Seeded split by document; at least one document on each side."""
    if not 0 < val_fraction < 1:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    if len(docs) < 2:
        raise ValueError(f"a train/validation split needs at least 2 documents, the corpus has {len(docs)}")
    order = list(range(len(docs)))
    random.Random(seed).shuffle(order)
    n_val = min(len(docs) - 1, max(1, round(val_fraction * len(docs))))
    val = sorted(order[:n_val])
    train = sorted(order[n_val:])
    return [docs[i] for i in train], [docs[i] for i in val]


def fingerprint(docs: list[Document], *extra: object) -> str:
    """A short hash of the documents' names and sizes (and anything else that shapes a cache)."""
    digest = hashlib.sha256()
    for doc in docs:
        digest.update(f"{doc.name}\0{doc.size}\n".encode())
    for item in extra:
        digest.update(repr(item).encode())
    return digest.hexdigest()[:16]
