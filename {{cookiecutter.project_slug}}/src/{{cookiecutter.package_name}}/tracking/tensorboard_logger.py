"""TensorBoard event files in ``<run folder>/tensorboard``: ``tensorboard --logdir outputs`` shows every run.

Scalars per step and per epoch, the figures, the tables as text (their images as images), the summary and
provenance as text, and the flattened config with the final metrics in the HParams tab. A resumed run writes
on in the same folder. TensorBoard is imported only when a run starts.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from {{ cookiecutter.package_name }}.tracking.base import Logger, Table
from {{ cookiecutter.package_name }}.tracking.tables import epoch_metric_name, flatten, plain_cell, split_images

MAX_TABLE_IMAGES = 16  # image cells shown per table


def hparam_value(value: Any) -> bool | int | float | str:
    """A value the HParams plugin takes: numbers and booleans as they are, anything else as text."""
    return value if isinstance(value, (bool, int, float, str)) else "null" if value is None else str(value)


def markdown_table(columns: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


class TensorBoardLogger(Logger):
    """Writes TensorBoard event files; the run id is the log folder, so a resumed run continues it."""

    name = "tensorboard"

    def __init__(self, save_dir: str | Path, subdir: str = "tensorboard") -> None:
        self.save_dir = Path(save_dir)
        self.log_dir = self.save_dir / subdir
        self.writer: Any = None
        self.hparams: dict[str, Any] = {}
        self.last_epoch = 0

    @property
    def run_id(self) -> str | None:
        return str(self.log_dir) if self.writer is not None else None

    def start(self, config: dict[str, Any], resume: dict[str, Any] | None = None) -> None:
        from torch.utils.tensorboard import SummaryWriter

        previous = (resume or {}).get("run_ids", {}).get(self.name)
        if previous and Path(previous).is_dir():
            self.log_dir = Path(previous)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.writer = SummaryWriter(log_dir=str(self.log_dir))
        self.hparams = {key: hparam_value(value) for key, value in flatten(config).items()}
        self.writer.add_text("config", f"```\n{json.dumps(config, indent=2, default=str)}\n```", 0)

    def log_step(self, metrics: dict[str, float], step: int) -> None:
        for key, value in metrics.items():
            self.writer.add_scalar(key, value, step)

    def log_epoch(self, metrics: dict[str, float], epoch: int) -> None:
        self.last_epoch = epoch
        for key, value in metrics.items():
            self.writer.add_scalar(epoch_metric_name(key), value, epoch)

    def log_figure(self, name: str, figure: Any) -> None:
        self.writer.add_figure(f"plots/{name}", figure, self.last_epoch, close=False)

    def log_table(self, name: str, table: Table) -> None:
        columns, rows = table
        images, keep = split_images(table)
        text = markdown_table([columns[c] for c in keep], [[plain_cell(row[c]) for c in keep] for row in rows])
        self.writer.add_text(f"tables/{name}", text, self.last_epoch)
        for index, ((r, c), array) in enumerate(images.items()):
            if index >= MAX_TABLE_IMAGES:
                break
            self.writer.add_image(
                f"tables/{name}/{r:04d}_{columns[c]}",
                array,
                self.last_epoch,
                dataformats="HW" if array.ndim == 2 else "HWC",
            )

    def log_summary(self, summary: dict[str, Any]) -> None:
        from torch.utils.tensorboard.summary import hparams

        best = summary.get("best") or {}
        values = {f"best/{summary.get('monitor')}": best.get("value"), **(summary.get("test") or {})}
        metrics = {key: float(value) for key, value in values.items() if isinstance(value, (int, float))}
        step = int(summary.get("epochs") or self.last_epoch)
        for key, value in metrics.items():
            self.writer.add_scalar(key, value, step)
        self.writer.add_text("summary", f"```\n{json.dumps(summary, indent=2, default=str)}\n```", step)
        experiment, session_start, session_end = hparams(self.hparams, metrics)
        for record in (experiment, session_start, session_end):
            self.writer.file_writer.add_summary(record)

    def finish(self, exit_code: int = 0) -> None:
        if self.writer is None:
            return
        provenance = self.save_dir / "provenance.json"
        if provenance.is_file():
            self.writer.add_text("provenance", f"```\n{provenance.read_text(encoding='utf-8')}\n```", self.last_epoch)
        writer, self.writer = self.writer, None
        writer.close()
