"""Generate from prompt files and export a merged LoRA model, from a causal-LM training run's folder."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from {{ cookiecutter.package_name }}.config.quoting import path_override

from conftest import offline_env, run_module

TINY_LM = [
    "experiment=tiny_lm",
    "debug=fast",
    "trainer.max_steps=2",
    "task.new_tokens=4",
    "logger=csv",
    "quantization=none",
    "precision=fp32",
    "trainer.device=cpu",
]
PROMPT = "One plus one is"


def train(folder: Path, *overrides: str) -> Path:
    result = run_module("train", *TINY_LM, *overrides, path_override("hydra.run.dir", folder))
    assert result.returncode == 0, result.stderr[-3000:]
    return folder


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random Llama with a LoRA adapter, two steps."""
    return train(tmp_path_factory.mktemp("lora") / "run", "model.lora.enabled=true")


def test_predict_a_txt_and_a_jsonl_file(lora_run: Path, tmp_path: Path) -> None:
    (tmp_path / "prompts.txt").write_text(f"{PROMPT}\n\nTwo plus two is\n", encoding="utf-8")
    (tmp_path / "prompts.jsonl").write_text(json.dumps({"prompt": PROMPT}) + "\nnot json\n", encoding="utf-8")
    for name, count in (("prompts.txt", 2), ("prompts.jsonl", 1)):
        output = tmp_path / f"out-{name}"
        result = run_module(
            "predict",
            path_override("run", lora_run),
            path_override("input", tmp_path / name),
            "max_new_tokens=5",
            path_override("output", output),
        )
        assert result.returncode == 0, result.stderr[-3000:]
        rows = [json.loads(line) for line in (output / "generations.jsonl").read_text(encoding="utf-8").splitlines()]
        assert len(rows) == count and rows[0]["prompt"] == PROMPT and rows[0]["max_new_tokens"] == 5
        assert rows[0]["do_sample"] is False and isinstance(rows[0]["generation"], str)
    assert "Skipped 1 line(s)" in result.stderr


def test_merged_export_loads_without_peft_and_generates_the_same(lora_run: Path, tmp_path: Path) -> None:
    from {{ cookiecutter.package_name }}.inference.run_folder import load_run
    from {{ cookiecutter.package_name }}.inference.text import generate

    result = run_module("export", path_override("run", lora_run), path_override("output", tmp_path))
    assert result.returncode == 0, result.stderr[-3000:]
    assert not (tmp_path / "adapter_config.json").exists() and (tmp_path / "model.safetensors").is_file()
    from safetensors.torch import load_file

    merged, base = load_file(tmp_path / "model.safetensors"), load_file(lora_run / "random_init" / "model.safetensors")
    changed = [key for key in base if "q_proj" in key and not torch.equal(merged[key], base[key])]
    assert changed, "the adapter was not merged into the base weights"
    card = (tmp_path / "README.md").read_text(encoding="utf-8")
    assert "from_pretrained" in card and "test/loss" in card and "experiment=tiny_lm" in card

    run = load_run(lora_run, [])
    assert hasattr(run.model, "peft_config")
    settings = {"max_new_tokens": 12, "do_sample": False, "pad_token_id": run.info.tokenizer.pad_token_id}
    expected = generate(run.model, run.info.tokenizer, [PROMPT], settings, 1, torch.device("cpu"))

    script = (
        "import sys, json\n"
        "sys.modules['peft'] = None  # peft made unimportable\n"
        "from transformers import AutoModelForCausalLM, AutoTokenizer\n"
        f"model = AutoModelForCausalLM.from_pretrained({str(tmp_path)!r})\n"
        f"tokenizer = AutoTokenizer.from_pretrained({str(tmp_path)!r})\n"
        f"ids = tokenizer([{PROMPT!r}], return_tensors='pt')['input_ids']\n"
        "out = model.generate(input_ids=ids, attention_mask=ids.new_ones(ids.shape), max_new_tokens=12,"
        " do_sample=False, pad_token_id=tokenizer.pad_token_id)\n"
        "print(json.dumps(tokenizer.batch_decode(out[:, ids.shape[1]:], skip_special_tokens=True)))\n"
        "assert 'peft' not in {name.split('.')[0] for name, module in sys.modules.items() if module}\n"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=offline_env(), timeout=300
    )
    assert loaded.returncode == 0, loaded.stderr[-3000:]
    assert json.loads(loaded.stdout.strip().splitlines()[-1]) == expected


def test_export_bad_input_fails_in_one_line(lora_run: Path, tmp_path: Path) -> None:
    full = train(tmp_path / "full", "model.lora.enabled=false")
    result = run_module(
        "export", path_override("run", full), "merge_lora=true", path_override("output", tmp_path / "a")
    )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr and "merge_lora=true" in result.stderr
    result = run_module(
        "export", path_override("run", lora_run), "push_to_hub=someone/tiny", path_override("output", tmp_path / "b")
    )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr and "HF_HUB_OFFLINE" in result.stderr
