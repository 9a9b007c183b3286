"""Answers of a chat-tuned causal LM: the assistant's next turn for conversations, and the answers table."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import torch

from {{ cookiecutter.package_name }}.data.chat import CHATML_TOKENS
from {{ cookiecutter.package_name }}.tasks.generation import generate

log = logging.getLogger(__name__)
SAMPLING = {"do_sample": True, "temperature": 0.7, "top_p": 0.9}


def stop_token_ids(tokenizer: Any) -> list[int]:
    """EOS, and ChatML's end of turn where it is one token: where an answer ends."""
    ids = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    end = tokenizer.convert_tokens_to_ids(CHATML_TOKENS[1])
    if isinstance(end, int) and end != tokenizer.unk_token_id and end not in ids:
        ids.append(end)
    return ids


def answer(
    model: Any,
    tokenizer: Any,
    conversations: list[list[dict[str, str]]],
    settings: dict[str, Any],
    batch_size: int = 8,
    autocast: Callable[[], Any] | None = None,
) -> list[str]:
    """The assistant's next turn for each conversation, rendered with the tokenizer's chat template
    (which writes its own BOS), generated in left-padded batches."""
    prompts = [
        tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        for messages in conversations
    ]
    settings = {"eos_token_id": stop_token_ids(tokenizer), "pad_token_id": tokenizer.pad_token_id, **settings}
    texts = generate(model, tokenizer, prompts, settings, batch_size, autocast=autocast, add_special_tokens=False)
    return [text.strip() for text in texts]


def show(messages: list[dict[str, str]]) -> str:
    """A prompt for a table: the user's text alone, or ``role: text`` lines for longer conversations."""
    if len(messages) == 1:
        return messages[0]["content"]
    return "\n".join(f"{message['role']}: {message['content']}" for message in messages)


def answers_table(
    model: Any,
    tokenizer: Any,
    held_out: list[tuple[list[dict[str, str]], str]],
    new_tokens: int,
    autocast: Callable[[], Any] | None = None,
) -> tuple[list[str], list[list[str]]]:
    """(prompt, reference, greedy answer, sampled answer) for each held-out prompt, under ``autocast`` if given."""
    conversations = [messages for messages, _ in held_out]
    greedy = answer(
        model, tokenizer, conversations, {"max_new_tokens": new_tokens, "do_sample": False}, autocast=autocast
    )
    torch.manual_seed(0)
    sampled = answer(model, tokenizer, conversations, {"max_new_tokens": new_tokens, **SAMPLING}, autocast=autocast)
    rows = [
        [show(messages), reference, first, second]
        for (messages, reference), first, second in zip(held_out, greedy, sampled, strict=True)
    ]
    for row in rows:
        log.info("Answer: %r -> %r (reference %r)", row[0], row[2], row[1])
    return ["prompt", "reference", "greedy", "sampled"], rows
