"""Per-example answer-only losses of a rendered project's chat data against trl.SFTTrainer's, as JSON.

Run by tests/test_trl_parity.py in a subprocess, with the render's ``src`` on PYTHONPATH:
``python trl_parity_check.py <package> <work folder>``. Prints {"format": [[ours, trl], ...], ...}.
"""

from __future__ import annotations

import importlib
import json
import sys
from collections.abc import Callable
from pathlib import Path

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


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1], Path(sys.argv[2]))))
