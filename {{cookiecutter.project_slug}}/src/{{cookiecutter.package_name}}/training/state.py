"""Everything a resumed run needs, saved to and restored from one checkpoint file."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from {{ cookiecutter.package_name }}.training.checkpoint import (
    copy_checkpoint,
    load_checkpoint,
    rng_state,
    rng_state_of_this_rank,
    save_checkpoint,
    set_rng_state,
)
from {{ cookiecutter.package_name }}.training.early_stopping import EarlyStopping

log = logging.getLogger(__name__)


@dataclass
class TrainingState:
    """The objects being trained and the loop's position.

    ``batches_done`` counts the batches of the current epoch already trained on; with the
    seeded sampler it is the position a resumed epoch continues from. ``loss_sum`` stays on
    the device (no host sync per step). ``run_ids`` are the loggers' ids of a restored run.
    """

    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any
    scaler: torch.amp.GradScaler
    early_stopping: EarlyStopping
    loss_sum: torch.Tensor
    config: dict[str, Any] = field(default_factory=dict)
    epoch: int = 0
    global_step: int = 0
    batches_done: int = 0
    loss_count: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    run_ids: dict[str, str] = field(default_factory=dict)
    pending_rng: dict[str, Any] | None = None

    def next_epoch(self) -> None:
        self.epoch += 1
        self.batches_done = self.loss_count = 0
        self.loss_sum.zero_()

    def state_dict(self, run_ids: dict[str, str], rng_by_rank: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        """Everything to resume from; ``rng_by_rank``: every rank's RNG state (default: this process's)."""
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            **self.progress(run_ids, rng_by_rank),
        }

    def progress(self, run_ids: dict[str, str], rng_by_rank: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        """Everything to resume from but the model and optimizer (which sharded checkpoints keep apart)."""
        rng_by_rank = rng_by_rank or [rng_state()]
        return {
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "epoch": self.epoch,
            "global_step": self.global_step,
            "batches_done": self.batches_done,
            "epoch_loss": [float(self.loss_sum), self.loss_count],
            "best": self.early_stopping.state_dict(),
            "history": self.history,
            "rng": rng_by_rank[0],
            "rng_by_rank": rng_by_rank,
            "config": self.config,
            "run_ids": run_ids,
        }

    def outcome(self) -> dict[str, Any]:
        """The best and final results so far, for the run summary (the trainer adds whether it stopped early:
        that depends on its epoch and step limits)."""
        stopping = self.early_stopping
        return {
            "best": {"value": stopping.best_score, "epoch": stopping.best_epoch},
            "final": self.history[-1] if self.history else {},
            "epochs": self.epoch,
            "global_step": self.global_step,
        }

    def save(self, paths: list[Path], run_ids: dict[str, str], rng_by_rank: list[dict[str, Any]] | None = None) -> None:
        """Write the state to the first of ``paths``, then copy that file to the others (each atomically)."""
        first, *others = paths
        save_checkpoint(self.state_dict(run_ids, rng_by_rank), first)
        for path in others:
            copy_checkpoint(first, path)

    def restore(self, path: Path) -> None:
        """Load ``path``; the RNG states wait in ``pending_rng`` until the first epoch starts."""
        state = load_checkpoint(Path(path))  # to the CPU: load_state_dict moves each tensor next to its parameter
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.restore_progress(state, path)

    def restore_progress(self, state: dict[str, Any], path: Path) -> None:
        """Everything of :meth:`progress` from ``state`` (read from ``path``)."""
        self.scheduler.load_state_dict(state["scheduler"])
        if state.get("scaler"):  # empty when saved without fp16 (bf16 or a CPU run resumed in fp16 on a GPU)
            self.scaler.load_state_dict(state["scaler"])
        self.epoch, self.global_step, self.batches_done = state["epoch"], state["global_step"], state["batches_done"]
        loss_sum, self.loss_count = state["epoch_loss"]
        self.loss_sum.fill_(loss_sum)
        self.early_stopping.load_state_dict(state["best"])
        self.history = list(state["history"])
        self.run_ids = dict(state.get("run_ids", {}))
        self.pending_rng = rng_state_of_this_rank(state)
        log.info("Resumed from %s at epoch %d, step %d.", path, self.epoch, self.global_step)

    def apply_pending_rng(self) -> None:
        """Restore the saved RNG states (once, right before training continues)."""
        if self.pending_rng is not None:
            set_rng_state(self.pending_rng)
            self.pending_rng = None
