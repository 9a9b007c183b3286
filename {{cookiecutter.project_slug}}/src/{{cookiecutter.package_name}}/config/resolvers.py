"""OmegaConf resolvers the configs use; importing this module registers them.

- ``${run_time:%Y-%m-%d}``: the start time of the run, the same on every rank of a
  ``torchrun`` job (rank 0's clock, shared through torchrun's store), so that all ranks
  write to ONE run folder; ``${now:}`` can differ by a second between ranks.
- ``${run_folder:<runs dir>}``: the run folder's name, ``<date>_<time>`` from ``run_time``; in a
  SLURM job that was requeued (``SLURM_RESTART_COUNT`` > 0), the folder its first start used, so
  that ``resume=auto`` finds ``last.pt`` (recorded under ``<runs dir>/.slurm_jobs/<job id>``).
- ``${rank_zero_only:value}``: ``value`` on rank 0, null elsewhere (e.g. ``hydra.output_subdir``).
- ``${rank_suffix:}``: ``""`` on rank 0, ``.rank<N>`` elsewhere (e.g. per-rank log files).
- ``${sweep_direction:max}``: ``maximize`` / ``minimize``, for Optuna from ``task.mode``.
- ``${sweep_group:}``: the multirun folder's name during a multirun, else null (W&B group).
- ``${path_name:<path>}``: the last part of a path (e.g. Optuna's study name from the sweep folder).
- ``${one_task_per_gpu:<gpus>}``: SLURM tasks per node for that many GPUs per node (at least 1).
"""

from __future__ import annotations

import logging
import os
import time
from datetime import datetime, timedelta
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import OmegaConf

from {{ cookiecutter.package_name }}.runtime import rank

log = logging.getLogger(__name__)

_STORE_KEY = "{{ cookiecutter.package_name }}/run_time"
_run_time: float | None = None


def _shared_with_torchrun(now: float, timeout_s: float = 120.0) -> float:
    """Rank 0's ``now``, read from the store torchrun's agent hosts; ``now`` when there is none."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or os.environ.get("TORCHELASTIC_USE_AGENT_STORE") != "True":
        return now
    from torch.distributed import TCPStore

    try:
        store = TCPStore(
            os.environ["MASTER_ADDR"],
            int(os.environ["MASTER_PORT"]),
            is_master=False,
            timeout=timedelta(seconds=timeout_s),
        )
        if rank() == 0 and not store.check([_STORE_KEY]):
            store.set(_STORE_KEY, repr(now))
        return float(store.get(_STORE_KEY).decode())
    except (RuntimeError, KeyError, ValueError) as error:  # no store: each rank keeps its own clock
        log.warning("could not share the run time between ranks (%s); run folders may differ.", error)
        return now


def run_time(fmt: str) -> str:
    """The run's start time formatted with ``fmt``; identical on all ranks of a torchrun job."""
    global _run_time
    if _run_time is None:
        _run_time = _shared_with_torchrun(time.time())
    return datetime.fromtimestamp(_run_time).strftime(fmt)


def run_folder(runs_dir: str) -> str:
    """The run folder's name; a requeued SLURM job gets the folder of its first start back."""
    name = run_time("%Y-%m-%d_%H-%M-%S")
    job = os.environ.get("SLURM_JOB_ID")
    if not job or os.environ.get("SUBMITIT_EXECUTOR"):  # submitit's jobs keep their sweep folder
        return name
    marker = Path(runs_dir) / ".slurm_jobs" / job
    if int(os.environ.get("SLURM_RESTART_COUNT") or 0) > 0 and marker.is_file():
        return marker.read_text(encoding="utf-8").strip() or name
    if rank() == 0:
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.write_text(name, encoding="utf-8")
    return name


def path_name(path: str) -> str:
    return Path(str(path)).name


def one_task_per_gpu(gpus: int | None) -> int:
    """DDP needs one process per GPU: ``tasks_per_node`` follows ``gpus_per_node`` (1 without GPUs)."""
    return max(1, int(gpus or 0))


def rank_zero_only(value: str) -> str | None:
    return value if rank() == 0 else None


def rank_suffix() -> str:
    return "" if rank() == 0 else f".rank{rank()}"


def sweep_direction(mode: str) -> str:
    """Optuna's direction for a monitored metric's ``mode`` (max or min)."""
    directions = {"max": "maximize", "min": "minimize"}
    if mode not in directions:
        raise ValueError(f"task.mode must be max or min, got {mode!r}")
    return directions[mode]


def sweep_group() -> str | None:
    """The name of the multirun folder (shared by all runs of one sweep), or None outside a multirun."""
    if not HydraConfig.initialized():
        return None
    hydra_cfg = HydraConfig.get()
    if hydra_cfg.mode != RunMode.MULTIRUN:
        return None
    return Path(str(hydra_cfg.sweep.dir)).name


def register() -> None:
    """Register every resolver above (safe to call more than once)."""
    OmegaConf.register_new_resolver("run_time", run_time, use_cache=True, replace=True)
    OmegaConf.register_new_resolver("run_folder", run_folder, use_cache=True, replace=True)
    OmegaConf.register_new_resolver("path_name", path_name, replace=True)
    OmegaConf.register_new_resolver("one_task_per_gpu", one_task_per_gpu, replace=True)
    OmegaConf.register_new_resolver("rank_zero_only", rank_zero_only, replace=True)
    OmegaConf.register_new_resolver("rank_suffix", rank_suffix, replace=True)
    OmegaConf.register_new_resolver("sweep_direction", sweep_direction, replace=True)
    OmegaConf.register_new_resolver("sweep_group", sweep_group, replace=True)


register()
