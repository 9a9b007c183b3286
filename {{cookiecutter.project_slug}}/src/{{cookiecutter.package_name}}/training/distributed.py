"""Joining and leaving the process group, and collectives; every function also works in one process.

Who this process is (rank, world size, main process) is :mod:`runtime`'s job."""

from __future__ import annotations

import logging
import os
from datetime import timedelta

import torch
import torch.distributed as dist

from {{ cookiecutter.package_name }} import runtime

log = logging.getLogger(__name__)


def adopt_slurm_tasks() -> None:
    """Under ``hydra/launcher=slurm`` with several tasks, set torch's env:// variables from SLURM's.

    submitit starts one process per task (``tasks_per_node`` x ``nodes``) but, unlike torchrun,
    sets no RANK/WORLD_SIZE/MASTER_ADDR; this exports them so that ``trainer=ddp`` works alike.
    """
    if "RANK" in os.environ or os.environ.get("SUBMITIT_EXECUTOR") != "slurm":
        return
    if int(os.environ.get("SLURM_NTASKS", "1")) <= 1:
        return
    from submitit.helpers import TorchDistributedEnvironment

    TorchDistributedEnvironment().export(set_cuda_visible_devices=False)


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


def wrap(model: torch.nn.Module, device: torch.device, find_unused_parameters: bool = False) -> torch.nn.Module:
    """``model`` in DistributedDataParallel once a process group exists, else as it is."""
    if not dist.is_initialized():
        return model
    from torch.nn.parallel import DistributedDataParallel

    device_ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=device_ids, find_unused_parameters=find_unused_parameters)
