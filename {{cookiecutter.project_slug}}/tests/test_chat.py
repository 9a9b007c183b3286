"""Chat data: formats, the chat template, answer-only labels, truncation, batches, packing and sft_tiny."""

from __future__ import annotations

import copy
import csv
import json
import re
from pathlib import Path

import pytest
import torch

from {{ cookiecutter.package_name }}.config.quoting import path_override
from {{ cookiecutter.package_name }}.data.chat import (
    IGNORE,
    SAMPLE_CHAT,
    ChatDataModule,
    LengthGroupedSampler,
    encode,
    pack_batch,
    pad_batch,
)
from {{ cookiecutter.package_name }}.data.common import ignore_stop_signals
from {{ cookiecutter.package_name }}.errors import UserError
from {{ cookiecutter.package_name }}.tasks.causal_lm import token_loss

from conftest import evaluated_alone, needs_torchrun, run_module, train_on_two_ranks

# A template in the style of Llama 3, without generation markers: labels must come from rendered prefixes.
HEADER_TEMPLATE = (
    "{" + "% for m in messages %" + "}<|start_header_id|>{" + "{ m['role'] }" + "}<|end_header_id|>\n\n"
    "{"
    + "{ m['content'] }"
    + "}<|eot_id|>{"
    + "% endfor %"
    + "}{"
    + "% if add_generation_prompt %"
    + "}<|start_header_id|>assistant<|end_header_id|>\n\n{"
    + "% endif %"
    + "}"
)
TALK = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "What is the opposite of hot?"},
    {"role": "assistant", "content": "The opposite of hot is cold."},
    {"role": "user", "content": "And the plural of cat?"},
    {"role": "assistant", "content": "The plural of cat is cats."},
]


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def rows_of_sample(count: int = 40) -> list[dict]:
    return [json.loads(line) for line in SAMPLE_CHAT.read_text(encoding="utf-8").splitlines()[:count]]


@pytest.fixture(scope="module")
def tokenizer():
    data = ChatDataModule(path=str(SAMPLE_CHAT), vocab_size=400)
    conversations, _, _ = data.read()
    return data.make_tokenizer(conversations)


def labelled_spans(tokenizer, example: dict) -> list[str]:
    """The decoded runs of labelled tokens."""
    spans, current = [], []
    for token, label in zip(example["input_ids"], example["labels"], strict=True):
        if label != IGNORE:
            current.append(token)
        elif current:
            spans.append(current)
            current = []
    if current:
        spans.append(current)
    return [tokenizer.decode(span) for span in spans]


def test_every_assistant_turn_is_labelled_and_nothing_else(tokenizer) -> None:
    example = encode(tokenizer, TALK)
    assert labelled_spans(tokenizer, example) == [
        "The opposite of hot is cold.<|im_end|>\n",
        "The plural of cat is cats.<|im_end|>\n",
    ]
    everything = encode(tokenizer, TALK, train_on="all")
    assert everything["input_ids"] == example["input_ids"]
    assert sum(label != IGNORE for label in everything["labels"]) == len(example["input_ids"]) - 1


def test_labels_come_from_rendered_prefixes_with_any_template(tokenizer) -> None:
    tokenizer = copy.deepcopy(tokenizer)
    tokenizer.add_tokens(["<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"], special_tokens=True)
    tokenizer.chat_template = HEADER_TEMPLATE
    spans = labelled_spans(tokenizer, encode(tokenizer, TALK))
    assert [span.replace(" ", "") for span in spans] == [
        "Theoppositeofhotiscold.<|eot_id|>",
        "Thepluralofcatiscats.<|eot_id|>",
    ]


