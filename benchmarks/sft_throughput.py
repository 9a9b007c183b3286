"""Instruction tuning throughput: the rendered SFT recipe (data=chat and the trainer) against trl.SFTTrainer.

Like for like: the same tiny Llama (random init, fp32 weights), sample conversations, tokenizer,
max_length, batch size, precision (autocast), AdamW, learning rate, constant schedule, clipping,
answer-only loss (TRL: prompt–completion with ``completion_only_loss``), ``use_cache=False``, length-grouped
batches (TRL: ``train_sampling_strategy="group_by_length"``, where the installed transformers has it)
and gradient checkpointing, which TRL's ``SFTConfig`` turns on by default and the recipe leaves off
(``model.gradient_checkpointing``): both settings are measured, each on both sides, non-reentrant.

Settings that still differ, each side's own way of doing the same job: the sampler (its seed and
grouping windows), TRL's chat-template tokenization (each side's rate counts its own tokens), and
the per-step metrics TRL computes (entropy, token accuracy) and the recipe does not.

Each side trains EPOCHS epochs; the clock covers the training steps of each epoch after the first
(through each trainer's own callbacks; validation is outside it), and a run's rate is its median epoch's.
Runs come in REPEATS pairs made back to back, who goes first alternating, after one pair that warms the
process up; the figure is the median of the pairs' ratios.

    python benchmarks/sft_throughput.py [--device cpu|cuda] [--precision fp32|bf16]    (cpu: one torch thread)

Ends with ``sft_tokens_per_s_ratio=<value> (goal >= 1.0)`` (checkpointing off on both sides) and
``sft_tokens_per_s_ratio_checkpointing=<value>`` (on on both sides): the recipe's tokens/s over TRL's.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import statistics
import tempfile
import time

import torch

from common import paired_ratios, render, report

EPOCHS = 4
REPEATS = 3
BATCH = 8
LR = 3e-3
MAX_LENGTH = 96

PROJECT = render(task="causal-lm", logger="csv")
from my_experiment.data.chat import ChatDataModule  # noqa: E402
from my_experiment.models.hf_loader import enable_gradient_checkpointing  # noqa: E402
from my_experiment.tasks.causal_lm import CausalLMTask  # noqa: E402
from my_experiment.tracking.base import LoggerCollection  # noqa: E402
from my_experiment.training.callbacks import Callback  # noqa: E402
from my_experiment.training.precision import Precision  # noqa: E402
from my_experiment.training.schedulers import constant  # noqa: E402
from my_experiment.training.trainer import Trainer  # noqa: E402


def now(device: str) -> float:
    """The wall clock once the device has finished what was queued."""
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return time.perf_counter()


class EpochClock(Callback):
    """Each training epoch's steps: its start to its last step's end."""

    def __init__(self, device: str) -> None:
        self.device, self.seconds = device, []
        self.start = self.last_step = 0.0

    def on_train_epoch_start(self, trainer: Trainer) -> None:
        self.start = now(self.device)

    def on_train_step_end(self, trainer: Trainer, loss: torch.Tensor) -> None:
        self.last_step = now(self.device)

    def on_validation_end(self, trainer: Trainer, metrics: dict[str, float]) -> None:
        self.seconds.append(self.last_step - self.start)


def data() -> tuple[ChatDataModule, int]:
    """The sample conversations (seeded split), and the tokens of one training epoch."""
    module = ChatDataModule(vocab_size=1024, max_length=MAX_LENGTH, batch_size=BATCH, num_workers=0, seed=42)
    module.setup()
    return module, sum(len(example["input_ids"]) for example in module.examples["train"])


def fresh_model(tokenizer, device: str) -> torch.nn.Module:
    from transformers import AutoModelForCausalLM, LlamaConfig

    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=128, intermediate_size=352, num_hidden_layers=4,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                         pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id, use_cache=False)
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(config).to(device)


def recipe(module: ChatDataModule, tokens: int, device: str, precision: str, checkpointing: bool) -> float:
    """Tokens/s of the rendered trainer on chat data."""
    clock = EpochClock(device)
    model = fresh_model(module.info.tokenizer, device)
    if checkpointing:
        enable_gradient_checkpointing(model)  # what model.gradient_checkpointing=true does
    with tempfile.TemporaryDirectory() as output:
        trainer = Trainer(precision=Precision(precision), output_dir=output, loggers=LoggerCollection([]),
                          callbacks=[clock], max_epochs=EPOCHS, gradient_clip_val=1.0, progress_bar=False,
                          early_stopping={"patience": None}, device=device, limit_val_batches=1)
        task = CausalLMTask()
        task.bind(module.info)
        optimizer = functools.partial(torch.optim.AdamW, lr=LR, weight_decay=0.0)
        trainer.fit(model, task, module, optimizer, constant)
    rate = tokens / statistics.median(clock.seconds[1:])
    print(f"  recipe: {rate:.0f} tokens/s", flush=True)
    return rate


def sft_config(output: str, device: str, precision: str, checkpointing: bool):
    """TRL's config with the recipe's settings; the sampler option only where this transformers has it."""
    from trl import SFTConfig

    fields = {field.name for field in dataclasses.fields(SFTConfig)}
    grouping = ({"train_sampling_strategy": "group_by_length"} if "train_sampling_strategy" in fields
                else {"group_by_length": True})
    return SFTConfig(output_dir=output, report_to=[], per_device_train_batch_size=BATCH, num_train_epochs=EPOCHS,
                     learning_rate=LR, lr_scheduler_type="constant", weight_decay=0.0, optim="adamw_torch",
                     max_grad_norm=1.0, max_length=MAX_LENGTH, completion_only_loss=True, save_strategy="no",
                     logging_strategy="no", bf16=precision == "bf16", use_cpu=device == "cpu",
                     gradient_checkpointing=checkpointing, gradient_checkpointing_kwargs={"use_reentrant": False},
                     dataloader_num_workers=0, disable_tqdm=True, seed=42, **grouping)


def trl_trainer(module: ChatDataModule, device: str, precision: str, checkpointing: bool) -> float:
    """Tokens/s of trl.SFTTrainer on the same examples (prompt–completion, answer-only loss)."""
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import SFTTrainer

    conversations = [module.conversations[index][0] for index in module.splits[0]]
    rows = [{"prompt": messages[:-1], "completion": messages[-1:]} for messages in conversations]

    class Clock(TrainerCallback):
        def __init__(self) -> None:
            self.seconds: list[float] = []
            self.start = 0.0

        def on_epoch_begin(self, args, state, control, **kwargs):
            self.start = now(device)

        def on_epoch_end(self, args, state, control, **kwargs):
            self.seconds.append(now(device) - self.start)

    clock = Clock()
    with tempfile.TemporaryDirectory() as output:
        trainer = SFTTrainer(model=fresh_model(module.info.tokenizer, device),
                             args=sft_config(output, device, precision, checkpointing),
                             train_dataset=Dataset.from_list(rows), processing_class=module.info.tokenizer,
                             callbacks=[clock])
        tokens = sum(len(ids) for ids in trainer.train_dataset["input_ids"])
        trainer.train()
    rate = tokens / statistics.median(clock.seconds[1:])
    print(f"  trl.SFTTrainer: {rate:.0f} tokens/s ({tokens} tokens per epoch)", flush=True)
    return rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    options = parser.parse_args()
    if options.device == "cpu":
        torch.set_num_threads(1)  # busy-waiting thread pools made runs 5-20x slower whenever other jobs ran
    module, tokens = data()
    ratios = {}
    for checkpointing in (False, True):
        pairs = paired_ratios(lambda c=checkpointing: recipe(module, tokens, options.device, options.precision, c),
                              lambda c=checkpointing: trl_trainer(module, options.device, options.precision, c),
                              REPEATS, warmup=0 if checkpointing else 1)
        ratios[checkpointing] = statistics.median(pairs)
        print(f"{options.device} {options.precision}, gradient checkpointing {'on' if checkpointing else 'off'} "
              f"on both sides: recipe/TRL per pair {' '.join(f'{ratio:.3f}' for ratio in pairs)} "
              f"({tokens} recipe tokens per epoch)", flush=True)
    report("sft_tokens_per_s_ratio", ratios[False], "goal >= 1.0; gradient checkpointing off on both sides")
    report("sft_tokens_per_s_ratio_checkpointing", ratios[True], "reported; gradient checkpointing on on both sides")


if __name__ == "__main__":
    main()
