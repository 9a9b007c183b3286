"""Image classification: cross-entropy, accuracy and macro precision/recall/F1."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from {{ cookiecutter.package_name }}.tasks.base import Evaluation, Task
from {{ cookiecutter.package_name }}.tracking import plots
from {{ cookiecutter.package_name }}.training.distributed import all_reduce_sum


def metrics_from_confusion(confusion: torch.Tensor) -> dict[str, float]:
    """Accuracy and macro precision/recall/F1 over the classes seen in targets or predictions."""
    confusion = confusion.double()
    true_positive = confusion.diag()
    support, predicted = confusion.sum(1), confusion.sum(0)
    precision = torch.where(predicted > 0, true_positive / predicted.clamp(min=1), 0.0)
    recall = torch.where(support > 0, true_positive / support.clamp(min=1), 0.0)
    denominator = precision + recall
    f1 = torch.where(denominator > 0, 2 * precision * recall / denominator.clamp(min=1e-12), 0.0)
    seen = (support + predicted) > 0
    return {
        "acc": (true_positive.sum() / confusion.sum().clamp(min=1)).item(),
        "precision": precision[seen].mean().item(),
        "recall": recall[seen].mean().item(),
        "f1": f1[seen].mean().item(),
    }


class ClassificationEvaluation(Evaluation):
    """Keeps a confusion matrix, the loss sum, probabilities and a few samples."""

    def __init__(self, num_classes: int, class_names: list[str], num_samples: int = 16) -> None:
        self.num_classes, self.class_names, self.num_samples = num_classes, class_names, num_samples
        self.confusion = torch.zeros(num_classes, num_classes, dtype=torch.long)
        self.loss_sum = torch.zeros((), dtype=torch.float64)
        self.count = torch.zeros((), dtype=torch.long)
        self.probabilities: list[torch.Tensor] = []
        self.targets: list[torch.Tensor] = []
        self.samples: list[tuple[torch.Tensor, int, int]] = []

    @torch.no_grad()
    def update(self, model: nn.Module, batch: Any) -> None:
        inputs, targets = batch
        logits = model(inputs).float()
        loss = F.cross_entropy(logits, targets, reduction="sum")
        predictions = logits.argmax(1)
        self.confusion = self.confusion.to(logits.device)
        self.confusion += torch.bincount(
            targets * self.num_classes + predictions, minlength=self.num_classes**2
        ).view(self.num_classes, self.num_classes)
        self.loss_sum = self.loss_sum.to(logits.device) + loss.double()
        self.count = self.count.to(logits.device) + targets.numel()
        self.probabilities.append(logits.softmax(1).cpu())
        self.targets.append(targets.cpu())
        for image, target, prediction in zip(inputs, targets, predictions, strict=True):
            if len(self.samples) >= self.num_samples:
                break
            self.samples.append((image.detach().float().cpu(), int(target), int(prediction)))

    def sync(self) -> None:
        self.confusion = all_reduce_sum(self.confusion)
        self.loss_sum = all_reduce_sum(self.loss_sum)
        self.count = all_reduce_sum(self.count)

    def compute(self) -> dict[str, float]:
        metrics = metrics_from_confusion(self.confusion.cpu())
        metrics["loss"] = (self.loss_sum / self.count.clamp(min=1)).item()
        return metrics

    def _stacked(self) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.cat(self.probabilities), torch.cat(self.targets)

    def figures(self) -> dict[str, Any]:
        probabilities, targets = self._stacked()
        return {
            "confusion_matrix": plots.confusion_matrix_figure(self.confusion.cpu(), self.class_names),
            "pr_curves": plots.pr_curves_figure(probabilities, targets, self.class_names),
        }

    def tables(self) -> dict[str, tuple[list[str], list[list[Any]]]]:
        confusion = self.confusion.cpu().double()
        true_positive, support, predicted = confusion.diag(), confusion.sum(1), confusion.sum(0)
        rows = []
        for index, name in enumerate(self.class_names):
            precision = (true_positive[index] / predicted[index]).item() if predicted[index] else 0.0
            recall = (true_positive[index] / support[index]).item() if support[index] else 0.0
            f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
            rows.append([name, precision, recall, f1, int(support[index])])
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

    def bind(self, info: Any) -> None:
        """Take the class count and names from the data's metadata."""
        self.num_classes = info.num_classes
        self.class_names = list(info.class_names) or [str(i) for i in range(info.num_classes)]

    def training_loss(self, model: nn.Module, batch: Any) -> torch.Tensor:
        inputs, targets = batch
        return F.cross_entropy(model(inputs), targets)

    def evaluation(self) -> ClassificationEvaluation:
        return ClassificationEvaluation(self.num_classes, self.class_names)
