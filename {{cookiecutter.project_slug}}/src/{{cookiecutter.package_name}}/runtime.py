"""Run-time facts every layer may ask: rank and world size, dtypes, the device, the bare model.

The bottom layer of the package: it imports nothing from it, and ``data``, ``models``,
``tasks``, ``tracking`` and ``training`` all read these facts from here. Importing it does
not import torch (the config resolvers ask for the rank before anything is built); torch
loads when a function needs it.
"""

from __future__ import annotations

import os
import platform
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch
    from torch import nn

PRECISIONS = ("fp32", "fp16", "bf16")
# An attribute set to True on a model whose frozen parameters every rank loaded from the same files (an
# adapter model's base): DDP leaves them out of its broadcast at wrap time (training/distributed.py).
FROZEN_FROM_FILES = "frozen_from_files"


def __getattr__(name: str) -> Any:
    """``DTYPES``: precision name -> torch dtype, built (importing torch) on first use."""
    if name == "DTYPES":
        import torch

        return {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# ----------------------------------------------------------------- processes
def _process_group() -> Any:
    """torch.distributed once a process group exists (which implies torch is loaded), else None."""
    distributed = sys.modules.get("torch.distributed")
    if distributed is not None and distributed.is_available() and distributed.is_initialized():
        return distributed
    return None


def rank() -> int:
    """This process's global rank: the process group's, else the launcher's (torchrun, SLURM), else 0."""
    group = _process_group()
    if group:
        return group.get_rank()
    return int(os.environ.get("RANK", os.environ.get("SLURM_PROCID", "0")))


def world_size() -> int:
    """How many processes train together: the process group's, else the launcher's, else 1."""
    group = _process_group()
    if group:
        return group.get_world_size()
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_main_process() -> bool:
    """Rank 0: the process that writes files and talks to the loggers."""
    return rank() == 0


def launched_distributed() -> bool:
    """Started by torchrun (or srun, or submitit under SLURM) as one of several processes."""
    return world_size() > 1 if _process_group() is None else True


def slurm_job_id() -> str | None:
    """This SLURM job's id as ``scontrol`` and ``sacct`` name it (``<array job>_<task>`` in a job array), else None."""
    array, task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    return f"{array}_{task}" if array and task else os.environ.get("SLURM_JOB_ID")


# ----------------------------------------------------------------- devices and dtypes
def local_cuda_index() -> int:
    """This process's GPU: ``LOCAL_RANK`` modulo the GPUs it sees (one each when SLURM binds one GPU per task)."""
    import torch

    return int(os.environ.get("LOCAL_RANK", "0")) % max(1, torch.cuda.device_count())


def choose_device(name: str = "auto") -> torch.device:
    """``auto`` picks this rank's CUDA device, then MPS, then the CPU; ``cuda`` without an index, this rank's GPU."""
    import torch

    if name not in ("auto", "cuda"):
        return torch.device(name)
    if torch.cuda.is_available():
        return torch.device("cuda", local_cuda_index())
    if name == "cuda":
        return torch.device("cuda")  # no GPU visible: torch explains at first use
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def bf16_supported(device: torch.device) -> bool:
    """Native bfloat16: on CUDA, compute capability 8.0+ (Ampere) of ``device`` itself (not the current
    device, which ``torch.cuda.is_bf16_supported`` asks); older GPUs only emulate it, slowly."""
    import torch

    if device.type == "cuda":
        return bool(torch.version.hip) or torch.cuda.get_device_capability(device)[0] >= 8
    return device.type in {"cpu", "mps"}


def cpu_has_native_bf16() -> bool:
    """True when the CPU has bfloat16 instructions (AVX512-BF16 or AMX); without them torch emulates bf16."""
    if platform.machine().lower() in {"arm64", "aarch64"}:
        return True
    try:
        flags = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="ignore")
    except OSError:  # not Linux: unknown, assume emulated
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def hardware_fallback(name: str, device: torch.device) -> tuple[str, str] | None:
    """The precision to use instead of ``name`` on ``device`` and why, or None when ``name`` suits it.

    CPU: fp16 -> bf16 (fp32 without native bf16); bf16 without native bf16 -> fp32, since emulated
    bf16 autocast is many times slower. GPU without bf16 -> fp16.
    """
    if device.type == "cpu":
        native_bf16 = cpu_has_native_bf16()
        if name == "fp16":
            return ("bf16" if native_bf16 else "fp32"), "float16 autocast on a CPU is ~30x slower"
        if name == "bf16" and not native_bf16:
            return "fp32", "this CPU has no native bfloat16 instructions, so bf16 autocast is emulated and slow"
    elif name == "bf16" and not bf16_supported(device):
        return "fp16", f"this {device.type} device has no bfloat16 support"
    return None


def usable_precision(name: str, device: torch.device | None = None) -> str:
    """``name`` after :func:`hardware_fallback` on ``device`` (default: this machine's best device)."""
    fallback = hardware_fallback(name, device or choose_device()) if name in PRECISIONS else None
    return fallback[0] if fallback else name


# ----------------------------------------------------------------- models
UNSHARDABLE = "unshardable_because"  # attribute a builder sets on a model whose weights FSDP cannot shard
PLACED = "placed_by_builder"  # attribute a builder sets on a model it has put on its devices itself


def mark_placed(model: nn.Module) -> nn.Module:
    """Say that ``model``'s builder placed its weights (e.g. a device map): the trainer must not move it."""
    setattr(model, PLACED, True)
    return model


def mark_unshardable(model: nn.Module, reason: str) -> nn.Module:
    """Say that ``model``'s weights cannot be sharded (``trainer=fsdp``), with the one line that says why and what
    to do instead: the builder knows its weights, the sharding code need not."""
    setattr(model, UNSHARDABLE, reason)
    return model


def unshardable_reason(model: nn.Module) -> str | None:
    """The reason :func:`mark_unshardable` gave for ``model``, or None."""
    return getattr(model, UNSHARDABLE, None)


def place(model: nn.Module, device: torch.device) -> nn.Module:
    """Move ``model`` to ``device`` unless its builder placed it (see :func:`mark_placed`)."""
    return model if getattr(model, PLACED, False) else model.to(device)


def unwrap(model: nn.Module) -> nn.Module:
    """The model inside DistributedDataParallel and/or ``torch.compile`` wrappers."""
    from torch import nn
    from torch.nn.parallel import DistributedDataParallel

    while True:
        if isinstance(model, DistributedDataParallel):
            model = model.module
        elif isinstance(getattr(model, "_orig_mod", None), nn.Module):  # torch.compile's OptimizedModule
            model = model._orig_mod  # type: ignore[assignment]  # checked above: an nn.Module
        else:
            return model


def reset_peak_memory(device: torch.device) -> None:
    """Start a new peak for :func:`peak_memory_bytes` (CUDA only; a process's RSS peak cannot be reset)."""
    import torch

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory_bytes(device: torch.device) -> int | None:
    """Peak memory of this process: allocated CUDA memory, else the resident set size."""
    import torch

    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    try:
        import resource
    except ImportError:  # Windows
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)
