"""End-to-end runs of the training entry point, and the trainer's building blocks."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest
import torch

from conftest import compose_config, run_module


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


def test_unknown_option_fails_without_traceback(tmp_path: Path) -> None:
    result = run_module("train", "optimizer=does_not_exist", f"hydra.run.dir={tmp_path}")
    assert result.returncode != 0
    assert "Traceback" not in result.stderr and "optimizer" in result.stderr


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
    """The classification evaluation (torchmetrics) agrees with scikit-learn, including a class never seen."""
    from sklearn.metrics import (
        accuracy_score,
        average_precision_score,
        confusion_matrix,
        f1_score,
        precision_score,
        recall_score,
    )

    pytest.importorskip("{{ cookiecutter.package_name }}.tasks.classification", reason="no classification task here")
    from {{ cookiecutter.package_name }}.data.common import DataInfo
    from {{ cookiecutter.package_name }}.tasks.classification import ClassificationTask

    generator = torch.Generator().manual_seed(0)
    targets = torch.randint(0, 5, (200,), generator=generator)  # class 5 of 6 never occurs
    logits = torch.randn(200, 6, generator=generator) + 2.0 * torch.nn.functional.one_hot(targets, 6)
    task = ClassificationTask()
    task.bind(DataInfo(num_classes=6))
    evaluation = task.evaluation("test")
    for start in range(0, 200, 64):
        evaluation.update(lambda inputs: inputs, (logits[start:start + 64], targets[start:start + 64]))
    metrics = evaluation.compute()
    predictions = logits.argmax(1)
    assert metrics["acc"] == pytest.approx(accuracy_score(targets, predictions))
    assert metrics["f1"] == pytest.approx(f1_score(targets, predictions, average="macro"))
    assert metrics["precision"] == pytest.approx(precision_score(targets, predictions, average="macro"))
    assert metrics["recall"] == pytest.approx(recall_score(targets, predictions, average="macro"))
    assert metrics["loss"] == pytest.approx(torch.nn.functional.cross_entropy(logits, targets).item(), rel=1e-5)
    assert evaluation.results["confusion"].tolist() == confusion_matrix(targets, predictions, labels=range(6)).tolist()
    probabilities = logits.softmax(1)
    for label in range(5):
        expected = average_precision_score(targets == label, probabilities[:, label])
        assert evaluation.results["average_precision"][label].item() == pytest.approx(expected, rel=1e-5)


BAD_OVERRIDES = [
    ("data.batch_size=0", "data.batch_size", ">= 1"),
    ("optimizer.lr=-1", "optimizer.lr", "> 0"),
    ("optimizer.lr=0", "optimizer.lr", "> 0"),
    ("trainer.max_epochs=0", "trainer.max_epochs", ">= 1"),
    ("trainer.max_epochs=abc", "trainer.max_epochs", "an integer"),
    ("trainer.accumulate_grad_batches=0", "trainer.accumulate_grad_batches", ">= 1"),
    ("trainer.log_every_n_steps=-5", "trainer.log_every_n_steps", ">= 1"),
    ("trainer.gradient_clip_val=-1.0", "trainer.gradient_clip_val", "> 0 or null"),
    ("trainer.early_stopping.patience=0", "trainer.early_stopping.patience", ">= 1"),
    ("trainer.progress_bar=maybe", "trainer.progress_bar", "true or false"),
    ("data.val_fraction=1.0", "data.val_fraction", "[0, 1)"),
    ("data.subset_fraction=0", "data.subset_fraction", "(0, 1]"),
    ("task.mode=up", "task.mode", "max, min"),
    ("seed=1.5", "seed", "an integer"),
    ("precision.name=fp8", "precision", "fp32, fp16 or bf16"),  # raised inside instantiate
]


@pytest.mark.parametrize(("override", "key", "allowed"), BAD_OVERRIDES, ids=[case[0] for case in BAD_OVERRIDES])
def test_bad_value_stops_with_one_line(override: str, key: str, allowed: str, tmp_path: Path) -> None:
    result = run_module("train", override, f"hydra.run.dir={tmp_path}")
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 1
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr and "Error in call to target" not in result.stderr
    assert key in lines[0] and allowed in lines[0]


def test_user_error_inside_instantiate_is_unwrapped() -> None:
    from hydra.utils import instantiate

    from {{ cookiecutter.package_name }}.errors import UserError, user_error_in

    with pytest.raises(Exception) as caught:
        instantiate({"_target_": "{{ cookiecutter.package_name }}.training.precision.Precision", "name": "fp8"})
    assert type(caught.value) is not UserError  # Hydra wraps it ...
    assert "precision" in str(user_error_in(caught.value))  # ... and the cause is found again


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


def test_learning_curves_are_a_grid_not_a_strip() -> None:
    from {{ cookiecutter.package_name }}.tracking.plots import learning_curves_figure

    history = [{"epoch": epoch, "train/loss": 1.0 / (epoch + 1), "val/loss": 1.1, "val/acc": 0.5, "val/f1": 0.4,
                "val/precision": 0.5, "val/recall": 0.5, "train/lr": 0.1} for epoch in range(3)]
    figure = learning_curves_figure(history)
    visible = [axis for axis in figure.axes if axis.get_visible()]
    assert len(visible) == 5 and tuple(figure.get_size_inches()) == (12.0, 6.4)  # 3 columns, 2 rows


def test_ctrl_c_during_the_final_test_keeps_a_summary(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from {{ cookiecutter.package_name }}.train import train
    from {{ cookiecutter.package_name }}.training.trainer import Trainer

    real = Trainer._evaluate

    def ctrl_c_in_test(self: Trainer, loader, stage: str):
        if stage == "test":
            raise KeyboardInterrupt
        return real(self, loader, stage)

    monkeypatch.setattr(Trainer, "_evaluate", ctrl_c_in_test)
    best = train(compose_config(["debug=fast", "logger=csv"], output_dir=tmp_path))  # returns: no traceback
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["stopped_in"] == "test" and summary["test"] == {} and summary["best"]["value"] == best
    assert (tmp_path / "checkpoints" / "last.pt").is_file()
