"""The training loop: fit, validate, test and the optimizer step (autocast, GradScaler, DDP or FSDP).

It knows no data set or model: the task gives loss and metrics, the data module the loaders.
Helpers with one job each: TrainingState (checkpoints), EarlyStopping, StopSignals
(preemption), write_report (figures, summary) and the Callback points for anything else.
"""

from __future__ import annotations

import contextlib
import logging
import math
import signal
import sys
from collections.abc import Callable, Iterable, Mapping
from itertools import islice
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from {{ cookiecutter.package_name }} import runtime
from {{ cookiecutter.package_name }}.data.common import DataModule, set_epoch
from {{ cookiecutter.package_name }}.errors import UserError, check_arguments
from {{ cookiecutter.package_name }}.tasks.base import Evaluation, Task
from {{ cookiecutter.package_name }}.tracking.base import LoggerCollection
from {{ cookiecutter.package_name }}.tracking.report import write_report
from {{ cookiecutter.package_name }}.training import distributed as dist
from {{ cookiecutter.package_name }}.training.callbacks import Callback
from {{ cookiecutter.package_name }}.training.checkpoint import load_weights, rng_states_of_all_ranks
from {{ cookiecutter.package_name }}.training.cluster import StopSignals, TrainingInterrupted
from {{ cookiecutter.package_name }}.training.compiling import compile_model, eager
from {{ cookiecutter.package_name }}.training.early_stopping import EarlyStopping
from {{ cookiecutter.package_name }}.training.fsdp import Sharding, is_sharded, match_forward_passes, without_samples
from {{ cookiecutter.package_name }}.training.loss_weighting import divide_gradients
from {{ cookiecutter.package_name }}.training.precision import Precision
from {{ cookiecutter.package_name }}.training.rules import OPTIMIZER, TRAINER
from {{ cookiecutter.package_name }}.training.sharded_checkpoint import SUFFIX, ShardedCheckpointer, sharded_path
from {{ cookiecutter.package_name }}.training.state import TrainingState
from {{ cookiecutter.package_name }}.utils import move_to, use_deterministic_algorithms

log = logging.getLogger(__name__)


