"""Training steps per second of the rendered MLP with bf16 autocast, relative to fp32, on CPU (or --device cuda).

Renders the default project and times the trainer's own pieces: its ``MLP`` and its
``Precision`` (autocast and GradScaler). Ends with a ``name=value (goal)`` line.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
import tempfile
import time
from pathlib import Path

from common import render

log = logging.getLogger("benchmarks")


def steps_per_second(model, precision, batch, targets, steps: int) -> float:
    import torch
    import torch.nn.functional as F

    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    scaler = precision.grad_scaler()

    def step() -> None:
        with precision.autocast():
            loss = F.cross_entropy(model(batch), targets)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)

    for _ in range(3):
        step()
    if batch.is_cuda:
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    if batch.is_cuda:
        torch.cuda.synchronize()
    return steps / (time.perf_counter() - start)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--modes", default="bf16", help="comma-separated precisions to compare with fp32")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    import torch

    with tempfile.TemporaryDirectory() as scratch:
        render(Path(scratch), logger="csv")
        mlp = importlib.import_module("my_experiment.models.mlp")
        precision_module = importlib.import_module("my_experiment.training.precision")
        common = importlib.import_module("my_experiment.data.common")
        device = torch.device(args.device)
        info = common.DataInfo(num_classes=10, in_chans=1, img_size=32)
        batch = torch.randn(512, 1, 32, 32, device=device)
        targets = torch.randint(0, 10, (512,), device=device)
        rates = {}
        for name in ["fp32", *args.modes.split(",")]:
            torch.manual_seed(0)
            model = mlp.MLP(info, hidden_dims=[1024, 1024], dropout=0.0).to(device)
            precision = precision_module.Precision(name)
            precision.device = device  # the raw autocast mode, without the trainer's hardware fallback
            rates[name] = steps_per_second(model, precision, batch, targets, args.steps)
            log.warning("%s: %.1f steps/s", name, rates[name])
    if device.type == "cpu":
        sys.stdout.write(f"cpu_native_bf16={precision_module.cpu_has_native_bf16()} "
                         "(without it the trainer falls back to fp32)\n")
    for name in args.modes.split(","):
        ratio = rates[name] / rates["fp32"]
        sys.stdout.write(f"{name}_vs_fp32_steps_per_s={ratio:.2f} (goal >= 1.0 where {name} is native)\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