def test_formats_and_file_types_give_the_same_examples(tmp_path: Path) -> None:
    rows = [row for row in rows_of_sample() if len(row["messages"]) == 2]
    pairs = [{"prompt": row["messages"][0]["content"], "completion": row["messages"][1]["content"]} for row in rows]
    lists = [{"prompt": [row["messages"][0]], "completion": [row["messages"][1]]} for row in rows]
    with open(tmp_path / "pairs.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=["prompt", "completion"])
        writer.writeheader()
        writer.writerows(pairs)
    import pandas as pd

    pd.DataFrame(pairs).to_parquet(tmp_path / "pairs.parquet")
    (tmp_path / "chat.json").write_text(json.dumps(rows), encoding="utf-8")
    files = [
        write_jsonl(tmp_path / "chat.jsonl", rows),
        write_jsonl(tmp_path / "pairs.jsonl", pairs),
        write_jsonl(tmp_path / "lists.jsonl", lists),
        tmp_path / "pairs.csv",
        tmp_path / "pairs.parquet",
        tmp_path / "chat.json",
    ]
    results = []
    for file in files:
        data = ChatDataModule(path=str(file), tokenizer=None, vocab_size=300, seed=0)
        info = data.setup()
        results.append((info.report["format"], [example["input_ids"] for example in data.examples["train"]]))
    assert {fmt for fmt, _ in results} == {"conversational", "prompt-completion"}
    assert all(ids == results[0][1] for _, ids in results)


def test_truncated_answers_are_dropped_and_counted(tmp_path: Path) -> None:
    rows = rows_of_sample(60)
    data = ChatDataModule(path=str(write_jsonl(tmp_path / "chat.jsonl", rows)), max_length=24, vocab_size=300)
    report = data.setup().report
    dropped = report["dropped"]["answer truncated away by max_length"]
    assert dropped > 0
    assert sum(report["examples"].values()) + dropped == len(rows)
    assert all(len(example["input_ids"]) <= 24 for split in data.examples.values() for example in split)


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
def test_packed_batch_loss_equals_the_examples_own_losses(tokenizer, attention: str) -> None:
    from transformers import AutoModelForCausalLM, LlamaConfig

    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        attn_implementation=attention,
    )
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config).eval()
    examples = [encode(tokenizer, row["messages"]) for row in rows_of_sample(4)]
    packed = pack_batch([examples], tokenizer.pad_token_id)
    with torch.no_grad():
        logits = model(input_ids=packed["input_ids"], position_ids=packed["position_ids"], use_cache=False).logits[0]
        losses, sums, counts, offset = [], 0.0, 0, 0
        for example in examples:
            single = pad_batch([example], tokenizer.pad_token_id)
            losses.append(float(token_loss(model, single)[0]))
            size = len(example["input_ids"])
            labels = torch.tensor(example["labels"][1:])
            per_token = torch.nn.functional.cross_entropy(
                logits[offset : offset + size - 1], labels, ignore_index=IGNORE, reduction="sum"
            )
            assert float(per_token) / int((labels != IGNORE).sum()) == pytest.approx(losses[-1], abs=1e-5)
            sums, counts, offset = sums + float(per_token), counts + int((labels != IGNORE).sum()), offset + size
        packed_loss = float(token_loss(model, packed)[0])
    assert packed_loss == pytest.approx(sums / counts, abs=1e-5)  # the examples' losses, weighted by answer tokens


def test_a_packed_batch_of_several_rows_is_one_row_flash_attention_reads_as_packed(tokenizer) -> None:
    """transformers' flash-attention path treats a batch as packed only with one row; with data.batch_size > 1
    it would attend across the examples of each row: every packed batch is flattened into one row."""
    from transformers.modeling_flash_attention_utils import _is_packed_sequence

    examples = [encode(tokenizer, row["messages"]) for row in rows_of_sample(6)]
    rows = [examples[:3], examples[3:]]
    packed = pack_batch(rows, tokenizer.pad_token_id)
    total = sum(len(example["input_ids"]) for example in examples)
    assert packed["input_ids"].shape == packed["labels"].shape == packed["position_ids"].shape == (1, total)
    assert "attention_mask" not in packed  # no padding at all
    assert bool(_is_packed_sequence(packed["position_ids"], batch_size=packed["input_ids"].shape[0]))
    starts = (packed["position_ids"][0] == 0).nonzero().flatten().tolist()
    assert len(starts) == len(examples)  # positions restart once per example, in order
    assert packed["input_ids"][0, starts[3] : starts[4]].tolist() == examples[3]["input_ids"]


