"""Preference data and DPO: formats, answer-only log-probabilities, truncation, bad rows, the reference
choices, dpo_tiny after sft_tiny, evaluate, DDP and a LoRA chain (the last ones start runs: slow)."""

from __future__ import annotations

import csv
import json
import math
import sys
from pathlib import Path

import pytest
import torch

from {{ cookiecutter.package_name }}.config.quoting import path_override
from {{ cookiecutter.package_name }}.data.chat import IGNORE
from {{ cookiecutter.package_name }}.data.preference import SAMPLE_PREFERENCES, PreferenceDataModule
from {{ cookiecutter.package_name }}.errors import UserError
from {{ cookiecutter.package_name }}.tasks.dpo import DPOTask, sequence_logps

from conftest import evaluated_alone, run_command, run_module


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def sample_rows(count: int = 60) -> list[dict]:
    return [json.loads(line) for line in SAMPLE_PREFERENCES.read_text(encoding="utf-8").splitlines()[:count]]


@pytest.fixture(scope="module")
def sample() -> PreferenceDataModule:
    data = PreferenceDataModule(vocab_size=400, max_length=96, batch_size=4, seed=0)
    data.setup()
    return data


def tiny_model(tokenizer, seed: int = 0) -> torch.nn.Module:
    from transformers import AutoModelForCausalLM, LlamaConfig

    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(config)


def test_the_three_formats_and_renamed_columns_give_the_same_pairs(tmp_path: Path) -> None:
    user_only = [
        {
            "prompt": row["prompt"][1]["content"],
            "chosen": row["chosen"][0]["content"],
            "rejected": row["rejected"][0]["content"],
        }
        for row in sample_rows(40)
    ]
    conversational = [
        {
            "prompt": [{"role": "user", "content": row["prompt"]}],
            "chosen": [{"role": "assistant", "content": row["chosen"]}],
            "rejected": [{"role": "assistant", "content": row["rejected"]}],
        }
        for row in user_only
    ]
    implicit = [
        {"chosen": row["prompt"] + row["chosen"], "rejected": row["prompt"] + row["rejected"]} for row in conversational
    ]
    renamed = [{"question": row["prompt"], "good": row["chosen"], "bad": row["rejected"]} for row in user_only]
    cases = {
        "standard": ({}, user_only),
        "conversational": ({}, conversational),
        "implicit prompt": ({}, implicit),
        "renamed": ({"prompt_field": "question", "chosen_field": "good", "rejected_field": "bad"}, renamed),
    }
    results = {}
    for name, (options, rows) in cases.items():
        data = PreferenceDataModule(
            path=str(write_jsonl(tmp_path / f"{name}.jsonl", rows)), vocab_size=300, seed=0, **options
        )
        info = data.setup()
        results[name] = (info.report["format"], data.examples["train"])
    assert [fmt for fmt, _ in results.values()] == ["standard", "conversational", "implicit prompt", "standard"]
    assert all(examples == results["standard"][1] for _, examples in results.values())


def test_a_batch_is_chosen_then_rejected_labelled_on_the_answers_only(sample: PreferenceDataModule) -> None:
    tokenizer = sample.info.tokenizer
    items = sample.examples["train"][:3]
    batch = sample.collate_fn(items)
    assert batch["input_ids"].shape[0] == 6 and batch["index"].tolist() == [item["index"] for item in items]
    for row, (item, answer) in enumerate([(item, "chosen") for item in items] + [(item, "rejected") for item in items]):
        labels = batch["labels"][row]
        labelled = tokenizer.decode(labels[labels != IGNORE])
        pair = sample.pairs[item["index"]]
        assert labelled == getattr(pair, answer)[0]["content"] + "<|im_end|>\n"
    model = tiny_model(tokenizer).eval()
    with torch.no_grad():
        logps = sequence_logps(model, batch)
        log_probs = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.log_softmax(-1)
    for row in range(6):
        positions = (batch["labels"][row, 1:] != IGNORE).nonzero().flatten()
        by_hand = sum(float(log_probs[row, t, batch["labels"][row, t + 1]]) for t in positions.tolist())
        assert float(logps[row]) == pytest.approx(by_hand, abs=1e-4)


