"""Figures drawn on matplotlib ``Figure`` objects (no pyplot state): headless and Windows-safe.

Imported only when a run writes its report, so that start-up does not pay for matplotlib."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from matplotlib.figure import Figure


def learning_curves_figure(history: Sequence[dict[str, Any]]) -> Figure:
    """One panel per metric (loss, acc, f1, ...), train and val against the epoch."""
    names = sorted(
        {
            key.split("/", 1)[1]
            for row in history
            for key in row
            if "/" in key and key.split("/", 1)[0] in {"train", "val"}
        }
    )
    names = [name for name in names if name not in {"lr"}] or ["loss"]
    columns = min(3, len(names))  # a grid: five squat panels in a row would be unreadable
    rows = -(-len(names) // columns)
    figure = Figure(figsize=(4 * columns, 3.2 * rows), layout="constrained")
    grid = figure.subplots(rows, columns, squeeze=False).ravel()
    for unused in grid[len(names) :]:
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


def confusion_matrix_figure(
    confusion: torch.Tensor, class_names: Sequence[str], title: str = "confusion matrix"
) -> Figure:
    """The confusion matrix as counts on a blue scale: rows are true classes, columns predictions.

    Drawn with matplotlib alone, as scikit-learn's ``ConfusionMatrixDisplay`` draws it, so that a run
    does not import scikit-learn (about a second) for its report.
    """
    counts = confusion.numpy()
    size = max(4.0, 0.45 * len(class_names) + 2)
    figure = Figure(figsize=(size, size), layout="constrained")
    axis = figure.subplots()
    image = axis.imshow(counts, interpolation="nearest", cmap="Blues")
    figure.colorbar(image, ax=axis)
    if len(class_names) <= 20:
        threshold = (counts.max() + counts.min()) / 2
        for (row, column), count in np.ndenumerate(counts):
            axis.text(
                column, row, f"{count:d}", ha="center", va="center", color="white" if count > threshold else "black"
            )
    ticks = range(len(class_names))
    axis.set(
        xticks=ticks,
        yticks=ticks,
        xticklabels=list(class_names),
        yticklabels=list(class_names),
        xlabel="predicted label",
        ylabel="true label",
        title=title,
    )
    if len(class_names) > 10:
        axis.tick_params(axis="x", labelrotation=90)
    return figure


def pr_curves_figure(
    curves: Sequence[tuple[torch.Tensor, torch.Tensor]],
    average_precision: torch.Tensor,
    class_names: Sequence[str],
    title: str = "precision-recall per class",
) -> Figure:
    """One precision-recall curve per class (one-vs-rest, a step at each threshold), with its average precision."""
    figure = Figure(figsize=(6, 5), layout="constrained")
    axis = figure.subplots()
    for (precision, recall), average, name in zip(curves, average_precision, class_names, strict=True):
        if not torch.isfinite(average):  # a class absent from the test split has no curve
            continue
        axis.step(recall.numpy(), precision.numpy(), where="post", label=f"{name} (AP = {float(average):.2f})")
    axis.set(xlim=(0, 1), ylim=(0, 1.02), xlabel="recall", ylabel="precision", title=title)
    if len(class_names) <= 20 and axis.get_lines():
        axis.legend(fontsize=7, loc="lower left")
    return figure
