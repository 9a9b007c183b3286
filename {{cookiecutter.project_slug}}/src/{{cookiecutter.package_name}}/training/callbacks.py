"""Callback points of the trainer: add behaviour without touching the loop.

Subclass :class:`Callback`, override the hooks you need and add it on the command line,
e.g. ``+trainer.callbacks.timer._target_={{ cookiecutter.package_name }}.training.callbacks.StepTimer``.
Hooks run on every rank; check ``trainer.is_main`` before writing files.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from {{ cookiecutter.package_name }}.training.trainer import Trainer

log = logging.getLogger(__name__)


class Callback:
    """Every hook is optional; ``trainer.state`` holds the epoch, global step and position."""

    def on_fit_start(self, trainer: Trainer) -> None:
        """After the model, optimizer and schedule are built (and a checkpoint restored)."""

    def on_train_epoch_start(self, trainer: Trainer) -> None:
        """Before the first batch of a training epoch (also of a resumed, partial one)."""

    def on_train_step_end(self, trainer: Trainer, loss: torch.Tensor) -> None:
        """After each optimizer step; ``loss`` is the last micro-batch's, still on the device."""

    def on_validation_end(self, trainer: Trainer, metrics: dict[str, float]) -> None:
        """After each epoch's validation; ``metrics`` holds ``train/*`` and ``val/*`` values."""

    def on_checkpoint(self, trainer: Trainer, path: Path) -> None:
        """After ``path`` (``best.pt`` or ``last.pt``) was written (on the main process)."""

    def on_fit_end(self, trainer: Trainer) -> None:
        """After the last epoch, before testing."""


class StepTimer(Callback):
    """Logs the optimizer steps per second of each training epoch (data loading included)."""

    def __init__(self) -> None:
        self.started = self.last_step = 0.0
        self.first_step = 0
        self.steps_per_s: list[float] = []

    def on_train_epoch_start(self, trainer: Trainer) -> None:
        self.started, self.first_step = time.perf_counter(), trainer.state.global_step

    def on_train_step_end(self, trainer: Trainer, loss: torch.Tensor) -> None:
        self.last_step = time.perf_counter()

    def on_validation_end(self, trainer: Trainer, metrics: dict[str, float]) -> None:
        steps = trainer.state.global_step - self.first_step
        if steps:
            self.steps_per_s.append(steps / max(self.last_step - self.started, 1e-9))
            log.info("epoch %d: %.1f optimizer steps/s", trainer.state.epoch, self.steps_per_s[-1])
