"""The rendered trainer against a bare PyTorch loop, measured side by side in one run.

1. Steady-state training steps/s of the trainer divided by a bare loop (same MLP, digits,
   batch size, AdamW, cosine schedule, clipping and precision), fp32 and, where the CPU
   runs it natively, bf16: the median of REPEATS ratios, each from a trainer run and a bare
   run made back to back (who goes first alternates), after one warm-up pair; a run's rate is
   its median epoch's, so one epoch slowed by another job does not set it. Goals: >= 0.97 (fp32), >= 0.95 (bf16).
2. Host syncs per optimizer step on the training path: calls of ``Tensor.item``, ``.cpu``,
   ``.tolist``, ``float()``/``int()``/``bool()`` on a tensor made by the trainer, the task or
   ``runtime`` while training epochs run (the sampler's ``randperm(...).tolist()`` in ``data/``
   works on CPU index tensors and never waits for a device). Goal: <= 1 / trainer.log_every_n_steps.
3. The share of ``fit()`` (``on_fit_start`` to ``on_fit_end``) spent outside training
   epochs (validation, checkpoints, logging) in the default digits run
   (``python -m my_experiment.train logger=csv``, in-process). Goal: <= 0.10.

Every timing comes from the trainer's public callbacks; nothing private is patched.
"""

from __future__ import annotations

import functools
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from common import paired_ratios, render, report

EPOCHS = 20  # about a second a run: long enough that timer and scheduler noise stay small
REPEATS = 9  # odd: the median is one measured ratio
LOG_EVERY = 10

PROJECT = render(logger="csv")
PACKAGE_DIR = str(PROJECT / "src" / "my_experiment")
DATA_DIR = str(PROJECT / "src" / "my_experiment" / "data")
sys.path.insert(0, str(PROJECT / "tests"))
from my_experiment.data.common import set_epoch  # noqa: E402
from my_experiment.data.digits import DigitsDataModule  # noqa: E402
from my_experiment.models.mlp import MLP  # noqa: E402
from my_experiment.runtime import cpu_has_native_bf16  # noqa: E402
from my_experiment.tasks.classification import ClassificationTask  # noqa: E402
from my_experiment.tracking.base import LoggerCollection  # noqa: E402
from my_experiment.training.callbacks import Callback  # noqa: E402
from my_experiment.training.precision import Precision  # noqa: E402
from my_experiment.training.schedulers import cosine  # noqa: E402
from my_experiment.training.trainer import Trainer  # noqa: E402

torch.set_num_threads(1)
DATA = DigitsDataModule(batch_size=64, num_workers=0, seed=0)
INFO = DATA.setup()
OPTIMIZER = functools.partial(torch.optim.AdamW, lr=3e-3, weight_decay=0.01)


class EpochClock(Callback):
    """Times each training epoch (its start to its last step) and the whole of fit()."""

    made: list[EpochClock] = []  # instances built by Hydra from the command line

    def __init__(self) -> None:
        self.made.append(self)
        self.epoch_seconds: list[float] = []
        self.fit_seconds = 0.0
        self.started = self.last_step = self.fit_started = 0.0

    def on_fit_start(self, trainer: Trainer) -> None:
        self.fit_started = time.perf_counter()

    def on_train_epoch_start(self, trainer: Trainer) -> None:
        self.started = time.perf_counter()

    def on_train_step_end(self, trainer: Trainer, loss: torch.Tensor) -> None:
        self.last_step = time.perf_counter()

    def on_validation_end(self, trainer: Trainer, metrics: dict[str, float]) -> None:
        self.epoch_seconds.append(self.last_step - self.started)

    def on_fit_end(self, trainer: Trainer) -> None:
        self.fit_seconds = time.perf_counter() - self.fit_started


class SyncCounter(Callback):
    """Counts host syncs made by the project's code while training epochs run."""

    METHODS = ("item", "cpu", "tolist", "__float__", "__int__", "__bool__")

    def __init__(self) -> None:
        self.counting = False
        self.calls = self.calls_by_last_step = 0
        self.steps = 0
        self.originals = {name: getattr(torch.Tensor, name) for name in self.METHODS}
        for name, original in self.originals.items():
            setattr(torch.Tensor, name, self._counted(original))

    def _counted(self, original):
        def method(tensor, *args, **kwargs):
            caller = sys._getframe(1).f_code.co_filename
            if self.counting and caller.startswith(PACKAGE_DIR) and not caller.startswith(DATA_DIR):
                self.calls += 1
            return original(tensor, *args, **kwargs)
        return method

    def restore(self) -> None:
        for name, original in self.originals.items():
            setattr(torch.Tensor, name, original)

    def on_train_epoch_start(self, trainer: Trainer) -> None:
        self.counting = True

    def on_train_step_end(self, trainer: Trainer, loss: torch.Tensor) -> None:
        self.steps += 1
        self.calls_by_last_step = self.calls  # what validation reads later is not the training path

    def on_validation_end(self, trainer: Trainer, metrics: dict[str, float]) -> None:
        self.counting = False
        self.calls = self.calls_by_last_step


