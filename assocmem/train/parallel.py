"""Everything about running on several processes, kept out of the models: process groups, and
`parallelize`, which applies activation checkpointing, torch.compile and DDP or FSDP2 to a model."""

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn


@dataclass
class Distributed:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world_size > 1

    def barrier(self) -> None:
        if self.active:
            dist.barrier()

    def all_reduce_sum(self, value: torch.Tensor) -> torch.Tensor:
        if self.active:
            dist.all_reduce(value)
        return value


def setup_distributed(parallel: str, device_type: str) -> Distributed:
    """Join the process group torchrun describes (RANK, WORLD_SIZE, LOCAL_RANK), if any."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return Distributed()
    if parallel == "none":
        raise ValueError(f"running {world} processes (torchrun) needs parallel = 'ddp' or 'fsdp' in the config")
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        backend = "nccl" if device_type == "cuda" else "gloo"
        if device_type == "cuda":
            torch.cuda.set_device(local)
        dist.init_process_group(backend=backend)
    return Distributed(rank=rank, world_size=world, local_rank=local)


def teardown_distributed() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def parallelize(model: nn.Module, *, block_type: type, activation_checkpointing: bool, compile: bool,
                parallel: str, distributed: Distributed, device: torch.device) -> nn.Module:
    """Returns the module to call in training (the model itself, or its DDP wrapper)."""
    if activation_checkpointing:
        from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import apply_activation_checkpointing

        apply_activation_checkpointing(model, check_fn=lambda m: isinstance(m, block_type))
    if compile:
        for module in model.modules():
            if isinstance(module, block_type):
                module.compile()
    if not distributed.active:
        return model
    if parallel == "fsdp":
        from torch.distributed.fsdp import fully_shard

        for module in model.modules():
            if isinstance(module, block_type):
                fully_shard(module)
        fully_shard(model)
        return model
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
