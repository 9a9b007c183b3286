"""Training throughput with logger=wandb (offline) relative to logger=csv, measured side by side.

Renders the default project into a temp folder, then trains it several times in fresh
subprocesses, alternating the two loggers. Each child times only the training loop
(through a trainer callback, plus the per-epoch logging), after a warm-up epoch, so process
start-up, W&B's init/finish, validation and the final figures are not counted. Torch uses
``--threads`` CPU threads (default 1): on a shared machine more threads make CPU step times
swing far more than any logger does.

    python benchmarks/wandb_overhead.py [--epochs 30] [--repeats 5] [--threads 1]

Ends with ``wandb_steps_per_s_ratio=<value> (goal >= 0.95)``.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import tempfile
import time
from pathlib import Path

from common import child_result, offline_env, render, report

GOAL = 0.95

CHILD = r'''
import json, sys, time
from pathlib import Path
project, logger, epochs, out = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3]), Path(sys.argv[4])
sys.path.insert(0, str(project / "src"))
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from omegaconf import open_dict
from my_experiment.train import train
from my_experiment.tracking.base import LoggerCollection
from my_experiment.training.callbacks import Callback

timing = {"seconds": 0.0, "steps": 0}
log_epoch = LoggerCollection.log_epoch

class EpochTimer(Callback):
    """Each training epoch from its start to its last optimizer step (epoch 0 warms up)."""

    def on_train_epoch_start(self, trainer):
        self.start, self.first_step = time.perf_counter(), trainer.state.global_step

    def on_train_step_end(self, trainer, loss):
        self.last = time.perf_counter()

    def on_validation_end(self, trainer, metrics):
        if trainer.state.epoch > 0:
            timing["seconds"] += self.last - self.start
            timing["steps"] += trainer.state.global_step - self.first_step

def timed_log_epoch(self, metrics, epoch):
    start = time.perf_counter()
    log_epoch(self, metrics, epoch)
    if epoch > 0:
        timing["seconds"] += time.perf_counter() - start

LoggerCollection.log_epoch = timed_log_epoch  # a public method: the per-epoch logging counts too
overrides = [f"logger={logger}", f"trainer.max_epochs={epochs}", "trainer.early_stopping.patience=null",
             "trainer.progress_bar=false", "data.num_workers=0",
             "+trainer.callbacks.timer._target_=__main__.EpochTimer"]
with initialize_config_dir(config_dir=str(project / "configs"), version_base="1.3"):
    cfg = compose(config_name="train", overrides=overrides, return_hydra_config=True)
cfg.hydra.runtime.output_dir = str(out)
HydraConfig.instance().set_config(cfg)
with open_dict(cfg):
    del cfg["hydra"]
train(cfg)
print("RESULT " + json.dumps(timing))
'''


def measure(project: Path, logger: str, epochs: int, out: Path, threads: int) -> float:
    """Steady-state optimizer steps per second of one training run."""
    command = [sys.executable, "-c", CHILD, str(project), logger, str(epochs), str(out)]
    timing = child_result(command, cwd=project, env=offline_env(threads), timeout=900)
    return timing["steps"] / timing["seconds"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=30, help="epochs per run (the first one warms up)")
    parser.add_argument("--repeats", type=int, default=5, help="runs per logger, alternating")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads per run")
    args = parser.parse_args()
    rates: dict[str, list[float]] = {"csv": [], "wandb": []}
    with contextlib.redirect_stdout(sys.stderr):
        project = render()
    with tempfile.TemporaryDirectory() as temp:
        for repeat in range(args.repeats):
            for logger in ("csv", "wandb") if repeat % 2 == 0 else ("wandb", "csv"):
                started = time.perf_counter()
                rate = measure(project, logger, args.epochs, Path(temp) / f"{logger}-{repeat}", args.threads)
                rates[logger].append(rate)
                print(f"run {repeat} logger={logger}: {rate:.1f} steps/s ({time.perf_counter() - started:.0f} s wall)",
                      flush=True)
    csv_rate, wandb_rate = statistics.median(rates["csv"]), statistics.median(rates["wandb"])
    pairs = [w / c for w, c in zip(rates["wandb"], rates["csv"], strict=True)]
    print(f"median steps/s: csv={csv_rate:.1f}, wandb offline={wandb_rate:.1f}; "
          f"ratio per pair: {', '.join(f'{ratio:.3f}' for ratio in pairs)}")
    # Each pair ran back to back, so the median of the paired ratios cancels most of the machine's drift.
    report("wandb_steps_per_s_ratio", statistics.median(pairs), f"goal >= {GOAL}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
