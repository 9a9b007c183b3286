"""Early stopping: track the best value of the monitored metric and count epochs without progress."""

from __future__ import annotations

from typing import Any

from {{ cookiecutter.package_name }}.errors import UserError


class EarlyStopping:
    """Stops after ``patience`` epochs in which ``monitor`` did not improve by more than ``min_delta``.

    ``patience=None`` never stops, but the best value and epoch are still tracked: they pick
    ``best.pt``. ``mode`` is ``max`` (bigger is better) or ``min``.
    """

    def __init__(self, monitor: str, mode: str = "max", patience: int | None = None, min_delta: float = 0.0) -> None:
        self.monitor, self.sign = monitor, 1 if mode == "max" else -1
        self.patience, self.min_delta = patience, min_delta
        self.best_score: float | None = None
        self.best_epoch = -1
        self.bad_epochs = 0

    def update(self, metrics: dict[str, float], epoch: int) -> bool:
        """Record this epoch's ``metrics``; return whether the monitored value improved."""
        value = metrics.get(self.monitor)
        if value is None:
            raise UserError(
                f"monitored metric {self.monitor!r} is not among {sorted(metrics)}: set task.monitor to one of them."
            )
        if self.best_score is None or self.sign * (value - self.best_score) > self.min_delta:
            self.best_score, self.best_epoch, self.bad_epochs = value, epoch, 0
            return True
        self.bad_epochs += 1
        return False

    @property
    def should_stop(self) -> bool:
        return self.patience is not None and self.bad_epochs >= self.patience

    def state_dict(self) -> dict[str, Any]:
        return {"score": self.best_score, "epoch": self.best_epoch, "bad_epochs": self.bad_epochs}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best_score, self.best_epoch, self.bad_epochs = state["score"], state["epoch"], state["bad_epochs"]
