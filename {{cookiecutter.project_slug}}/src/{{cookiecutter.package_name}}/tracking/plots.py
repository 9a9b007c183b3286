"""Figures drawn on matplotlib ``Figure`` objects (no pyplot state): headless and Windows-safe.

Imported only when a run writes its report, so that start-up does not pay for matplotlib."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from matplotlib.figure import Figure


def learning_curves_figure(history: Sequence[dict[str, Any]]) -> Figure:
    """One panel per metric (loss, acc, f1, ...), train and val against the epoch."""
    names = sorted({key.split("/", 1)[1] for row in history for key in row
                    if "/" in key and key.split("/", 1)[0] in {"train", "val"}})
    names = [name for name in names if name not in {"lr"}] or ["loss"]
    columns = min(3, len(names))  # a grid: five squat panels in a row would be unreadable
    rows = -(-len(names) // columns)
    figure = Figure(figsize=(4 * columns, 3.2 * rows), layout="constrained")
    grid = figure.subplots(rows, columns, squeeze=False).ravel()
    for unused in grid[len(names):]:
        unused.set_visible(False)
    axes = grid[: len(names)]
    epochs = [row["epoch"] for row in history]
    for axis, name in zip(axes, names, strict=True):
        for split in ("train", "val"):
            key = f"{split}/{name}"
            points = [(epoch, row[key]) for epoch, row in zip(epochs, history, strict=True) if key in row]
            if points:
                axis.plot(*zip(*points, strict=True), marker="o", label=split)
        axis.set_title(name)
        axis.set_xlabel("epoch")
        axis.legend()
        axis.grid(alpha=0.3)
    return figure


def confusion_matrix_figure(confusion: torch.Tensor, class_names: Sequence[str],
                            title: str = "confusion matrix") -> Figure:
    """scikit-learn's confusion matrix display: rows are true classes, columns predictions."""
    from sklearn.metrics import ConfusionMatrixDisplay

    size = max(4.0, 0.45 * len(class_names) + 2)
    figure = Figure(figsize=(size, size), layout="constrained")
    display = ConfusionMatrixDisplay(confusion.numpy(), display_labels=list(class_names))
    display.plot(ax=figure.subplots(), cmap="Blues", include_values=len(class_names) <= 20,
                 xticks_rotation="vertical" if len(class_names) > 10 else "horizontal")
    display.ax_.set_title(title)
    return figure


def pr_curves_figure(curves: Sequence[tuple[torch.Tensor, torch.Tensor]], average_precision: torch.Tensor,
                     class_names: Sequence[str], title: str = "precision-recall per class") -> Figure:
    """One precision-recall curve per class (one-vs-rest), drawn by scikit-learn, with its average precision."""
    from sklearn.metrics import PrecisionRecallDisplay

    figure = Figure(figsize=(6, 5), layout="constrained")
    axis = figure.subplots()
    for (precision, recall), average, name in zip(curves, average_precision, class_names, strict=True):
        if not torch.isfinite(average):  # a class absent from the test split has no curve
            continue
        PrecisionRecallDisplay(precision.numpy(), recall.numpy(), average_precision=float(average),
                               name=name).plot(ax=axis)
    axis.set_xlim(0, 1)
    axis.set_ylim(0, 1.02)
    axis.set_title(title)
    if len(class_names) <= 20:
        axis.legend(fontsize=7, loc="lower left")
    elif axis.get_legend() is not None:
        axis.get_legend().remove()
    return figure
