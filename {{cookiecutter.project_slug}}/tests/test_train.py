"""End-to-end runs of the training entry point, and the trainer's building blocks."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest
import torch

from conftest import run_module


def test_smoke_run_writes_the_run_folder(smoke_run: Path) -> None:
    assert (smoke_run / ".hydra" / "config.yaml").is_file()
    rows = list(csv.DictReader(open(smoke_run / "metrics.csv", encoding="utf-8")))
    assert len(rows) == 1 and {"train/loss", "val/loss"} <= set(rows[0])
    summary = json.loads((smoke_run / "summary.json").read_text())
    assert summary["best"]["value"] == pytest.approx(float(rows[0][summary["monitor"]]))
    assert summary["test"], "the test split was not evaluated"
    for name in ("best", "last"):
        assert (smoke_run / "checkpoints" / f"{name}.pt").is_file()
    assert {path.name for path in (smoke_run / "plots").glob("*.png")} >= {"learning_curves.png"}


def test_checkpoint_loads_safely(smoke_run: Path) -> None:
    state = torch.load(smoke_run / "checkpoints" / "last.pt", weights_only=True)
    assert state["epoch"] == 1 and state["global_step"] > 0
    assert {"model", "optimizer", "scheduler", "scaler", "rng", "config"} <= set(state)


@pytest.mark.parametrize("override", ["trainer.max_epochs=abc", "optimizer=does_not_exist"])
def test_bad_override_fails_in_one_line(override: str, tmp_path: Path) -> None:
    result = run_module("train", override, f"hydra.run.dir={tmp_path}")
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert override.split("=")[0].split(".")[0] in result.stderr


def test_missing_resume_checkpoint_fails_in_one_line(tmp_path: Path) -> None:
    result = run_module("train", "debug=fast", f"resume={tmp_path / 'nope.pt'}", f"hydra.run.dir={tmp_path}")
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert "resume=" in result.stderr


def test_resume_continues_from_last_checkpoint(tmp_path: Path) -> None:
    common = ["logger=csv", "trainer.limit_train_batches=3", "trainer.limit_val_batches=1",
              f"hydra.run.dir={tmp_path}"]
    first = run_module("train", "trainer.max_epochs=1", *common)
    assert first.returncode == 0, first.stderr[-2000:]
    second = run_module("train", "trainer.max_epochs=2", "resume=auto", *common)
    assert second.returncode == 0, second.stderr[-2000:]
    rows = list(csv.DictReader(open(tmp_path / "metrics.csv", encoding="utf-8")))
    assert [row["epoch"] for row in rows] == ["0", "1"]
    assert torch.load(tmp_path / "checkpoints" / "last.pt", weights_only=True)["global_step"] == 6


def test_corrupt_checkpoint_is_refused(tmp_path: Path) -> None:
    from {{ cookiecutter.package_name }}.errors import UserError
    from {{ cookiecutter.package_name }}.training.checkpoint import load_checkpoint, save_checkpoint

    path = tmp_path / "last.pt"
    save_checkpoint({"model": {"w": torch.ones(1000)}}, path)
    path.write_bytes(path.read_bytes()[:500])
    with pytest.raises(UserError, match="truncated or corrupt"):
        load_checkpoint(path)


def test_metrics_match_scikit_learn() -> None:
    from sklearn.metrics import accuracy_score, f1_score, precision_score, recall_score

    pytest.importorskip("{{ cookiecutter.package_name }}.tasks.classification", reason="no classification task here")
    from {{ cookiecutter.package_name }}.tasks.classification import metrics_from_confusion

    generator = torch.Generator().manual_seed(0)
    targets = torch.randint(0, 5, (200,), generator=generator)
    predictions = torch.where(torch.rand(200, generator=generator) < 0.6, targets,
                              torch.randint(0, 5, (200,), generator=generator))
    confusion = torch.bincount(targets * 5 + predictions, minlength=25).view(5, 5)
    metrics = metrics_from_confusion(confusion)
    assert metrics["acc"] == pytest.approx(accuracy_score(targets, predictions))
    assert metrics["f1"] == pytest.approx(f1_score(targets, predictions, average="macro"))
    assert metrics["precision"] == pytest.approx(precision_score(targets, predictions, average="macro"))
    assert metrics["recall"] == pytest.approx(recall_score(targets, predictions, average="macro"))


def test_cosine_schedule_follows_its_formula() -> None:
    from {{ cookiecutter.package_name }}.training.schedulers import cosine

    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    scheduler = cosine(optimizer, total_steps=12, steps_per_epoch=4, warmup_steps=2)
    rates = []
    for _ in range(12):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert rates[:2] == pytest.approx([0.5, 1.0])
    expected = [0.5 * (1 + math.cos(math.pi * step / 10)) for step in range(10)]
    assert rates[2:] == pytest.approx(expected)


def test_epoch_sampler_shards_and_resumes() -> None:
    from {{ cookiecutter.package_name }}.data.common import EpochSampler

    full = EpochSampler(10, shuffle=True, seed=3)
    full.set_epoch(2)
    order = list(full)
    shards = []
    for rank in range(2):
        sampler = EpochSampler(10, shuffle=True, seed=3, rank=rank, world_size=2)
        sampler.set_epoch(2)
        shards.append(list(sampler))
    assert sorted(shards[0] + shards[1]) == sorted(order)
    full.set_epoch(2, start=4)
    assert list(full) == order[4:]
    full.set_epoch(3)
    assert list(full) != order
