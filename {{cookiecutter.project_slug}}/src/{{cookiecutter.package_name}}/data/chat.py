"""Instruction tuning data: conversations or prompt–completion pairs, rendered with the model's chat template.

Reads local ``.jsonl``/``.json``/``.parquet``/``.csv`` files or a hub data set through 🤗 ``datasets``
(cached, memory-mapped). Two row formats, as TRL names them:

- conversational: ``messages`` = ``[{"role": ..., "content": ...}, ...]`` (an optional system turn first);
- prompt–completion: ``prompt`` and ``completion``, each a string (one user / one assistant turn) or a
  message list.

The labels come from rendered prefixes, so any chat template works: for each assistant turn the tokens
between ``render(turns before, add_generation_prompt=True)`` and ``render(turns up to it)`` are trained
on (``train_on=completion``), or every token (``train_on=all``). A tokenizer without a chat template
gets ChatML. ``sample_chat.jsonl`` (written for this project, CC0-1.0) is used when no path is given.
"""

from __future__ import annotations

import logging
import random
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset

from {{ cookiecutter.package_name }}.data.common import DataInfo, DataModule, EpochSampler, seeded_split, take_fraction
from {{ cookiecutter.package_name }}.data.rules import DATA
from {{ cookiecutter.package_name }}.data.text import load_tokenizer, train_tokenizer
from {{ cookiecutter.package_name }}.errors import UserError, check_arguments, closest, first_line

log = logging.getLogger(__name__)

SAMPLE_CHAT = Path(__file__).with_name("sample_chat.jsonl")
READERS = {".jsonl": "json", ".json": "json", ".parquet": "parquet", ".csv": "csv"}
ROLES = ("system", "user", "assistant", "tool")
IGNORE = -100
CHATML_TOKENS = ["<|im_start|>", "<|im_end|>"]


def tag(body: str) -> str:
    """A Jinja statement; built in code so that this file holds no template tags of its own."""
    return "{" + "% " + body + " %" + "}"


def out(body: str) -> str:
    """A Jinja expression."""
    return "{" + "{ " + body + " }" + "}"


# ChatML, with generation markers around what the assistant writes (TRL's assistant_only_loss reads them).
CHATML = "".join(
    [
        tag("for message in messages"),
        out("'<|im_start|>' + message['role'] + '\\n'"),
        tag("if message['role'] == 'assistant'"),
        tag("generation"),
        out("message['content'] + '<|im_end|>\\n'"),
        tag("endgeneration"),
        tag("else"),
        out("message['content'] + '<|im_end|>\\n'"),
        tag("endif"),
        tag("endfor"),
        tag("if add_generation_prompt"),
        out("'<|im_start|>assistant\\n'"),
        tag("endif"),
    ]
)


@dataclass
class ChatDataInfo(DataInfo):
    """:class:`DataInfo` plus the held-out prompts for the answers table and a report for provenance.json."""

    held_out: Any = field(default_factory=list)  # [(prompt messages, reference answer)]; Any: Hydra merges it
    report: Any = field(default_factory=dict)


# ----------------------------------------------------------------------------- reading
def where(source: str, index: int) -> str:
    """``file:line`` for a .jsonl file (one row per line), else ``source row N``."""
    return f"{source}:{index + 1}" if source.endswith(".jsonl") else f"{source} row {index + 1}"


