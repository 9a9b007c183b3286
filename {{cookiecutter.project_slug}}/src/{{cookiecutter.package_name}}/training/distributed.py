"""Joining and leaving the process group, and collectives; every function also works in one process.

Who this process is (rank, world size, main process) is :mod:`runtime`'s job."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from {{ cookiecutter.package_name }} import runtime
from {{ cookiecutter.package_name }}.errors import UserError

log = logging.getLogger(__name__)


def processes_per_gpu(device: torch.device) -> float:
    """How many of torchrun's processes on this node share each visible GPU (0 off CUDA or outside torchrun).

    torchrun hands every local process the same visible GPUs, so more processes than GPUs means
    ``LOCAL_RANK % gpus`` put two ranks on one GPU. SLURM's per-task binding (one GPU visible to
    each task) is not torchrun and is not counted.
    """
    if device.type != "cuda" or "TORCHELASTIC_RUN_ID" not in os.environ:
        return 0
    return int(os.environ.get("LOCAL_WORLD_SIZE", "1")) / max(1, torch.cuda.device_count())


def choose_backend(device: torch.device, backend: str = "auto") -> str:
    """``auto``: NCCL on CUDA where it exists (not on Windows), gloo otherwise, and gloo when ranks share a
    GPU (NCCL stops with "Duplicate GPU detected"); an explicit ``nccl`` on a shared GPU stops in one line."""
    shared = processes_per_gpu(device) > 1
    if shared and backend in ("auto", "nccl"):
        processes, gpus = os.environ.get("LOCAL_WORLD_SIZE"), torch.cuda.device_count()
        if backend == "nccl":
            raise UserError(
                f"{processes} processes share {gpus} GPU(s), which NCCL refuses: start one process per "
                f"GPU (torchrun --nproc_per_node={gpus}), or use trainer.backend=gloo."
            )
        log.warning(
            "%s processes share %d GPU(s): using gloo, since NCCL needs a GPU per process; for speed start "
            "one process per GPU (torchrun --nproc_per_node=%d).",
            processes,
            gpus,
            gpus,
        )
        return "gloo"
    if backend == "auto":
        return "nccl" if device.type == "cuda" and dist.is_nccl_available() else "gloo"
    return backend


def init_distributed(device: torch.device, timeout_s: int = 1800, backend: str = "auto") -> None:
    """Join the process group torchrun set up; backend: see :func:`choose_backend`."""
    if dist.is_initialized() or not runtime.launched_distributed():
        return
    backend = choose_backend(device, backend)
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
    missing = chosen is not None and not chosen.exists()
    if any_rank(missing, device):
        who = f"rank {runtime.rank()}" if missing else "another rank"
        raise UserError(
            f"rank 0 resumes from {chosen}, which {who} cannot read: put paths.log_dir on a "
            "file system all nodes share, or use resume=none."
        )
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
    """``model`` in DistributedDataParallel once a process group exists, else as it is.

    The frozen base of an adapter model (gigabytes, maybe 4-bit) is left out of DDP's broadcast at wrap time:
    every rank loaded it from the same files. Other models' frozen parameters may come from a per-rank
    seed, so they are still broadcast from rank 0.
    """
    if not dist.is_initialized():
        return model
    from torch.nn.parallel import DistributedDataParallel

    if getattr(runtime.unwrap(model), runtime.FROZEN_FROM_FILES, False):
        frozen = [name for name, parameter in model.named_parameters() if not parameter.requires_grad]
        DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(model, frozen)
    device_ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=device_ids, find_unused_parameters=find_unused_parameters)


def max_over_ranks(value: int, device: torch.device) -> int:
    """The largest of an integer over all ranks."""
    if not dist.is_initialized():
        return value
    tensor = torch.tensor(int(value), device=device)
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return int(tensor.item())
