"""Figures drawn with matplotlib's object API (Agg canvas): headless and Windows-safe."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from matplotlib.figure import Figure


def learning_curves_figure(history: Sequence[dict[str, Any]]) -> Figure:
    """One panel per metric (loss, acc, f1, ...), train and val against the epoch."""
    names = sorted({key.split("/", 1)[1] for row in history for key in row
                    if "/" in key and key.split("/", 1)[0] in {"train", "val"}})
    names = [name for name in names if name not in {"lr"}] or ["loss"]
    figure = Figure(figsize=(4 * len(names), 3.2), layout="constrained")
    axes = figure.subplots(1, len(names), squeeze=False)[0]
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


def confusion_matrix_figure(confusion: torch.Tensor, class_names: Sequence[str]) -> Figure:
    """Counts with row-normalised colours: rows are true classes, columns predictions."""
    counts = confusion.cpu().numpy()
    normalised = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    size = max(4.0, 0.45 * len(class_names) + 2)
    figure = Figure(figsize=(size, size), layout="constrained")
    axis = figure.subplots()
    image = axis.imshow(normalised, cmap="Blues", vmin=0, vmax=1)
    figure.colorbar(image, ax=axis, fraction=0.046)
    ticks = range(len(class_names))
    axis.set_xticks(ticks, class_names, rotation=90 if len(class_names) > 10 else 0)
    axis.set_yticks(ticks, class_names)
    axis.set_xlabel("predicted")
    axis.set_ylabel("true")
    if len(class_names) <= 20:
        for row in ticks:
            for column in ticks:
                axis.text(column, row, int(counts[row, column]), ha="center", va="center", fontsize=7,
                          color="white" if normalised[row, column] > 0.5 else "black")
    axis.set_title("confusion matrix")
    return figure


def pr_curves_figure(probabilities: torch.Tensor, targets: torch.Tensor, class_names: Sequence[str]) -> Figure:
    """One precision-recall curve per class (one-vs-rest), with its average precision."""
    from sklearn.metrics import average_precision_score, precision_recall_curve

    scores, labels = probabilities.numpy(), targets.numpy()
    figure = Figure(figsize=(6, 5), layout="constrained")
    axis = figure.subplots()
    for index, name in enumerate(class_names):
        positives = labels == index
        if not positives.any():
            continue
        precision, recall, _ = precision_recall_curve(positives, scores[:, index])
        average = average_precision_score(positives, scores[:, index])
        axis.plot(recall, precision, label=f"{name} (AP {average:.2f})")
    axis.set_xlabel("recall")
    axis.set_ylabel("precision")
    axis.set_xlim(0, 1)
    axis.set_ylim(0, 1.02)
    axis.set_title("precision-recall per class")
    if len(class_names) <= 20:
        axis.legend(fontsize=7, loc="lower left")
    return figure