def read_rows(
    path: str | None, dataset: str | None = None, split: str = "train", revision: str | None = None
) -> tuple[list[dict[str, Any]], str]:
    """The rows of a local file or a hub data set (through ``datasets``), and a name for messages."""
    import datasets

    datasets.disable_progress_bars()
    if dataset:
        from {{ cookiecutter.package_name }}.data.hf_source import hub_offline

        try:
            rows = datasets.load_dataset(dataset, split=split, revision=revision)
        except Exception as error:  # noqa: BLE001 - offline, missing, private: one line each
            if hub_offline():
                raise UserError(
                    f"data.dataset={dataset} is not in the local datasets cache and HF_HUB_OFFLINE=1: "
                    "load it once online, or save it to a .jsonl file and set data.path."
                ) from None
            raise UserError(
                f"data.dataset={dataset} (split={split}) cannot be loaded ({first_line(error)[:200]}): check the id, "
                "split and revision, your network and token (hf auth login)."
            ) from None
        return rows.to_list(), dataset
    file = Path(path).expanduser() if path else SAMPLE_CHAT
    if not file.is_file():
        raise UserError(
            f"data.path={file}: no such file; give a .jsonl, .json, .parquet or .csv file, or data.dataset=<hub id>."
        )
    builder = READERS.get(file.suffix.lower())
    if builder is None:
        raise UserError(f"data.path={file}: unsupported file type {file.suffix!r}; use one of {', '.join(READERS)}.")
    if builder != "parquet":
        check_utf8(file)
    try:
        rows = datasets.load_dataset(builder, data_files=str(file), split="train")
    except Exception as error:  # noqa: BLE001 - a malformed file: one line
        raise UserError(
            f"data.path={file} cannot be read as {builder} ({first_line(error)[:200]}): fix the file."
        ) from None
    return rows.to_list(), str(file)


def check_utf8(file: Path) -> None:
    """Stop in one line, naming the line, where a text file is not UTF-8."""
    with open(file, "rb") as handle:
        for number, line in enumerate(handle, start=1):
            try:
                line.decode("utf-8")
            except UnicodeDecodeError:
                raise UserError(f"{file}:{number} is not UTF-8 text: save the file as UTF-8.") from None


def detect_format(columns: list[str], messages_field: str, prompt_field: str, completion_field: str) -> str:
    """``conversational`` or ``prompt-completion`` from the columns; one line when neither fits."""
    if messages_field in columns:
        return "conversational"
    if prompt_field in columns and completion_field in columns:
        return "prompt-completion"
    raise UserError(
        f"the data has columns {columns}: expected {messages_field!r} (conversations) or "
        f"{prompt_field!r} and {completion_field!r}; set data.messages_field, data.prompt_field "
        "or data.completion_field."
    )


def as_messages(value: Any, role: str) -> list[dict[str, str]]:
    """A string as one message of ``role``; a message list as it is."""
    if isinstance(value, str):
        return [{"role": role, "content": value}]
    return list(value)


