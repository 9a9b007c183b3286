"""A chat-tuned causal LM after training: ``predict`` answers the conversations of a chat .jsonl file; it loads
and exports as any causal LM (``inference.text``)."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from {{ cookiecutter.package_name }}.data.chat import ROLES, as_messages
from {{ cookiecutter.package_name }}.errors import UserError
from {{ cookiecutter.package_name }}.inference.text import (
    CARD,
    EXPORT_HELP,
    EXPORT_OPTIONS,
    PREDICT_HELP,
    PREDICT_OPTIONS,
    card_details,
    export,
    export_overrides,
    generation_settings,
    load_options,
    write_generations,
)
from {{ cookiecutter.package_name }}.runtime import unwrap

log = logging.getLogger(__name__)
# The inference interface (see inference/__init__.py): all but predict as any causal LM's.
__all__ = [
    "CARD",
    "EXPORT_HELP",
    "EXPORT_OPTIONS",
    "PREDICT_HELP",
    "PREDICT_OPTIONS",
    "card_details",
    "export",
    "export_overrides",
    "load_options",
    "predict",
]


def read_conversations(path: Path) -> list[list[dict[str, str]]]:
    """Each line of a chat .jsonl: ``messages`` without the final answer, or ``prompt`` (a string or messages)."""
    conversations = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            raise UserError(f"{path}:{number} is not JSON: write one object per line.") from None
        value = row.get("messages", row.get("prompt")) if isinstance(row, dict) else None
        if not value:
            raise UserError(f"{path}:{number} has no 'messages' or 'prompt': give the conversation so far.")
        messages = as_messages(value, "user")
        roles = [message.get("role") if isinstance(message, dict) else None for message in messages]
        unknown = [role for role in roles if role not in ROLES]
        if unknown:
            raise UserError(f"{path}:{number}: role {unknown[0]!r} is not one of {', '.join(ROLES)}.")
        if roles[-1] == "assistant":
            raise UserError(
                f"{path}:{number} ends with the assistant's turn: leave the answer out, it is what predict writes."
            )
        conversations.append(messages)
    if not conversations:
        raise UserError(f"input={path} holds no conversations: write one JSON object per line.")
    return conversations


def predict(run: Any, source: Path, output: Path, options: dict[str, Any]) -> Path:
    """``predict`` for a chat-tuned run: answer each conversation of a .jsonl file into ``generations.jsonl``."""
    from {{ cookiecutter.package_name }}.tasks.chat_answers import answer

    if source.suffix != ".jsonl":
        raise UserError(
            f"input={source}: this run was tuned on chat data; give a .jsonl file with "
            '{"messages": [...]} or {"prompt": ...} per line.'
        )
    conversations = read_conversations(source)
    tokenizer = run.info.tokenizer
    settings = generation_settings(options, tokenizer.pad_token_id)
    answers = answer(
        unwrap(run.model),
        tokenizer,
        conversations,
        settings,
        int(run.config.data.get("batch_size", 8)),
        run.precision.autocast,
    )
    path = write_generations(output, [{"messages": messages} for messages in conversations], answers, settings)
    log.info("Answered %d conversation(s): %s", len(answers), path)
    return path
