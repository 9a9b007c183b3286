"""Checkpoints: written atomically, loaded with ``weights_only=True``, RNG states included.

Loading always maps to the CPU: ``load_state_dict`` copies the weights to wherever the model
lives and the optimizer moves its state next to each parameter, so a GPU run never holds two
copies of the optimizer state, and the RNG states come back as the CPU tensors they must be.
"""

from __future__ import annotations

import logging
import os
import pickle
import random
import shutil
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torch
import torch.distributed as dist

from {{ cookiecutter.package_name }}.errors import UserError, first_line

log = logging.getLogger(__name__)


def write_atomically(path: Path, write: Callable[[BinaryIO], None]) -> None:
    """Call ``write`` on a new temporary file beside ``path``, flush it to disk, then rename it into place.

    The temporary name is unique, so two writers never share one; a crash leaves the old ``path``.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(descriptor, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(name, path)
    except BaseException:
        Path(name).unlink(missing_ok=True)
        raise
    if hasattr(os, "O_DIRECTORY"):  # the rename itself reaches the disk (POSIX)
        folder = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(folder)
        finally:
            os.close(folder)


def save_checkpoint(state: dict[str, Any], path: Path) -> None:
    """Write ``state`` to a temporary file beside ``path``, then rename it into place."""
    write_atomically(path, lambda handle: torch.save(state, handle))


def copy_checkpoint(source: Path, path: Path) -> None:
    """Copy ``source`` to ``path`` the same way (e.g. last.pt to best.pt)."""
    with open(source, "rb") as original:
        write_atomically(path, lambda handle: shutil.copyfileobj(original, handle, 16 * 2**20))


def load_checkpoint(path: Path, mmap: bool = False) -> dict[str, Any]:
    """Load a checkpoint to the CPU safely; a missing, truncated or foreign file gets a one-line error.

    ``mmap``: map the file instead of reading it, so that only the tensors used are paged in.
    """
    if not path.is_file():
        raise UserError(f"checkpoint {path} does not exist: check the path given to resume=, or use resume=none.")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except (RuntimeError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile, ValueError) as error:
        raise UserError(
            f"checkpoint {path} is truncated or corrupt ({first_line(error)}): delete it and resume from another "
            "checkpoint, or start afresh with resume=none."
        ) from None
    if not isinstance(state, dict) or "model" not in state:
        raise UserError(f"{path} is not a checkpoint written by this project: point resume= at a last.pt or best.pt.")
    return state


def load_weights(path: Path) -> dict[str, Any]:
    """Only the model's weights of a checkpoint (the optimizer state stays on disk, unread)."""
    return load_checkpoint(path, mmap=True)["model"]


def rng_state() -> dict[str, Any]:
    """Python, NumPy and torch RNG states in types that ``weights_only`` loading accepts.

    On CUDA, only this process's GPU (the current device): a resume may see fewer GPUs (8 -> 4,
    one GPU per SLURM task), and every rank saves its own state anyway.
    """
    kind, keys, position, has_gauss, cached = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": {
            "kind": kind,
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "position": int(position),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` captured."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    numpy_state = state["numpy"]
    np.random.set_state(
        (
            numpy_state["kind"],
            numpy_state["keys"].cpu().numpy().astype(np.uint32),
            numpy_state["position"],
            numpy_state["has_gauss"],
            numpy_state["cached_gaussian"],
        )
    )
    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        set_cuda_rng_state(state["cuda"])


def set_cuda_rng_state(saved: torch.Tensor | list[torch.Tensor]) -> None:
    """Restore the current GPU's RNG; ``saved`` is its state, or (older checkpoints) one state per GPU
    visible at save time, of which the current device's index is used when it exists."""
    if isinstance(saved, (list, tuple)):
        index = torch.cuda.current_device()
        if index >= len(saved):
            log.warning(
                "The checkpoint holds RNG states of %d GPU(s), none for cuda:%d: its random stream starts afresh.",
                len(saved),
                index,
            )
            return
        saved = saved[index]
    torch.cuda.set_rng_state(saved.cpu())


def rng_states_of_all_ranks() -> list[dict[str, Any]]:
    """Every rank's :func:`rng_state`, in rank order (a collective: call it on all ranks)."""
    if not dist.is_initialized():
        return [rng_state()]
    states: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(states, rng_state())
    return states


def rng_state_of_this_rank(state: dict[str, Any]) -> dict[str, Any]:
    """This rank's RNG state from a checkpoint; rank 0's when it was saved by a different number of ranks."""
    per_rank = state.get("rng_by_rank") or []
    rank = dist.get_rank() if dist.is_initialized() else 0
    world = dist.get_world_size() if dist.is_initialized() else 1
    return per_rank[rank] if len(per_rank) == world else state["rng"]
