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


def step(optimizer: Optimizer, total_steps: int, steps_per_epoch: int, step_size: int = 10, gamma: float = 0.1,
         warmup_steps: int = 0) -> LambdaLR:
    """Multiply the rate by ``gamma`` every ``step_size`` epochs (counted from the start), after the warmup.

    Epoch-based, like ``torch.optim.lr_scheduler.StepLR``: the rate of epoch ``e`` is
    ``lr * gamma ** (e // step_size)``; stepped per optimizer step, it changes at epoch boundaries.
    """
    steps_per_decay = max(1, step_size * steps_per_epoch)

    def factor(step_index: int) -> float:
        if step_index < warmup_steps:
            return (step_index + 1) / warmup_steps
        return gamma ** (step_index // steps_per_decay)

    return LambdaLR(optimizer, factor)


def onecycle(optimizer: Optimizer, total_steps: int, steps_per_epoch: int, pct_start: float = 0.3,
             div_factor: float = 25.0, final_div_factor: float = 1e4, anneal_strategy: str = "cos",
             warmup_steps: int = 0) -> LambdaLR:
    """The 1cycle policy of ``torch.optim.lr_scheduler.OneCycleLR`` (learning rate only; batch-based).

    The optimizer's ``lr`` is the peak: the rate rises from ``lr / div_factor`` to ``lr`` over
    ``pct_start`` of the run (or over ``warmup_steps`` when > 0), then anneals to
    ``lr / (div_factor * final_div_factor)`` at ``total_steps``.
    """
    if anneal_strategy not in {"cos", "linear"}:
        raise ValueError(f"anneal_strategy must be cos or linear, got {anneal_strategy!r}")
    rise_end = (warmup_steps if warmup_steps > 0 else pct_start * total_steps) - 1
    fall_end = total_steps - 1
    start, peak, end = 1.0 / div_factor, 1.0, 1.0 / (div_factor * final_div_factor)

    def anneal(begin: float, finish: float, fraction: float) -> float:
        if anneal_strategy == "cos":
            return finish + (begin - finish) / 2.0 * (math.cos(math.pi * fraction) + 1)
        return begin + (finish - begin) * fraction

    def factor(step_index: int) -> float:
        if step_index <= rise_end:
            return anneal(start, peak, step_index / rise_end if rise_end > 0 else 1.0)
        span = fall_end - rise_end
        return anneal(peak, end, min(1.0, (step_index - rise_end) / span) if span > 0 else 1.0)

    return LambdaLR(optimizer, factor)
