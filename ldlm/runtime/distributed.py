"""PyTorch's own distributed engine (DDP under torchrun) behind a few small helpers.

    torchrun --nproc_per_node 8 -m ldlm.training.train --preset owt --out runs/owt

A plain `python -m ldlm.training.train` is world size 1 and never touches torch.distributed. Under torchrun
(RANK / WORLD_SIZE / LOCAL_RANK in the environment) the process group uses NCCL on GPUs and gloo
on CPUs; rank r takes the GPU LOCAL_RANK. Only rank 0 writes files (`is_main`).
"""
from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.distributed as dist

from ..config import ConfigError


@dataclass(frozen=True)
class DistEnv:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world > 1


def launched_by_torchrun() -> bool:
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def default_device(choice: str = "auto") -> torch.device:
    if choice == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(choice)
    except RuntimeError:
        raise ConfigError(f"device={choice!r} is not a device; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device={choice}: torch sees no CUDA GPU (torch {torch.__version__}); use device=cpu or auto")
    return device


def setup(device_choice: str = "auto") -> tuple[DistEnv, torch.device]:
    """(DistEnv, this rank's device); initialises the process group when launched by torchrun."""
    device = default_device(device_choice)
    if not launched_by_torchrun() or int(os.environ["WORLD_SIZE"]) == 1:
        return DistEnv(), device
    env = DistEnv(int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ.get("LOCAL_RANK", 0)))
    if device.type == "cuda":
        device = torch.device("cuda", env.local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", timeout=datetime.timedelta(minutes=30),
                                device_id=device if device.type == "cuda" else None)
    return env, device


def teardown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def barrier(env: DistEnv) -> None:
    if env.enabled:
        dist.barrier()


def all_reduce_sum(tensor: torch.Tensor, env: DistEnv) -> torch.Tensor:
    if env.enabled:
        dist.all_reduce(tensor)
    return tensor


def all_gather_cat(tensor: torch.Tensor, env: DistEnv) -> torch.Tensor:
    """Concatenate equally-shaped tensors of every rank along dim 0, in rank order."""
    if not env.enabled:
        return tensor
    parts = [torch.empty_like(tensor) for _ in range(env.world)]
    dist.all_gather(parts, tensor.contiguous())
    return torch.cat(parts)


def gather_objects(items: list, env: DistEnv) -> list:
    """Every rank's list, concatenated in rank order (on every rank)."""
    if not env.enabled:
        return items
    parts = [None] * env.world
    dist.all_gather_object(parts, items)
    return [x for part in parts for x in part]


def broadcast_object(obj, env: DistEnv):
    """Rank 0's `obj` (picklable), on every rank."""
    if not env.enabled:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def shard(n: int, env: DistEnv) -> range:
    """This rank's contiguous share of range(n) (shares differ in size by at most one)."""
    start = n * env.rank // env.world
    return range(start, n * (env.rank + 1) // env.world)


def batch_plan(global_batch: int, micro_batch: int, world: int) -> tuple[int, int]:
    """(per-device micro batch, gradient-accumulation steps) for a global batch on `world` devices.

    micro_batch = 0 means as large as possible: global_batch / world, no accumulation."""
    if global_batch % world:
        raise ConfigError(f"batch_size={global_batch} is not divisible by the {world} processes; "
                         f"choose a global batch that is a multiple of the number of GPUs")
    per_device = global_batch // world
    micro = micro_batch or per_device
    if per_device % micro:
        raise ConfigError(f"batch_size={global_batch} over {world} processes is {per_device} per device, "
                         f"not a multiple of micro_batch_size={micro}")
    return micro, per_device // micro


def micro_positions(global_batch: int, micro: int, accum: int, env: DistEnv) -> list[Sequence[int]]:
    """Global-batch positions of each of this rank's micro-batches: rank r owns the r-th contiguous
    block of global_batch / world positions, cut into `accum` micro-batches."""
    per_device = micro * accum
    start = env.rank * per_device
    return [range(start + a * micro, start + (a + 1) * micro) for a in range(accum)]


def map_sharded(fn, items: list, env: DistEnv) -> list:
    """fn(part) -> one result per item, run on this rank's contiguous part of `items`; every rank
    gets all results, in the order of `items` (judge scores and MAUVE features under torchrun)."""
    part = shard(len(items), env)
    mine = list(fn(items[part.start:part.stop])) if len(part) else []
    return gather_objects(mine, env)