def test_truncation_cuts_prompts_and_counts_dropped_pairs(tmp_path: Path) -> None:
    path = str(write_jsonl(tmp_path / "pairs.jsonl", sample_rows(60)))
    whole = PreferenceDataModule(path=path, vocab_size=300, max_prompt_length=None)
    whole.setup()
    prompts = sorted(len(item["prompt"]) for split in whole.examples.values() for item in split)
    cut = PreferenceDataModule(path=path, vocab_size=300, max_prompt_length=prompts[0] - 2, max_length=prompts[-1] + 4)
    report = cut.setup().report
    assert report["prompts_cut"] == 60 and not report["dropped"]
    assert all(len(item["prompt"]) == prompts[0] - 2 for split in cut.examples.values() for item in split)
    short = PreferenceDataModule(path=path, vocab_size=300, max_prompt_length=None, max_length=prompts[30])
    report = short.setup().report
    dropped = report["dropped"]["an answer truncated away by max_length"]
    assert dropped > 0 and sum(report["examples"].values()) + dropped == 60
    for split in short.examples.values():
        for item in split:
            assert len(item["prompt"]) + max(len(item["chosen"]), len(item["rejected"])) <= prompts[30]


def bad_file(tmp_path: Path, case: str) -> tuple[Path, str]:
    """A file with one bad row (line 2), and what its one line must say."""
    good = {"prompt": "What is 2 plus 2?", "chosen": "2 plus 2 is 4.", "rejected": "4."}
    path = tmp_path / "pairs.jsonl"
    if case == "missing rejected":
        write_jsonl(path, [good, {"prompt": "Hi?", "chosen": "Hello."}])
        return path, f"{path}:2 has no 'rejected'"
    if case == "identical answers":
        write_jsonl(path, [good, {**good, "rejected": good["chosen"]}])
        return path, f"{path}:2: chosen and rejected are the same answer"
    if case == "no shared prefix":
        user = [{"role": "user", "content": "Hi?"}]
        write_jsonl(
            path,
            [
                {
                    "chosen": user + [{"role": "assistant", "content": "Hello."}],
                    "rejected": user + [{"role": "assistant", "content": "Go."}],
                },
                {
                    "chosen": [{"role": "user", "content": "A?"}, {"role": "assistant", "content": "B."}],
                    "rejected": [{"role": "user", "content": "C?"}, {"role": "assistant", "content": "D."}],
                },
            ],
        )
        return path, f"{path}:2: chosen and rejected share no leading turn"
    if case == "empty answer":
        write_jsonl(path, [good, {**good, "chosen": "  "}])
        return path, f"{path}:2: the 'chosen' answer is empty"
    path.write_bytes(json.dumps(good).encode() + b"\n" + '{"prompt": "caf\u00e9"}'.encode("latin-1") + b"\n")
    return path, f"{path}:2 is not UTF-8"


@pytest.mark.parametrize(
    "case", ["missing rejected", "identical answers", "no shared prefix", "empty answer", "not utf-8"]
)
def test_bad_input_gets_one_line_naming_file_and_line(tmp_path: Path, case: str) -> None:
    path, expected = bad_file(tmp_path, case)
    with pytest.raises(UserError) as error:
        PreferenceDataModule(path=str(path), vocab_size=300).setup()
    assert expected in str(error.value) and "\n" not in str(error.value)