def test_length_grouping_pads_less_and_keeps_every_example() -> None:
    lengths = [int(n) for n in torch.randint(5, 200, (400,), generator=torch.Generator().manual_seed(0))]
    grouped = LengthGroupedSampler(lengths, batch_size=8, shuffle=True, seed=0)
    order = list(grouped)
    assert sorted(order) == list(range(400))

    def padding(order: list[int]) -> int:
        batches = [[lengths[i] for i in order[start : start + 8]] for start in range(0, len(order), 8)]
        return sum(max(batch) * len(batch) - sum(batch) for batch in batches)

    assert padding(order) < padding(list(range(400))) / 4
    grouped.set_epoch(1)
    assert list(grouped) != order


def bad_file(tmp_path: Path, case: str) -> tuple[dict, str]:
    """The data options for a bad input, and what its one line must name."""
    good = {"messages": [{"role": "user", "content": "Hi?"}, {"role": "assistant", "content": "Hello."}]}
    path = tmp_path / "chat.jsonl"
    if case == "missing column":
        write_jsonl(path, [good, {"conversation": good["messages"]}])
        return {"path": str(path)}, f"{path}:2 has no 'messages'"
    if case == "no final answer":
        write_jsonl(path, [good, {"messages": good["messages"][:1]}])
        return {"path": str(path)}, f"{path}:2: the conversation does not end with an assistant turn"
    if case == "empty answer":
        write_jsonl(path, [good, {"messages": [good["messages"][0], {"role": "assistant", "content": " "}]}])
        return {"path": str(path)}, f"{path}:2: the assistant's answer is empty"
    if case == "unknown role":
        write_jsonl(path, [good, {"messages": [{"role": "usr", "content": "Hi?"}, good["messages"][1]]}])
        return {"path": str(path)}, "did you mean 'user'?"
    if case == "not utf-8":
        path.write_bytes(json.dumps(good).encode() + b"\n" + '{"messages": "caf\u00e9"}'.encode("latin-1") + b"\n")
        return {"path": str(path)}, f"{path}:2 is not UTF-8"
    if case == "unknown extension":
        path = tmp_path / "chat.xlsx"
        path.write_text("x", encoding="utf-8")
        return {"path": str(path)}, "unsupported file type '.xlsx'"
    return {"dataset": "nobody/no-such-chat-data"}, "not in the local datasets cache and HF_HUB_OFFLINE=1"


@pytest.mark.parametrize(
    "case",
    [
        "missing column",
        "no final answer",
        "empty answer",
        "unknown role",
        "not utf-8",
        "unknown extension",
        "hub id offline",
    ],
)
def test_bad_input_gets_one_line(tmp_path: Path, case: str) -> None:
    options, expected = bad_file(tmp_path, case)
    with pytest.raises(UserError) as error:
        ChatDataModule(vocab_size=300, **options).setup()
    assert expected in str(error.value) and "\n" not in str(error.value)


FORMATS = [r"The opposite of \w+ is \w+\.", r"The plural of \w+ is \w+\.", r"\d+ plus \d+ is \d+\."]


def answer_format(text: str) -> int | None:
    return next((index for index, pattern in enumerate(FORMATS) if re.fullmatch(pattern, text.strip())), None)


