"""Metrics that accumulate on the device and combine DDP ranks exactly: a mean and a confusion matrix.

Each ``update`` adds to tensors on the batch's device (no host sync); ``compute`` sums the
states of every rank with one ``all_reduce`` (call it on all ranks) and reads the result once.
Sums of counts and losses are exact to combine, so N ranks that each see a share of the
examples give the numbers one process would. At test time the classification metrics also
keep the probabilities, gathered from every rank, for per-class precision-recall curves and
average precision (scikit-learn's definitions).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist


def _for_collective(tensor: torch.Tensor) -> torch.Tensor:
    """A copy on a device the process group can reduce (a rank that saw no batch has a CPU state)."""
    if dist.get_backend() == "nccl" and tensor.device.type != "cuda":
        return tensor.to(f"cuda:{torch.cuda.current_device()}")
    return tensor.clone()


def _sum_over_ranks(tensor: torch.Tensor) -> torch.Tensor:
    if dist.is_initialized():
        tensor = _for_collective(tensor)
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def _gather_rows(tensor: torch.Tensor) -> torch.Tensor:
    """Every rank's ``tensor`` (rows may differ in number between ranks), concatenated in rank order."""
    if not dist.is_initialized():
        return tensor
    tensor = _for_collective(tensor)
    count = torch.tensor([tensor.shape[0]], device=tensor.device)
    counts = [torch.zeros_like(count) for _ in range(dist.get_world_size())]
    dist.all_gather(counts, count)
    sizes = [int(size) for size in counts]
    padded = tensor.new_zeros((max(sizes), *tensor.shape[1:]))
    padded[: tensor.shape[0]] = tensor
    gathered = [torch.empty_like(padded) for _ in sizes]
    dist.all_gather(gathered, padded)
    return torch.cat([rows[:size] for rows, size in zip(gathered, sizes, strict=True)])


def _accumulator_dtype(device: torch.device) -> torch.dtype:
    return torch.float32 if device.type == "mps" else torch.float64  # MPS has no float64


class Mean:
    """The (weighted) mean of values over a pass, on the device; a NaN stays NaN (a diverged model shows it)."""

    def __init__(self) -> None:
        self.total: torch.Tensor | None = None  # [sum, weight], created on the first update's device

    def reset(self) -> None:
        self.total = None

    def update(self, values: torch.Tensor, weight: float | torch.Tensor | None = None) -> None:
        """Add ``values`` (each with weight 1), or one value standing for ``weight`` items (a batch mean)."""
        values = values.detach()
        if self.total is None:
            self.total = torch.zeros(2, dtype=_accumulator_dtype(values.device), device=values.device)
        if weight is None:
            self.total[0] += values.sum()
            self.total[1] += values.numel()
        else:
            self.total[0] += values.sum() * weight
            self.total[1] += weight

    def compute(self) -> float:
        """The mean over every rank (NaN when nothing was added)."""
        total = self.total if self.total is not None else torch.zeros(2, dtype=torch.float64)
        value_sum, weight = _sum_over_ranks(total).tolist()
        return value_sum / weight if weight else float("nan")


