"""Causal LMs after training: generate from a file of prompts; export a standalone (merged) model."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from {{ cookiecutter.package_name }}.errors import UserError
from {{ cookiecutter.package_name }}.runtime import unwrap

log = logging.getLogger(__name__)
PROGRESS_AFTER = 3  # batches: a progress bar for longer inputs
# What the model card says of an export (see model_card.py).
CARD = {
    "kind": "A causal language model",
    "library": "transformers",
    "tag": "text-generation",
    "usage": "Load it with plain transformers (no peft needed):\n\n```python\n"
    "from transformers import AutoModelForCausalLM, AutoTokenizer\n\n"
    'model = AutoModelForCausalLM.from_pretrained("<this folder>")\n'
    'tokenizer = AutoTokenizer.from_pretrained("<this folder>")\n```',
}


def read_prompts(path: Path, field: str = "prompt") -> list[str]:
    """One prompt per line of a ``.txt`` file, or the ``prompt`` of each ``.jsonl`` line (bad lines skipped)."""
    if not path.is_file():
        raise UserError(f"input={path} is not a file: give a .txt (one prompt per line) or .jsonl file.")
    lines = path.read_text(encoding="utf-8").splitlines()
    if path.suffix == ".txt":
        prompts = [line.strip() for line in lines if line.strip()]
    elif path.suffix == ".jsonl":
        prompts, bad = [], []
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                prompts.append(str(json.loads(line)[field]))
            except (json.JSONDecodeError, KeyError, TypeError):
                bad.append(number)
        if bad:
            log.warning(
                "Skipped %d line(s) of %s without a JSON %r field: %s", len(bad), path, field, ", ".join(map(str, bad))
            )
    else:
        raise UserError(
            f"input={path}: unsupported file type {path.suffix!r}; use .txt (one prompt per line) "
            'or .jsonl ({"prompt": ...} per line).'
        )
    if not prompts:
        raise UserError(f"input={path} holds no prompts: write one per line.")
    return prompts


def generation_settings(options: dict[str, Any], pad_token_id: int | None) -> dict[str, Any]:
    """``generate`` arguments from the command line's options (sampling settings only when sampling)."""
    settings: dict[str, Any] = {
        "max_new_tokens": int(options.get("max_new_tokens") or 64),
        "min_new_tokens": 1,
        "do_sample": bool(options.get("do_sample")),
        "pad_token_id": pad_token_id,
    }
    if settings["do_sample"]:
        settings.update(temperature=float(options.get("temperature") or 1.0), top_p=float(options.get("top_p") or 1.0))
    return settings


@torch.no_grad()
def generate(
    model: Any,
    tokenizer: Any,
    prompts: list[str],
    settings: dict[str, Any],
    batch_size: int,
    device: torch.device,
    autocast: Any = None,
) -> list[str]:
    """The continuation of each prompt (batched, left-padded)."""
    tokenizer.padding_side = "left"
    model.eval()
    batches = [prompts[start : start + batch_size] for start in range(0, len(prompts), batch_size)]
    texts: list[str] = []
    for batch in tqdm(batches, desc="generate", disable=len(batches) <= PROGRESS_AFTER):
        encoded = tokenizer(batch, return_tensors="pt", padding=True)
        inputs = {"input_ids": encoded["input_ids"].to(device), "attention_mask": encoded["attention_mask"].to(device)}
        with autocast() if autocast is not None else torch.autocast(device.type, enabled=False):
            output = model.generate(**inputs, **settings)
        texts += tokenizer.batch_decode(output[:, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
    return texts


def predict(run: Any, source: Path, output: Path, options: dict[str, Any]) -> Path:
    """Write ``generations.jsonl``: each prompt, its continuation and the generation settings."""
    if str(run.config.data.get("_target_", "")).endswith(("ChatDataModule", "PreferenceDataModule")):
        from {{ cookiecutter.package_name }}.inference.chat import predict_chat

        return predict_chat(run, source, output, options)
    prompts = read_prompts(source)
    tokenizer = run.info.tokenizer
    settings = generation_settings(options, tokenizer.pad_token_id)
    texts = generate(
        unwrap(run.model),
        tokenizer,
        prompts,
        settings,
        int(run.config.data.get("batch_size", 8)),
        run.device,
        run.precision.autocast,
    )
    path = write_generations(output, [{"prompt": prompt} for prompt in prompts], texts, settings)
    log.info("Generated %d continuation(s): %s", len(texts), path)
    return path


def write_generations(output: Path, inputs: list[dict[str, Any]], texts: list[str], settings: dict[str, Any]) -> Path:
    """``generations.jsonl``: each input with its generation and the generation settings."""
    shown = {key: value for key, value in settings.items() if key != "pad_token_id"}
    path = output / "generations.jsonl"
    with open(path, "w", encoding="utf-8") as handle:
        for record, text in zip(inputs, texts, strict=True):
            handle.write(json.dumps({**record, "generation": text, **shown}, ensure_ascii=False) + "\n")
    return path


def is_lora(model: Any) -> bool:
    return hasattr(unwrap(model), "peft_config")


def export(run: Any, output: Path, merge_lora: bool | None = None) -> list[Path]:
    """Save a folder ``AutoModelForCausalLM.from_pretrained`` loads without peft: the LoRA adapter merged into
    the base weights (``merge_and_unload``), or the full fine-tuned model; safetensors and the tokenizer.

    ``merge_lora=false`` saves the adapter alone instead (loading it needs peft and the base model).
    """
    model = unwrap(run.model)
    if merge_lora and not is_lora(model):
        raise UserError(
            "merge_lora=true, but this run trained the full model (no LoRA adapter): export without merge_lora."
        )
    if is_lora(model) and merge_lora is not False:
        model = model.merge_and_unload()
        log.info("Merged the LoRA adapter into the base weights.")
    model.save_pretrained(output, safe_serialization=True)
    run.info.tokenizer.save_pretrained(output)
    return sorted(path for path in output.iterdir() if path.suffix != ".log" and path.name != "README.md")
