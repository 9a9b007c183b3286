"""Image classification: cross-entropy; accuracy, macro precision/recall/F1, confusion matrix, PR curves.

The metrics (``tasks/metrics.py``) accumulate on the device and sum over DDP ranks in
``compute``. Probabilities are kept only at test time, where the precision-recall curves need them.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from {{ cookiecutter.package_name }}.tasks.base import Evaluation, Task
from {{ cookiecutter.package_name }}.tasks.metrics import ClassificationMetrics, Mean, per_class

SCALARS = ("acc", "precision", "recall", "f1")


class ClassificationEvaluation(Evaluation):
    """Metrics of one split, the mean loss and (at test time) a few prediction samples.

    ``metrics`` and ``loss`` may be reused from an earlier pass: they are reset here.
    """

    def __init__(
        self,
        metrics: ClassificationMetrics,
        loss: Mean,
        class_names: list[str],
        test: bool = False,
        num_samples: int = 16,
    ) -> None:
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
        metrics["loss"] = self.loss.compute()
        return metrics

    def figures(self) -> dict[str, Any]:
        from {{ cookiecutter.package_name }}.tracking import plots

        confusion = self.results["confusion"].cpu()
        where = f"{self.split} split, {int(confusion.sum())} images"
        figures = {
            "confusion_matrix": plots.confusion_matrix_figure(
                confusion, self.class_names, f"confusion matrix ({where})"
            )
        }
        if "pr_curve" in self.results:
            precision, recall, _ = self.results["pr_curve"]
            curves = [(p.cpu(), r.cpu()) for p, r in zip(precision, recall, strict=True)]
            figures["pr_curves"] = plots.pr_curves_figure(
                curves,
                self.results["average_precision"].cpu(),
                self.class_names,
                f"precision-recall per class ({where})",
            )
        return figures

    def tables(self) -> dict[str, tuple[list[str], list[list[Any]]]]:
        classes = per_class(self.results["confusion"])
        rows = [
            [
                name,
                float(classes["precision"][i]),
                float(classes["recall"][i]),
                float(classes["f1"][i]),
                int(classes["support"][i]),
            ]
            for i, name in enumerate(self.class_names)
        ]
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
        self.val_metrics: tuple[ClassificationMetrics, Mean] | None = None

    def bind(self, info: Any) -> None:
        """Take the class count and names from the data's metadata; build the validation metrics once."""
        self.num_classes = info.num_classes
        self.class_names = list(info.class_names) or [str(i) for i in range(info.num_classes)]
        self.val_metrics = ClassificationMetrics(self.num_classes), Mean()

    def training_loss(self, model: nn.Module, batch: Any) -> torch.Tensor:
        inputs, targets = batch
        return F.cross_entropy(model(inputs), targets)

    def evaluation(self, stage: str = "val") -> ClassificationEvaluation:
        """Validation reuses its metrics every epoch; the test pass adds PR curves and keeps probabilities."""
        if stage == "test":
            return ClassificationEvaluation(
                ClassificationMetrics(self.num_classes, curves=True), Mean(), self.class_names, test=True
            )
        assert self.val_metrics is not None, "bind() the task first"
        return ClassificationEvaluation(*self.val_metrics, self.class_names)
