"""Image classification: cross-entropy; accuracy, macro precision/recall/F1, confusion matrix, PR curves.

The metrics are torchmetrics': they sync over DDP ranks themselves. Probabilities are
kept only at test time, where the precision-recall curves need them.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from {{ cookiecutter.package_name }}.tasks.base import Evaluation, Task

SCALARS = ("acc", "precision", "recall", "f1")


def build_metrics(num_classes: int, curves: bool) -> Any:
    """The ``MetricCollection`` of one split; ``curves`` adds per-class PR curves and average precision."""
    from torchmetrics import MetricCollection
    from torchmetrics.classification import (
        MulticlassAccuracy,
        MulticlassAveragePrecision,
        MulticlassConfusionMatrix,
        MulticlassF1Score,
        MulticlassPrecision,
        MulticlassPrecisionRecallCurve,
        MulticlassRecall,
    )

    options = {"num_classes": num_classes, "validate_args": False}
    metrics = {
        "acc": MulticlassAccuracy(average="micro", **options),
        "precision": MulticlassPrecision(average="macro", **options),
        "recall": MulticlassRecall(average="macro", **options),
        "f1": MulticlassF1Score(average="macro", **options),
        "confusion": MulticlassConfusionMatrix(**options),
    }
    if curves:
        metrics["pr_curve"] = MulticlassPrecisionRecallCurve(**options)
        metrics["average_precision"] = MulticlassAveragePrecision(average=None, **options)
    return MetricCollection(metrics)


def build_loss() -> Any:
    """The mean of per-sample losses over a split, synced over DDP ranks (a diverged model shows nan)."""
    from torchmetrics import MeanMetric

    return MeanMetric(nan_strategy="disable")


class ClassificationEvaluation(Evaluation):
    """Metrics of one split, the mean loss and (at test time) a few prediction samples.

    ``metrics`` and ``loss`` may be reused from an earlier pass: they are reset here.
    """

    def __init__(self, metrics: Any, loss: Any, class_names: list[str], test: bool = False,
                 num_samples: int = 16) -> None:
        self.metrics, self.loss = metrics, loss
        self.metrics.reset()
        self.loss.reset()
        self.class_names, self.test = class_names, test
        self.split = "test" if test else "val"  # named in the figures' titles (evaluate sets the split it scores)
        self.num_samples = num_samples if test else 0
        self.samples: list[tuple[torch.Tensor, int, int]] = []
        self.results: dict[str, Any] = {}

    @torch.no_grad()
    def update(self, model: nn.Module, batch: Any) -> None:
        inputs, targets = batch
        logits = model(inputs).float()
        if self.loss.device != logits.device:
            self.metrics.to(logits.device)
            self.loss.to(logits.device)
        self.loss.update(F.cross_entropy(logits, targets, reduction="none"))
        self.metrics.update(logits.softmax(1) if self.test else logits, targets)
        if len(self.samples) < self.num_samples:
            predictions = logits.argmax(1)
            for image, target, prediction in zip(inputs, targets, predictions, strict=True):
                if len(self.samples) >= self.num_samples:
                    break
                self.samples.append((image.detach().float().cpu(), int(target), int(prediction)))

    def compute(self) -> dict[str, float]:
        self.results = self.metrics.compute()
        metrics = {name: float(self.results[name]) for name in SCALARS}
        metrics["loss"] = float(self.loss.compute())
        return metrics

    def figures(self) -> dict[str, Any]:
        from {{ cookiecutter.package_name }}.tracking import plots

        confusion = self.results["confusion"].cpu()
        where = f"{self.split} split, {int(confusion.sum())} images"
        figures = {"confusion_matrix": plots.confusion_matrix_figure(confusion, self.class_names,
                                                                     f"confusion matrix ({where})")}
        if "pr_curve" in self.results:
            precision, recall, _ = self.results["pr_curve"]
            curves = [(p.cpu(), r.cpu()) for p, r in zip(precision, recall, strict=True)]
            figures["pr_curves"] = plots.pr_curves_figure(curves, self.results["average_precision"].cpu(),
                                                          self.class_names, f"precision-recall per class ({where})")
        return figures

    def tables(self) -> dict[str, tuple[list[str], list[list[Any]]]]:
        confusion = self.results["confusion"].cpu().double()
        true_positive, support, predicted = confusion.diag(), confusion.sum(1), confusion.sum(0)
        precision = torch.where(predicted > 0, true_positive / predicted.clamp(min=1), 0.0)
        recall = torch.where(support > 0, true_positive / support.clamp(min=1), 0.0)
        f1 = torch.where(precision + recall > 0, 2 * precision * recall / (precision + recall).clamp(min=1e-12), 0.0)
        rows = [[name, float(precision[i]), float(recall[i]), float(f1[i]), int(support[i])]
                for i, name in enumerate(self.class_names)]
        report = (["class", "precision", "recall", "f1", "support"], rows)
        samples = (
            ["image", "true", "predicted", "correct"],
            [[image, self.class_names[t], self.class_names[p], t == p] for image, t, p in self.samples],
        )
        return {"classification_report": report, "prediction_samples": samples}


class ClassificationTask(Task):
    """Cross-entropy classification over ``num_classes`` classes (set from the data)."""

    def __init__(self, monitor: str = "val/f1", mode: str = "max") -> None:
        super().__init__(monitor, mode)
        self.num_classes = 0
        self.class_names: list[str] = []
        self.val_metrics: Any = None

    def bind(self, info: Any) -> None:
        """Take the class count and names from the data's metadata; build the validation metrics once."""
        self.num_classes = info.num_classes
        self.class_names = list(info.class_names) or [str(i) for i in range(info.num_classes)]
        self.val_metrics = build_metrics(self.num_classes, curves=False), build_loss()

    def training_loss(self, model: nn.Module, batch: Any) -> torch.Tensor:
        inputs, targets = batch
        return F.cross_entropy(model(inputs), targets)

    def evaluation(self, stage: str = "val") -> ClassificationEvaluation:
        """Validation reuses its metrics every epoch; the test pass adds PR curves and keeps probabilities."""
        if stage == "test":
            return ClassificationEvaluation(build_metrics(self.num_classes, curves=True), build_loss(),
                                            self.class_names, test=True)
        return ClassificationEvaluation(*self.val_metrics, self.class_names)

