"""Whole-process time of `python -m <package>.train logger=csv` divided by a bare script
that trains the same MLP on the same digits for the same epochs (goal <= 1.3).

Both run as fresh processes, interleaved, so both pay Python's and torch's start-up; both use
one torch thread, so that other jobs on a shared machine slow them alike (two threads that
wait on each other under contention take 10-20x longer per step for a model this small).
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

from common import interleaved, offline_env, render, report, timed

EPOCHS = 20
REPEATS = 3

BARE_SCRIPT = """
import math, torch, torch.nn as nn, torch.nn.functional as F
from sklearn.datasets import load_digits
torch.manual_seed(42)
digits = load_digits()
x = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1)
y = torch.tensor(digits.target)
order = torch.randperm(len(y))
train, val = order[:1257], order[1257:1527]
x = (x - x[train].mean()) / x[train].std()
model = nn.Sequential(nn.Flatten(), nn.Linear(64, 128), nn.ReLU(), nn.Dropout(0.1), nn.Linear(128, 64), nn.ReLU(),
                      nn.Dropout(0.1), nn.Linear(64, 10))
optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.01)
loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x[train], y[train]), batch_size=64, shuffle=True)
total = {epochs} * len(loader)
scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 0.5 * (1 + math.cos(math.pi * min(1, s / total))))
for epoch in range({epochs}):
    model.train()
    for inputs, targets in loader:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled={bf16}):
            loss = F.cross_entropy(model(inputs), targets)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad()
        scheduler.step()
    model.eval()
    with torch.no_grad():
        accuracy = (model(x[val]).argmax(1) == y[val]).float().mean().item()
print("val accuracy", accuracy)
"""


def main() -> None:
    project = render(logger="csv")
    package = next(path.name for path in (project / "src").iterdir() if path.is_dir())
    env = dict(offline_env(threads=1), PYTHONPATH=str(project / "src"))
    scratch = Path(tempfile.mkdtemp(prefix="bench-process-"))
    bare = scratch / "bare.py"
    from my_experiment.runtime import cpu_has_native_bf16  # the template's bf16 -> fp32 fallback, for both

    bare.write_text(BARE_SCRIPT.format(epochs=EPOCHS, bf16=cpu_has_native_bf16()), encoding="utf-8")
    runs = iter(range(10**6))

    def template_run() -> float:
        command = [sys.executable, "-m", f"{package}.train", f"trainer.max_epochs={EPOCHS}",
                   "trainer.early_stopping.patience=null", f"hydra.run.dir={scratch / str(next(runs))}"]
        return timed(lambda: subprocess.run(command, cwd=project, env=env, check=True, capture_output=True))

    def bare_run() -> float:
        return timed(lambda: subprocess.run([sys.executable, str(bare)], env=env, check=True, capture_output=True))

    medians = interleaved({"bare": bare_run, "template": template_run}, repeats=REPEATS)
    print(f"bare script {medians['bare']:.2f} s, python -m {package}.train {medians['template']:.2f} s")
    report("train_process_vs_bare_time_ratio", medians["template"] / medians["bare"], "goal <= 1.3")


if __name__ == "__main__":
    main()