class ClassificationMetrics:
    """Accuracy, macro precision/recall/F1 and the confusion matrix of one pass over a split.

    Macro averages leave out classes that neither occur nor are predicted (as scikit-learn and
    torchmetrics do). With ``curves``, the probabilities are kept for per-class PR curves and
    average precision.
    """

    def __init__(self, num_classes: int, curves: bool = False) -> None:
        self.num_classes, self.curves = num_classes, curves
        self.reset()

    def reset(self) -> None:
        self.confusion: torch.Tensor | None = None  # rows: true class, columns: prediction
        self.probabilities: list[torch.Tensor] = []
        self.targets: list[torch.Tensor] = []

    def update(self, scores: torch.Tensor, targets: torch.Tensor) -> None:
        """``scores``: logits or probabilities, one row per example; ``targets``: class indices."""
        classes = self.num_classes
        if self.confusion is None:
            self.confusion = torch.zeros(classes * classes, dtype=torch.int64, device=scores.device)
        self.confusion += torch.bincount(targets * classes + scores.argmax(1), minlength=classes * classes)
        if self.curves:
            self.probabilities.append(scores.detach())
            self.targets.append(targets.detach())

    def compute(self) -> dict[str, Any]:
        """Scalars (``acc``, ``precision``, ``recall``, ``f1``), ``confusion`` and, with curves,
        ``pr_curve`` ((precisions, recalls, thresholds) per class) and ``average_precision``."""
        classes = self.num_classes
        confusion = self.confusion if self.confusion is not None else torch.zeros(classes * classes, dtype=torch.int64)
        confusion = _sum_over_ranks(confusion).cpu().view(classes, classes)
        results: dict[str, Any] = {"confusion": confusion, **scores_from_confusion(confusion)}
        if self.curves:
            device = confusion.device if not self.probabilities else self.probabilities[0].device
            probabilities = (
                torch.cat(self.probabilities) if self.probabilities else torch.zeros(0, classes, device=device)
            )
            targets = torch.cat(self.targets) if self.targets else torch.zeros(0, dtype=torch.int64, device=device)
            probabilities = _gather_rows(probabilities.float()).cpu()
            targets = _gather_rows(targets).cpu()
            curves = [precision_recall_curve(probabilities[:, label], targets == label) for label in range(classes)]
            results["pr_curve"] = tuple(list(parts) for parts in zip(*curves, strict=True))
            results["average_precision"] = torch.tensor(
                [average_precision(precision, recall) for precision, recall, _ in curves], dtype=torch.float64
            )
        return results


def per_class(confusion: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-class precision, recall, F1 (0 where undefined) and support from a confusion matrix
    (rows: true class)."""
    confusion = confusion.double()
    true_positive, support, predicted = confusion.diag(), confusion.sum(1), confusion.sum(0)
    return {
        "precision": torch.where(predicted > 0, true_positive / predicted.clamp(min=1), 0.0),
        "recall": torch.where(support > 0, true_positive / support.clamp(min=1), 0.0),
        "f1": torch.where(support + predicted > 0, 2 * true_positive / (support + predicted).clamp(min=1), 0.0),
        "support": support,
        "predicted": predicted,
    }


def scores_from_confusion(confusion: torch.Tensor) -> dict[str, float]:
    """Micro accuracy and macro precision, recall and F1 from a confusion matrix (rows: true class)."""
    classes = per_class(confusion)
    seen = (classes["support"] + classes["predicted"]) > 0
    count = max(1, int(seen.sum()))
    total = int(confusion.sum())
    scores = {"acc": int(confusion.diag().sum()) / total if total else 0.0}
    scores.update({name: float(classes[name][seen].sum()) / count for name in ("precision", "recall", "f1")})
    return scores


def precision_recall_curve(
    scores: torch.Tensor, positive: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One-vs-rest precision and recall at each distinct score threshold, as scikit-learn orders
    them (recall falling to 0, where precision is 1); thresholds rise."""
    order = torch.argsort(scores, descending=True, stable=True)
    scores, positive = scores[order], positive[order].double()
    last_of_threshold = torch.ones_like(scores, dtype=torch.bool)
    last_of_threshold[:-1] = scores[1:] != scores[:-1]
    true_positives = positive.cumsum(0)[last_of_threshold]
    false_positives = (1 - positive).cumsum(0)[last_of_threshold]
    thresholds = scores[last_of_threshold]
    precision = true_positives / (true_positives + false_positives).clamp(min=1)
    total = true_positives[-1] if len(true_positives) else torch.tensor(0.0, dtype=torch.float64)
    recall = true_positives / total if total > 0 else torch.full_like(true_positives, float("nan"))
    one, zero = torch.ones(1, dtype=torch.float64), torch.zeros(1, dtype=torch.float64)
    return torch.cat([precision.flip(0), one]), torch.cat([recall.flip(0), zero]), thresholds.flip(0)


def average_precision(precision: torch.Tensor, recall: torch.Tensor) -> float:
    """Sum over thresholds of (recall step) x precision; NaN for a class with no positive example."""
    if not torch.isfinite(recall).all():
        return float("nan")
    return float(-(recall[1:] - recall[:-1]).mul(precision[:-1]).sum())
