"""Data-parallel training under torchrun: the process group, DDP or FSDP2 wrapping, full and sharded
state for saving.

One process is the degenerate case (no process group, nothing wrapped), so every code path of the
trainer runs the same with and without torchrun. gloo on CPU, NCCL on GPU.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch

from calgrpo.errors import ConfigError


@dataclass(frozen=True)
class DistContext:
    """Where this process sits: rank of world_size, its device."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world_size > 1


def init_distributed(device: str = "auto") -> DistContext:
    """Join torchrun's process group when ``WORLD_SIZE`` > 1; else the single-process context.

    ``device``: ``auto`` (this rank's GPU when CUDA is available, else CPU), ``cpu`` or ``cuda``.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local_rank = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = torch.cuda.is_available() if device == "auto" else device == "cuda"
    if use_cuda and not torch.cuda.is_available():
        raise ConfigError("--device cuda but CUDA is not available")
    target = torch.device("cuda", local_rank) if use_cuda else torch.device("cpu")
    if use_cuda:
        torch.cuda.set_device(target)
    if world_size > 1 and not torch.distributed.is_initialized():
        torch.distributed.init_process_group(backend="nccl" if use_cuda else "gloo")
    return DistContext(rank=rank, world_size=world_size, local_rank=local_rank, device=target)


def wrap_for_training(module: torch.nn.Module, strategy: str, context: DistContext) -> torch.nn.Module:
    """``module`` moved to the device and wrapped for data parallelism (unchanged on one process).

    ``ddp``: replicated weights, gradients all-reduced. ``fsdp``: FSDP2 (``fully_shard``) on every
    decoder layer and on the root, so parameters, gradients and optimizer state are sharded.
    """
    module = module.to(context.device)
    if not context.active:
        return module
    if strategy == "ddp":
        from torch.nn.parallel import DistributedDataParallel

        device_ids = [context.device.index] if context.device.type == "cuda" else None
        return DistributedDataParallel(module, device_ids=device_ids)
    if strategy == "fsdp":
        from torch.distributed.fsdp import fully_shard

        for layer in decoder_layers(module):
            fully_shard(layer)
        fully_shard(module)
        return module
    raise ConfigError(f"unknown distributed strategy {strategy!r}; use ddp or fsdp")


def decoder_layers(module: torch.nn.Module) -> list[torch.nn.Module]:
    """The transformer blocks of a Hugging Face causal LM (the units FSDP shards one at a time)."""
    names = next(
        (set(m._no_split_modules) for m in module.modules() if getattr(m, "_no_split_modules", None)), set()
    )
    return [m for m in module.modules() if type(m).__name__ in names]


def unwrapped(module: torch.nn.Module) -> torch.nn.Module:
    return module.module if isinstance(module, torch.nn.parallel.DistributedDataParallel) else module


def full_state_dict(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Every parameter and buffer gathered in full on CPU (a collective: call on every rank)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    return get_model_state_dict(unwrapped(module), options=options)


def barrier(context: DistContext) -> None:
    if context.active:
        torch.distributed.barrier()


def all_reduce_sum(values: dict[str, float], context: DistContext) -> dict[str, float]:
    """Sum scalar metrics over ranks (identity on one process)."""
    if not context.active or not values:
        return values
    keys = sorted(values)
    tensor = torch.tensor([values[k] for k in keys], dtype=torch.float64)
    torch.distributed.all_reduce(tensor)
    return dict(zip(keys, tensor.tolist(), strict=True))


def save_sharded(folder: Path, module: torch.nn.Module, optimizer: torch.optim.Optimizer) -> None:
    """Model and optimizer state as a torch.distributed.checkpoint folder: every rank writes its
    shards, and any world size can load it back (:func:`load_sharded`)."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict

    model_state, optim_state = get_state_dict(unwrapped(module), optimizer)
    dcp.save({"model": model_state, "optimizer": optim_state}, checkpoint_id=str(folder))


def load_sharded(folder: Path, module: torch.nn.Module, optimizer: torch.optim.Optimizer) -> None:
    """Restore what :func:`save_sharded` wrote, resharded for this run's world size."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

    model_state, optim_state = get_state_dict(unwrapped(module), optimizer)
    state = {"model": model_state, "optimizer": optim_state}
    dcp.load(state, checkpoint_id=str(folder))
    set_state_dict(unwrapped(module), optimizer, model_state_dict=state["model"],
                   optim_state_dict=state["optimizer"])  # fmt: skip
