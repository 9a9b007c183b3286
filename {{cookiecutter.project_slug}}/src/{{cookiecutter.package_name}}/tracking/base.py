"""The logger interface and a collection that fans calls out to several loggers."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

Table = tuple[list[str], list[list[Any]]]


class Logger:
    """Every method is optional; the trainer calls them on the main process only."""

    name = "logger"

    def start(self, config: dict[str, Any], resume: dict[str, Any] | None = None) -> None:
        """Begin (or, with ``resume``, continue) a run; ``config`` is the resolved config."""

    @property
    def run_id(self) -> str | None:
        """An id that lets a resumed training continue the same run."""
        return None

    def log_step(self, metrics: dict[str, float], step: int) -> None:
        """Per-step metrics such as ``train/loss`` and ``train/lr``."""

    def log_epoch(self, metrics: dict[str, float], epoch: int) -> None:
        """Per-epoch metrics such as ``train/loss`` and ``val/f1``."""

    def log_figure(self, name: str, figure: Any) -> None:
        """A matplotlib figure."""

    def log_table(self, name: str, table: Table) -> None:
        """A table of (columns, rows); cells may be numbers, text or image tensors."""

    def log_summary(self, summary: dict[str, Any]) -> None:
        """Final values: best metric, test metrics, checkpoint paths."""

    def log_checkpoint(self, path: Path, metadata: dict[str, Any]) -> None:
        """The best checkpoint, with its metric, epoch and config."""

    def mark_preempting(self) -> None:
        """The job is about to be requeued (SLURM): the run continues in the requeued job."""

    def finish(self, exit_code: int = 0) -> None:
        """Close the run; a non-zero ``exit_code`` marks it failed."""


class LoggerCollection(Logger):
    """Calls each logger in turn; one logger's failure is logged, never fatal to training."""

    def __init__(self, loggers: list[Logger]) -> None:
        self.loggers = loggers

    def _each(self, method: str, *args: Any, **kwargs: Any) -> None:
        for logger in self.loggers:
            try:
                getattr(logger, method)(*args, **kwargs)
            except Exception as error:  # noqa: BLE001 - a tracking failure must not stop training
                log.warning("%s.%s failed: %s", type(logger).__name__, method, error)

    def run_ids(self) -> dict[str, str]:
        return {logger.name: logger.run_id for logger in self.loggers if logger.run_id}

    def start(self, config: dict[str, Any], resume: dict[str, Any] | None = None) -> None:
        self._each("start", config, resume)

    def log_step(self, metrics: dict[str, float], step: int) -> None:
        self._each("log_step", metrics, step)

    def log_epoch(self, metrics: dict[str, float], epoch: int) -> None:
        self._each("log_epoch", metrics, epoch)

    def log_figure(self, name: str, figure: Any) -> None:
        self._each("log_figure", name, figure)

    def log_table(self, name: str, table: Table) -> None:
        self._each("log_table", name, table)

    def log_summary(self, summary: dict[str, Any]) -> None:
        self._each("log_summary", summary)

    def log_checkpoint(self, path: Path, metadata: dict[str, Any]) -> None:
        self._each("log_checkpoint", path, metadata)

    def mark_preempting(self) -> None:
        self._each("mark_preempting")

    def finish(self, exit_code: int = 0) -> None:
        self._each("finish", exit_code)