@pytest.mark.slow
def test_sft_tiny_answers_held_out_prompts_in_the_trained_format(sft_run: Path) -> None:
    with open(sft_run / "tables" / "answers.csv", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 8
    formatted = [answer_format(row["greedy"]) is not None for row in rows]
    same_kind = [answer_format(row["greedy"]) == answer_format(row["reference"]) for row in rows]
    assert sum(formatted) >= 6 and sum(same_kind) >= 5, rows
    data = json.loads((sft_run / "provenance.json").read_text(encoding="utf-8"))["data"]
    assert data["format"] == "conversational" and data["chat_template"] == "chatml" and data["dropped"] == {}


@pytest.mark.slow
def test_sft_tiny_predicts_exports_and_evaluates_like_the_run(sft_run: Path, tmp_path: Path) -> None:
    prompts = write_jsonl(
        tmp_path / "ask.jsonl",
        [{"prompt": "What is the plural of fox?"}, {"messages": [{"role": "user", "content": "What is 4 plus 3?"}]}],
    )
    result = run_module(
        "predict",
        path_override("run", sft_run),
        path_override("input", prompts),
        path_override("output", tmp_path / "predict"),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    answers = [json.loads(line) for line in (tmp_path / "predict" / "generations.jsonl").read_text().splitlines()]
    assert all(answer_format(row["generation"]) is not None for row in answers), answers
    result = run_module("export", path_override("run", sft_run), path_override("output", tmp_path / "export"))
    assert result.returncode == 0, result.stderr[-3000:]
    from transformers import AutoTokenizer

    assert "<|im_start|>" in AutoTokenizer.from_pretrained(tmp_path / "export").chat_template
    result = run_module("evaluate", path_override("run", sft_run), path_override("output", tmp_path / "eval"))
    assert result.returncode == 0, result.stderr[-3000:]
    scored = json.loads((tmp_path / "eval" / "eval.json").read_text())
    summary = json.loads((sft_run / "summary.json").read_text())
    assert scored["metrics"]["test/loss"] == pytest.approx(summary["test"]["test/loss"], abs=1e-5)


def test_chat_loaders_shard_evaluation_unpadded_and_workers_ignore_stop_signals(monkeypatch) -> None:
    """Under 2 ranks the val/test shards hold each example once (training is padded to equal steps),
    in length-grouped order too, and the workers leave SIGTERM to the trainer."""
    from {{ cookiecutter.package_name }} import runtime

    data = ChatDataModule(path=str(SAMPLE_CHAT), vocab_size=400, val_fraction=0.12, batch_size=4, num_workers=1)
    data.setup()
    for split in ("train", "val", "test"):
        seen: list[int] = []
        for rank in (0, 1):
            monkeypatch.setattr(runtime, "rank", lambda rank=rank: rank)
            monkeypatch.setattr(runtime, "world_size", lambda: 2)
            loader = data.loader(split)
            assert loader.worker_init_fn is ignore_stop_signals
            seen += list(loader.sampler)
        size = len(data.dataset(split))
        if split == "train":
            assert isinstance(loader.sampler, LengthGroupedSampler) and len(seen) == size + size % 2
        else:
            assert sorted(seen) == list(range(size)), split


@needs_torchrun
@pytest.mark.slow
def test_ddp_chat_evaluation_counts_each_example_once(tmp_path: Path) -> None:
    """2 gloo ranks on chat splits of odd size: the val and test metrics equal one process's on the same
    weights, so no example is padded in twice (the loss weights each example's answer tokens)."""
    run = train_on_two_ranks(
        tmp_path / "run",
        "experiment=sft_tiny",
        "trainer.limit_train_batches=2",
        "task.num_samples=0",
        "data.num_held_out=0",
        "data.val_fraction=0.12",
        "data.test_fraction=0.17",
        "data.batch_size=4",
    )
    launch = json.loads((run / "provenance.json").read_text(encoding="utf-8"))["launch"]
    assert launch["world_size"] == 2
    examples = json.loads((run / "provenance.json").read_text(encoding="utf-8"))["data"]["examples"]
    assert examples["val"] % 2 == 1 and examples["test"] % 2 == 1, examples  # one rank holds one more
    with open(run / "metrics.csv", encoding="utf-8") as handle:
        val_row = next(row for row in csv.DictReader(handle) if row.get("val/loss"))
    distributed = {
        "test": json.loads((run / "summary.json").read_text(encoding="utf-8"))["test"],
        "val": {key: float(value) for key, value in val_row.items() if key.startswith("val/") and value},
    }
    for split in ("test", "val"):
        metrics = evaluated_alone(run, split)
        shared = sorted(set(metrics) & set(distributed[split]))
        assert f"{split}/loss" in shared
        assert {key: distributed[split][key] for key in shared} == pytest.approx(
            {key: metrics[key] for key in shared}, rel=1e-6, abs=1e-6
        )
