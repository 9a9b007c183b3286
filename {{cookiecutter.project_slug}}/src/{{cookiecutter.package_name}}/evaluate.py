"""Score a trained run again: ``python -m {{ cookiecutter.package_name }}.evaluate run=<run folder> [options] [overrides]``.

Options:
  run=<folder>          the training run (its .hydra/config.yaml and checkpoints/)
  ckpt=best|last|<path> the weights to score (default: best)
  split=test|val|train  the split of the run's data to score (default: test)
  output=<folder>       where to write (default: <run>/eval/<date>_<time>)
Any other key=value changes the run's config, e.g. data.root=/new/images, data=image_folder,
trainer.limit_val_batches=null, precision=fp32.

Writes eval.json (metrics named like summary.json's, e.g. test/acc) with the task's figures
(plots/) and tables (tables/). On the run's own test split it reproduces summary.json's test numbers.
"""

from __future__ import annotations

import json
import logging
import sys
from typing import Any

import {{ cookiecutter.package_name }}.config.resolvers  # noqa: F401 - registers the resolvers the saved config uses
from {{ cookiecutter.package_name }}.errors import UserError, exit_on_user_error
from {{ cookiecutter.package_name }}.inference.run_folder import (
    LoadedRun,
    check_run_folder,
    load_run,
    output_folder,
    parse_arguments,
    relative,
    setup_logging,
)

log = logging.getLogger(__name__)
OPTIONS = {"run": None, "ckpt": "best", "split": "test", "output": None}
SPLITS = ("train", "val", "test")


def evaluate_split(run: LoadedRun, split: str) -> Any:
    """One pass over ``split`` as the trainer's test does (:func:`evaluation_pass`: same batches, autocast
    and batch limit)."""
    from {{ cookiecutter.package_name }}.training.trainer import evaluation_pass

    evaluation = run.task.evaluation("test")
    evaluation.split = split  # the figures' titles name the split they show
    limit = run.config.trainer.get("limit_val_batches")
    return evaluation_pass(
        run.model, evaluation, run.datamodule.loader(split), limit and int(limit), run.device, run.precision
    )


def evaluate(argv: list[str]) -> dict[str, Any]:
    """Evaluate as the command line asks; return what eval.json holds."""
    from {{ cookiecutter.package_name }}.tracking import provenance
    from {{ cookiecutter.package_name }}.tracking.csv_logger import CSVLogger

    arguments = parse_arguments(argv, OPTIONS, __doc__ or "")
    split = str(arguments.options["split"])
    if split not in SPLITS:
        raise UserError(f"split={split}: choose one of {', '.join(SPLITS)}.")
    folder = check_run_folder(arguments.options["run"])
    output = output_folder(folder, "eval", arguments.options["output"])
    setup_logging(output, "evaluate")
    record = provenance.collect(arguments.overrides)
    run = load_run(folder, arguments.overrides, arguments.options["ckpt"])
    evaluation = evaluate_split(run, split)
    metrics = {f"{split}/{key}": value for key, value in evaluation.compute().items()}
    log.info("%s: %s", split, ", ".join(f"{key}={value:.4f}" for key, value in metrics.items()))
    files = CSVLogger(output)
    for name, figure in evaluation.figures().items():
        files.log_figure(name, figure)
    for name, table in evaluation.tables().items():
        files.log_table(name, table)
    result = {
        "run": str(folder),
        "checkpoint": relative(run.checkpoint, folder),
        "split": split,
        "overrides": arguments.overrides,
        "precision": run.precision.name,
        "metrics": metrics,
        "provenance": provenance.public({**record, "ended_at": provenance.now()}),
    }
    (output / "eval.json").write_text(json.dumps(result, indent=2, default=str) + "\n", encoding="utf-8")
    log.info("Wrote %s", output / "eval.json")
    return result


@exit_on_user_error
def main(argv: list[str] | None = None) -> None:
    """Console script ``{{ cookiecutter.project_slug }}-evaluate``."""
    evaluate(sys.argv[1:] if argv is None else argv)


if __name__ == "__main__":
    main()
