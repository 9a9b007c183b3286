"""Preference pairs for DPO: a prompt with a better (``chosen``) and a worse (``rejected``) answer.

Read like ``data=chat`` (local ``.jsonl``/``.json``/``.parquet``/``.csv`` or a hub data set through 🤗
``datasets``, the same chat template, line numbers in messages), in TRL's three preference formats:

- standard: ``prompt``, ``chosen``, ``rejected`` as strings (one user turn, one assistant turn);
- conversational: ``prompt`` as a message list, ``chosen``/``rejected`` as assistant messages;
- implicit prompt: ``chosen``/``rejected`` as whole conversations; their shared leading turns are the prompt.

Each pair is tokenized as TRL does: the prompt rendered with the generation prompt, each answer as the
tokens where ``render(prompt + answer)`` leaves the rendered prompt. A batch of B pairs is 2B padded rows,
the B chosen ones first, labelled on the answer tokens only, with each pair's index (for precomputed
reference log-probabilities). ``sample_preferences.jsonl`` (written for this project, CC0-1.0) is used
when no path is given.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset

from {{ cookiecutter.package_name }}.data.chat import (
    IGNORE,
    ChatDataInfo,
    ChatDataModule,
    Examples,
    as_messages,
    check_answer,
    ensure_chat_template,
    pad_batch,
    read_rows,
    render,
    shared_prefix,
    to_messages,
    where,
)
from {{ cookiecutter.package_name }}.data.common import seeded_split, take_fraction
from {{ cookiecutter.package_name }}.errors import UserError

log = logging.getLogger(__name__)

SAMPLE_PREFERENCES = Path(__file__).with_name("sample_preferences.jsonl")
Messages = list[dict[str, str]]


@dataclass
class Pair:
    """A checked preference pair: the prompt's messages and each answer's messages."""

    prompt: Messages
    chosen: Messages
    rejected: Messages


def detect_format(row: dict[str, Any], fields: dict[str, str]) -> str:
    """``standard``, ``conversational`` or ``implicit prompt`` from the first row; one line when none fits."""
    answers = [fields["chosen"], fields["rejected"]]
    if not all(column in row for column in answers):
        raise UserError(
            f"the data has columns {list(row)}: a preference pair needs {answers[0]!r} and {answers[1]!r} "
            f"(and {fields['prompt']!r}, or whole conversations); set data.chosen_field, data.rejected_field "
            "or data.prompt_field."
        )
    if fields["prompt"] not in row:
        return "implicit prompt"
    return "standard" if isinstance(row[fields["prompt"]], str) else "conversational"


def split_shared_prefix(chosen: Messages, rejected: Messages, at: str) -> Pair:
    """The implicit prompt: the leading turns both conversations share; the rest are the answers."""
    size = 0
    for first, second in zip(chosen, rejected, strict=False):
        if first != second:
            break
        size += 1
    if size == 0:
        raise UserError(
            f"{at}: chosen and rejected share no leading turn, so there is no prompt: start both "
            "with the same user turn, or give a 'prompt' column."
        )
    return Pair(chosen[:size], chosen[size:], rejected[size:])


def to_pair(row: dict[str, Any], fmt: str, fields: dict[str, str], at: str) -> Pair:
    """The row as a checked pair (the messages checked by ``data=chat``'s own rules)."""
    columns = [fields["chosen"], fields["rejected"]] + ([] if fmt == "implicit prompt" else [fields["prompt"]])
    for column in columns:
        if row.get(column) is None or (isinstance(row[column], str) and not row[column].strip()):
            if column != fields["prompt"] and row.get(column) is not None:
                raise UserError(f"{at}: the {column!r} answer is empty; write one or remove the row.")
            option = next(key for key, value in fields.items() if value == column)
            raise UserError(f"{at} has no {column!r}: fix the row or set data.{option}_field.")
    message_fields = {"messages": "messages", "prompt": "prompt", "completion": "completion"}

    def checked(value: Any, role: str) -> Messages:
        return to_messages({"messages": as_messages(value, role)}, "conversational", message_fields, at)[0]

    if fmt == "implicit prompt":
        if isinstance(row[fields["chosen"]], str):
            raise UserError(
                f"{at}: chosen and rejected are strings without a prompt: give a {fields['prompt']!r} "
                "column, or whole conversations as message lists."
            )
        pair = split_shared_prefix(
            checked(row[fields["chosen"]], "assistant"), checked(row[fields["rejected"]], "assistant"), at
        )
    else:
        pair = Pair(
            checked(row[fields["prompt"]], "user"),
            checked(row[fields["chosen"]], "assistant"),
            checked(row[fields["rejected"]], "assistant"),
        )
    for name, answer in (("chosen", pair.chosen), ("rejected", pair.rejected)):
        if not answer:
            raise UserError(f"{at}: the {name} answer is empty (nothing after the prompt); write one.")
        check_answer(pair.prompt + answer, "completion", at)
    if pair.chosen == pair.rejected:
        raise UserError(f"{at}: chosen and rejected are the same answer, which teaches nothing: fix or remove the row.")
    return pair


def encode_pair(tokenizer: Any, pair: Pair) -> dict[str, list[int]]:
    """Prompt, chosen and rejected token ids: the answers start where the rendered prompt (with the
    generation prompt) and the rendered conversation part, as in TRL."""
    prompt = render(tokenizer, pair.prompt, add_generation_prompt=True)
    chosen = render(tokenizer, pair.prompt + pair.chosen)
    rejected = render(tokenizer, pair.prompt + pair.rejected)
    start = min(shared_prefix(prompt, chosen), shared_prefix(prompt, rejected))
    return {"prompt": prompt[:start], "chosen": chosen[start:], "rejected": rejected[start:]}


def truncate_pair(
    example: dict[str, list[int]], max_prompt_length: int | None, max_length: int
) -> tuple[dict[str, list[int]] | None, str | None]:
    """The prompt cut to its last ``max_prompt_length`` tokens, each answer to what fits in ``max_length``;
    (None, reason) when an answer is cut away or both answers become the same."""
    prompt = example["prompt"]
    if max_prompt_length and len(prompt) > max_prompt_length:
        prompt = prompt[-max_prompt_length:]
    room = max_length - len(prompt)
    chosen, rejected = example["chosen"][: max(room, 0)], example["rejected"][: max(room, 0)]
    if not chosen or not rejected:
        return None, "an answer truncated away by max_length"
    if chosen == rejected:
        return None, "chosen and rejected the same after truncation"
    return {"prompt": prompt, "chosen": chosen, "rejected": rejected}, None


def as_sequence(prompt: list[int], answer: list[int]) -> dict[str, list[int]]:
    """One row of the batch: prompt and answer, labelled on the answer."""
    return {"input_ids": prompt + answer, "labels": [IGNORE] * len(prompt) + answer}


def collate_pairs(items: list[dict[str, Any]], pad_token_id: int) -> dict[str, torch.Tensor]:
    """2B right-padded rows (the chosen answers, then the rejected ones) and each pair's ``index``."""
    rows = [as_sequence(item["prompt"], item["chosen"]) for item in items]
    rows += [as_sequence(item["prompt"], item["rejected"]) for item in items]
    batch = pad_batch(rows, pad_token_id)
    batch["index"] = torch.tensor([item["index"] for item in items], dtype=torch.long)
    return batch


@dataclass
class PreferenceDataInfo(ChatDataInfo):
    """:class:`ChatDataInfo` whose held-out items are (prompt, chosen, rejected) and which can batch any split
    (for precomputing the reference's log-probabilities)."""

    data: Any = None  # the data module; Any: Hydra merges the dataclass

    def batches(self, split: str, batch_size: int) -> list[dict[str, torch.Tensor]]:
        """Every pair of ``split`` in order, in batches of ``batch_size``."""
        pairs = self.data.examples[split]
        return [
            collate_pairs(pairs[start : start + batch_size], self.data.pad_token_id)
            for start in range(0, len(pairs), batch_size)
        ]


class PreferenceDataModule(ChatDataModule):
    """Preference pairs; a batch is ``input_ids``, ``labels``, ``attention_mask`` (2B rows) and ``index``."""

    def __init__(
        self,
        path: str | None = None,
        dataset: str | None = None,
        prompt_field: str = "prompt",
        chosen_field: str = "chosen",
        rejected_field: str = "rejected",
        max_prompt_length: int | None = 512,
        max_length: int = 1024,
        **options: Any,
    ) -> None:
        super().__init__(path=path, dataset=dataset, prompt_field=prompt_field, max_length=max_length, **options)
        self.fields = {"prompt": prompt_field, "chosen": chosen_field, "rejected": rejected_field}
        self.max_prompt_length = int(max_prompt_length) if max_prompt_length else None
        self.packing = False

    def read_pairs(self) -> tuple[list[Pair], str, str]:
        """Every row as a checked pair, the format and the source's name."""
        rows, source = read_rows(
            self.path or str(SAMPLE_PREFERENCES), self.dataset_id, self.split, self.dataset_revision
        )
        if not rows:
            raise UserError(f"{source} holds no rows: give a file with some.")
        fmt = detect_format(rows[0], self.fields)
        return [to_pair(row, fmt, self.fields, where(source, index)) for index, row in enumerate(rows)], fmt, source

    def setup(self) -> PreferenceDataInfo:
        pairs, fmt, source = self.read_pairs()
        conversations = [(pair.prompt + pair.chosen + pair.rejected, 0) for pair in pairs]
        tokenizer = self.make_tokenizer(conversations)
        template = ensure_chat_template(tokenizer) if self.tokenizer_source else "chatml"
        log.info(
            "Preference data: %d pairs (%s format) from %s; chat template: %s.",
            len(pairs),
            fmt,
            source,
            "the tokenizer's own" if template == "model" else "ChatML",
        )
        splits = seeded_split(len(pairs), [self.val_fraction, self.test_fraction], self.seed)
        splits[0] = take_fraction(splits[0], self.subset_fraction)
        self.pairs, self.splits = pairs, splits
        dropped: Counter[str] = Counter()
        prompts_cut = 0
        self.examples = {}
        for name, indices in zip(("train", "val", "test"), splits, strict=True):
            kept = []
            for index in indices:
                encoded = encode_pair(tokenizer, pairs[index])
                example, reason = truncate_pair(encoded, self.max_prompt_length, self.max_length)
                if example is None:
                    dropped[str(reason)] += 1
                    continue
                prompts_cut += len(example["prompt"]) < len(encoded["prompt"])
                kept.append({**example, "index": index})
            self.examples[name] = kept  # type: ignore[assignment]  # pairs carry their index too
        if dropped:
            log.warning(
                "Dropped %s (raise data.max_length=%d or lower data.max_prompt_length=%s to keep them).",
                ", ".join(f"{count} pair(s): {reason}" for reason, count in dropped.items()),
                self.max_length,
                self.max_prompt_length,
            )
        if prompts_cut:
            log.info(
                "%d prompt(s) cut to their last data.max_prompt_length=%s tokens.", prompts_cut, self.max_prompt_length
            )
        if not self.examples["train"]:
            raise UserError(
                f"no training pair is left after truncation to data.max_length={self.max_length}: raise it."
            )
        self.pad_token_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        held_out = [
            (pairs[index].prompt, pairs[index].chosen[-1]["content"], pairs[index].rejected[-1]["content"])
            for index in splits[2][: self.num_held_out]
        ]
        report = {
            "source": source,
            "format": fmt,
            "chat_template": template,
            "max_prompt_length": self.max_prompt_length,
            "max_length": self.max_length,
            "pairs": len(pairs),
            "examples": {name: len(kept) for name, kept in self.examples.items()},
            "prompts_cut": prompts_cut,
            "dropped": dict(dropped),
        }
        self.info = PreferenceDataInfo(tokenizer=tokenizer, held_out=held_out, report=report, data=self)
        return self.info

    def dataset(self, split: str) -> Dataset:
        return Examples(self.examples[split])

    def collate_fn(self, items: list[Any]) -> dict[str, torch.Tensor]:
        return collate_pairs(items, self.pad_token_id)

    def length(self, item: Any) -> int:
        return len(item["prompt"]) + max(len(item["chosen"]), len(item["rejected"]))
