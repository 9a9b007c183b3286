"""Learning-rate schedules: torch's own, behind factories ``(optimizer, total_steps, steps_per_epoch, ...)``.

Every schedule is stepped once per optimizer step; epoch-based ones convert epochs to
steps. ``warmup_steps`` > 0 puts a linear warmup (``LinearLR``) in front through
``SequentialLR``: the rate rises from ``lr / warmup_steps`` to ``lr`` over those steps,
then the schedule starts.
"""

from __future__ import annotations

from torch.optim import Optimizer
from torch.optim.lr_scheduler import (
    ConstantLR,
    CosineAnnealingLR,
    LinearLR,
    LRScheduler,
    OneCycleLR,
    SequentialLR,
    StepLR,
)

from {{ cookiecutter.package_name }}.errors import check_arguments
from {{ cookiecutter.package_name }}.training.rules import SCHEDULER


def with_warmup(optimizer: Optimizer, warmup_steps: int, after: LRScheduler) -> LRScheduler:
    """``after``, preceded by ``warmup_steps`` steps of linear warmup (``after`` itself when 0)."""
    check_arguments("scheduler", SCHEDULER, {"warmup_steps": warmup_steps})
    if warmup_steps <= 0:
        return after
    warmup = LinearLR(optimizer, start_factor=1.0 / warmup_steps, end_factor=1.0, total_iters=max(1, warmup_steps - 1))
    return SequentialLR(optimizer, [warmup, after], milestones=[warmup_steps])


def constant(optimizer: Optimizer, total_steps: int, steps_per_epoch: int, warmup_steps: int = 0) -> LRScheduler:
    """A constant learning rate after the warmup."""
    return with_warmup(optimizer, warmup_steps, ConstantLR(optimizer, factor=1.0, total_iters=0))


def cosine(
    optimizer: Optimizer, total_steps: int, steps_per_epoch: int, warmup_steps: int = 0, min_lr_ratio: float = 0.0
) -> LRScheduler:
    """``CosineAnnealingLR``: half a cosine from ``lr`` down to ``min_lr_ratio * lr`` at ``total_steps``."""
    check_arguments("scheduler", SCHEDULER, {"min_lr_ratio": min_lr_ratio})
    eta_min = min_lr_ratio * optimizer.param_groups[0]["lr"]
    after = CosineAnnealingLR(optimizer, T_max=max(1, total_steps - warmup_steps), eta_min=eta_min)
    return with_warmup(optimizer, warmup_steps, after)


def step(
    optimizer: Optimizer,
    total_steps: int,
    steps_per_epoch: int,
    step_size: int = 10,
    gamma: float = 0.1,
    warmup_steps: int = 0,
) -> LRScheduler:
    """``StepLR``: multiply the rate by ``gamma`` every ``step_size`` epochs (counted after the warmup)."""
    check_arguments("scheduler", SCHEDULER, {"step_size": step_size, "gamma": gamma})
    return with_warmup(
        optimizer, warmup_steps, StepLR(optimizer, step_size=max(1, step_size * steps_per_epoch), gamma=gamma)
    )


def onecycle(
    optimizer: Optimizer,
    total_steps: int,
    steps_per_epoch: int,
    pct_start: float = 0.3,
    div_factor: float = 25.0,
    final_div_factor: float = 1e4,
    anneal_strategy: str = "cos",
    cycle_momentum: bool = False,
    warmup_steps: int = 0,
) -> LRScheduler:
    """``OneCycleLR``: the optimizer's ``lr`` is the peak, reached after ``pct_start`` of the run.

    ``warmup_steps`` > 0 sets the rise to that many steps instead of ``pct_start``.
    """
    check_arguments("scheduler", SCHEDULER, {"pct_start": pct_start, "warmup_steps": warmup_steps})
    if warmup_steps > 0:
        pct_start = min(warmup_steps / max(1, total_steps), 0.99)
    return OneCycleLR(
        optimizer,
        max_lr=[group["lr"] for group in optimizer.param_groups],
        total_steps=total_steps,
        pct_start=pct_start,
        div_factor=div_factor,
        final_div_factor=final_div_factor,
        anneal_strategy=anneal_strategy,  # type: ignore[arg-type]  # OneCycleLR checks it: "cos" or "linear"
        cycle_momentum=cycle_momentum,
    )