def fresh_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return MLP(INFO, hidden_dims=(128, 64), dropout=0.1)


def bare_loop(precision: str) -> float:
    """Training steps/s of a hand-written loop (its median epoch after the first)."""
    model = fresh_model()
    optimizer = OPTIMIZER(model.parameters())
    loader = DATA.loader("train")  # the same batches, loaded the same way, as the trainer's
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=EPOCHS * len(loader))
    dtype = {"bf16": torch.bfloat16, "fp32": None}[precision]
    seconds = []
    for epoch in range(EPOCHS):
        start = time.perf_counter()
        model.train()
        set_epoch(loader, epoch)
        for inputs, targets in loader:
            with torch.autocast("cpu", dtype=dtype, enabled=dtype is not None):
                loss = F.cross_entropy(model(inputs), targets)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            scheduler.step()
        if epoch:
            seconds.append(time.perf_counter() - start)
    return len(loader) / statistics.median(seconds)


def rendered_trainer(precision: str, *callbacks: Callback) -> float:
    """Training steps/s of the rendered Trainer (its median epoch after the first)."""
    clock = EpochClock()
    with tempfile.TemporaryDirectory() as output:
        trainer = Trainer(precision=Precision(precision), output_dir=output, loggers=LoggerCollection([]),
                          callbacks=[clock, *callbacks], max_epochs=EPOCHS, gradient_clip_val=1.0,
                          progress_bar=False, log_every_n_steps=LOG_EVERY, early_stopping={"patience": None},
                          device="cpu")
        task = ClassificationTask()
        task.bind(INFO)
        trainer.fit(fresh_model(), task, DATA, OPTIMIZER, functools.partial(cosine))
        steps_per_epoch = trainer.state.global_step / EPOCHS
    return steps_per_epoch / statistics.median(clock.epoch_seconds[1:])


def default_run_share() -> tuple[float, int]:
    """Share of fit() outside training epochs in the default digits run, and its epoch count."""
    from my_experiment.train import train

    from conftest import compose_config

    with tempfile.TemporaryDirectory() as output:
        train(compose_config(["logger=csv", "trainer.progress_bar=false",
                              "+trainer.callbacks.clock._target_=__main__.EpochClock"], output_dir=Path(output)))
    clock = EpochClock.made[-1]
    return 1 - sum(clock.epoch_seconds) / clock.fit_seconds, len(clock.epoch_seconds)


def main() -> None:
    precisions = ("fp32", "bf16") if cpu_has_native_bf16() else ("fp32",)
    if "bf16" not in precisions:
        print("bf16 skipped: this CPU has no native bfloat16, so the trainer runs fp32 (its fallback)")
    ratios = {}
    for precision in precisions:
        pairs = paired_ratios(lambda p=precision: rendered_trainer(p), lambda p=precision: bare_loop(p), REPEATS,
                              warmup=1)
        ratios[precision] = statistics.median(pairs)
        print(f"{precision}: trainer/bare per pair {' '.join(f'{ratio:.3f}' for ratio in pairs)} "
              f"(median {ratios[precision]:.3f}, {REPEATS} interleaved pairs)")

    counter = SyncCounter()
    try:
        rendered_trainer("fp32", counter)
    finally:
        counter.restore()
    syncs = counter.calls / counter.steps
    print(f"host syncs on the training path: {counter.calls} in {counter.steps} optimizer steps "
          f"(log_every_n_steps={LOG_EVERY})")

    share, epochs = default_run_share()
    print(f"default digits run: {epochs} epochs")
    report("trainer_vs_bare_steps_ratio_fp32", ratios["fp32"], "goal >= 0.97; median of interleaved pairs")
    if "bf16" in ratios:
        report("trainer_vs_bare_steps_ratio_bf16", ratios["bf16"], "goal >= 0.95; median of interleaved pairs")
    report("host_syncs_per_optimizer_step", syncs, f"goal <= {1 / LOG_EVERY:.2f}")
    report("fit_share_outside_training_epochs", share, "goal <= 0.10")


if __name__ == "__main__":
    main()