def to_messages(row: dict[str, Any], fmt: str, fields: dict[str, str], at: str) -> tuple[list[dict[str, str]], int]:
    """The row as a checked list of messages, and the index of the first one that may be trained on
    (prompt–completion: the completion's first message; the prompt's turns never count)."""
    if fmt == "conversational":
        columns = [fields["messages"]]
    else:
        columns = [fields["prompt"], fields["completion"]]
    for column in columns:
        if row.get(column) is None:
            raise UserError(f"{at} has no {column!r}: fix the row or set data.{column_option(column, fields)}.")
    if fmt == "conversational":
        messages, answer_from = as_messages(row[fields["messages"]], "user"), 0
    else:
        messages = as_messages(row[fields["prompt"]], "user")
        answer_from = len(messages)
        messages += as_messages(row[fields["completion"]], "assistant")
    checked = []
    for message in messages:
        if not isinstance(message, dict) or "role" not in message or "content" not in message:
            raise UserError(f"{at}: every message needs a 'role' and a 'content', got {message!r:.80}.")
        role = str(message["role"])
        if role not in ROLES:
            close = closest(role, ROLES, count=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise UserError(
                f"{at}: role {role!r} is not one the chat template knows{hint}; use one of {', '.join(ROLES)}."
            )
        checked.append({"role": role, "content": "" if message["content"] is None else str(message["content"])})
    return checked, answer_from


def column_option(column: str, fields: dict[str, str]) -> str:
    return next(f"{key}_field" for key, value in fields.items() if value == column)


def check_answer(messages: list[dict[str, str]], train_on: str, at: str) -> None:
    """A conversation trained on its answers ends with a non-empty assistant turn."""
    if not messages or messages[-1]["role"] != "assistant":
        if train_on == "completion":
            raise UserError(
                f"{at}: the conversation does not end with an assistant turn, so there is no answer "
                "to train on; end it with one, or set data.train_on=all."
            )
        return
    if not messages[-1]["content"].strip():
        raise UserError(f"{at}: the assistant's answer is empty; write one or remove the row.")


# ----------------------------------------------------------------------------- the template and the labels
def ensure_chat_template(tokenizer: Any) -> str:
    """``model`` where the tokenizer has its own chat template; else install ChatML and return ``chatml``."""
    if getattr(tokenizer, "chat_template", None):
        return "model"
    tokenizer.chat_template = CHATML
    log.info("The tokenizer has no chat template: using ChatML (<|im_start|>role ... <|im_end|>).")
    return "chatml"


def render(tokenizer: Any, messages: list[dict[str, str]], add_generation_prompt: bool = False) -> list[int]:
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def shared_prefix(prefix: list[int], ids: list[int]) -> int:
    """How many leading tokens ``prefix`` shares with ``ids``: a token merged across the boundary is left out."""
    size = 0
    for first, second in zip(prefix, ids, strict=False):
        if first != second:
            break
        size += 1
    return size


def encode(
    tokenizer: Any, messages: list[dict[str, str]], train_on: str = "completion", answer_from: int = 0
) -> dict[str, list[int]]:
    """Token ids and labels of a conversation: the tokens of every assistant turn from ``answer_from`` on
    (or every token) are labelled.

    Each assistant turn spans from the end of the rendered prefix with a generation prompt to the end of
    the rendered conversation up to and including that turn, so no template needs generation markers.
    """
    ids = render(tokenizer, messages)
    if train_on == "all":
        labels = list(ids)
    else:
        labels = [IGNORE] * len(ids)
        for turn, message in enumerate(messages):
            if message["role"] != "assistant" or turn < answer_from:
                continue
            start = shared_prefix(render(tokenizer, messages[:turn], add_generation_prompt=True), ids) if turn else 0
            end = shared_prefix(render(tokenizer, messages[: turn + 1]), ids)
            labels[start:end] = ids[start:end]
    if labels:
        labels[0] = IGNORE  # nothing predicts the first token, also when examples are packed together
    return {"input_ids": ids, "labels": labels}


def truncate(example: dict[str, list[int]], max_length: int) -> dict[str, list[int]] | None:
    """The first ``max_length`` tokens; None when no labelled token is left."""
    cut = {key: value[:max_length] for key, value in example.items()}
    return cut if any(label != IGNORE for label in cut["labels"][1:]) else None


# ----------------------------------------------------------------------------- batches
def pad_batch(examples: list[dict[str, list[int]]], pad_token_id: int) -> dict[str, torch.Tensor]:
    """Right-pad to the longest example of this batch; padded labels are ignored."""
    length = max(len(example["input_ids"]) for example in examples)
    ids = torch.full((len(examples), length), pad_token_id, dtype=torch.long)
    labels = torch.full((len(examples), length), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(examples), length), dtype=torch.long)
    for row, example in enumerate(examples):
        size = len(example["input_ids"])
        ids[row, :size] = torch.tensor(example["input_ids"])
        labels[row, :size] = torch.tensor(example["labels"])
        mask[row, :size] = 1
    return {"input_ids": ids, "labels": labels, "attention_mask": mask}


def pack_batch(rows: list[list[dict[str, list[int]]]], pad_token_id: int | None = None) -> dict[str, torch.Tensor]:
    """Every example of the batch's packed rows in ONE row (the padding-free layout), positions restarting
    at 0 for each, no padding and no attention mask (``pad_token_id`` is accepted and not needed).

    transformers reads restarting ``position_ids`` as packed sequences: a block-diagonal causal mask with
    SDPA or eager attention, variable-length kernels with ``flash_attention_2``. Its flash path sees
    packing only in a batch of one row; with several rows it would attend across examples, hence one row.
    """
    examples = [example for row in rows for example in row]
    return {
        "input_ids": torch.tensor([[token for example in examples for token in example["input_ids"]]]),
        "labels": torch.tensor([[label for example in examples for label in example["labels"]]]),
        "position_ids": torch.cat([torch.arange(len(example["input_ids"])) for example in examples]).unsqueeze(0),
    }


