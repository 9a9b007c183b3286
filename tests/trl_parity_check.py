"""Per-example answer-only losses of a rendered project's chat data against trl.SFTTrainer's, as JSON.

Run by tests/test_trl_parity.py in a subprocess, with the render's ``src`` on PYTHONPATH:
``python trl_parity_check.py <package> <work folder>``. Prints {"format": [[ours, trl], ...], ...}.
``... <package> <work folder> step``: one optimizer step's gradient over 2 ranks x 2 accumulated micro-batches
against TRL's; prints the largest differences.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch


def main(package: str, work: Path) -> dict[str, list[list[float]]]:
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, LlamaConfig
    from trl import SFTConfig, SFTTrainer

    chat = importlib.import_module(f"{package}.data.chat")
    token_loss = importlib.import_module(f"{package}.tasks.causal_lm").token_loss
    source = chat.ChatDataModule(vocab_size=400)
    conversations, _, _ = source.read()
    tokenizer = source.make_tokenizer(conversations)
    conversations = [messages for messages, _ in conversations[:12]]
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                         pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config).eval()

    def our_losses(answer_from: Callable[[list[dict[str, str]]], int]) -> list[float]:
        losses = []
        with torch.no_grad():
            for messages in conversations:
                example = chat.encode(tokenizer, messages, "completion", answer_from(messages))
                losses.append(float(token_loss(model, chat.pad_batch([example], tokenizer.pad_token_id))[0]))
        return losses

    formats = {
        # only the completion counts, also where the prompt holds earlier assistant turns
        "prompt-completion": ([{"prompt": m[:-1], "completion": m[-1:]} for m in conversations],
                              {"completion_only_loss": True}, lambda messages: len(messages) - 1),
        # every assistant turn counts
        "conversational": ([{"messages": m} for m in conversations], {"assistant_only_loss": True},
                           lambda messages: 0),
    }
    result = {}
    for name, (rows, options, answer_from) in formats.items():
        args = SFTConfig(output_dir=str(work / name), report_to=[], per_device_train_batch_size=1, max_length=None,
                         packing=False, use_cpu=True, dataset_num_proc=None, **options)
        trainer = SFTTrainer(model=model, args=args, train_dataset=Dataset.from_list(rows), processing_class=tokenizer)
        theirs = []
        with torch.no_grad():
            for index in range(len(rows)):
                batch = trainer.data_collator([trainer.train_dataset[index]])
                theirs.append(float(trainer.compute_loss(model, batch)))
        result[name] = [[first, second] for first, second in zip(our_losses(answer_from), theirs, strict=True)]
    return result


def tiny_chat(package: str) -> tuple[Any, Any, list[list[dict[str, str]]], Any]:
    """The chat module, its tokenizer, 12 sample conversations and a tiny random Llama (seed 0)."""
    from transformers import AutoModelForCausalLM, LlamaConfig

    chat = importlib.import_module(f"{package}.data.chat")
    source = chat.ChatDataModule(vocab_size=400)
    conversations, _, _ = source.read()
    tokenizer = source.make_tokenizer(conversations)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                         pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config)
    return chat, tokenizer, [messages for messages, _ in conversations[:12]], model


STEP_ROWS = [[0, 5], [2, 9]]  # rank -> its 2 micro-batches (one conversation each): answers of unequal lengths


def our_step_rank(rank: int, package: str, work: Path) -> None:
    """One optimizer step of the project's trainer on rank ``rank`` of 2 (gloo), accumulating 2 micro-batches;
    SGD with lr 1 and no clipping, so that rank 0 writes the gradient as the change of the weights."""
    import os

    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2", LOCAL_WORLD_SIZE="2",
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=os.environ["PARITY_PORT"])
    trainer_module = importlib.import_module(f"{package}.training.trainer")
    precision = importlib.import_module(f"{package}.training.precision").Precision("fp32")
    state_module = importlib.import_module(f"{package}.training.state")
    stopping = importlib.import_module(f"{package}.training.early_stopping").EarlyStopping("val/loss", "min")
    task = importlib.import_module(f"{package}.tasks.causal_lm").CausalLMTask()
    distributed = importlib.import_module(f"{package}.training.distributed")
    chat, tokenizer, conversations, model = tiny_chat(package)
    trainer = trainer_module.Trainer(precision, work / "ours", accumulate_grad_batches=2, gradient_clip_val=None,
                                     progress_bar=False, device="cpu", distributed=True, backend="gloo")
    before = [parameter.detach().clone() for parameter in model.parameters()]
    trainer.task, trainer.model = task, distributed.wrap(model, torch.device("cpu"))
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    trainer.state = state_module.TrainingState(
        model=model, optimizer=optimizer, scheduler=torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0),
        scaler=trainer.precision.grad_scaler(), early_stopping=stopping, loss_sum=torch.zeros(()))
    batches = [chat.pad_batch([chat.encode(tokenizer, conversations[index], "completion", len(conversations[index])
                                           - 1)], tokenizer.pad_token_id) for index in STEP_ROWS[rank]]
    trainer.train_epoch(batches, len(batches))
    if rank == 0:
        torch.save([old - new.detach() for old, new in zip(before, model.parameters(), strict=True)],
                   work / "ours.pt")
    distributed.destroy_distributed()


def step_parity(package: str, work: Path) -> dict[str, float]:
    """The gradient of one optimizer step, 2 ranks x 2 accumulated micro-batches, ours against TRL's
    (``num_items_in_batch``: the answer tokens of the whole step). Also how far a mean per micro-batch is."""
    import socket

    from datasets import Dataset
    from torch import multiprocessing
    from trl import SFTConfig, SFTTrainer

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        os.environ["PARITY_PORT"] = str(probe.getsockname()[1])
    multiprocessing.spawn(our_step_rank, args=(package, work), nprocs=2)
    ours = torch.load(work / "ours.pt")
    _, tokenizer, conversations, model = tiny_chat(package)
    rows = [{"prompt": conversations[i][:-1], "completion": conversations[i][-1:]} for row in STEP_ROWS for i in row]
    args = SFTConfig(output_dir=str(work / "trl"), report_to=[], per_device_train_batch_size=1, max_length=None,
                     packing=False, use_cpu=True, dataset_num_proc=None, completion_only_loss=True)
    trainer = SFTTrainer(model=model, args=args, train_dataset=Dataset.from_list(rows), processing_class=tokenizer)
    batches = [trainer.data_collator([trainer.train_dataset[index]]) for index in range(len(rows))]
    items = sum(int((batch["labels"][:, 1:] != -100).sum()) for batch in batches)

    def gradient(weights: list[float]) -> list[torch.Tensor]:
        model.zero_grad()
        total = sum(weight * trainer.compute_loss(model, batch, num_items_in_batch=items)
                    for weight, batch in zip(weights, batches, strict=True))
        total.backward()
        return [parameter.grad.detach().clone() for parameter in model.parameters()]

    theirs = gradient([1.0] * len(batches))
    counts = [int((batch["labels"][:, 1:] != -100).sum()) for batch in batches]
    per_batch_mean = gradient([items / (4 * count) for count in counts])  # each micro-batch's mean, averaged

    def largest(first: list[torch.Tensor], second: list[torch.Tensor]) -> float:
        return max(float((a - b).abs().max()) for a, b in zip(first, second, strict=True))

    return {"ours_vs_trl": largest(ours, theirs), "per_batch_mean_vs_trl": largest(per_batch_mean, theirs),
            "largest_gradient": max(float(g.abs().max()) for g in theirs)}


if __name__ == "__main__":
    if sys.argv[3:] == ["step"]:
        print(json.dumps(step_parity(sys.argv[1], Path(sys.argv[2]))))
    else:
        print(json.dumps(main(sys.argv[1], Path(sys.argv[2]))))
