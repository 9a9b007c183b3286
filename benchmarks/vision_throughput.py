"""Training throughput of the rendered trainer over a bare PyTorch loop (EfficientNet-B0, 32x32, CPU).

Renders the template, then trains two copies of the same model on the same images:
one with the rendered ``Trainer``, one with a bare loop. Both do the same work per
step: fp32 forward and backward, gradient clipping at 1.0, AdamW, a scheduler step.
The two run in lockstep (after every trainer step, one bare step), so a busy, shared
machine slows both alike; each step's time covers loading, forward, backward and the
update (not validation or checkpoints). Images/s is the batch size over the median
step time of each loop; the trainer is timed through its public callbacks. Ends with
``vision_trainer_vs_bare_loop=<ratio> (goal >= 0.95)``.
"""

from __future__ import annotations

import logging
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import torch
from cookiecutter.main import cookiecutter

TEMPLATE = Path(__file__).resolve().parents[1]
BATCH, BATCHES, SIZE, WARMUP = 32, 20, 32, 2


def render(base: Path) -> Path:
    return Path(cookiecutter(str(TEMPLATE), no_input=True, output_dir=str(base),
                             extra_context={"task": "image-classification", "logger": "csv"}))


def bare_steps(model: torch.nn.Module, loader: torch.utils.data.DataLoader, lr: float) -> Iterator[float]:
    """A plain training loop that yields the seconds each step took, forever."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, BATCHES)
    model.train()
    iterator = iter(loader)
    while True:
        started = time.perf_counter()
        batch = next(iterator, None)
        if batch is None:
            iterator = iter(loader)
            batch = next(iterator)
        images, labels = batch
        loss = torch.nn.functional.cross_entropy(model(images), labels)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        scheduler.step()
        yield time.perf_counter() - started


def lockstep_with(bare: Iterator[float]) -> object:
    """A trainer callback that times each trainer step, then runs one bare-loop step before the next."""
    from my_experiment.training.callbacks import Callback

    class Lockstep(Callback):
        def __init__(self) -> None:
            self.mark = 0.0
            self.trainer_times: list[float] = []
            self.bare_times: list[float] = []

        def on_train_epoch_start(self, trainer: object) -> None:
            self.mark = time.perf_counter()

        def on_train_step_end(self, trainer: object, loss: torch.Tensor) -> None:
            self.trainer_times.append(time.perf_counter() - self.mark)
            self.bare_times.append(next(bare))
            self.mark = time.perf_counter()

    return Lockstep()


def main() -> int:
    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory() as tmp:
        project = render(Path(tmp))
        sys.path[:0] = [str(project / "src"), str(project / "tests")]
        from hydra.utils import instantiate
        from my_experiment.train import build_loggers
        from torch.utils.data import DataLoader, TensorDataset

        from conftest import compose_config

        overrides = ["data=fake", f"data.native_size={SIZE}", f"data.num_samples={BATCH * BATCHES * 2}",
                     f"data.batch_size={BATCH}", "data.val_fraction=0.5", "model=efficientnet",
                     "precision=fp32", "logger=csv", "trainer.max_epochs=1", "trainer.limit_val_batches=1",
                     "trainer.progress_bar=false", "trainer.log_every_n_steps=1000", "scheduler=cosine"]
        cfg = compose_config(overrides, output_dir=Path(tmp) / "run")
        datamodule = instantiate(cfg.data)
        info = datamodule.setup()
        images = torch.stack([datamodule.train_set[index][0] for index in range(BATCH * BATCHES)])
        labels = torch.randint(0, info.num_classes, (len(images),), generator=torch.Generator().manual_seed(0))
        datamodule.train_set = TensorDataset(images, labels)  # the same tensors for both loops

        torch.manual_seed(0)
        bare = bare_steps(instantiate(cfg.model, data=info),
                          DataLoader(datamodule.train_set, batch_size=BATCH, shuffle=True), cfg.optimizer.lr)
        trainer = instantiate(cfg.trainer, precision=instantiate(cfg.precision), output_dir=Path(tmp) / "run",
                              loggers=build_loggers(cfg))
        task = instantiate(cfg.task)
        task.bind(info)
        torch.manual_seed(0)
        model = instantiate(cfg.model, data=info)

        lockstep = lockstep_with(bare)
        trainer.callbacks.append(lockstep)
        trainer.fit(model, task, datamodule, instantiate(cfg.optimizer), instantiate(cfg.scheduler))
        trainer_times, bare_times = lockstep.trainer_times, lockstep.bare_times

    trainer_times, bare_times = trainer_times[WARMUP:], bare_times[WARMUP:]
    logging.getLogger("benchmark").warning("seconds per step: trainer %s; bare loop %s",
                                           [round(step, 2) for step in trainer_times],
                                           [round(step, 2) for step in bare_times])
    trainer_rate, bare_rate = BATCH / statistics.median(trainer_times), BATCH / statistics.median(bare_times)
    sys.stdout.write(f"trainer_images_per_s={trainer_rate:.1f}\nbare_loop_images_per_s={bare_rate:.1f}\n")
    sys.stdout.write(f"vision_trainer_vs_bare_loop={trainer_rate / bare_rate:.3f} (goal >= 0.95)\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
