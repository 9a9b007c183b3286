"""Sharded checkpoints (FSDP): a folder ``last.dcp`` per checkpoint, written by every rank.

``torch.distributed.checkpoint`` (DCP) writes each rank's shard of the model and optimizer
(from ``get_state_dict``, keyed by parameter name, so any number of ranks can load it: DCP
reshards on load); rank 0 adds ``trainer_state.pt`` (epoch, step, schedule, RNG of every rank,
history). As with ``last.pt``: files are fsynced into a temporary folder, which is renamed into
place only when complete, so a crash leaves the previous checkpoint. With ``async_save`` the
shards are copied to memory and written in the background while training goes on; the folder is
renamed once written (at the next save, or when training ends).
"""

from __future__ import annotations

import copy
import logging
import os
import shutil
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import torch
import torch.distributed as torch_dist
from torch import nn

from {{ cookiecutter.package_name }}.errors import UserError
from {{ cookiecutter.package_name }}.training.checkpoint import save_checkpoint

log = logging.getLogger(__name__)

SUFFIX = ".dcp"
STATE_FILE = "trainer_state.pt"


def is_sharded_checkpoint(path: Path) -> bool:
    """A DCP checkpoint folder (its ``.metadata`` is written last)."""
    return path.is_dir() and (path / ".metadata").is_file()


def sharded_path(folder: Path, name: str) -> Path:
    return folder / f"{name}{SUFFIX}"


def _fsync_folder(folder: Path) -> None:
    if hasattr(os, "O_DIRECTORY"):
        handle = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(handle)
        finally:
            os.close(handle)


def replace_folder(source: Path, target: Path) -> None:
    """Move the finished folder ``source`` to ``target``; the old ``target`` is removed only afterwards."""
    old = target.with_name(f".{target.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    if target.exists():
        os.replace(target, old)
    os.replace(source, target)
    _fsync_folder(target.parent)
    shutil.rmtree(old, ignore_errors=True)


def _barrier() -> None:
    if torch_dist.is_initialized():
        torch_dist.barrier()


def _is_main() -> bool:
    return not torch_dist.is_initialized() or torch_dist.get_rank() == 0


class ShardedCheckpointer:
    """Saves and restores the model and optimizer of a (possibly FSDP-sharded) run as DCP folders."""

    def __init__(self, async_save: bool = False) -> None:
        self.async_save = async_save and torch_dist.is_initialized()
        self._pending: tuple[Future, Path, list[Path], dict[str, Any]] | None = None
        self._group: Any = None

    def save(
        self, model: nn.Module, optimizer: torch.optim.Optimizer, progress: dict[str, Any], paths: list[Path]
    ) -> None:
        """Write model and optimizer (all ranks) and ``progress`` (rank 0's) to the first of ``paths``, then
        copy it to the others. A collective: every rank calls it with the same paths."""
        from torch.distributed import checkpoint as dcp
        from torch.distributed.checkpoint.state_dict import get_state_dict

        self.finish()
        first = paths[0]
        staging = first.with_name(f".{first.name}.tmp")
        if _is_main():
            shutil.rmtree(staging, ignore_errors=True)
            staging.parent.mkdir(parents=True, exist_ok=True)
        _barrier()
        model_state, optimizer_state = get_state_dict(model, optimizer)
        state = {"model": model_state, "optimizer": optimizer_state}
        writer = dcp.FileSystemWriter(staging, sync_files=True)
        if self.async_save:
            if self._group is None:
                self._group = torch_dist.new_group(backend="gloo")  # its own group: no clash with training's
            future = dcp.async_save(state, storage_writer=writer, process_group=self._group)
            self._pending = (future, staging, paths, copy.deepcopy(progress))  # as of now, not of the rename
            return
        dcp.save(state, storage_writer=writer, no_dist=not torch_dist.is_initialized())
        self._publish(staging, paths, progress)

    def finish(self) -> None:
        """Wait for a background save and put its folder in place (a no-op without one)."""
        if self._pending is None:
            return
        future, staging, paths, progress = self._pending
        self._pending = None
        future.result()
        self._publish(staging, paths, progress)

    def _publish(self, staging: Path, paths: list[Path], progress: dict[str, Any]) -> None:
        _barrier()  # every rank's shard is on disk
        if _is_main():
            save_checkpoint(progress, staging / STATE_FILE)
            _fsync_folder(staging)
            first, *others = paths
            replace_folder(staging, first)
            for path in others:
                copy = path.with_name(f".{path.name}.tmp")
                shutil.rmtree(copy, ignore_errors=True)
                shutil.copytree(first, copy)
                replace_folder(copy, path)
        _barrier()  # nobody reads the folder before it is in place

    def restore(self, model: nn.Module, optimizer: torch.optim.Optimizer, path: Path) -> dict[str, Any]:
        """Load model and optimizer from ``path`` (resharded to this world size) and return rank 0's progress."""
        from torch.distributed import checkpoint as dcp
        from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

        check_sharded(path)
        model_state, optimizer_state = get_state_dict(model, optimizer)
        state = {"model": model_state, "optimizer": optimizer_state}
        dcp.load(state, checkpoint_id=path, no_dist=not torch_dist.is_initialized())
        set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optimizer"])
        return read_progress(path)

    def restore_weights(self, model: nn.Module, path: Path) -> None:
        """Load only the model's weights from ``path`` (e.g. best.dcp before testing); all ranks call it."""
        from torch.distributed import checkpoint as dcp
        from torch.distributed.checkpoint.state_dict import get_model_state_dict, set_model_state_dict

        self.finish()
        check_sharded(path)
        state = {"model": get_model_state_dict(model)}
        dcp.load(state, checkpoint_id=path, no_dist=not torch_dist.is_initialized())
        set_model_state_dict(model, state["model"])


def check_sharded(path: Path) -> None:
    if not is_sharded_checkpoint(path) or not (path / STATE_FILE).is_file():
        raise UserError(
            f"{path} is not a complete sharded checkpoint (no .metadata or {STATE_FILE}): resume from another "
            "checkpoint, or start afresh with resume=none."
        )


def read_progress(path: Path) -> dict[str, Any]:
    return torch.load(path / STATE_FILE, map_location="cpu", weights_only=True)


def load_model_weights(path: Path, weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Fill ``weights`` (a plain model's state_dict) from the sharded checkpoint ``path`` in this process
    alone, without a process group; a parameter the checkpoint lacks is one line."""
    from torch.distributed import checkpoint as dcp
    from torch.distributed.checkpoint.api import CheckpointException

    check_sharded(path)
    state = {"model": weights}
    try:
        dcp.load(state, checkpoint_id=path, no_dist=True)
    except (CheckpointException, RuntimeError, KeyError, ValueError) as error:  # a key missing, a shape differing
        reason = str(error).strip().splitlines()[-1][:300] if str(error).strip() else type(error).__name__
        raise UserError(
            f"{path} does not fit the configured model ({reason}): use the run's own model options, "
            "or a checkpoint of this model."
        ) from None
    return state["model"]
