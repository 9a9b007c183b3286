"""Generating text with a causal LM: the one batched loop ``predict``, a chat run's answers and the samples
logged after testing all use."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import torch
from tqdm.auto import tqdm

PROGRESS_AFTER = 3  # batches: a progress bar for longer inputs


@torch.no_grad()
def generate(
    model: Any,
    tokenizer: Any,
    prompts: list[str] | torch.Tensor,
    settings: dict[str, Any],
    batch_size: int = 8,
    device: torch.device | None = None,
    autocast: Callable[[], Any] | None = None,
    add_special_tokens: bool = True,
) -> list[str]:
    """The continuation of each prompt, generated in left-padded batches: every generation of the project
    (``predict``, a chat run's answers table, the samples logged after testing) runs here.

    ``prompts``: texts, or token ids of equal length (one row each); ``settings``: ``model.generate``'s
    arguments; ``device``: where the inputs go (default: the model's first parameter's device);
    ``autocast``: the precision's context, if any.
    """
    device = device if device is not None else next(model.parameters()).device
    tokenizer.padding_side = "left"
    model.eval()
    starts = range(0, len(prompts), batch_size)
    texts: list[str] = []
    for start in tqdm(starts, desc="generate", disable=len(starts) <= PROGRESS_AFTER):
        batch = prompts[start : start + batch_size]
        if isinstance(batch, torch.Tensor):
            inputs = {"input_ids": batch.to(device), "attention_mask": torch.ones_like(batch).to(device)}
        else:
            encoded = tokenizer(list(batch), return_tensors="pt", padding=True, add_special_tokens=add_special_tokens)
            inputs = {
                "input_ids": encoded["input_ids"].to(device),
                "attention_mask": encoded["attention_mask"].to(device),
            }
        with autocast() if autocast is not None else contextlib.nullcontext():
            output = model.generate(**inputs, **settings)
        texts += tokenizer.batch_decode(output[:, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
    return texts
