"""Export a trained model with a model card: ``python -m {{ cookiecutter.package_name }}.export run=<run folder>``.

Options:
  run=<folder>          the training run (its .hydra/config.yaml and checkpoints/)
  ckpt=best|last|<path> the weights (default: best)
  output=<folder>       where to write (default: <run>/export)
{tasks}
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
from {{ cookiecutter.package_name }}.errors import UserError, exit_on_user_error, first_line
from {{ cookiecutter.package_name }}.inference import command_help, command_options, foreign_options, inference_module
from {{ cookiecutter.package_name }}.inference.model_card import write_model_card
from {{ cookiecutter.package_name }}.inference.run_folder import (
    check_run_folder,
    load_config,
    load_run,
    output_folder,
    parse_arguments,
    setup_logging,
)

log = logging.getLogger(__name__)
BASE_OPTIONS = {"run": None, "ckpt": "best", "output": None, "push_to_hub": None}


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
        raise UserError(
            f"push_to_hub={repo_id} failed ({first_line(error)[:200]}): check the connection and `hf auth login`; "
            f"the export is in {folder}."
        ) from None
    log.info("Uploaded %s to https://huggingface.co/%s", folder, repo_id)


def export(argv: list[str]) -> Path:
    """Export as the command line asks; return the export folder."""
    arguments = parse_arguments(argv, command_options("export", BASE_OPTIONS), command_help("export", __doc__ or ""))
    options = arguments.options
    folder = check_run_folder(options["run"])
    config = load_config(folder, list(arguments.overrides))
    module = inference_module(config)
    foreign_options(module, "export", options, BASE_OPTIONS)
    overrides, model_options, note = module.export_overrides(config, options, list(arguments.overrides))
    output = output_folder(folder, "export", options["output"] or folder / "export")
    setup_logging(output, "export")
    if note:
        log.info("%s", note)
    run = load_run(folder, overrides, options["ckpt"], model_options)
    files = module.export(run, output, options)
    command = "python -m {{ cookiecutter.package_name }}.export " + " ".join(shlex.quote(arg) for arg in argv)
    card = write_model_card(run, output, module, files, command)
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
