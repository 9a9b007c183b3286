"""Joining and leaving the process group, and collectives; every function also works in one process.

Who this process is (rank, world size, main process) is :mod:`runtime`'s job."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from {{ cookiecutter.package_name }} import runtime
from {{ cookiecutter.package_name }}.errors import UserError

log = logging.getLogger(__name__)


def init_distributed(device: torch.device, timeout_s: int = 1800, backend: str = "auto") -> None:
    """Join the process group torchrun set up; backend ``auto``: NCCL on CUDA, gloo otherwise."""
    if dist.is_initialized() or not runtime.launched_distributed():
        return
    if backend == "auto":  # NCCL on CUDA where it exists (not on Windows), gloo otherwise
        backend = "nccl" if device.type == "cuda" and dist.is_nccl_available() else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(backend=backend, timeout=timedelta(seconds=timeout_s))
    log.info("DDP: rank %d of %d (%s)", runtime.rank(), runtime.world_size(), backend)


def agree_on_resume(decide: Callable[[], Path | None], device: torch.device) -> Path | None:
    """Rank 0's resume decision (``decide()``) for every rank; a checkpoint some rank cannot read stops all.

    Without this, ranks that do not share a file system would resume from different steps
    (or not at all) and hang in the first collective. A :class:`UserError` of ``decide`` on
    rank 0 is raised on every rank.
    """
    if not dist.is_initialized():
        return decide()
    decision: list[Any] = [None]
    if runtime.rank() == 0:
        try:
            path = decide()
            decision = [("path", str(path) if path is not None else None)]
        except UserError as error:
            decision = [("error", str(error))]
    dist.broadcast_object_list(decision, src=0, device=device if device.type == "cuda" else None)
    kind, value = decision[0]
    if kind == "error":
        raise UserError(value)
    chosen = Path(value) if value is not None else None
    missing = chosen is not None and not chosen.is_file()
    if any_rank(missing, device):
        who = f"rank {runtime.rank()}" if missing else "another rank"
        raise UserError(f"rank 0 resumes from {chosen}, which {who} cannot read: put paths.log_dir on a "
                        "file system all nodes share, or use resume=none.")
    return chosen


def destroy_distributed() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """The sum of ``tensor`` over all ranks (the tensor itself when not distributed)."""
    if not dist.is_initialized():
        return tensor
    tensor = tensor.clone()
    dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def all_reduce_mean(value: float, device: torch.device) -> float:
    """The mean of a Python number over all ranks."""
    if not dist.is_initialized():
        return value
    tensor = torch.tensor(float(value), dtype=torch.float64, device=device)
    return (all_reduce_sum(tensor) / runtime.world_size()).item()


def any_rank(flag: bool, device: torch.device) -> bool:
    """True when ``flag`` is true on any rank (e.g. a stop signal received by one process)."""
    if not dist.is_initialized():
        return flag
    tensor = torch.tensor(int(flag), device=device)
    return bool(all_reduce_sum(tensor).item())


def min_over_ranks(value: int, device: torch.device) -> int:
    """The smallest of an integer over all ranks (e.g. the batches every rank has)."""
    if not dist.is_initialized():
        return value
    tensor = torch.tensor(int(value), device=device)
    dist.all_reduce(tensor, op=dist.ReduceOp.MIN)
    return int(tensor.item())


def wrap(model: torch.nn.Module, device: torch.device, find_unused_parameters: bool = False) -> torch.nn.Module:
    """``model`` in DistributedDataParallel once a process group exists, else as it is."""
    if not dist.is_initialized():
        return model
    from torch.nn.parallel import DistributedDataParallel

    device_ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=device_ids, find_unused_parameters=find_unused_parameters)
