"""Causal LMs after training: load LoRA/quantized runs, generate from a file of prompts, export a standalone
(merged) model."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, cast

from omegaconf import DictConfig, open_dict

from {{ cookiecutter.package_name }}.errors import UserError
from {{ cookiecutter.package_name }}.models.hf_loader import QUANTIZED, is_random_init
from {{ cookiecutter.package_name }}.runtime import unwrap
from {{ cookiecutter.package_name }}.tasks.generation import generate

log = logging.getLogger(__name__)
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
PREDICT_OPTIONS = {"max_new_tokens": 64, "temperature": 1.0, "top_p": 1.0, "do_sample": False}
PREDICT_HELP = """\
  causal LM: input= is a .txt file (one prompt per line) or a .jsonl file ({"prompt": ...} per line;
                        a chat-tuned run: {"messages": [...]} or {"prompt": ...})
  max_new_tokens=64 temperature=1.0 top_p=1.0 do_sample=false
                        causal LM: generation settings (writes generations.jsonl)
"""
EXPORT_OPTIONS = {"merge_lora": None}
EXPORT_HELP = """\
  merge_lora=null|true|false
                        causal LM: null/true merge a LoRA adapter into the base weights (a 4-/8-bit
                        base is reloaded unquantized, on the CPU unless trainer.device= says otherwise):
                        a standalone model that loads without the LoRA library; false saves the adapter
                        alone
"""


# ------------------------------------------------------------------ loading a run
def quantization_of(config: DictConfig) -> str:
    """The config's ``quantization.name`` (``none`` without one)."""
    return str((config.get("quantization") or {}).get("name", "none"))


def from_random_init(config: DictConfig) -> bool:
    """Whether the run's causal LM started from random weights (``model.name_or_path: null``)."""
    model = config.get("model") or {}
    return "name_or_path" in model and is_random_init(model.get("name_or_path"))


def lora_trained(config: DictConfig) -> bool | None:
    """Whether the run's causal LM has LoRA adapters (``model.lora.enabled``, null: when quantized); None for
    a model without LoRA options."""
    lora = (config.get("model") or {}).get("lora")
    if lora is None:
        return None
    enabled = lora.get("enabled")
    if enabled is None:  # QLoRA for quantized pretrained weights; a random init trains in full
        return quantization_of(config) in QUANTIZED and not from_random_init(config)
    return bool(enabled)


def inference_options(saved: DictConfig, config: DictConfig) -> dict[str, Any]:
    """How a causal LM loads after training: a quantized base without QLoRA's training preparation (its fp32
    casts), and a quantized load only of runs that trained LoRA adapters (a full fine-tune's weights do not
    fit a quantized model)."""
    trained_lora, quantization = lora_trained(saved), quantization_of(config)
    if trained_lora is None or quantization not in QUANTIZED:
        return {}
    if not trained_lora and from_random_init(saved) and quantization == quantization_of(saved):
        return {"quantization": None}  # the run's quantization was not applied to its random init
    if not trained_lora:
        raise UserError(
            f"quantization={quantization} loads a base for LoRA adapters, but this run fine-tuned the "
            f"whole model: leave out quantization={quantization}, or export the run and load the export "
            "quantized."
        )
    return {"for_training": False}


def load_options(folder: Path, config: DictConfig, precision: Any) -> dict[str, Any]:
    """The builder arguments that load the run's weights: a random init loads that same init from the run
    folder (and its tokenizer); a quantized base loads for inference, in what this device computes in."""
    from omegaconf import OmegaConf

    if from_random_init(config) and (folder / "random_init").is_dir():
        with open_dict(config):
            config.model.name_or_path = str(folder / "random_init")
    options = inference_options(cast(DictConfig, OmegaConf.load(folder / ".hydra" / "config.yaml")), config)
    if options:  # computing in what this device supports, as training did (bf16 -> fp16 before Ampere)
        options["dtype"] = precision.name
    return options


def export_overrides(
    config: DictConfig, options: dict[str, Any], overrides: list[str]
) -> tuple[list[str], dict[str, Any], str | None]:
    """The overrides and builder arguments the export loads with, and a line saying why they differ.

    A quantized QLoRA run merges into its base reloaded unquantized, on the CPU: the full-precision base may
    not fit the GPU that trained it 4-bit (13B on 24 GB); ``trainer.device=...`` or ``model.device_map=auto``
    chooses otherwise.
    """
    if options["merge_lora"] not in (None, True, False):
        raise UserError(f"merge_lora={options['merge_lora']}: write true, false or null.")
    quantization = quantization_of(config)
    if quantization in QUANTIZED and options["merge_lora"] is not False and lora_trained(config):
        return (
            ["trainer.device=cpu", *overrides, "quantization=none", "model.lora.enabled=true"],
            {"for_training": False},
            f"Merging the adapter into the {quantization} base, reloaded unquantized on the CPU.",
        )
    return overrides, {}, None


def card_details(run: Any) -> str:
    """The quantization during training, and the one of the base the export was loaded from."""
    from omegaconf import OmegaConf

    saved = cast(DictConfig, OmegaConf.load(run.folder / ".hydra" / "config.yaml"))
    trained, exported = quantization_of(saved), quantization_of(run.config)
    merged = f"; exported from the base loaded with quantization {exported}" if exported != trained else ""
    return f"; quantization: {trained} during training{merged}"


# ------------------------------------------------------------------ predicting


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


def predict(run: Any, source: Path, output: Path, options: dict[str, Any]) -> Path:
    """Write ``generations.jsonl``: each prompt, its continuation and the generation settings."""
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


# ------------------------------------------------------------------ exporting
def export(run: Any, output: Path, options: dict[str, Any]) -> list[Path]:
    """Save a folder ``AutoModelForCausalLM.from_pretrained`` loads without peft: the LoRA adapter merged into
    the base weights (``merge_and_unload``), or the full fine-tuned model; safetensors and the tokenizer.

    ``merge_lora=false`` saves the adapter alone instead (loading it needs peft and the base model).
    """
    merge_lora = options.get("merge_lora")
    model: Any = unwrap(run.model)  # a transformers (or peft) model
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
