"""A plain-PyTorch training loop: autocast, GradScaler, DDP, resumable checkpoints.

The trainer knows nothing of the data set or the model: the task gives the loss and
the metrics, the data module gives the loaders, the loggers receive what happens.
"""

from __future__ import annotations

import contextlib
import logging
import math
import signal
import sys
import time
from collections.abc import Callable
from itertools import islice
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from {{ cookiecutter.package_name }}.data.common import DataModule, set_epoch
from {{ cookiecutter.package_name }}.errors import UserError
from {{ cookiecutter.package_name }}.tasks.base import Task
from {{ cookiecutter.package_name }}.tracking import plots
from {{ cookiecutter.package_name }}.tracking.base import LoggerCollection
from {{ cookiecutter.package_name }}.training import distributed as dist
from {{ cookiecutter.package_name }}.training import preemption
from {{ cookiecutter.package_name }}.training.checkpoint import (
    load_checkpoint,
    load_weights,
    rng_state_of_this_rank,
    rng_states_of_all_ranks,
    save_checkpoint,
    set_rng_state,
)
from {{ cookiecutter.package_name }}.training.precision import Precision
from {{ cookiecutter.package_name }}.utils import keeps_device, move_to, peak_memory_bytes, reset_peak_memory

log = logging.getLogger(__name__)


class TrainingInterrupted(Exception):
    """Raised after a stop signal, once ``last.pt`` holds the state to resume from."""

    def __init__(self, message: str, signum: int | None = None) -> None:
        super().__init__(message)
        self.signum = signum