def first_fit(lengths: list[int], capacity: int) -> list[list[int]]:
    """Indices grouped into bins of at most ``capacity`` tokens, longest first (first-fit decreasing)."""
    bins: list[list[int]] = []
    room: list[int] = []
    for index in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
        slot = next((b for b, free in enumerate(room) if free >= lengths[index]), None)
        if slot is None:
            bins.append([index])
            room.append(capacity - lengths[index])
        else:
            bins[slot].append(index)
            room[slot] -= lengths[index]
    return bins


class Examples(Dataset):
    """Encoded examples (or packed rows of them) in memory."""

    def __init__(self, items: list[Any]) -> None:
        self.items = items

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> Any:
        return self.items[index]


class LengthGroupedSampler(EpochSampler):
    """The seeded epoch order, re-sorted by length inside windows of ``window`` samples so that a batch
    holds examples of similar length (little padding) while the batches still come in random order."""

    def __init__(self, lengths: list[int], batch_size: int, window: int = 50, **options: Any) -> None:
        super().__init__(len(lengths), **options)
        self.lengths, self.batch_size, self.window = lengths, batch_size, window

    def order(self) -> list[int]:
        order = super().order()
        if not self.shuffle:
            return order
        span = self.batch_size * self.world_size
        chunk = span * self.window
        grouped = []
        for start in range(0, len(order), chunk):
            grouped += sorted(order[start : start + chunk], key=lambda i: -self.lengths[i])
        batches = [grouped[start : start + span] for start in range(0, len(grouped), span)]
        random.Random(self.seed + self.epoch).shuffle(batches)
        return [index for batch in batches for index in batch]


