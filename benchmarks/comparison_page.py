"""The comparison page over a sweep of 100 runs x 50 epochs (goals: written in <= 3 s, <= 5 MB).

Writes 100 synthetic run folders (metrics.csv with 8 metrics, summary.json, provenance.json, the
overrides; pairs that differ only in ``seed``) and an Optuna journal study over them, then times
``python -m <package>.compare <sweep>`` as a user runs it (interpreter start-up and imports
included) and, for reference, ``write_comparison`` in-process.
"""

from __future__ import annotations

import json
import random
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from common import interleaved, offline_env, render, report, timed

PACKAGE = "my_experiment"
METRICS = ["train/loss", "train/lr", "val/acc", "val/precision", "val/recall", "val/f1", "val/loss"]


def write_runs(sweep: Path, runs: int = 100, epochs: int = 50, study: bool = True, failed: int = 1,
               finish: Callable[[Any], None] | None = None) -> Path:
    """``runs`` trial folders ``sweep/<n>`` (the last ``failed`` of them failed) and, with ``study``, a journal
    study over them; ``finish(study)`` then does what the sweeper does when it ends."""
    rng = random.Random(0)
    trials = []
    for number in range(runs):
        folder = sweep / str(number)
        (folder / ".hydra").mkdir(parents=True)
        pair = number // 2  # runs 2k and 2k+1 differ only in seed
        lr, batch, seed = 10 ** -(1 + (pair * 0.37) % 3), [32, 64, 128][pair % 3], number % 2
        params = {"optimizer.lr": lr, "data.batch_size": batch}
        overrides = [f"{key}={value}" for key, value in params.items()] + [f"seed={seed}"]
        (folder / ".hydra" / "config.yaml").write_text(f"seed: {seed}\n", encoding="utf-8")
        (folder / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides), encoding="utf-8")
        status = "failed" if number >= runs - failed else "completed"
        rows = [{"epoch": epoch, **{metric: rng.random() / (epoch + 1) for metric in METRICS}}
                for epoch in range(epochs)]
        (folder / "metrics.csv").write_text("epoch," + ",".join(METRICS) + "\n" + "".join(
            ",".join(str(row[key]) for key in ["epoch", *METRICS]) + "\n" for row in rows), encoding="utf-8")
        provenance = {"git": {"commit": "0123456789abcdef"}, "precision": {"resolved": "bf16"}, "seed": seed,
                      "started_at": "2025-01-01T10:00:00Z", "ended_at": "2025-01-01T10:20:00Z", "status": status}
        (folder / "provenance.json").write_text(json.dumps(provenance), encoding="utf-8")
        if status == "failed":
            (folder / "train.log").write_text("[10:00:00][ERROR] the training loss became nan by step 3\n")
            trials.append((params, None, folder))
            continue
        best = max(row["val/f1"] for row in rows)
        summary = {"monitor": "val/f1", "mode": "max", "best": {"value": best, "epoch": 3},
                   "test": {"test/acc": best * 0.9, "test/f1": best * 0.8}}
        (folder / "summary.json").write_text(json.dumps(summary), encoding="utf-8")
        trials.append((params, best, folder))
    if study:
        import optuna
        from optuna.distributions import CategoricalDistribution, FloatDistribution
        from optuna.storages import JournalStorage
        from optuna.storages.journal import JournalFileBackend

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        storage = JournalStorage(JournalFileBackend(str(sweep / "optuna.journal")))
        created = optuna.create_study(study_name=f"train-{sweep.name}", storage=storage, direction="maximize")
        space = {"optimizer.lr": FloatDistribution(1e-5, 1.0, log=True),
                 "data.batch_size": CategoricalDistribution([32, 64, 128])}
        for params, value, folder in trials:
            state = optuna.trial.TrialState.COMPLETE if value is not None else optuna.trial.TrialState.FAIL
            attrs = {"run_dir": str(folder), **({} if value is not None else {"fail_reason": "ValueError: nan"})}
            created.add_trial(optuna.trial.create_trial(state=state, params=params, distributions=space,
                                                        value=value, user_attrs=attrs))
        if finish is not None:
            finish(created)
    return sweep


def main() -> None:
    project = render(task="image-classification")
    from my_experiment.compare import store_importances, write_comparison  # type: ignore[import-not-found]

    work = Path(tempfile.mkdtemp(prefix="bench-compare-"))
    try:
        sweep = write_runs(work / "sweep", finish=store_importances)
        env = offline_env()
        env["PYTHONPATH"] = str(project / "src")
        command = [sys.executable, "-m", f"{PACKAGE}.compare", str(sweep), f"output={work / 'cli'}"]
        medians = interleaved({
            "command": lambda: timed(lambda: subprocess.run(command, check=True, capture_output=True, env=env)),
            "in_process": lambda: timed(lambda: write_comparison([sweep], work / "lib")),
        }, repeats=3)
        size = (work / "cli" / "comparison.html").stat().st_size / 2**20
        report("comparison_page_in_process_s", medians["in_process"], "reference: without start-up and imports")
        report("comparison_page_mb", size, "goal <= 5")
        report("comparison_page_command_s", medians["command"], "goal <= 3; 100 runs x 50 epochs, with the study")
    finally:
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(project.parent, ignore_errors=True)


if __name__ == "__main__":
    main()
