"""Summed losses weighted per item (answer token) over a whole optimizer step, as HF's ``num_items_in_batch``."""

from __future__ import annotations

from collections.abc import Iterable

import torch

from {{ cookiecutter.package_name }} import runtime
from {{ cookiecutter.package_name }}.training import distributed


@torch.no_grad()
def divide_gradients(parameters: Iterable[torch.nn.Parameter], items: torch.Tensor) -> None:
    """Divide gradients of summed losses by the step's item count over every rank (unscaled gradients).

    Every answer token then weighs the same, whatever its micro-batch or rank. DDP averages gradients
    over ranks, hence the factor of the world size. The count stays on the device: no host sync.
    """
    total = distributed.all_reduce_sum(items.detach().float())
    factor = runtime.world_size() / total.clamp(min=1)
    for parameter in parameters:
        if parameter.grad is not None:
            parameter.grad.mul_(factor.to(parameter.grad.dtype))
