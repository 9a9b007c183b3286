"""Steady-state training steps/s of the rendered trainer divided by a bare PyTorch loop.

Same MLP, digits data, batch size, optimizer (AdamW), cosine schedule, gradient clipping
and precision, measured side by side (interleaved) in one run. The trainer's training
epochs are timed; its per-epoch validation and checkpoint writing are reported apart.
Goal: >= 0.95 (Lightning's Trainer reaches about 0.5 of a bare loop on this model).
"""

from __future__ import annotations

import functools
import tempfile
import time

import torch
import torch.nn.functional as F

from common import interleaved, render, report

EPOCHS = 8
REPEATS = 5

render(logger="csv")
from my_experiment.data.digits import DigitsDataModule  # noqa: E402
from my_experiment.models.mlp import MLP  # noqa: E402
from my_experiment.tasks.classification import ClassificationTask  # noqa: E402
from my_experiment.tracking.base import LoggerCollection  # noqa: E402
from my_experiment.training.precision import Precision  # noqa: E402
from my_experiment.training.schedulers import cosine  # noqa: E402
from my_experiment.training.trainer import Trainer  # noqa: E402

torch.set_num_threads(1)
DATA = DigitsDataModule(batch_size=64, num_workers=0, seed=0)
INFO = DATA.setup()
OPTIMIZER = functools.partial(torch.optim.AdamW, lr=3e-3, weight_decay=0.01)


def fresh_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return MLP(INFO, hidden_dims=(128, 64), dropout=0.1)


def bare_loop(precision: str) -> float:
    """Training steps/s of a hand-written loop (epochs after the first)."""
    model = fresh_model()
    optimizer = OPTIMIZER(model.parameters())
    loader = torch.utils.data.DataLoader(DATA.train_set, batch_size=64, shuffle=True)
    scheduler = cosine(optimizer, total_steps=EPOCHS * len(loader), steps_per_epoch=len(loader))
    dtype = {"bf16": torch.bfloat16, "fp32": None}[precision]
    steps, elapsed = 0, 0.0
    for epoch in range(EPOCHS):
        start = time.perf_counter()
        model.train()
        for inputs, targets in loader:
            with torch.autocast("cpu", dtype=dtype, enabled=dtype is not None):
                loss = F.cross_entropy(model(inputs), targets)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            scheduler.step()
            loss.item()
        if epoch:
            elapsed += time.perf_counter() - start
            steps += len(loader)
    return steps / elapsed


def rendered_trainer(precision: str, extra: dict[str, float]) -> float:
    """Training steps/s of the rendered Trainer (epochs after the first)."""
    with tempfile.TemporaryDirectory() as output:
        trainer = Trainer(precision=Precision(precision), output_dir=output, loggers=LoggerCollection([]),
                          max_epochs=EPOCHS, gradient_clip_val=1.0, progress_bar=False,
                          early_stopping={"patience": None}, device="cpu")
        epoch_times: list[float] = []
        train_epoch = trainer._train_epoch

        def timed_epoch(*args, **kwargs):
            start = time.perf_counter()
            train_epoch(*args, **kwargs)
            epoch_times.append(time.perf_counter() - start)

        trainer._train_epoch = timed_epoch
        task = ClassificationTask()
        task.bind(INFO)
        start = time.perf_counter()
        trainer.fit(fresh_model(), task, DATA, OPTIMIZER, functools.partial(cosine))
        whole = time.perf_counter() - start
        steps_per_epoch = trainer.global_step / EPOCHS
        extra.setdefault("fit_s", []).append(whole)
        extra.setdefault("train_s", []).append(sum(epoch_times))
        return steps_per_epoch * (EPOCHS - 1) / sum(epoch_times[1:])


def main() -> None:
    extra: dict[str, list[float]] = {}
    ratios = {}
    from my_experiment.training.precision import cpu_has_native_bf16

    precisions = ("bf16", "fp32") if cpu_has_native_bf16() else ("fp32",)
    if "bf16" not in precisions:
        print("bf16 skipped: this CPU has no native bfloat16, so the trainer runs fp32 (its fallback)")
    for precision in precisions:
        medians = interleaved({"bare": lambda p=precision: bare_loop(p),
                               "trainer": lambda p=precision: rendered_trainer(p, extra)}, repeats=REPEATS)
        ratios[precision] = medians["trainer"] / medians["bare"]
        print(f"{precision}: bare {medians['bare']:.1f} steps/s, trainer {medians['trainer']:.1f} steps/s, "
              f"ratio {ratios[precision]:.3f}")
    fit, train = sum(extra["fit_s"]), sum(extra["train_s"])
    print(f"share of fit() spent outside training epochs (validation, checkpoints, logging): {(fit - train) / fit:.2f}")
    report("trainer_vs_bare_steps_ratio", min(ratios.values()), "goal >= 0.95")


if __name__ == "__main__":
    main()
