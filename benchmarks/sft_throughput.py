"""Instruction tuning throughput: the rendered SFT recipe (data=chat and the trainer) against trl.SFTTrainer.

Same tiny Llama (random init, fp32 weights), same sample conversations, tokenizer, batch size,
precision, AdamW and learning rate; answer-only loss in both (TRL: prompt–completion with
``completion_only_loss``). Each side trains EPOCHS epochs; the clock covers the epochs after the first
(through each trainer's own callbacks), alternating the two REPEATS times.

    python benchmarks/sft_throughput.py [--device cpu|cuda] [--precision fp32|bf16]

Ends with ``sft_tokens_per_s_ratio=<value> (goal >= 1.0)``: the recipe's tokens/s over TRL's.
"""

from __future__ import annotations

import argparse
import functools
import tempfile
import time

import torch

from common import interleaved, render, report

EPOCHS = 4
REPEATS = 3
BATCH = 8
LR = 3e-3

PROJECT = render(task="causal-lm", logger="csv")
from my_experiment.data.chat import ChatDataModule  # noqa: E402
from my_experiment.tasks.causal_lm import CausalLMTask  # noqa: E402
from my_experiment.tracking.base import LoggerCollection  # noqa: E402
from my_experiment.training.callbacks import Callback  # noqa: E402
from my_experiment.training.precision import Precision  # noqa: E402
from my_experiment.training.schedulers import constant  # noqa: E402
from my_experiment.training.trainer import Trainer  # noqa: E402


class EpochClock(Callback):
    def __init__(self) -> None:
        self.seconds: list[float] = []

    def on_train_epoch_start(self, trainer: Trainer) -> None:
        self.start = time.perf_counter()

    def on_validation_end(self, trainer: Trainer, metrics: dict[str, float]) -> None:
        self.seconds.append(time.perf_counter() - self.start)


def data() -> tuple[ChatDataModule, int]:
    """The sample conversations (seeded split), and the tokens of one training epoch."""
    module = ChatDataModule(vocab_size=1024, max_length=96, batch_size=BATCH, num_workers=0, seed=42)
    module.setup()
    return module, sum(len(example["input_ids"]) for example in module.examples["train"])


def fresh_model(tokenizer, device: str) -> torch.nn.Module:
    from transformers import AutoModelForCausalLM, LlamaConfig

    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=128, intermediate_size=352, num_hidden_layers=4,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                         pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(config).to(device)


def recipe(module: ChatDataModule, tokens: int, device: str, precision: str) -> float:
    """Tokens/s of the rendered trainer on chat data."""
    clock = EpochClock()
    with tempfile.TemporaryDirectory() as output:
        trainer = Trainer(precision=Precision(precision), output_dir=output, loggers=LoggerCollection([]),
                          callbacks=[clock], max_epochs=EPOCHS, gradient_clip_val=1.0, progress_bar=False,
                          early_stopping={"patience": None}, device=device, limit_val_batches=1)
        task = CausalLMTask()
        task.bind(module.info)
        optimizer = functools.partial(torch.optim.AdamW, lr=LR, weight_decay=0.0)
        trainer.fit(fresh_model(module.info.tokenizer, device), task, module, optimizer, constant)
    return tokens * (EPOCHS - 1) / sum(clock.seconds[1:])


def trl_trainer(module: ChatDataModule, tokens: int, device: str, precision: str) -> float:
    """Tokens/s of trl.SFTTrainer on the same examples (prompt–completion, answer-only loss)."""
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import SFTConfig, SFTTrainer

    conversations = [module.conversations[index][0] for index in module.splits[0]]
    rows = [{"prompt": messages[:-1], "completion": messages[-1:]} for messages in conversations]

    class Clock(TrainerCallback):
        seconds: list[float] = []

        def on_epoch_begin(self, args, state, control, **kwargs):
            self.start = time.perf_counter()

        def on_epoch_end(self, args, state, control, **kwargs):
            Clock.seconds.append(time.perf_counter() - self.start)

    Clock.seconds = []
    with tempfile.TemporaryDirectory() as output:
        args = SFTConfig(output_dir=output, report_to=[], per_device_train_batch_size=BATCH, num_train_epochs=EPOCHS,
                         learning_rate=LR, lr_scheduler_type="constant", weight_decay=0.0, optim="adamw_torch",
                         max_grad_norm=1.0, max_length=96, completion_only_loss=True, save_strategy="no",
                         logging_strategy="no", bf16=precision == "bf16", use_cpu=device == "cpu",
                         dataloader_num_workers=0, disable_tqdm=True, seed=42)
        trainer = SFTTrainer(model=fresh_model(module.info.tokenizer, device), args=args,
                             train_dataset=Dataset.from_list(rows), processing_class=module.info.tokenizer,
                             callbacks=[Clock()])
        trainer.train()
    return tokens * (EPOCHS - 1) / sum(Clock.seconds[1:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    options = parser.parse_args()
    module, tokens = data()
    medians = interleaved({"recipe": lambda: recipe(module, tokens, options.device, options.precision),
                           "trl": lambda: trl_trainer(module, tokens, options.device, options.precision)},
                          repeats=REPEATS)
    print(f"{options.device} {options.precision}: recipe {medians['recipe']:.0f} tokens/s, "
          f"trl.SFTTrainer {medians['trl']:.0f} tokens/s ({tokens} tokens per epoch)")
    report("sft_tokens_per_s_ratio", medians["recipe"] / medians["trl"], "goal >= 1.0")


if __name__ == "__main__":
    main()
