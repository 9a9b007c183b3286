"""Export a trained model with a model card: ``python -m {{ cookiecutter.package_name }}.export run=<run folder>``.

Options:
  run=<folder>          the training run (its .hydra/config.yaml and checkpoints/)
  ckpt=best|last|<path> the weights (default: best)
  output=<folder>       where to write (default: <run>/export)
  format=safetensors|onnx
                        image classification: safetensors weights + model_config.json, and with
                        onnx also model.onnx (needs the onnx package: the `onnx` extra)
  merge_lora=null|true|false
                        causal LM: null/true merge a LoRA adapter into the base weights (a 4-/8-bit
                        base is reloaded unquantized, on the CPU unless trainer.device= says otherwise):
                        a standalone model that loads without the LoRA library; false saves the adapter
                        alone
  push_to_hub=<repo id> also upload the folder to the Hugging Face Hub (needs a connection and a login)

Every export writes README.md, a model card: the data, metrics, precision, the command that
trained the model and the run's provenance.
"""

from __future__ import annotations

import logging
import shlex
import sys
from pathlib import Path
from typing import Any

import {{ cookiecutter.package_name }}.config.resolvers  # noqa: F401 - registers the resolvers the saved config uses
from {{ cookiecutter.package_name }} import runtime
from {{ cookiecutter.package_name }}.errors import UserError, exit_on_user_error
from {{ cookiecutter.package_name }}.inference import inference_module
from {{ cookiecutter.package_name }}.inference.model_card import write_model_card
from {{ cookiecutter.package_name }}.inference.run_folder import (
    QUANTIZED,
    check_run_folder,
    load_config,
    load_run,
    lora_trained,
    output_folder,
    parse_arguments,
    quantization_of,
    setup_logging,
)

log = logging.getLogger(__name__)
OPTIONS = {
    "run": None,
    "ckpt": "best",
    "output": None,
    "format": "safetensors",
    "merge_lora": None,
    "push_to_hub": None,
}
FORMATS = ("safetensors", "onnx")


def push_to_hub(folder: Path, repo_id: str) -> None:
    """Upload ``folder`` to the Hub repository ``repo_id`` (created private if missing); offline: one line."""
    from {{ cookiecutter.package_name }}.utils import env_flag

    if env_flag("HF_HUB_OFFLINE"):
        raise UserError(
            f"push_to_hub={repo_id}: HF_HUB_OFFLINE=1 forbids uploading; the export is in {folder}, "
            "upload it later with `hf upload`."
        )
    from huggingface_hub import HfApi

    try:
        api = HfApi()
        api.create_repo(repo_id, private=True, exist_ok=True)
        api.upload_folder(folder_path=str(folder), repo_id=repo_id)
    except Exception as error:  # noqa: BLE001 - network and auth failures all end the same way
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise UserError(
            f"push_to_hub={repo_id} failed ({reason[:200]}): check the connection and `hf auth login`; "
            f"the export is in {folder}."
        ) from None
    log.info("Uploaded %s to https://huggingface.co/%s", folder, repo_id)


def export(argv: list[str]) -> Path:
    """Export as the command line asks; return the export folder."""
    arguments = parse_arguments(argv, OPTIONS, __doc__ or "")
    options = arguments.options
    if options["merge_lora"] not in (None, True, False):
        raise UserError(f"merge_lora={options['merge_lora']}: write true, false or null.")
    if str(options["format"]) not in FORMATS:
        raise UserError(f"format={options['format']}: choose {' or '.join(FORMATS)}.")
    folder = check_run_folder(options["run"])
    output = output_folder(folder, "export", options["output"] or folder / "export")
    setup_logging(output, "export")
    overrides, model_options = list(arguments.overrides), {}
    config = load_config(folder, overrides)
    quantization = quantization_of(config)
    if quantization in QUANTIZED and options["merge_lora"] is not False and lora_trained(config):
        # The full-precision base may not fit the GPU that trained it 4-bit (13B on 24 GB): merge on the CPU,
        # in the weights' own dtype (trainer.device=... or model.device_map=auto chooses otherwise).
        log.info("Merging the adapter into the %s base, reloaded unquantized on the CPU.", quantization)
        overrides = ["trainer.device=cpu", *overrides, "quantization=none", "model.lora.enabled=true"]
        model_options = {"for_training": False}
    run = load_run(folder, overrides, options["ckpt"], model_options)
    module = inference_module(run.task)
    if module.__name__.endswith(".text"):
        files = module.export(run, output, options["merge_lora"])
    else:
        if options["merge_lora"]:
            raise UserError("merge_lora=true applies to LoRA language models; this run is an image classifier.")
        files = module.export(run, output, str(options["format"]))
    command = "python -m {{ cookiecutter.package_name }}.export " + " ".join(shlex.quote(arg) for arg in argv)
    card = write_model_card(run, output, module.CARD, files, command)
    log.info("Exported %s with its model card %s", ", ".join(path.name for path in files), card)
    peak = runtime.peak_memory_bytes(run.device)
    if peak:
        log.info(
            "Peak memory of the export: %.2f GB (%s).",
            peak / 1e9,
            "GPU allocator" if run.device.type == "cuda" else "the process's resident set",
        )
    if options["push_to_hub"]:
        push_to_hub(output, str(options["push_to_hub"]))
    return output


@exit_on_user_error
def main(argv: list[str] | None = None) -> Any:
    """Console script ``{{ cookiecutter.project_slug }}-export``."""
    export(sys.argv[1:] if argv is None else argv)


if __name__ == "__main__":
    main()
