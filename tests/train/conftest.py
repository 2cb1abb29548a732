"""A small text corpus and a fast training config for the trainer tests."""

import random

import pytest

from assocmem.train.config import TrainConfig

WORDS = ("the delta rule writes a value under a key and reads it back with a query while attention "
         "looks at every token memory state update recall forget linear softmax window").split()


@pytest.fixture(scope="session")
def corpus_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("corpus")
    rng = random.Random(0)
    for i in range(12):
        lines = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(5, 15))) for _ in range(rng.randint(20, 60))]
        (folder / f"doc{i:02d}.txt").write_text("\n".join(lines) + "\n")
    return folder


@pytest.fixture
def tiny_config(corpus_dir, tmp_path):
    def make(**overrides) -> TrainConfig:
        values = dict(preset="deltanet-swa-tiny", corpus=str(corpus_dir), vocab_size=320, seq_len=64, batch_size=4,
                      max_steps=6, warmup_steps=2, lr=3e-3, eval_every=3, eval_batches=2, save_every=3, log_every=1,
                      cache_dir=str(tmp_path / "cache"), out_dir=str(tmp_path / "run"), sample_tokens=8,
                      progress=False, val_fraction=0.2)
        values.update(overrides)
        return TrainConfig.from_dict(values)

    return make
