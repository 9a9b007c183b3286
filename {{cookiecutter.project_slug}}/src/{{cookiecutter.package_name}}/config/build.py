"""Building a run's objects from its config, in the one order train, the run-folder loader and memory use."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig


@dataclass
class Built:
    """What a config builds: the data module (set up), its metadata, the task (bound to it) and the model."""

    datamodule: Any
    info: Any
    task: Any  # None for a config without a task (memory)
    model: Any


def build_run(
    cfg: DictConfig,
    model_options: dict[str, Any] | None = None,
    before_model: Callable[[Any], None] | None = None,
) -> Built:
    """data -> setup -> task -> bind -> model: the model is built for the data's metadata (classes, tokenizer).

    ``model_options``: extra arguments of the model's builder; ``before_model(info)`` runs just before the
    model is built (memory's estimate, printed before a model that may not fit is loaded).
    """
    from hydra.utils import instantiate

    datamodule = instantiate(cfg.data)
    info = datamodule.setup()
    task = None
    if cfg.get("task") is not None:
        task = instantiate(cfg.task)
        task.bind(info)
    if before_model is not None:
        before_model(info)
    model = instantiate(cfg.model, data=info, **(model_options or {}))
    if task is not None:
        task.attach(model)  # before any checkpoint loads: DPO keeps the starting weights as its reference
    return Built(datamodule, info, task, model)