def test_the_reference_stays_the_starting_model(sample: PreferenceDataModule) -> None:
    """A frozen copy keeps the starting weights while the policy trains; at the start the loss is log 2 and
    every reward 0; precomputed reference log-probabilities give the same loss as the live copy."""
    batch = sample.collate_fn(sample.examples["train"][:4])
    model = tiny_model(sample.info.tokenizer)
    live, precomputed = DPOTask(beta=0.1), DPOTask(beta=0.1, precompute_ref=True)
    for task in (live, precomputed):
        task.bind(sample.info)
        task.attach(model)
    scores = live.scores(model, batch)
    assert scores["loss"].mean().item() == pytest.approx(math.log(2), abs=1e-6)
    assert scores["rewards/chosen"].abs().max().item() == 0.0
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    for _ in range(3):
        optimizer.zero_grad()
        live.training_loss(model, batch).backward()
        optimizer.step()
    moved = live.scores(model, batch)
    assert moved["loss"].mean().item() < math.log(2) and moved["rewards/margin"].mean().item() > 0
    assert precomputed.scores(model, batch)["loss"].tolist() == pytest.approx(moved["loss"].tolist(), abs=1e-6)
    assert precomputed.reference is None and precomputed.memory["precomputed_logps_bytes"] > 0
    weights = [*model.parameters(), *model.buffers()]
    assert live.memory["reference_weights_bytes"] == sum(t.numel() * t.element_size() for t in weights)
    epoch = live.epoch_metrics()  # the three training steps' pairs, the loss left to the trainer
    assert "loss" not in epoch and epoch["rewards/accuracy"] > 0


def test_under_lora_the_reference_is_the_model_with_adapters_off(sample: PreferenceDataModule) -> None:
    from peft import LoraConfig, get_peft_model

    batch = sample.collate_fn(sample.examples["train"][:4])
    model = get_peft_model(
        tiny_model(sample.info.tokenizer),
        LoraConfig(r=4, target_modules=["q_proj", "v_proj"], lora_dropout=0.0, task_type="CAUSAL_LM"),
    )
    task = DPOTask()
    task.bind(sample.info)
    task.attach(model)
    assert task.reference is None and task.memory == {
        **task.memory,
        "reference": "adapters",
        "reference_weights_bytes": 0,
    }
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "lora_B" in name:
                parameter.add_(0.3 * torch.randn_like(parameter))
        with model.disable_adapter():
            base = sequence_logps(model, batch)
        scores = task.scores(model, batch)
    assert scores["rewards/chosen"].tolist() == pytest.approx(
        (0.1 * (sequence_logps(model, batch) - base)).chunk(2)[0].tolist(), abs=1e-6
    )
    with pytest.raises(UserError, match="needs LoRA adapters"):
        plain = DPOTask(reference="adapters")
        plain.bind(sample.info)
        plain.attach(tiny_model(sample.info.tokenizer))


def test_dpo_without_preference_data_stops_in_one_line() -> None:
    from {{ cookiecutter.package_name }}.data.chat import ChatDataInfo

    with pytest.raises(UserError, match="add data=preference"):
        DPOTask().bind(ChatDataInfo())


