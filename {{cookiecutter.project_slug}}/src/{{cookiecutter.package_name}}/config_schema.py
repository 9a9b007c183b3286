"""Types for configs that users override often, so Hydra rejects a bad value in one line.

Importing this module registers the schemas in Hydra's ConfigStore; the YAML files
list them first in their defaults and supply every value.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING


@dataclass
class EarlyStoppingSchema:
    patience: Optional[int] = MISSING  # noqa: UP045 - OmegaConf needs typing.Optional
    min_delta: float = MISSING


@dataclass
class TrainerSchema:
    _target_: str = MISSING
    max_epochs: int = MISSING
    max_steps: int = MISSING
    accumulate_grad_batches: int = MISSING
    gradient_clip_val: Optional[float] = MISSING  # noqa: UP045
    deterministic: bool = MISSING
    device: str = MISSING
    limit_train_batches: Optional[int] = MISSING  # noqa: UP045
    limit_val_batches: Optional[int] = MISSING  # noqa: UP045
    overfit_batches: int = MISSING
    log_every_n_steps: int = MISSING
    progress_bar: bool = MISSING
    early_stopping: EarlyStoppingSchema = field(default_factory=EarlyStoppingSchema)
    distributed: bool = MISSING
    find_unused_parameters: bool = False
    backend: str = "auto"


ConfigStore.instance().store(group="trainer", name="schema", node=TrainerSchema)
