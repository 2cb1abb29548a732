"""torch.distributed on CPU (gloo): 2 processes give the same losses as 1 process on the same global batch."""

import csv
import os
import socket
from pathlib import Path

import pytest
import torch.multiprocessing as mp

from assocmem.train import TrainConfig, train


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, values: dict) -> None:
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    import torch

    torch.set_num_threads(1)
    train(TrainConfig.from_dict(values))


def _losses(run_dir) -> list[float]:
    with open(Path(run_dir) / "log.csv", newline="") as f:
        return [float(r["loss"]) for r in csv.DictReader(f) if r["loss"]]


@pytest.mark.parametrize("parallel", ["ddp", "fsdp"])
def test_two_processes_equal_one(parallel, tiny_config, tmp_path):
    one = tiny_config(out_dir=str(tmp_path / "one"), max_steps=5, save_every=100, sample_tokens=0, threads=1)
    train(one)
    two = one.to_dict() | {"out_dir": str(tmp_path / "two"), "parallel": parallel}
    mp.start_processes(_worker, args=(2, _free_port(), two), nprocs=2, join=True, start_method="spawn")
    a, b = _losses(one.out_dir), _losses(two["out_dir"])
    assert len(a) == len(b) == 5
    for x, y in zip(a, b):
        assert x == pytest.approx(y, rel=1e-5)
    assert a[-1] < a[0]
