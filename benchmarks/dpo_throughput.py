"""Preference tuning throughput: the rendered DPO recipe (data=preference, task=dpo, the trainer) against
trl.DPOTrainer.

Like for like: the same tiny Llama (random init, fp32 weights), the same sample pairs (the recipe's train
split, conversational), tokenizer and chat template, batch of BATCH pairs, precision, AdamW with the same
learning rate and no weight decay, gradient clipping at 1.0, no gradient checkpointing (TRL's DPOConfig
defaults to it: switched off), sigmoid loss with
beta 0.1, a frozen copy of the starting weights as reference, no truncation (every pair fits), batches in
random order padded to their longest row (the recipe's data.group_by_length is off here; TRL has none).
Each side trains EPOCHS epochs; the clock covers the epochs after the first, alternating the two REPEATS
times. What still differs: TRL logs more per step (entropy, mean logits, token accuracy from its fused LM
head) and the recipe's clock includes one validation batch per epoch (limit_val_batches=1).

    python benchmarks/dpo_throughput.py [--device cpu|cuda] [--precision fp32|bf16]

Ends with ``dpo_pairs_per_s_ratio=<value> (goal >= 1.0)``: the recipe's pairs/s over TRL's.
"""

from __future__ import annotations

import argparse
import functools
import tempfile
import time

import torch

from common import interleaved, render, report

EPOCHS = 3
REPEATS = 3
BATCH = 8
LR = 3e-4
BETA = 0.1

PROJECT = render(task="causal-lm", logger="csv")
from my_experiment.data.preference import PreferenceDataModule  # noqa: E402
from my_experiment.tasks.dpo import DPOTask  # noqa: E402
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


def data() -> PreferenceDataModule:
    """The sample pairs (seeded split), untruncated."""
    module = PreferenceDataModule(vocab_size=1024, max_length=1024, max_prompt_length=None, batch_size=BATCH,
                                  num_workers=0, seed=42, group_by_length=False)
    module.setup()
    return module


def fresh_model(tokenizer, device: str) -> torch.nn.Module:
    from transformers import AutoModelForCausalLM, LlamaConfig

    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=128, intermediate_size=352, num_hidden_layers=4,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                         pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(config).to(device)


def recipe(module: PreferenceDataModule, device: str, precision: str) -> float:
    """Pairs/s of the rendered trainer with task=dpo."""
    clock = EpochClock()
    with tempfile.TemporaryDirectory() as output:
        trainer = Trainer(precision=Precision(precision), output_dir=output, loggers=LoggerCollection([]),
                          callbacks=[clock], max_epochs=EPOCHS, gradient_clip_val=1.0, progress_bar=False,
                          early_stopping={"patience": None}, device=device, limit_val_batches=1)
        task = DPOTask(beta=BETA, reference="copy")
        task.bind(module.info)
        model = fresh_model(module.info.tokenizer, device)
        task.attach(model)
        optimizer = functools.partial(torch.optim.AdamW, lr=LR, weight_decay=0.0)
        trainer.fit(model, task, module, optimizer, constant)
    return len(module.examples["train"]) * (EPOCHS - 1) / sum(clock.seconds[1:])


def trl_trainer(module: PreferenceDataModule, device: str, precision: str) -> float:
    """Pairs/s of trl.DPOTrainer on the same pairs."""
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import DPOConfig, DPOTrainer

    pairs = [module.pairs[item["index"]] for item in module.examples["train"]]
    rows = [{"prompt": pair.prompt, "chosen": pair.chosen, "rejected": pair.rejected} for pair in pairs]

    class Clock(TrainerCallback):
        seconds: list[float] = []

        def on_epoch_begin(self, args, state, control, **kwargs):
            self.start = time.perf_counter()

        def on_epoch_end(self, args, state, control, **kwargs):
            Clock.seconds.append(time.perf_counter() - self.start)

    Clock.seconds = []
    with tempfile.TemporaryDirectory() as output:
        args = DPOConfig(output_dir=output, report_to=[], per_device_train_batch_size=BATCH, num_train_epochs=EPOCHS,
                         learning_rate=LR, lr_scheduler_type="constant", weight_decay=0.0, optim="adamw_torch",
                         max_grad_norm=1.0, max_length=None, beta=BETA, save_strategy="no", logging_strategy="no",
                         bf16=precision == "bf16", use_cpu=device == "cpu", dataloader_num_workers=0,
                         disable_tqdm=True, seed=42, dataset_num_proc=None,
                         gradient_checkpointing=False)  # TRL's DPOConfig turns it on by default
        model = fresh_model(module.info.tokenizer, device)
        reference = fresh_model(module.info.tokenizer, device).eval()
        trainer = DPOTrainer(model=model, ref_model=reference, args=args, train_dataset=Dataset.from_list(rows),
                             processing_class=module.info.tokenizer, callbacks=[Clock()])
        trainer.train()
    return len(rows) * (EPOCHS - 1) / sum(Clock.seconds[1:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    options = parser.parse_args()
    module = data()
    medians = interleaved({"recipe": lambda: recipe(module, options.device, options.precision),
                           "trl": lambda: trl_trainer(module, options.device, options.precision)},
                          repeats=REPEATS)
    print(f"{options.device} {options.precision}: recipe {medians['recipe']:.1f} pairs/s, "
          f"trl.DPOTrainer {medians['trl']:.1f} pairs/s ({len(module.examples['train'])} pairs per epoch)")
    report("dpo_pairs_per_s_ratio", medians["recipe"] / medians["trl"], "goal >= 1.0")


if __name__ == "__main__":
    main()