# ----------------------------------------------------------------------------- the data module
class ChatDataModule(DataModule):
    """Chat or prompt–completion examples; a batch is a dict of ``input_ids``, ``labels`` and either
    ``attention_mask`` (padded per batch) or ``position_ids`` (``packing=true``)."""

    def __init__(
        self,
        path: str | None = None,
        dataset: str | None = None,
        split: str = "train",
        dataset_revision: str | None = None,
        tokenizer: str | None = None,
        revision: str | None = None,
        trust_remote_code: bool = False,
        messages_field: str = "messages",
        prompt_field: str = "prompt",
        completion_field: str = "completion",
        train_on: str = "completion",
        max_length: int = 1024,
        packing: bool = False,
        group_by_length: bool = True,
        vocab_size: int = 512,
        val_fraction: float = 0.1,
        test_fraction: float = 0.1,
        subset_fraction: float = 1.0,
        num_held_out: int = 8,
        **loader_kwargs: Any,
    ) -> None:
        super().__init__(**loader_kwargs)
        fractions = {"val_fraction": val_fraction, "test_fraction": test_fraction, "subset_fraction": subset_fraction}
        check_arguments("data", DATA, fractions)
        if train_on not in {"completion", "all"}:
            close = closest(str(train_on), ["completion", "all"], count=1)
            raise UserError(
                f"data.train_on={train_on} is not an option; use "
                f"{close[0] if close else 'completion'} (completion or all)."
            )
        self.path, self.dataset_id, self.split, self.dataset_revision = path, dataset, split, dataset_revision
        self.tokenizer_source, self.revision, self.trust_remote_code = tokenizer, revision, trust_remote_code
        self.fields = {"messages": messages_field, "prompt": prompt_field, "completion": completion_field}
        self.train_on, self.max_length, self.packing = train_on, int(max_length), bool(packing)
        self.group_by_length, self.vocab_size = group_by_length, vocab_size
        self.val_fraction, self.test_fraction, self.subset_fraction = val_fraction, test_fraction, subset_fraction
        self.num_held_out = num_held_out

    def read(self) -> tuple[list[tuple[list[dict[str, str]], int]], str, str]:
        """Every row as checked messages with its first trainable turn, the format and the source's name."""
        rows, source = read_rows(self.path, self.dataset_id, self.split, self.dataset_revision)
        if not rows:
            raise UserError(f"{source} holds no rows: give a file with some.")
        fmt = detect_format(list(rows[0]), **{f"{key}_field": value for key, value in self.fields.items()})
        conversations = []
        for index, row in enumerate(rows):
            at = where(source, index)
            messages, answer_from = to_messages(row, fmt, self.fields, at)
            check_answer(messages, self.train_on, at)
            conversations.append((messages, answer_from))
        return conversations, fmt, source

    def make_tokenizer(self, conversations: list[tuple[list[dict[str, str]], int]]) -> Any:
        if self.tokenizer_source:
            return load_tokenizer(self.tokenizer_source, self.revision, self.trust_remote_code)
        texts = [f"{message['role']}\n{message['content']}" for messages, _ in conversations for message in messages]
        tokenizer = train_tokenizer(texts, self.vocab_size, extra_special_tokens=CHATML_TOKENS)
        tokenizer.chat_template = CHATML
        tokenizer.eos_token = CHATML_TOKENS[1]  # generation stops where an answer ends
        return tokenizer

    def setup(self) -> ChatDataInfo:
        conversations, fmt, source = self.read()
        tokenizer = self.make_tokenizer(conversations)
        template = ensure_chat_template(tokenizer) if self.tokenizer_source else "chatml"
        log.info(
            "Chat data: %d %s rows from %s; chat template: %s; loss on %s tokens.",
            len(conversations),
            fmt,
            source,
            "the tokenizer's own" if template == "model" else "ChatML",
            "the answer" if self.train_on == "completion" else "all",
        )
        splits = seeded_split(len(conversations), [self.val_fraction, self.test_fraction], self.seed)
        splits[0] = take_fraction(splits[0], self.subset_fraction)
        self.conversations, self.splits = conversations, splits  # rows in reading order; indices per split
        dropped: Counter[str] = Counter()
        self.examples = {}
        for name, indices in zip(("train", "val", "test"), splits, strict=True):
            kept = []
            for index in indices:
                messages, answer_from = conversations[index]
                example = truncate(encode(tokenizer, messages, self.train_on, answer_from), self.max_length)
                if example is None:
                    dropped["answer truncated away by max_length"] += 1
                else:
                    kept.append(example)
            self.examples[name] = kept
        if dropped:
            log.warning(
                "Dropped %s (raise data.max_length=%d to keep them).",
                ", ".join(f"{count} example(s): {reason}" for reason, count in dropped.items()),
                self.max_length,
            )
        if not self.examples["train"]:
            raise UserError(
                f"no training example is left after truncation to data.max_length={self.max_length}: raise it."
            )
        self.pad_token_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        held_out = [
            (messages[:-1], messages[-1]["content"])
            for messages in (conversations[index][0] for index in splits[2][: self.num_held_out])
            if len(messages) > 1 and messages[-1]["role"] == "assistant"
        ]
        tokens = {name: sum(len(example["input_ids"]) for example in kept) for name, kept in self.examples.items()}
        report = {
            "source": source,
            "format": fmt,
            "chat_template": template,
            "train_on": self.train_on,
            "max_length": self.max_length,
            "packing": self.packing,
            "rows": len(conversations),
            "examples": {name: len(kept) for name, kept in self.examples.items()},
            "tokens": tokens,
            "dropped": dict(dropped),
        }
        self.info = ChatDataInfo(tokenizer=tokenizer, held_out=held_out, report=report)
        return self.info

    def dataset(self, split: str) -> Dataset:
        examples = self.examples[split]
        if self.packing:
            bins = first_fit([len(example["input_ids"]) for example in examples], self.max_length)
            return Examples([[examples[index] for index in row] for row in bins])
        return Examples(examples)

    def collate_fn(self, items: list[Any]) -> dict[str, torch.Tensor]:
        if self.packing:
            return pack_batch(items, self.pad_token_id)
        return pad_batch(items, self.pad_token_id)

    def length(self, item: Any) -> int:
        """The tokens of one item of :meth:`dataset`, for grouping by length."""
        return len(item["input_ids"])

    def sampler(self, split: str, dataset: Dataset) -> EpochSampler:
        """The training order groups similar lengths (``group_by_length``): little padding per batch."""
        if self.group_by_length and not self.packing:
            lengths = [self.length(example) for example in dataset]  # type: ignore[attr-defined]  # map-style
            return LengthGroupedSampler(lengths, self.batch_size, **self.sampler_options(split))
        return super().sampler(split, dataset)
