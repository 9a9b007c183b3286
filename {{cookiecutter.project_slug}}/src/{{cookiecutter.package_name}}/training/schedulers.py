"""Learning-rate schedules as factories ``(optimizer, total_steps, steps_per_epoch) -> scheduler``.

Every schedule is stepped once per optimizer step; epoch-based ones convert epochs to steps.
All of them accept a linear warmup.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR


def _with_warmup(optimizer: Optimizer, warmup_steps: int, after: Callable[[int], float]) -> LambdaLR:
    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        return after(step - warmup_steps)

    return LambdaLR(optimizer, factor)


def constant(optimizer: Optimizer, total_steps: int, steps_per_epoch: int, warmup_steps: int = 0) -> LambdaLR:
    """A constant learning rate after the warmup."""
    return _with_warmup(optimizer, warmup_steps, lambda step: 1.0)


def cosine(optimizer: Optimizer, total_steps: int, steps_per_epoch: int, warmup_steps: int = 0,
           min_lr_ratio: float = 0.0) -> LambdaLR:
    """Half a cosine from the base rate down to ``min_lr_ratio`` of it at ``total_steps``."""
    decay_steps = max(1, total_steps - warmup_steps)

    def factor(step: int) -> float:
        progress = min(1.0, step / decay_steps)
        return min_lr_ratio + (1.0 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))

    return _with_warmup(optimizer, warmup_steps, factor)
