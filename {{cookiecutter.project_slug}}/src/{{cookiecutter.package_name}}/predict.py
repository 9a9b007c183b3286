"""Run a trained model on new inputs: ``python -m {{ cookiecutter.package_name }}.predict run=<run folder> input=<path>``.

Options:
  run=<folder>          the training run (its .hydra/config.yaml and checkpoints/)
  input=<path>          what to predict on, per task below
  ckpt=best|last|<path> the weights (default: best)
  output=<folder>       where to write (default: <run>/predict/<date>_<time>)
{tasks}
Any other key=value changes the run's config, e.g. data.batch_size=8, precision=fp32.

Unreadable inputs are skipped and listed in one warning.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import {{ cookiecutter.package_name }}.config.resolvers  # noqa: F401 - registers the resolvers the saved config uses
from {{ cookiecutter.package_name }}.errors import UserError, exit_on_user_error
from {{ cookiecutter.package_name }}.inference import command_help, command_options, foreign_options, inference_module
from {{ cookiecutter.package_name }}.inference.run_folder import (
    check_run_folder,
    load_run,
    output_folder,
    parse_arguments,
    setup_logging,
)

log = logging.getLogger(__name__)
BASE_OPTIONS = {"run": None, "input": None, "ckpt": "best", "output": None}


def predict(argv: list[str]) -> Path:
    """Predict as the command line asks; return the file written."""
    arguments = parse_arguments(argv, command_options("predict", BASE_OPTIONS), command_help("predict", __doc__ or ""))
    options = arguments.options
    if not options["input"]:
        raise UserError("input= is missing: give an image, a folder of images, or a .txt/.jsonl file of prompts.")
    source = Path(str(options["input"])).expanduser()
    if not source.exists():
        raise UserError(f"input={source}: no such file or folder.")
    folder = check_run_folder(options["run"])
    output = output_folder(folder, "predict", options["output"])
    setup_logging(output, "predict")
    run = load_run(folder, arguments.overrides, options["ckpt"])
    module = inference_module(run.config)
    foreign_options(module, "predict", options, BASE_OPTIONS)
    return module.predict(run, source, output, options)


@exit_on_user_error
def main(argv: list[str] | None = None) -> None:
    """Console script ``{{ cookiecutter.project_slug }}-predict``."""
    predict(sys.argv[1:] if argv is None else argv)


if __name__ == "__main__":
    main()