class Trainer:
    """Fits a model to a task; every argument is a key of ``configs/trainer/default.yaml``."""

    def __init__(
        self,
        precision: Precision,
        output_dir: str | Path,
        loggers: LoggerCollection | None = None,
        callbacks: Mapping[str, Callback] | Iterable[Callback] | None = None,
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
        early_stopping: Mapping[str, Any] | None = None,
        distributed: bool = False,
        find_unused_parameters: bool = False,
        backend: str = "auto",
        fsdp: Mapping[str, Any] | None = None,
        compile: bool | Mapping[str, Any] = False,
    ) -> None:
        arguments = {
            "max_epochs": max_epochs,
            "max_steps": max_steps,
            "accumulate_grad_batches": accumulate_grad_batches,
            "gradient_clip_val": gradient_clip_val,
            "limit_train_batches": limit_train_batches,
            "limit_val_batches": limit_val_batches,
            "overfit_batches": overfit_batches,
            "log_every_n_steps": log_every_n_steps,
            "early_stopping": early_stopping or {},
            "deterministic": deterministic,
            "progress_bar": progress_bar,
            "distributed": distributed,
            "fsdp": fsdp or {},
            "compile": compile,
        }
        check_arguments("trainer", TRAINER, arguments)
        self.max_epochs, self.max_steps = max_epochs, max_steps
        self.accumulate, self.clip = accumulate_grad_batches, gradient_clip_val
        self.limit_train, self.limit_val, self.overfit_batches = limit_train_batches, limit_val_batches, overfit_batches
        self.log_every, self.progress_bar = log_every_n_steps, progress_bar
        self.early_stopping_options = dict(early_stopping or {})
        self.find_unused_parameters = find_unused_parameters
        self.compile, self.compiled = compile, False
        self.checkpoint_dir = Path(output_dir) / "checkpoints"
        self.loggers = loggers or LoggerCollection([])
        self.callbacks = list(callbacks.values() if isinstance(callbacks, Mapping) else callbacks or [])
        if deterministic:
            use_deterministic_algorithms()
        if runtime.launched_distributed() and not distributed:
            raise UserError(
                f"launched as {runtime.world_size()} processes (torchrun or srun) but trainer is not "
                "distributed: add trainer=ddp (or trainer=fsdp) to the command, or start one process."
            )
        self.device = runtime.choose_device(device)
        if self.device.type == "cuda" and self.device.index is not None:
            torch.cuda.set_device(self.device)  # this GPU's RNG state goes into checkpoints (training/checkpoint.py)
        if distributed:
            dist.init_distributed(self.device, backend=backend)
        self.is_main = runtime.is_main_process()
        self.precision = precision.resolve(self.device)
        self.signals = StopSignals()
        self.sharding = Sharding(**fsdp) if fsdp is not None else None  # FSDP2 and sharded (DCP) checkpoints
        self.checkpointer = ShardedCheckpointer(bool(fsdp and fsdp.get("async_save")))
        self.step_items: torch.Tensor | None = None  # answer tokens of this optimizer step's micro-batches so far

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
        check_arguments("optimizer", OPTIMIZER, getattr(optimizer_factory, "keywords", {}))  # a partial's arguments
        self.task, self.datamodule = task, datamodule
        runtime.reset_peak_memory(self.device)  # this fit's peak, not an earlier trial's in the same process
        model = runtime.place(model, self.device)
        # in place, before DDP wraps it or FSDP2 shards its blocks (FSDP's hooks then run inside each compiled block)
        self.compiled = compile_model(model, self.compile, self.device)
        if self.sharding:
            self.model = self.sharding.shard(model, self.device, self.precision.name)
        else:
            self.model = dist.wrap(model, self.device, self.find_unused_parameters)
        optimizer = optimizer_factory([p for p in self.model.parameters() if p.requires_grad])
        train_loader, val_loader = self._loaders()
        batches = self._num_batches(train_loader, self.limit_train)
        steps_per_epoch = math.ceil(batches / self.accumulate)
        total_steps = min(steps_per_epoch * self.max_epochs, self.max_steps if self.max_steps > 0 else math.inf)
        self.state = TrainingState(
            model=runtime.unwrap(self.model),
            optimizer=optimizer,
            scheduler=scheduler_factory(optimizer, total_steps=total_steps, steps_per_epoch=steps_per_epoch),
            scaler=self.precision.grad_scaler(),
            early_stopping=EarlyStopping(task.monitor, task.mode, **self.early_stopping_options),
            loss_sum=torch.zeros((), device=self.device),
            config=config or {},
        )
        if resume and self.sharding:
            self.state.restore_progress(self.checkpointer.restore(self.model, optimizer, Path(resume)), Path(resume))
        elif resume:
            self.state.restore(Path(resume))
        if self.is_main:
            self.loggers.start(self.state.config, {"run_ids": self.state.run_ids, "history": self.state.history})
        log.info(
            "Training on %s with %s: %d batches/epoch, up to %d epoch%s, %d steps.",
            self.device,
            self.precision,
            batches,
            self.max_epochs,
            "" if self.max_epochs == 1 else "s",
            total_steps,
        )
        self._emit("on_fit_start")
        with self.signals:
            while not self._finished():
                self.state.apply_pending_rng()
                self.train_epoch(train_loader, batches)
                self._end_epoch(self.validate(val_loader))
        self.checkpointer.finish()  # a background save is on disk before anything reads it
        self._emit("on_fit_end")
        return self.best_score

    def train_epoch(self, loader: Iterable[Any], batches: int) -> None:
        """Train on the rest of this epoch's ``batches``, from ``state.batches_done`` on."""
        state = self.state
        self.model.train()
        set_epoch(loader, state.epoch, start_batch=state.batches_done)
        self._emit("on_train_epoch_start")
        bar = tqdm(
            total=batches,
            initial=state.batches_done,
            desc=f"epoch {state.epoch}",
            leave=False,
            disable=not (self.progress_bar and self.is_main and sys.stderr.isatty()),
        )
        for index, batch in enumerate(islice(iter(loader), batches - state.batches_done), start=state.batches_done):
            last_of_step = (index + 1) % self.accumulate == 0 or index + 1 == batches
            loss = self._forward_backward(self._to_device(batch), sync=last_of_step)
            state.loss_sum += loss
            state.loss_count += 1
            state.batches_done = index + 1
            bar.update()
            if not last_of_step:
                continue
            self.optimizer_step()
            log_step = state.global_step % self.log_every == 0
            if log_step:
                self._log_step(loss, bar)
            self._emit("on_train_step_end", loss)
            if log_step or index + 1 == batches or not self.signals.several:  # under DDP: a collective
                self._stop_if_signalled(bar)
            if self._step_limit_reached():
                break
        bar.close()

    def optimizer_step(self) -> None:
        """Clip, step the optimizer (through the scaler) and the schedule, clear the gradients."""
        optimizer, scaler = self.state.optimizer, self.state.scaler
        if self.clip or self.step_items is not None:
            scaler.unscale_(optimizer)
        if self.step_items is not None:  # summed losses: per item over the whole step and every rank
            divide_gradients(self.model.parameters(), self.step_items)
            self.step_items = None
        if self.clip:
            nn.utils.clip_grad_norm_(self.model.parameters(), self.clip)
        if self.precision.optimizer_step(scaler, optimizer):  # fp16 skips steps with inf gradients: so does the LR
            self.state.scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        self.state.global_step += 1

    def validate(self, loader: Iterable[Any]) -> dict[str, float]:
        """This epoch's train loss and learning rate, and the task's metrics on ``loader`` (``val/*``)."""
        state = self.state
        train_loss = dist.all_reduce_mean(float(state.loss_sum) / max(1, state.loss_count), self.device)
        metrics = {"train/loss": train_loss, "train/lr": self._lr()}
        metrics.update({f"train/{key}": value for key, value in self.task.epoch_metrics().items()})
        with eager(self.compiled):  # only the training step compiles: no second compile for no-grad graphs
            evaluation = self._evaluate(loader, "val")
        metrics.update({f"val/{key}": value for key, value in evaluation.compute().items()})
        return metrics

    def test(self) -> dict[str, float]:
        """Evaluate the best checkpoint (or the current weights) on the test split; write figures and summary."""
        best = self.checkpoint_dir / "best.pt"
        dist.barrier()  # rank 0 has written best.pt before any rank loads it
        if self.sharding:
            best = sharded_path(self.checkpoint_dir, "best")
            if best.is_dir():
                self.checkpointer.restore_weights(self.model, best)
        elif best.is_file():
            runtime.unwrap(self.model).load_state_dict(load_weights(best))  # the weights only, to the CPU
        metrics: dict[str, float] = {}
        try:
            with eager(self.compiled):
                evaluation = self._evaluate(self.datamodule.loader("test"), "test")
            metrics = {f"test/{key}": value for key, value in evaluation.compute().items()}
            if is_sharded(self.model):
                without_samples(evaluation)
            if self.is_main:
                log.info("Test: %s", _format(metrics))
                write_report(
                    self.loggers, self.state.history, evaluation, self.summary(metrics), best, self.state.config
                )
        except KeyboardInterrupt:  # Ctrl+C while testing or plotting: the checkpoints are safe; keep the summary
            if self.is_main:
                self.loggers.log_summary({**self.summary(metrics), "stopped_in": "test"})
            raise TrainingInterrupted(
                "stopped by Ctrl+C during the final test or its figures (summary.json written, checkpoints kept)",
                signal.SIGINT,
            ) from None
        return metrics

    @property
    def best_score(self) -> float | None:
        return self.state.early_stopping.best_score

    def summary(self, test_metrics: dict[str, float] | None = None) -> dict[str, Any]:
        """What ``summary.json`` records: the run's outcome and where its checkpoints are."""
        return {
            "monitor": self.task.monitor,
            "mode": self.task.mode,
            **self.state.outcome(),
            "stopped_early": self._stopped_early(self.state.epoch),
            "test": test_metrics or {},
            "precision": self.precision.name,
            "peak_memory_bytes": runtime.peak_memory_bytes(self.device),
            # relative to the run folder, so that the folder can move
            "checkpoints": {
                name: f"{self.checkpoint_dir.name}/{name}{self.checkpoint_suffix}" for name in ("best", "last")
            },
        }

    # ----------------------------------------------------------------- inside the loop
    def _forward_backward(self, batch: Any, sync: bool) -> torch.Tensor:
        skip_sync = isinstance(self.model, DistributedDataParallel) and not sync
        if hasattr(self.model, "set_requires_gradient_sync"):  # FSDP: reduce-scatter once per optimizer step
            self.model.set_requires_gradient_sync(sync)  # type: ignore[operator]  # a method FSDP2 adds
        with self.model.no_sync() if skip_sync else contextlib.nullcontext():  # type: ignore[operator]
            with self.precision.autocast():
                loss = self.task.training_loss(self.model, batch)
            if isinstance(loss, tuple):  # (mean, items)
                loss, items = loss
                if self.accumulate > 1 or runtime.world_size() > 1:  # optimizer_step divides by the step's items
                    self.step_items = items if self.step_items is None else self.step_items + items
                    self.state.scaler.scale(loss * items).backward()
                    return loss.detach()
            self.state.scaler.scale(loss / self.accumulate if self.accumulate > 1 else loss).backward()
        return loss.detach()

    def _log_step(self, loss: torch.Tensor, bar: tqdm) -> None:
        """Read the loss back from the device and log it: the training path's one host sync (every
        ``log_every_n_steps`` steps, and none between). Under DDP the ranks also agree here on the loss being
        finite and on stop signals (:meth:`StopSignals.agreed`, also at an epoch's last step); one process
        reads its stop flag at every step without a sync."""
        value = loss.item()
        if dist.any_rank(not math.isfinite(value), self.device):  # under DDP every rank stops at this step
            raise UserError(
                f"the training loss became {value if not math.isfinite(value) else 'non-finite on another rank'}"
                f" by step {self.state.global_step}: "
                "lower optimizer.lr, keep gradient clipping on, or use precision=bf16/fp32."
            )
        bar.set_postfix(loss=f"{value:.4f}")
        if self.is_main:
            self.loggers.log_step({"train/loss": value, "train/lr": self._lr()}, self.state.global_step)

    def _end_epoch(self, metrics: dict[str, float]) -> None:
        state = self.state
        state.history.append({"epoch": state.epoch, **metrics})
        improved = state.early_stopping.update(metrics, state.epoch)
        self._emit("on_validation_end", metrics)
        if self.is_main:
            log.info("Epoch %d: %s", state.epoch, _format(metrics))
            self.loggers.log_epoch(metrics, state.epoch)
            if self._stopped_early(state.epoch + 1):
                log.info(
                    "Early stopping: %s did not improve for %d epochs.",
                    self.task.monitor,
                    state.early_stopping.bad_epochs,
                )
        state.next_epoch()
        self._save(["last", "best"] if improved else ["last"])

    @torch.no_grad()
    def _evaluate(self, loader: Iterable[Any], stage: str) -> Evaluation:
        batches = self._num_batches(loader, self.limit_val)
        checked = dist.min_over_ranks(batches, self.device) if stage == "val" else 0  # batches every rank has

        def stop_if_signalled(index: int) -> None:
            if index < checked:  # a stop signal during validation: save and stop before the epoch ends
                self._stop_if_signalled()

        def match_ranks(last: Any, done: int) -> None:  # FSDP: as many forward passes on every rank
            match_forward_passes(model, self.task, last, done, self.device)

        # no DDP collectives in the forward pass: ranks may hold one batch more than others
        model = runtime.unwrap(self.model)
        return evaluation_pass(
            model,
            self.task.evaluation(stage),
            loader,
            self.limit_val,
            self.device,
            self.precision,
            before_batch=stop_if_signalled,
            after_pass=match_ranks,
        )

    # ----------------------------------------------------------------- helpers
    def _to_device(self, batch: Any) -> Any:
        """The batch on the training device; loaders give CPU tensors, so on the CPU there is nothing to do."""
        return batch if self.device.type == "cpu" else move_to(batch, self.device)

    def _loaders(self) -> tuple[Any, Any]:
        train = self.datamodule.loader("train")
        if self.overfit_batches:
            fixed = list(islice(iter(train), self.overfit_batches))
            return fixed, fixed
        return train, self.datamodule.loader("val")

    def _stop_if_signalled(self, bar: tqdm | None = None) -> None:
        """After a stop signal (on any rank): save last.pt and stop."""
        if self.signals.agreed(self.device):
            if bar is not None:
                bar.close()
            self._save(["last"])
            self.checkpointer.finish()
            raise TrainingInterrupted(
                f"stopped by signal at epoch {self.state.epoch}, step {self.state.global_step}",
                signum=self.signals.received,
            )

    def _save(self, names: list[str]) -> None:
        rng_by_rank = rng_states_of_all_ranks()  # a collective: every rank's RNG, so that each resumes its own
        if self.sharding:  # every rank writes its shard
            paths = [sharded_path(self.checkpoint_dir, name) for name in names]
            progress = self.state.progress(self.loggers.run_ids(), rng_by_rank)
            self.checkpointer.save(self.model, self.state.optimizer, progress, paths)
            for path in paths if self.is_main else []:
                self._emit("on_checkpoint", path)
            return
        if not self.is_main:
            return
        paths = [self.checkpoint_dir / f"{name}.pt" for name in names]
        self.state.save(paths, self.loggers.run_ids(), rng_by_rank)
        for path in paths:
            self._emit("on_checkpoint", path)

    @property
    def checkpoint_suffix(self) -> str:
        """``.pt`` (one file), or ``.dcp`` (a folder of shards) under FSDP."""
        return SUFFIX if self.sharding else ".pt"

    def _emit(self, hook: str, *args: Any) -> None:
        for callback in self.callbacks:
            getattr(callback, hook)(self, *args)

    def _finished(self) -> bool:
        return (
            self.state.epoch >= self.max_epochs or self._step_limit_reached() or self.state.early_stopping.should_stop
        )

    def _stopped_early(self, epochs_done: int) -> bool:
        """Early stopping ended training before its epoch and step limits would have."""
        return (
            self.state.early_stopping.should_stop and epochs_done < self.max_epochs and not self._step_limit_reached()
        )

    def _step_limit_reached(self) -> bool:
        return 0 < self.max_steps <= self.state.global_step

    def _lr(self) -> float:
        return float(self.state.optimizer.param_groups[0]["lr"])

    @staticmethod
    def _num_batches(loader: Any, limit: int | None) -> int:
        return len(loader) if not limit else min(len(loader), limit)


