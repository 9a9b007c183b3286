"""DDP scaling: training samples/s with N processes (torchrun, trainer=ddp) against 1 process.

Renders the default project into a temp folder and trains it under
``torchrun --standalone --nproc_per_node=K`` for K = 1 and K = N, alternating, in fresh
processes. Rank 0 times only the training loop (through a trainer callback) after a warm-up
epoch; every optimizer step all-reduces the gradients, so rank 0's clock is the job's.
On the CPU each process gets one thread (gloo); on a machine with N GPUs the same script
measures real multi-GPU scaling (nccl), one GPU per process.

    python benchmarks/ddp_scaling.py [--nproc 2] [--epochs 6] [--repeats 2] [override ...]

Ends with ``ddp_scaling_efficiency=<value> (goal >= 0.7)``: (samples/s with N) / (N x samples/s with 1).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

from common import child_result, offline_env, render

GOAL = 0.7

CHILD = r'''
import json, sys, time
from pathlib import Path
project, out, overrides = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3:]
sys.path.insert(0, str(project / "src"))
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from omegaconf import open_dict
from my_experiment.train import train
from my_experiment import runtime
from my_experiment.training import distributed
from my_experiment.training.callbacks import Callback

timing = {"seconds": 0.0, "samples": 0}

class EpochTimer(Callback):
    """Rank 0's time from each epoch's start (all ranks in step) to its last optimizer step."""

    def on_train_epoch_start(self, trainer):
        distributed.barrier()
        self.start = time.perf_counter()

    def on_train_step_end(self, trainer, loss):
        self.last = time.perf_counter()

    def on_validation_end(self, trainer, metrics):
        if trainer.state.epoch > 0:  # epoch 0 warms up
            timing["seconds"] += self.last - self.start
            timing["samples"] += trainer.state.loss_count * trainer.datamodule.batch_size * runtime.world_size()

overrides.append("+trainer.callbacks.timer._target_=__main__.EpochTimer")
with initialize_config_dir(config_dir=str(project / "configs"), version_base="1.3"):
    cfg = compose(config_name="train", overrides=overrides, return_hydra_config=True)
cfg.hydra.runtime.output_dir = str(out)
HydraConfig.instance().set_config(cfg)
with open_dict(cfg):
    del cfg["hydra"]
train(cfg)
if runtime.rank() == 0:
    print("RESULT " + json.dumps(timing), flush=True)
'''




def measure(project: Path, child: Path, nproc: int, overrides: list[str], out: Path) -> float:
    """Steady-state training samples per second (all ranks together) of one torchrun job."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
               str(child), str(project), str(out), *overrides]
    timing = child_result(command, cwd=project, env=offline_env(threads=1), timeout=1800)
    return timing["samples"] / timing["seconds"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nproc", type=int, default=2, help="processes of the DDP run (GPUs on a GPU machine)")
    parser.add_argument("--epochs", type=int, default=6, help="epochs per run (the first one warms up)")
    parser.add_argument("--repeats", type=int, default=2, help="runs per process count, alternating")
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides for both runs")
    args = parser.parse_args()
    overrides = ["trainer=ddp", "logger=csv", "precision=fp32", f"trainer.max_epochs={args.epochs}",
                 "trainer.early_stopping.patience=null", "trainer.progress_bar=false", "data.num_workers=0",
                 "model.hidden_dims=[1024,1024]", *args.overrides]
    rates: dict[int, list[float]] = {1: [], args.nproc: []}
    with tempfile.TemporaryDirectory() as temp:
        project = render(Path(temp), logger="csv")
        child = Path(temp) / "ddp_child.py"
        child.write_text(CHILD, encoding="utf-8")
        for repeat in range(args.repeats):
            for nproc in (1, args.nproc) if repeat % 2 == 0 else (args.nproc, 1):
                started = time.perf_counter()
                rate = measure(project, child, nproc, overrides, Path(temp) / f"n{nproc}-{repeat}")
                rates[nproc].append(rate)
                print(f"run {repeat} nproc={nproc}: {rate:.0f} samples/s ({time.perf_counter() - started:.0f} s wall)",
                      flush=True)
    single, multi = statistics.median(rates[1]), statistics.median(rates[args.nproc])
    print(f"median samples/s: 1 process={single:.0f}, {args.nproc} processes={multi:.0f}")
    print(f"ddp_speedup={multi / single:.3f} (ideal {args.nproc})")
    print(f"ddp_scaling_efficiency={multi / (args.nproc * single):.3f} (goal >= {GOAL})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
