"""Shared helpers for the trackers that store files: a config as flat parameters, tables split from images."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from {{ cookiecutter.package_name }}.tracking.base import Table

# Logged every N optimizer steps; their epoch means get an ``_epoch`` suffix so the two series stay apart.
STEP_METRICS = ("train/loss", "train/lr")


def epoch_metric_name(key: str) -> str:
    """``train/loss`` -> ``train/loss_epoch`` for the metrics also logged per step; other names unchanged."""
    return f"{key}_epoch" if key in STEP_METRICS else key


def flatten(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``; lists become JSON text, other leaves stay as they are."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(flatten(value, f"{name}."))
        elif isinstance(value, (list, tuple, dict)):
            flat[name] = json.dumps(value, default=str)
        else:
            flat[name] = value
    return flat


def image_array(value: Any) -> np.ndarray | None:
    """An image tensor (CHW or HW) as an HxWx3 (or HxW) uint8 array scaled to its range; None for other cells."""
    if isinstance(value, np.ndarray):
        value = torch.from_numpy(value)
    if not isinstance(value, torch.Tensor) or value.dim() not in (2, 3):
        return None
    tensor = value.detach().float().cpu()
    if tensor.dim() == 3 and tensor.shape[0] in (1, 3, 4):
        tensor = tensor.permute(1, 2, 0)
    if tensor.dim() == 3 and tensor.shape[-1] == 1:
        tensor = tensor[..., 0]
    low, high = tensor.min(), tensor.max()
    scaled = (tensor - low) / (high - low).clamp(min=1e-12) * 255
    return scaled.round().to(torch.uint8).numpy()


def plain_cell(value: Any) -> Any:
    """A number or text for a table cell (one-element tensors become their value)."""
    if isinstance(value, torch.Tensor):
        return value.item() if value.numel() == 1 else value.tolist()
    return value


def split_images(table: Table) -> tuple[dict[tuple[int, int], Any], list[int]]:
    """The table's image cells by (row, column), and the columns that hold no image (its text part)."""
    columns, rows = table
    images = {
        (r, c): array
        for r, row in enumerate(rows)
        for c, cell in enumerate(row)
        if (array := image_array(cell)) is not None
    }
    keep = [c for c in range(len(columns)) if not any((r, c) in images for r in range(len(rows)))]
    return images, keep


def write_table(table: Table, folder: Path, name: str) -> list[Path]:
    """Write ``<name>.csv`` (image columns left out) and each image cell as ``<name>/<row>_<column>.png``."""
    from matplotlib import image as mpimg

    columns, rows = table
    images, keep = split_images(table)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.csv"
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow([columns[c] for c in keep])
        writer.writerows([[plain_cell(row[c]) for c in keep] for row in rows])
    written = [path]
    for (r, c), array in images.items():
        image = folder / name / f"{r:04d}_{columns[c]}.png"
        image.parent.mkdir(exist_ok=True)
        mpimg.imsave(image, array, cmap="gray" if array.ndim == 2 else None)
        written.append(image)
    return written