@torch.no_grad()
def evaluation_pass(
    model: nn.Module,
    evaluation: Evaluation,
    loader: Any,
    limit: int | None,
    device: torch.device,
    precision: Precision,
    before_batch: Callable[[int], None] | None = None,
    after_pass: Callable[[Any, int], None] | None = None,
) -> Evaluation:
    """One pass over ``loader`` (at most ``limit`` batches) updating ``evaluation``: validation, the final test
    and ``evaluate`` all run this one, so they see the same batches under the same autocast. ``before_batch``
    gets each batch's index; ``after_pass`` gets the last batch (on the device, or None) and the batch count."""
    model.eval()
    set_epoch(loader, 0)
    evaluation.autocast = precision.autocast  # its generated samples or answers run under the same precision
    batches = len(loader) if not limit else min(len(loader), limit)
    batch = None
    for index, batch in enumerate(islice(iter(loader), batches)):
        if before_batch is not None:
            before_batch(index)
        batch = batch if device.type == "cpu" else move_to(batch, device)
        with precision.autocast():
            evaluation.update(model, batch)
    if after_pass is not None:
        with precision.autocast():
            after_pass(batch, batches)
    return evaluation


def _format(metrics: dict[str, float]) -> str:
    return ", ".join(f"{key}={value:.4f}" for key, value in metrics.items())
