"""Type and range checks of the values people override most, run before anything is built.

A bad value stops the run with one line that names the key and what it accepts, e.g.
``data.batch_size=0 is not accepted: data.batch_size must be an integer >= 1.``. Keys a config does not
have are skipped, so one table serves every combination of options.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig, OmegaConf

from {{ cookiecutter.package_name }}.errors import UserError


@dataclass(frozen=True)
class Rule:
    """What one key accepts: a kind (``int``, ``float``, ``bool``, ``str``) and optional bounds or choices."""

    kind: type
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    optional: bool = False
    choices: tuple[str, ...] = ()

    def accepts(self, value: Any) -> bool:
        if value is None:
            return self.optional
        if self.kind is bool or self.kind is str:
            return isinstance(value, self.kind) and (not self.choices or value in self.choices)
        if isinstance(value, bool) or not isinstance(value, int if self.kind is int else (int, float)):
            return False
        if not math.isfinite(value):
            return False
        if self.low is not None and (value < self.low or (self.low_open and value == self.low)):
            return False
        return self.high is None or not (value > self.high or (self.high_open and value == self.high))

    def describe(self) -> str:
        if self.choices:
            text = "one of " + ", ".join(self.choices)
        elif self.kind is bool:
            text = "true or false"
        else:
            text = "an integer" if self.kind is int else "a number"
            if self.low is not None and self.high is not None:
                text += f" in {'(' if self.low_open else '['}{self.low:g}, {self.high:g}{')' if self.high_open else ']'}"
            elif self.low is not None:
                text += f" {'>' if self.low_open else '>='} {self.low:g}"
        return text + (" or null" if self.optional else "")


def at_least(low: float, kind: type = int, optional: bool = False) -> Rule:
    return Rule(kind, low=low, optional=optional)


def above(low: float, optional: bool = False) -> Rule:
    return Rule(float, low=low, low_open=True, optional=optional)


FRACTION = Rule(float, low=0.0, high=1.0, high_open=True)  # [0, 1)
FLAG = Rule(bool)

RULES: dict[str, Rule] = {
    "seed": Rule(int),
    "data.batch_size": at_least(1),
    "data.num_workers": at_least(0, optional=True),
    "data.val_fraction": FRACTION,
    "data.test_fraction": FRACTION,
    "data.subset_fraction": Rule(float, low=0.0, high=1.0, low_open=True),  # (0, 1]
    "data.block_size": at_least(2),
    "model.dropout": FRACTION,
    "model.drop_rate": FRACTION,
    "model.img_size": at_least(1, optional=True),
    "model.lora.r": at_least(1),
    "model.lora.dropout": FRACTION,
    "optimizer.lr": above(0.0),
    "optimizer.weight_decay": at_least(0.0, float),
    "optimizer.momentum": FRACTION,
    "scheduler.warmup_steps": at_least(0),
    "scheduler.step_size": at_least(1),
    "scheduler.gamma": above(0.0),
    "scheduler.pct_start": Rule(float, low=0.0, high=1.0, low_open=True, high_open=True),
    "scheduler.min_lr_ratio": Rule(float, low=0.0, high=1.0),
    "task.mode": Rule(str, choices=("max", "min")),
    "trainer.max_epochs": at_least(1),
    "trainer.max_steps": at_least(-1),
    "trainer.accumulate_grad_batches": at_least(1),
    "trainer.gradient_clip_val": above(0.0, optional=True),
    "trainer.limit_train_batches": at_least(1, optional=True),
    "trainer.limit_val_batches": at_least(1, optional=True),
    "trainer.overfit_batches": at_least(0),
    "trainer.log_every_n_steps": at_least(1),
    "trainer.early_stopping.patience": at_least(1, optional=True),
    "trainer.early_stopping.min_delta": at_least(0.0, float),
    "trainer.deterministic": FLAG,
    "trainer.progress_bar": FLAG,
    "trainer.distributed": FLAG,
}

_ABSENT = object()


def check_config(cfg: DictConfig) -> None:
    """Raise a one-line :class:`UserError` for the first value in ``cfg`` that its rule rejects."""
    for key, rule in RULES.items():
        value = OmegaConf.select(cfg, key, default=_ABSENT, throw_on_resolution_failure=False)
        if value is _ABSENT or rule.accepts(value):
            continue
        raise UserError(f"{key}={_show(value)} is not accepted: {key} must be {rule.describe()}.")


def _show(value: Any) -> str:
    return "null" if value is None else str(value).lower() if isinstance(value, bool) else str(value)
