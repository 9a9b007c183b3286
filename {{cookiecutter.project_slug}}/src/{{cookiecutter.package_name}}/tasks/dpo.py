"""Direct preference optimisation (DPO) on ``data=preference``: the loss, its reference model, its metrics.

For a pair, ``logp`` is the sum of the answer tokens' log-probabilities (prompt and padding count nothing);
``Δ = (logp_chosen - ref_chosen) - (logp_rejected - ref_rejected)``. The sigmoid loss (DPO) is
``-(1 - ε) log σ(βΔ) - ε log σ(-βΔ)`` (ε: ``label_smoothing``, conservative DPO). The reference is:

- ``copy``: a frozen copy of the starting weights (one more model in memory);
- ``adapters``: under LoRA, the same model with its adapters switched off (nothing more in memory);
- ``auto`` (default): ``adapters`` where the model has LoRA adapters, else ``copy``.

With ``precompute_ref: true`` the reference's log-probabilities of every pair are computed once, at the
first step, and the copy is freed. ``rewards/*`` are ``β (logp - ref)``; ``logps/accuracy`` is how often
the policy gives the chosen answer the higher log-probability (``ref_logps/accuracy``: the reference).
"""

from __future__ import annotations

import copy
import difflib
import logging
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from {{ cookiecutter.package_name }}.data.chat import IGNORE
from {{ cookiecutter.package_name }}.errors import UserError
from {{ cookiecutter.package_name }}.runtime import unwrap
from {{ cookiecutter.package_name }}.tasks.base import Evaluation
from {{ cookiecutter.package_name }}.tasks.causal_lm import CausalLMTask
from {{ cookiecutter.package_name }}.tasks.metrics import Mean

log = logging.getLogger(__name__)

# Each loss of Δ (the policy's log-ratio margin over the reference's), β and ε, per pair.
LOSSES = {
    "sigmoid": lambda d, beta, eps: -(1 - eps) * F.logsigmoid(beta * d) - eps * F.logsigmoid(-beta * d),
    "hinge": lambda d, beta, eps: torch.relu(1 - beta * d),
    "robust": lambda d, beta, eps: (
        (-(1 - eps) * F.logsigmoid(beta * d) + eps * F.logsigmoid(-beta * d)) / (1 - 2 * eps)
    ),
}
REFERENCES = ("auto", "copy", "adapters")
METRICS = (
    "loss",
    "rewards/chosen",
    "rewards/rejected",
    "rewards/accuracy",
    "rewards/margin",
    "logps/chosen",
    "logps/rejected",
    "logps/accuracy",
    "ref_logps/accuracy",
)


