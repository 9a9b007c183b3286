"""The interface between the trainer and a task."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from {{ cookiecutter.package_name }}.errors import check_arguments
from {{ cookiecutter.package_name }}.tasks.rules import TASK


class Evaluation:
    """Accumulates one pass over a split; ``compute`` combines all DDP ranks (``tasks/metrics.py`` sums their states)."""

    split = "val"  # the split it scores, named in its figures
    autocast: Callable[[], Any] | None = None  # the precision's context, set by the pass, for generation after it

    def update(self, model: nn.Module, batch: Any) -> None:
        raise NotImplementedError

    def compute(self) -> dict[str, float]:
        """The split's metrics over every rank; call it on all ranks, once per pass."""
        raise NotImplementedError

    def figures(self) -> dict[str, Any]:
        """Matplotlib figures worth keeping (e.g. a confusion matrix); called after :meth:`compute`."""
        return {}

    def tables(self) -> dict[str, tuple[list[str], list[list[Any]]]]:
        """Tables worth keeping: name -> (columns, rows)."""
        return {}


class Task:
    """Knows the loss and the metrics; the trainer knows neither."""

    def __init__(self, monitor: str, mode: str = "max") -> None:
        check_arguments("task", TASK, {"mode": mode})
        self.monitor, self.mode = monitor, mode

    def bind(self, info: Any) -> None:
        """Take what the task needs from the data's metadata (class names, tokenizer)."""

    def attach(self, model: nn.Module) -> None:
        """See the model as built, before training or any checkpoint changes it (DPO keeps its reference)."""

    def training_loss(self, model: nn.Module, batch: Any) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """The micro-batch's mean loss; or ``(mean, items)``, a mean over ``items`` (e.g. answer tokens): with
        several micro-batches or ranks per optimizer step the trainer then weighs every item the same, dividing
        the summed loss by the item count of the whole step over every rank."""
        raise NotImplementedError

    def epoch_metrics(self) -> dict[str, float]:
        """Training metrics of the epoch besides the loss, over every rank (``train/*``); call on all ranks."""
        return {}

    def provenance(self) -> dict[str, Any]:
        """What ``provenance.json`` should record about the task's choices (e.g. the DPO reference's memory)."""
        return {}

    def evaluation(self, stage: str = "val") -> Evaluation:
        """A fresh accumulator for ``stage`` (``val`` each epoch, ``test`` once, with figures)."""
        raise NotImplementedError

    def save_result(self, model: nn.Module, output_dir: Path) -> Path | None:
        """Save the trained result in a task-specific form (e.g. ``save_pretrained``); None if nothing."""
        return None