# ----------------------------------------------------------------------------- runs (slow)
@pytest.fixture(scope="module")
def dpo_run(sft_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    run_dir = tmp_path_factory.mktemp("dpo") / "run"
    result = run_module(
        "train",
        "experiment=dpo_tiny",
        path_override("init_from", sft_run),
        "logger=csv",
        "trainer.device=cpu",
        path_override("hydra.run.dir", run_dir),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return run_dir


@pytest.mark.slow
def test_dpo_tiny_raises_held_out_preference_accuracy(dpo_run: Path, sft_run: Path) -> None:
    test = json.loads((dpo_run / "summary.json").read_text(encoding="utf-8"))["test"]
    assert test["test/ref_logps/accuracy"] <= 0.7  # the SFT model: about chance
    assert test["test/logps/accuracy"] >= 0.9, test
    with open(dpo_run / "metrics.csv", encoding="utf-8") as handle:
        header = next(csv.reader(handle))
    for split in ("train", "val"):
        for metric in (
            "rewards/chosen",
            "rewards/rejected",
            "rewards/accuracy",
            "rewards/margin",
            "logps/chosen",
            "logps/rejected",
        ):
            assert f"{split}/{metric}" in header, (split, metric)
    with open(dpo_run / "tables" / "answers.csv", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 8 and {"greedy_before", "greedy_after", "chosen", "rejected"} <= set(rows[0])
    one_word = [row for row in rows if "one word" in row["prompt"]]
    assert one_word and sum(len(row["greedy_after"].split()) for row in one_word) < sum(
        len(row["greedy_before"].split()) for row in one_word
    )
    record = json.loads((dpo_run / "provenance.json").read_text(encoding="utf-8"))
    assert (
        record["init_from"][0]["run"] == str(sft_run.resolve())
        and record["init_from"][0]["weights"] == "the full model"
    )
    assert record["dpo"]["memory"]["reference"] == "copy" and record["data"]["format"] == "conversational"
    result = run_module("compare", str(dpo_run), path_override("output", dpo_run.parent / "compare"))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "val/rewards/accuracy" in (dpo_run.parent / "compare" / "comparison.html").read_text(encoding="utf-8")


@pytest.mark.slow
def test_evaluate_on_a_dpo_run_gives_its_test_metrics(dpo_run: Path, tmp_path: Path) -> None:
    result = run_module("evaluate", path_override("run", dpo_run), path_override("output", tmp_path))
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((tmp_path / "eval.json").read_text(encoding="utf-8"))["metrics"]
    test = json.loads((dpo_run / "summary.json").read_text(encoding="utf-8"))["test"]
    assert {key: metrics[key] for key in test} == pytest.approx(test, abs=1e-5)
    prompts = write_jsonl(tmp_path / "ask.jsonl", [{"prompt": "What is the plural of fox?"}])
    result = run_module(
        "predict",
        path_override("run", dpo_run),
        path_override("input", prompts),
        path_override("output", tmp_path / "predict"),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "predict" / "generations.jsonl").read_text(encoding="utf-8").strip()


@pytest.mark.slow
def test_two_ddp_ranks_give_one_process_metrics(sft_run: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        "-m",
        "{{ cookiecutter.package_name }}.train",
        "experiment=dpo_tiny",
        path_override("init_from", sft_run),
        "trainer=ddp",
        "trainer.device=cpu",
        "logger=csv",
        "trainer.max_epochs=1",
        "trainer.limit_train_batches=3",
        "trainer.progress_bar=false",
        "data.num_held_out=0",
        "data.val_fraction=0.15",
        path_override("hydra.run.dir", run),
    ]
    result = run_command(command)
    assert result.returncode == 0, result.stderr[-3000:]
    with open(run / "metrics.csv", encoding="utf-8") as handle:
        distributed = {"val": {k: float(v) for k, v in next(csv.DictReader(handle)).items() if k.startswith("val/")}}
    distributed["test"] = json.loads((run / "summary.json").read_text(encoding="utf-8"))["test"]
    for split in ("val", "test"):
        metrics = evaluated_alone(run, split)
        assert f"{split}/rewards/margin" in distributed[split]
        assert distributed[split] == pytest.approx({key: metrics[key] for key in distributed[split]}, abs=1e-6)


@pytest.mark.slow
def test_lora_sft_then_dpo_merges_adapters_and_records_the_chain(tmp_path: Path) -> None:
    sft, dpo = tmp_path / "sft", tmp_path / "dpo"
    quick = [
        "logger=csv",
        "trainer.device=cpu",
        "trainer.max_steps=2",
        "trainer.limit_val_batches=1",
        "trainer.progress_bar=false",
    ]
    result = run_module(
        "train", "experiment=sft_tiny", "model.lora.enabled=true", *quick, path_override("hydra.run.dir", sft)
    )
    assert result.returncode == 0, result.stderr[-3000:]
    result = run_module(
        "train",
        "experiment=dpo_tiny",
        path_override("init_from", sft),
        "model.lora.enabled=true",
        "task.precompute_ref=true",
        *quick,
        path_override("hydra.run.dir", dpo),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert (dpo / "init_from" / "config.json").is_file() and (dpo / "model" / "adapter_config.json").is_file()
    record = json.loads((dpo / "provenance.json").read_text(encoding="utf-8"))
    assert record["init_from"][0]["weights"] == "its LoRA adapters merged into their base"
    assert record["dpo"]["memory"] == {
        "reference": "adapters",
        "precompute_ref": True,
        "reference_weights_bytes": 0,
        "precomputed_logps_bytes": 8 * sum(record["data"]["examples"].values()),
    }
    result = run_module("evaluate", path_override("run", dpo), path_override("output", tmp_path / "eval"))
    assert result.returncode == 0, result.stderr[-3000:]
