"""Training throughput of the rendered trainer over a bare PyTorch loop (EfficientNet-B0, 32x32, CPU).

Renders the template, then trains the same model on the same images both ways,
alternating rounds. Both do the same work per step: fp32 forward and backward,
gradient clipping at 1.0, AdamW, a scheduler step. The time between consecutive
optimizer steps is recorded in each loop (loading, forward, backward, update; not
validation or checkpoints) and images/s is the batch size over the median interval,
which keeps the ratio steady on a shared, busy machine.
Ends with ``vision_trainer_vs_bare_loop=<ratio> (goal >= 0.95)``.
"""

from __future__ import annotations

import itertools
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from cookiecutter.main import cookiecutter

TEMPLATE = Path(__file__).resolve().parents[1]
BATCH, BATCHES, ROUNDS, SIZE = 32, 8, 2, 32


def render(base: Path) -> Path:
    return Path(cookiecutter(str(TEMPLATE), no_input=True, output_dir=str(base),
                             extra_context={"task": "image-classification", "logger": "csv"}))


def main() -> int:
    logging.basicConfig(level=logging.WARNING)
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        project = render(Path(tmp))
        sys.path[:0] = [str(project / "src"), str(project / "tests")]
        from conftest import compose_config
        from hydra.utils import instantiate
        from my_experiment.train import build_loggers
        from torch.utils.data import DataLoader, TensorDataset

        overrides = ["data=fake", f"data.native_size={SIZE}", f"data.num_samples={BATCH * BATCHES * 2}",
                     f"data.batch_size={BATCH}", "data.val_fraction=0.5", "model=efficientnet",
                     "precision=fp32", "logger=csv", "trainer.max_epochs=1", "trainer.limit_val_batches=1",
                     "trainer.progress_bar=false", "trainer.log_every_n_steps=1000", "scheduler=cosine"]
        cfg = compose_config(overrides, output_dir=Path(tmp) / "run")
        datamodule = instantiate(cfg.data)
        info = datamodule.setup()
        images = torch.stack([datamodule.train_set[index][0] for index in range(BATCH * BATCHES)])
        labels = torch.randint(0, info.num_classes, (len(images),))
        datamodule.train_set = TensorDataset(images, labels)  # the same tensors for both loops

        def trainer_round(round_index: int) -> list[float]:
            cfg_round = compose_config(overrides, output_dir=Path(tmp) / f"run{round_index}")
            trainer = instantiate(cfg_round.trainer, precision=instantiate(cfg_round.precision),
                                  output_dir=Path(tmp) / f"run{round_index}", loggers=build_loggers(cfg_round))
            task = instantiate(cfg_round.task)
            task.bind(info)
            torch.manual_seed(round_index)
            model = instantiate(cfg_round.model, data=info)
            stamps: list[float] = []
            train_epoch, optimizer_step = trainer._train_epoch, trainer._optimizer_step

            def timed_epoch(*args, **kwargs):
                stamps.append(time.perf_counter())
                train_epoch(*args, **kwargs)

            def timed_step() -> None:
                optimizer_step()
                stamps.append(time.perf_counter())

            trainer._train_epoch, trainer._optimizer_step = timed_epoch, timed_step
            trainer.fit(model, task, datamodule, instantiate(cfg_round.optimizer), instantiate(cfg_round.scheduler))
            return [later - earlier for earlier, later in itertools.pairwise(stamps)]

        def bare_round(round_index: int) -> list[float]:
            torch.manual_seed(round_index)
            model = instantiate(cfg.model, data=info)
            optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.optimizer.lr, weight_decay=0.01)
            scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, BATCHES)
            loader = DataLoader(datamodule.train_set, batch_size=BATCH, shuffle=True)
            model.train()
            stamps = [time.perf_counter()]
            for batch_images, batch_labels in loader:
                loss = torch.nn.functional.cross_entropy(model(batch_images), batch_labels)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                scheduler.step()
                stamps.append(time.perf_counter())
            return [later - earlier for earlier, later in itertools.pairwise(stamps)]

        bare_round(-1)  # warm up kernels and allocator
        trainer_steps: list[float] = []
        bare_steps: list[float] = []
        for round_index in range(ROUNDS):
            trainer_steps += trainer_round(round_index)
            bare_steps += bare_round(round_index)
    trainer_best = BATCH / statistics.median(trainer_steps)
    bare_best = BATCH / statistics.median(bare_steps)
    logging.getLogger("benchmark").warning("seconds per step: trainer %s; bare loop %s",
                                           [round(step, 2) for step in trainer_steps],
                                           [round(step, 2) for step in bare_steps])
    sys.stdout.write(f"trainer_images_per_s={trainer_best:.1f}\nbare_loop_images_per_s={bare_best:.1f}\n")
    sys.stdout.write(f"vision_trainer_vs_bare_loop={trainer_best / bare_best:.3f} (goal >= 0.95)\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
