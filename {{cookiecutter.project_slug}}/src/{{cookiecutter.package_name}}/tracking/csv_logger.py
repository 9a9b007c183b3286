"""Local records kept for every run: metrics.csv, summary.json, plots/*.png, tables/*.csv."""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path
from typing import Any

import torch

from {{ cookiecutter.package_name }}.tracking.base import Logger, Table

log = logging.getLogger(__name__)


class CSVLogger(Logger):
    """Writes a row per epoch to ``metrics.csv`` and the final summary to ``summary.json``."""

    name = "csv"

    def __init__(self, save_dir: str | Path) -> None:
        self.save_dir = Path(save_dir)
        self.rows: list[dict[str, Any]] = []

    def start(self, config: dict[str, Any], resume: dict[str, Any] | None = None) -> None:
        self.save_dir.mkdir(parents=True, exist_ok=True)
        self.rows = [dict(row) for row in (resume or {}).get("history", [])]

    def log_epoch(self, metrics: dict[str, float], epoch: int) -> None:
        self.rows.append({"epoch": epoch, **metrics})
        columns: list[str] = []
        for row in self.rows:
            columns += [key for key in row if key not in columns]
        with open(self.save_dir / "metrics.csv", "w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=columns)
            writer.writeheader()
            writer.writerows(self.rows)

    def log_figure(self, name: str, figure: Any) -> None:
        folder = self.save_dir / "plots"
        folder.mkdir(exist_ok=True)
        figure.savefig(folder / f"{name}.png", dpi=120)  # the figures lay themselves out (constrained)

    def log_table(self, name: str, table: Table) -> None:
        columns, rows = table
        keep = [
            index for index, _ in enumerate(columns) if not any(isinstance(row[index], torch.Tensor) for row in rows)
        ]
        folder = self.save_dir / "tables"
        folder.mkdir(exist_ok=True)
        with open(folder / f"{name}.csv", "w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow([columns[index] for index in keep])
            writer.writerows([[row[index] for index in keep] for row in rows])

    def log_summary(self, summary: dict[str, Any]) -> None:
        path = self.save_dir / "summary.json"
        path.write_text(json.dumps(summary, indent=2, default=str) + "\n", encoding="utf-8")