class Trainer:
    """Fits a model to a task; see ``configs/trainer/default.yaml`` for every option."""

    def __init__(
        self,
        precision: Precision,
        output_dir: str | Path,
        loggers: LoggerCollection | None = None,
        max_epochs: int = 20,
        max_steps: int = -1,
        accumulate_grad_batches: int = 1,
        gradient_clip_val: float | None = 1.0,
        deterministic: bool = False,
        device: str = "auto",
        limit_train_batches: int | None = None,
        limit_val_batches: int | None = None,
        overfit_batches: int = 0,
        log_every_n_steps: int = 10,
        progress_bar: bool = True,
        early_stopping: dict[str, Any] | None = None,
        distributed: bool = False,
        find_unused_parameters: bool = False,
        backend: str = "auto",
    ) -> None:
        self.max_epochs, self.max_steps = max_epochs, max_steps
        self.accumulate = max(1, accumulate_grad_batches)
        self.clip = gradient_clip_val
        self.deterministic = deterministic
        self.limit_train, self.limit_val = limit_train_batches, limit_val_batches
        self.overfit_batches = overfit_batches
        self.log_every = max(1, log_every_n_steps)
        self.progress_bar = progress_bar
        self.patience = (early_stopping or {}).get("patience")
        self.min_delta = (early_stopping or {}).get("min_delta", 0.0)
        self.find_unused_parameters = find_unused_parameters
        self.output_dir = Path(output_dir)
        self.checkpoint_dir = self.output_dir / "checkpoints"
        self.loggers = loggers or LoggerCollection([])

        if dist.launched_distributed() and not distributed:
            raise UserError("launched by torchrun but trainer is not distributed: add trainer=ddp to the command.")
        self.device = dist.resolve_device(device)
        if distributed:
            dist.init_distributed(self.device, backend=backend)
        self.is_main = dist.is_main_process()
        self.precision = precision.resolve(self.device)

        self.epoch = self.global_step = self.batches_done = 0
        self.epoch_loss_sum, self.epoch_loss_count = 0.0, 0
        self.best_score: float | None = None
        self.best_epoch = -1
        self.bad_epochs = 0
        self.history: list[dict[str, Any]] = []
        self.stopped_early = False
        self._stop_signal: int | None = None

    # ----------------------------------------------------------------- public API
    def fit(
        self,
        model: nn.Module,
        task: Task,
        datamodule: DataModule,
        optimizer_factory: Callable[..., torch.optim.Optimizer],
        scheduler_factory: Callable[..., Any],
        config: dict[str, Any] | None = None,
        resume: str | Path | None = None,
    ) -> float | None:
        """Train until max_epochs, max_steps or early stopping; return the best monitored value."""
        self.task, self.datamodule, self.config = task, datamodule, config or {}
        reset_peak_memory(self.device)
        self.model = self._place(model)
        self.optimizer = optimizer_factory([p for p in self.model.parameters() if p.requires_grad])
        train_loader, val_loader = self._loaders()
        batches = self._num_batches(train_loader, self.limit_train)
        steps_per_epoch = math.ceil(batches / self.accumulate)
        total_steps = steps_per_epoch * self.max_epochs
        if self.max_steps > 0:
            total_steps = min(total_steps, self.max_steps)
        self.scheduler = scheduler_factory(self.optimizer, total_steps=total_steps, steps_per_epoch=steps_per_epoch)
        self.scaler = self.precision.grad_scaler()

        pending_rng = self._restore(resume) if resume else None
        if self.is_main:
            self.loggers.start(self.config, {"run_ids": getattr(self, "restored_run_ids", {}),
                                             "history": self.history})
        log.info("Training on %s with %s: %d batches/epoch, up to %d epochs, %d steps.",
                 self.device, self.precision, batches, self.max_epochs, total_steps)
        with self._signals_caught():
            while self.epoch < self.max_epochs and not self._step_limit_reached() and not self.stopped_early:
                if pending_rng is not None:
                    set_rng_state(pending_rng)
                    pending_rng = None
                self._train_epoch(train_loader, batches)
                self._end_epoch(val_loader)
        return self.best_score

    def test(self) -> dict[str, float]:
        """Evaluate the best checkpoint (or the current weights) on the test split; write figures and summary."""
        best = self.checkpoint_dir / "best.pt"
        dist.barrier()  # rank 0 has written best.pt before any rank loads it
        if best.is_file():
            self._unwrap().load_state_dict(load_weights(best))
        evaluation = self._evaluate(self.datamodule.loader("test"), self.limit_val)
        metrics = {f"test/{key}": value for key, value in evaluation.compute().items()}
        if self.is_main:
            log.info("Test: %s", _format(metrics))
            self._log_figures(evaluation)
            self.loggers.log_summary(self.summary(metrics))
            if best.is_file():
                self.loggers.log_checkpoint(best, {"metric": self.task.monitor, "value": self.best_score,
                                                   "epoch": self.best_epoch, "config": self.config})
        return metrics

    def summary(self, test_metrics: dict[str, float] | None = None) -> dict[str, Any]:
        return {
            "monitor": self.task.monitor,
            "mode": self.task.mode,
            "best": {"value": self.best_score, "epoch": self.best_epoch},
            "final": self.history[-1] if self.history else {},
            "test": test_metrics or {},
            "epochs": self.epoch,
            "global_step": self.global_step,
            "stopped_early": self.stopped_early,
            "precision": self.precision.name,
            "peak_memory_bytes": peak_memory_bytes(self.device),
            "checkpoints": {name: str(self.checkpoint_dir / f"{name}.pt") for name in ("best", "last")},
        }

    # ----------------------------------------------------------------- the loop
    def _train_epoch(self, loader: torch.utils.data.DataLoader, batches: int) -> None:
        self.model.train()
        set_epoch(loader, self.epoch, start_batch=self.batches_done)
        remaining = batches - self.batches_done
        bar = tqdm(total=batches, initial=self.batches_done, desc=f"epoch {self.epoch}", leave=False,
                   disable=not (self.progress_bar and self.is_main and sys.stderr.isatty()))
        for index, batch in enumerate(islice(iter(loader), remaining), start=self.batches_done):
            last_of_step = (index + 1) % self.accumulate == 0 or index + 1 == batches
            loss = self._forward_backward(move_to(batch, self.device), sync=last_of_step)
            self.epoch_loss_sum += loss
            self.epoch_loss_count += 1
            self.batches_done = index + 1
            bar.update()
            if not last_of_step:
                continue
            self._optimizer_step()
            if self.global_step % self.log_every == 0:
                bar.set_postfix(loss=f"{loss:.4f}")
                if self.is_main:
                    self.loggers.log_step({"train/loss": loss, "train/lr": self._lr()}, self.global_step)
            self._stop_if_signalled(bar)
            if self._step_limit_reached():
                break
        bar.close()

    def _forward_backward(self, batch: Any, sync: bool) -> float:
        skip_sync = isinstance(self.model, DistributedDataParallel) and not sync
        context = self.model.no_sync() if skip_sync else contextlib.nullcontext()
        with context:
            with self.precision.autocast():
                loss = self.task.training_loss(self.model, batch)
            value = loss.item()
            if not math.isfinite(value):
                raise UserError(f"the training loss became {value} at step {self.global_step}: "
                                "lower optimizer.lr, keep gradient clipping on, or use precision=bf16/fp32.")
            self.scaler.scale(loss / self.accumulate if self.accumulate > 1 else loss).backward()
        return value

    def _optimizer_step(self) -> None:
        if self.clip:
            self.scaler.unscale_(self.optimizer)
            nn.utils.clip_grad_norm_(self.model.parameters(), self.clip)
        if self.precision.optimizer_step(self.scaler, self.optimizer):  # fp16 skips steps with inf gradients
            self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.global_step += 1

    def _end_epoch(self, val_loader: Any) -> None:
        train_loss = dist.all_reduce_mean(self.epoch_loss_sum / max(1, self.epoch_loss_count), self.device)
        metrics = {"train/loss": train_loss, "train/lr": self._lr()}
        evaluation = self._evaluate(val_loader, self.limit_val)
        metrics.update({f"val/{key}": value for key, value in evaluation.compute().items()})
        self.history.append({"epoch": self.epoch, **metrics})
        improved = self._update_best(metrics)
        self.epoch += 1
        self.batches_done, self.epoch_loss_sum, self.epoch_loss_count = 0, 0.0, 0
        if self.is_main:
            log.info("Epoch %d: %s", self.epoch - 1, _format(metrics))
            self.loggers.log_epoch(metrics, self.epoch - 1)
        if improved:
            self._save("best")
        self._save("last")
        if self.patience is not None and self.bad_epochs >= self.patience:
            self.stopped_early = True
            log.info("Early stopping: %s did not improve for %d epochs.", self.task.monitor, self.bad_epochs)

    @torch.no_grad()
    def _evaluate(self, loader: Any, limit: int | None) -> Any:
        self.model.eval()
        evaluation = self.task.evaluation()
        set_epoch(loader, 0)
        for batch in islice(iter(loader), self._num_batches(loader, limit)):
            self._stop_if_signalled()
            with self.precision.autocast():
                evaluation.update(self.model, move_to(batch, self.device))
        evaluation.sync()
        return evaluation

    def _update_best(self, metrics: dict[str, float]) -> bool:
        value = metrics.get(self.task.monitor)
        if value is None:
            raise UserError(f"monitored metric {self.task.monitor!r} is not among {sorted(metrics)}: "
                            "set task.monitor to one of them.")
        sign = 1 if self.task.mode == "max" else -1
        if self.best_score is None or sign * (value - self.best_score) > self.min_delta:
            self.best_score, self.best_epoch, self.bad_epochs = value, self.epoch, 0
            return True
        self.bad_epochs += 1
        return False

    # ----------------------------------------------------------------- helpers
    def _place(self, model: nn.Module) -> nn.Module:
        if not keeps_device(model):  # quantized or device-mapped models stay where their loader put them
            model = model.to(self.device)
        if torch.distributed.is_initialized():
            device_ids = [self.device.index] if self.device.type == "cuda" else None
            model = DistributedDataParallel(model, device_ids=device_ids,
                                            find_unused_parameters=self.find_unused_parameters)
        return model

    def _unwrap(self) -> nn.Module:
        return self.model.module if isinstance(self.model, DistributedDataParallel) else self.model

    def _loaders(self) -> tuple[Any, Any]:
        train = self.datamodule.loader("train")
        if self.overfit_batches:
            fixed = list(islice(iter(train), self.overfit_batches))
            return fixed, fixed
        return train, self.datamodule.loader("val")

    @staticmethod
    def _num_batches(loader: Any, limit: int | None) -> int:
        return len(loader) if not limit else min(len(loader), limit)

    def _step_limit_reached(self) -> bool:
        return 0 < self.max_steps <= self.global_step

    def _lr(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])

    # ----------------------------------------------------------------- checkpoints
    def _stop_if_signalled(self, bar: Any = None) -> None:
        """After a stop signal on any rank: save last.pt and raise :class:`TrainingInterrupted`."""
        if dist.any_rank(self._stop_signal is not None, self.device):
            if bar is not None:
                bar.close()
            self._save("last")
            raise TrainingInterrupted(f"stopped by signal at epoch {self.epoch}, step {self.global_step}",
                                      signum=self._stop_signal)

    def _save(self, name: str) -> None:
        rng_by_rank = rng_states_of_all_ranks()  # a collective: every rank's RNG, so each resumes its own
        if not self.is_main:
            return
        state = {
            "model": self._unwrap().state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "epoch": self.epoch,
            "global_step": self.global_step,
            "batches_done": self.batches_done,
            "epoch_loss": [self.epoch_loss_sum, self.epoch_loss_count],
            "best": {"score": self.best_score, "epoch": self.best_epoch, "bad_epochs": self.bad_epochs},
            "history": self.history,
            "rng": rng_by_rank[0],
            "rng_by_rank": rng_by_rank,
            "config": self.config,
            "run_ids": self.loggers.run_ids(),
            "saved_at": time.time(),
        }
        save_checkpoint(state, self.checkpoint_dir / f"{name}.pt")

    def _restore(self, path: str | Path) -> dict[str, Any]:
        state = load_checkpoint(Path(path))  # to the CPU; load_state_dict moves each tensor to its parameter
        self._unwrap().load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        self.epoch, self.global_step = state["epoch"], state["global_step"]
        self.batches_done = state["batches_done"]
        self.epoch_loss_sum, self.epoch_loss_count = state["epoch_loss"]
        self.best_score, self.best_epoch = state["best"]["score"], state["best"]["epoch"]
        self.bad_epochs = state["best"]["bad_epochs"]
        self.history = list(state["history"])
        self.restored_run_ids = dict(state.get("run_ids", {}))
        log.info("Resumed from %s at epoch %d, step %d.", path, self.epoch, self.global_step)
        return rng_state_of_this_rank(state)

    # ----------------------------------------------------------------- signals and figures
    def _signals_caught(self) -> _SignalCatcher:
        return _SignalCatcher(self)

    def _log_figures(self, evaluation: Any) -> None:
        if self.history:
            self.loggers.log_figure("learning_curves", plots.learning_curves_figure(self.history))
        for name, figure in evaluation.figures().items():
            self.loggers.log_figure(name, figure)
        for name, table in evaluation.tables().items():
            self.loggers.log_table(name, table)


class _SignalCatcher:
    """Turns SIGTERM/SIGINT into a flag the loop checks at the next step boundary."""

    SIGNALS = preemption.stop_signals()

    def __init__(self, trainer: Trainer) -> None:
        self.trainer = trainer
        self.previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: Any) -> None:
        log.warning("Received %s: saving last.pt at the next step, then stopping.", signal.Signals(signum).name)
        self.trainer._stop_signal = preemption.next_stop(self.trainer._stop_signal, signum)

    def __enter__(self) -> _SignalCatcher:
        for signum in self.SIGNALS:
            try:
                self.previous[signum] = signal.signal(signum, self._handle)
            except ValueError:  # not the main thread
                pass
        return self

    def __exit__(self, *exc: Any) -> None:
        for signum, handler in self.previous.items():
            signal.signal(signum, handler)


def _format(metrics: dict[str, float]) -> str:
    return ", ".join(f"{key}={value:.4f}" for key, value in metrics.items())
