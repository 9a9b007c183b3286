"""The end-of-run report: learning curves, the evaluation's figures and tables, the summary.

Runs once after training, on the main process, outside the training loop.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from {{ cookiecutter.package_name }}.tracking.base import Logger


def write_report(
    loggers: Logger,
    history: list[dict[str, Any]],
    evaluation: Any,
    summary: dict[str, Any],
    best_checkpoint: Path | None = None,
    config: dict[str, Any] | None = None,
) -> None:
    """Hand the figures, tables, summary and best checkpoint of a finished run to ``loggers``."""
    from {{ cookiecutter.package_name }}.tracking import plots  # matplotlib loads only here

    if history:
        loggers.log_figure("learning_curves", plots.learning_curves_figure(history))
    for name, figure in evaluation.figures().items():
        loggers.log_figure(name, figure)
    for name, table in evaluation.tables().items():
        loggers.log_table(name, table)
    loggers.log_summary(summary)
    if best_checkpoint is not None and best_checkpoint.is_file():
        best = summary.get("best", {})
        loggers.log_checkpoint(
            best_checkpoint,
            {
                "metric": summary.get("monitor"),
                "value": best.get("value"),
                "epoch": best.get("epoch"),
                "config": config or {},
            },
        )