def sequence_logps(model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Per row, the summed log-probabilities of the labelled (answer) tokens, in float32."""
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False).logits
    labels = batch["labels"][:, 1:]
    per_token = F.cross_entropy(
        logits[:, :-1].flatten(0, 1).float(), labels.flatten(), ignore_index=IGNORE, reduction="none"
    )
    return -per_token.view_as(labels).sum(dim=1)


def pair_scores(
    logps: torch.Tensor, ref_logps: torch.Tensor, beta: float, label_smoothing: float, loss_type: str
) -> dict[str, torch.Tensor]:
    """Per pair: the loss and every metric of :data:`METRICS`, from 2B policy and 2B reference log-probabilities
    (the chosen rows first)."""
    chosen, rejected = logps.chunk(2)
    ref_chosen, ref_rejected = ref_logps.chunk(2)
    chosen_ratio, rejected_ratio = chosen - ref_chosen, rejected - ref_rejected
    rewards_chosen, rewards_rejected = beta * chosen_ratio.detach(), beta * rejected_ratio.detach()
    return {
        "loss": LOSSES[loss_type](chosen_ratio - rejected_ratio, beta, label_smoothing),
        "rewards/chosen": rewards_chosen,
        "rewards/rejected": rewards_rejected,
        "rewards/accuracy": (rewards_chosen > rewards_rejected).float(),
        "rewards/margin": rewards_chosen - rewards_rejected,
        "logps/chosen": chosen.detach(),
        "logps/rejected": rejected.detach(),
        "logps/accuracy": (chosen > rejected).float(),
        "ref_logps/accuracy": (ref_chosen > ref_rejected).float(),
    }


class Means:
    """One :class:`Mean` per metric, over pairs."""

    def __init__(self) -> None:
        self.means = {name: Mean() for name in METRICS}

    def update(self, scores: dict[str, torch.Tensor]) -> None:
        for name, mean in self.means.items():
            mean.update(scores[name].detach().float())

    def compute(self) -> dict[str, float]:
        """The means over every rank (call on all ranks), then empty again."""
        values = {name: mean.compute() for name, mean in self.means.items()}
        for mean in self.means.values():
            mean.reset()
        return values


class DPOEvaluation(Evaluation):
    """The DPO metrics of a split; at test time also the answers table, before and after."""

    def __init__(self, task: DPOTask, stage: str) -> None:
        self.task, self.split, self.means = task, stage, Means()
        self.model: nn.Module | None = None

    @torch.no_grad()
    def update(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> None:
        self.model = model
        self.means.update(self.task.scores(model, batch))

    def compute(self) -> dict[str, float]:
        return self.means.compute()

    def tables(self) -> dict[str, tuple[list[str], list[list[Any]]]]:
        if self.split != "test" or not self.task.held_out or self.model is None:
            return {}
        return {"answers": self.task.answers_table(unwrap(self.model))}


class DPOTask(CausalLMTask):
    """DPO's loss and metrics; the reference model is taken from the model :meth:`attach` is given."""

    def __init__(
        self,
        monitor: str = "val/loss",
        mode: str = "min",
        beta: float = 0.1,
        label_smoothing: float = 0.0,
        loss_type: str = "sigmoid",
        reference: str = "auto",
        precompute_ref: bool = False,
        ref_batch_size: int = 16,
        new_tokens: int = 24,
    ) -> None:
        super().__init__(monitor, mode, new_tokens=new_tokens)
        for option, value, choices in (("loss_type", loss_type, LOSSES), ("reference", reference, REFERENCES)):
            if value not in choices:
                close = difflib.get_close_matches(str(value), list(choices), n=1)
                raise UserError(
                    f"task.{option}={value} is not an option; use {close[0] if close else next(iter(choices))} "
                    f"(one of {', '.join(choices)})."
                )
        if not 0.0 <= label_smoothing < 0.5:
            raise UserError(f"task.label_smoothing={label_smoothing} must be in [0, 0.5): the share of flipped labels.")
        self.beta, self.label_smoothing, self.loss_type = float(beta), float(label_smoothing), loss_type
        self.reference_choice, self.precompute_ref, self.ref_batch_size = (
            reference,
            bool(precompute_ref),
            ref_batch_size,
        )
        self.reference: nn.Module | None = None
        self.mode_of_reference = "copy"
        self.precomputed: torch.Tensor | None = None  # [pairs, 2]: the reference's chosen and rejected logps
        self.before: list[str] | None = None  # the reference's greedy answers to the held-out prompts
        self.train_means = Means()
        self.memory: dict[str, Any] = {}

    def bind(self, info: Any) -> None:
        if not hasattr(info, "batches"):
            raise UserError("task=dpo learns from preference pairs: add data=preference (data.path=<your pairs>).")
        super().bind(info)
        self.info = info

    # ----------------------------------------------------------------- the reference
    def attach(self, model: nn.Module) -> None:
        """Take the reference from the starting model: a frozen copy, or its adapters switched off."""
        model = unwrap(model)
        has_adapters = callable(getattr(model, "disable_adapter", None)) and bool(getattr(model, "peft_config", None))
        choice = self.reference_choice
        if choice == "adapters" and not has_adapters:
            raise UserError(
                "task.reference=adapters needs LoRA adapters on the model: set model.lora.enabled=true, "
                "or use task.reference=copy."
            )
        self.mode_of_reference = "adapters" if choice == "adapters" or (choice == "auto" and has_adapters) else "copy"
        model_bytes = sum(t.numel() * t.element_size() for t in [*model.parameters(), *model.buffers()])
        if self.mode_of_reference == "copy":
            self.reference = copy.deepcopy(model).eval().requires_grad_(False)
        pairs = sum(len(split) for split in self.info.data.examples.values()) if self.precompute_ref else 0
        self.memory = {
            "reference": self.mode_of_reference,
            "precompute_ref": self.precompute_ref,
            "reference_weights_bytes": model_bytes if self.mode_of_reference == "copy" else 0,
            "precomputed_logps_bytes": pairs * 2 * 4,
        }
        held = "until the log-probabilities are precomputed, then freed" if self.precompute_ref else "throughout"
        what = (
            f"a frozen copy of the starting weights: {model_bytes / 1e6:.1f} MB more, {held}"
            if self.mode_of_reference == "copy"
            else "the policy with its LoRA adapters switched off: no second copy"
        )
        extra = f"; {pairs} pairs' log-probabilities precomputed ({pairs * 8 / 1e3:.1f} kB)" if pairs else ""
        log.info("DPO reference: %s%s.", what, extra)

    def provenance(self) -> dict[str, Any]:
        return {
            "dpo": {
                "beta": self.beta,
                "loss_type": self.loss_type,
                "label_smoothing": self.label_smoothing,
                "memory": self.memory,
            }
        }

    def reference_logps(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The reference's 2B log-probabilities for ``batch``."""
        if self.precompute_ref:
            if self.precomputed is None:
                self.precompute(model)
            assert self.precomputed is not None
            stored = self.precomputed[batch["index"].to(self.precomputed.device)]
            return torch.cat([stored[:, 0], stored[:, 1]]).to(batch["input_ids"].device)
        with torch.no_grad():
            return self.with_reference(model, lambda reference: sequence_logps(reference, batch))

    def with_reference(self, model: nn.Module, run: Any) -> Any:
        """``run(reference model)``: the frozen copy (moved to the model's device), or the adapters switched off."""
        policy = unwrap(model)
        if self.mode_of_reference == "adapters":
            with policy.disable_adapter():  # type: ignore[operator]  # peft's method
                return run(policy)
        if self.reference is None:
            raise RuntimeError("the reference copy was freed after precomputing")
        device = next(policy.parameters()).device
        if next(self.reference.parameters()).device != device:
            self.reference.to(device)
        return run(self.reference)

    @torch.no_grad()
    def precompute(self, model: nn.Module) -> None:
        """Every pair's reference log-probabilities, once; then the copy (and its memory) goes."""
        device = next(unwrap(model).parameters()).device
        pairs = len(self.info.data.pairs)
        self.precomputed = torch.zeros(pairs, 2, dtype=torch.float32, device=device)
        for split in ("train", "val", "test"):
            for batch in self.info.batches(split, self.ref_batch_size):
                batch = {key: value.to(device) for key, value in batch.items()}
                logps = self.with_reference(model, lambda reference, b=batch: sequence_logps(reference, b))
                self.precomputed[batch["index"]] = torch.stack(logps.chunk(2), dim=1).float()
        self.before_answers(model)
        self.reference = None
        log.info("Precomputed the reference log-probabilities of %d pairs.", pairs)

    # ----------------------------------------------------------------- loss and metrics
    def scores(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        ref_logps = self.reference_logps(model, batch)
        return pair_scores(sequence_logps(model, batch), ref_logps, self.beta, self.label_smoothing, self.loss_type)

    def training_loss(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:  # type: ignore[override]
        scores = self.scores(model, batch)
        self.train_means.update(scores)
        return scores["loss"].mean()

    def epoch_metrics(self) -> dict[str, float]:
        """This epoch's training metrics besides the loss (the trainer logs that), over every rank."""
        return {key: value for key, value in self.train_means.compute().items() if key != "loss"}

    def evaluation(self, stage: str = "val") -> DPOEvaluation:  # type: ignore[override]
        return DPOEvaluation(self, stage)

    # ----------------------------------------------------------------- answers before and after
    def before_answers(self, model: nn.Module) -> list[str]:
        """The reference's greedy answers to the held-out prompts (kept: under precompute the copy goes)."""
        if self.before is None:
            from {{ cookiecutter.package_name }}.tasks.chat_answers import answer

            prompts = [prompt for prompt, _, _ in self.held_out]
            settings = {"max_new_tokens": self.new_tokens, "do_sample": False}
            training = unwrap(model).training  # generating switches to eval mode; training goes on after
            self.before = self.with_reference(
                model, lambda reference: answer(reference, self.tokenizer, prompts, settings)
            )
            unwrap(model).train(training)
        return self.before

    def answers_table(self, model: nn.Module) -> tuple[list[str], list[list[str]]]:
        """(prompt, chosen, rejected, greedy before, greedy after) for each held-out prompt."""
        from {{ cookiecutter.package_name }}.tasks.chat_answers import answer, show

        before = self.before_answers(model)
        prompts = [prompt for prompt, _, _ in self.held_out]
        after = answer(model, self.tokenizer, prompts, {"max_new_tokens": self.new_tokens, "do_sample": False})
        rows = [
            [show(prompt), chosen, rejected, first, second]
            for (prompt, chosen, rejected), first, second in zip(self.held_out, before, after, strict=True)
        ]
        for row in rows:
            log.info("Answer: %r -> before %r, after %r (chosen %r)", row[0], row[3], row[4], row[1])
        return ["prompt", "chosen", "rejected", "greedy_before", "greedy_after"], rows
