"""Causal language modelling: next-token loss, perplexity, generated samples, a saved result."""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import torch
from torch import nn

from {{ cookiecutter.package_name }}.runtime import unwrap
from {{ cookiecutter.package_name }}.tasks.base import Evaluation, Task
from {{ cookiecutter.package_name }}.tasks.generation import generate
from {{ cookiecutter.package_name }}.tasks.metrics import Mean

log = logging.getLogger(__name__)


def token_loss(
    model: nn.Module, batch: torch.Tensor | dict[str, torch.Tensor]
) -> tuple[torch.Tensor, torch.Tensor | int]:
    """Mean next-token cross-entropy over the batch, and how many tokens it averages.

    A dict batch (chat data) carries its own ``labels``: only the labelled (answer) tokens count, and their
    count stays on the device (no host sync). No KV cache: with one, transformers would not read restarting
    ``position_ids`` as packed examples.
    """
    if isinstance(batch, dict):
        return model(**batch, use_cache=False).loss, (batch["labels"][..., 1:] != -100).sum()
    output = model(input_ids=batch, labels=batch)
    return output.loss, batch[:, 1:].numel()


class CausalLMEvaluation(Evaluation):
    """Sums the token loss; keeps a few prompts and generates continuations for the loggers."""

    def __init__(
        self, loss: Mean, tokenizer: Any, num_samples: int = 4, prompt_tokens: int = 8, new_tokens: int = 24
    ) -> None:
        self.loss = loss  # reset here: the mean over tokens, summed over DDP ranks in compute()
        self.loss.reset()
        self.tokenizer = tokenizer
        self.num_samples, self.prompt_tokens, self.new_tokens = num_samples, prompt_tokens, new_tokens
        self.prompts: list[torch.Tensor] = []
        self.model: nn.Module | None = None
        self.held_out: list[Any] = []  # chat data: (prompt messages, reference answer)

    @torch.no_grad()
    def update(self, model: nn.Module, batch: torch.Tensor) -> None:
        loss, tokens = token_loss(model, batch)
        self.loss.update(loss.float(), weight=tokens)
        self.model = model
        if isinstance(batch, dict):  # chat data: the held-out prompts are answered instead (answers table)
            return
        for block in batch[: self.num_samples - len(self.prompts)]:
            self.prompts.append(block[: self.prompt_tokens].detach())

    def compute(self) -> dict[str, float]:
        loss = self.loss.compute()
        return {"loss": loss, "perplexity": math.exp(min(loss, 50.0))}

    @torch.no_grad()
    def generate(self) -> list[tuple[str, str]]:
        """(prompt, continuation) pairs, greedy decoding that neither stops at once nor loops on a phrase."""
        if self.model is None or self.tokenizer is None or not self.prompts:
            return []
        prompts = torch.stack(self.prompts)
        settings = {
            "max_new_tokens": self.new_tokens,
            "do_sample": False,
            "min_new_tokens": min(4, self.new_tokens),
            "no_repeat_ngram_size": 3,
            "repetition_penalty": 1.2,
            "pad_token_id": self.tokenizer.pad_token_id,
        }
        continuations = generate(
            unwrap(self.model), self.tokenizer, prompts, settings, batch_size=len(prompts), autocast=self.autocast
        )
        texts = self.tokenizer.batch_decode(prompts, skip_special_tokens=True)
        return list(zip(texts, continuations, strict=True))

    def tables(self) -> dict[str, tuple[list[str], list[list[Any]]]]:
        if self.held_out and self.model is not None:
            from {{ cookiecutter.package_name }}.tasks.chat_answers import answers_table

            table = answers_table(unwrap(self.model), self.tokenizer, self.held_out, self.new_tokens, self.autocast)
            return {"answers": table}
        samples = self.generate()
        for prompt, continuation in samples:
            log.info("Sample: %r -> %r", prompt, continuation)
        return {"generated_samples": (["prompt", "generated"], [list(pair) for pair in samples])}


class CausalLMTask(Task):
    """Next-token prediction; the tokenizer comes from the data."""

    def __init__(
        self,
        monitor: str = "val/loss",
        mode: str = "min",
        num_samples: int = 4,
        prompt_tokens: int = 8,
        new_tokens: int = 24,
    ) -> None:
        super().__init__(monitor, mode)
        self.num_samples, self.prompt_tokens, self.new_tokens = num_samples, prompt_tokens, new_tokens
        self.tokenizer: Any = None
        self.loss = Mean()
        self.held_out: list[Any] = []

    def bind(self, info: Any) -> None:
        """Take the tokenizer from the data's metadata; build the loss metric once."""
        self.tokenizer = info.tokenizer
        self.held_out = getattr(info, "held_out", [])
        self.loss = Mean()  # a diverged model shows loss=nan

    def training_loss(
        self, model: nn.Module, batch: torch.Tensor | dict[str, torch.Tensor]
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Blocks of text: the mean over their tokens (every block has as many). Chat data: the mean over its
        answer tokens and their count, so that each answer token weighs the same over the optimizer step."""
        if isinstance(batch, dict):
            loss, tokens = token_loss(model, batch)
            return loss, torch.as_tensor(tokens)
        return token_loss(model, batch)[0]

    def evaluation(self, stage: str = "val") -> CausalLMEvaluation:
        evaluation = CausalLMEvaluation(
            self.loss, self.tokenizer, self.num_samples, self.prompt_tokens, self.new_tokens
        )
        evaluation.held_out = self.held_out if stage == "test" else []
        return evaluation

    def save_result(self, model: nn.Module, output_dir: Path) -> Path:
        """Save with ``save_pretrained`` (safetensors) to ``output_dir/model``: the LoRA adapter, or the
        full model, plus the tokenizer. Load it back with ``AutoPeftModelForCausalLM`` or
        ``AutoModelForCausalLM.from_pretrained``."""
        folder = Path(output_dir) / "model"
        model = unwrap(model)
        model.save_pretrained(folder, safe_serialization=True)  # type: ignore[operator]  # a transformers model
        if self.tokenizer is not None:
            self.tokenizer.save_pretrained(folder)
        log.info("Saved the %s to %s.", "LoRA adapter" if hasattr(model, "peft_config") else "model", folder)
        return folder
