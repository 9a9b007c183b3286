"""End-to-end runs of the training entry point, and the trainer's building blocks."""

from __future__ import annotations

import csv
import json
import math
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
import torch

from {{ cookiecutter.package_name }}.config.quoting import path_override

from conftest import compose_config, offline_env, run_module


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
    result = run_module("train", "optimizer=does_not_exist", path_override("hydra.run.dir", tmp_path))
    assert result.returncode != 0
    assert "Traceback" not in result.stderr and "optimizer" in result.stderr


def test_an_unknown_option_in_a_list_is_named_with_the_valid_ones() -> None:
    from {{ cookiecutter.package_name }}.config.checks import check_overrides
    from {{ cookiecutter.package_name }}.errors import UserError

    with pytest.raises(UserError, match=r"^logger=tensorbord is not an option of logger:.* The options are csv\b"):
        check_overrides("train", ["logger=[csv,tensorbord]"])


def test_missing_resume_checkpoint_fails_in_one_line(tmp_path: Path) -> None:
    result = run_module(
        "train", "debug=fast", path_override("resume", tmp_path / "nope.pt"), path_override("hydra.run.dir", tmp_path)
    )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert "resume=" in result.stderr


def test_resume_continues_from_last_checkpoint(tmp_path: Path) -> None:
    common = [
        "logger=csv",
        "trainer.limit_train_batches=3",
        "trainer.limit_val_batches=1",
        path_override("hydra.run.dir", tmp_path),
    ]
    first = run_module("train", "trainer.max_epochs=1", *common)
    assert first.returncode == 0, first.stderr[-2000:]
    second = run_module("train", "trainer.max_epochs=2", "resume=auto", *common)
    assert second.returncode == 0, second.stderr[-2000:]
    rows = list(csv.DictReader(open(tmp_path / "metrics.csv", encoding="utf-8")))
    assert [row["epoch"] for row in rows] == ["0", "1"]
    assert torch.load(tmp_path / "checkpoints" / "last.pt", weights_only=True)["global_step"] == 6


def test_checkpoint_copy_is_atomic_and_leaves_no_temporary(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """best.pt is copied from last.pt through a unique temporary that is flushed and renamed; a failed copy
    keeps the old best.pt and leaves nothing behind."""
    from {{ cookiecutter.package_name }}.training import checkpoint

    last, best = tmp_path / "last.pt", tmp_path / "best.pt"
    checkpoint.save_checkpoint({"w": torch.ones(3)}, last)
    checkpoint.copy_checkpoint(last, best)
    assert best.read_bytes() == last.read_bytes()
    synced: list[int] = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: synced.append(fd) or real_fsync(fd))
    checkpoint.save_checkpoint({"w": torch.zeros(3)}, last)
    assert len(synced) >= 1

    def broken(source: object, target: object, length: int = 0) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(checkpoint.shutil, "copyfileobj", broken)
    with pytest.raises(OSError, match="disk full"):
        checkpoint.copy_checkpoint(last, best)
    assert torch.load(best, weights_only=True)["w"].sum() == 3  # the old best.pt
    assert sorted(path.name for path in tmp_path.iterdir()) == ["best.pt", "last.pt"]


def test_corrupt_checkpoint_is_refused(tmp_path: Path) -> None:
    from {{ cookiecutter.package_name }}.errors import UserError
    from {{ cookiecutter.package_name }}.training.checkpoint import load_checkpoint, save_checkpoint

    path = tmp_path / "last.pt"
    save_checkpoint({"model": {"w": torch.ones(1000)}}, path)
    path.write_bytes(path.read_bytes()[:500])
    with pytest.raises(UserError, match="truncated or corrupt"):
        load_checkpoint(path)


def _metric_inputs() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    targets = torch.randint(0, 5, (200,), generator=generator)  # class 5 of 6 never occurs
    logits = torch.randn(200, 6, generator=generator) + 2.0 * torch.nn.functional.one_hot(targets, 6)
    return logits, targets


def _evaluate_logits(logits: torch.Tensor, targets: torch.Tensor) -> tuple[Any, dict[str, float]]:
    """The test-time classification evaluation of ``logits`` (the model is the identity), in batches of 64."""
    from {{ cookiecutter.package_name }}.data.common import DataInfo
    from {{ cookiecutter.package_name }}.tasks.classification import ClassificationTask

    task = ClassificationTask()
    task.bind(DataInfo(num_classes=6))
    evaluation = task.evaluation("test")
    for start in range(0, len(targets), 64):
        evaluation.update(lambda inputs: inputs, (logits[start : start + 64], targets[start : start + 64]))
    return evaluation, evaluation.compute()


def _metrics_on_rank(rank: int, init_file: str, output: str) -> None:
    """One of two gloo ranks: evaluate an uneven share of the examples (130 and 70) and save what compute() gives."""
    # Not Path.as_uri(): torch's file rendezvous does not undo its %-escapes (a Korean or spaced tmp_path).
    init_method = "file:///" + Path(init_file).as_posix().lstrip("/")
    torch.distributed.init_process_group("gloo", init_method=init_method, rank=rank, world_size=2)
    try:
        logits, targets = _metric_inputs()
        share = slice(0, 130) if rank == 0 else slice(130, None)
        evaluation, metrics = _evaluate_logits(logits[share], targets[share])
        torch.save(
            {
                "metrics": metrics,
                "confusion": evaluation.results["confusion"],
                "average_precision": evaluation.results["average_precision"],
            },
            f"{output}.{rank}",
        )
    finally:
        torch.distributed.destroy_process_group()


def test_metrics_match_scikit_learn() -> None:
    """The classification evaluation agrees with scikit-learn, including a class never seen."""
    from sklearn.metrics import (
        accuracy_score,
        average_precision_score,
        confusion_matrix,
        f1_score,
        precision_score,
        recall_score,
    )

    pytest.importorskip("{{ cookiecutter.package_name }}.tasks.classification", reason="no classification task here")
    logits, targets = _metric_inputs()
    evaluation, metrics = _evaluate_logits(logits, targets)
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


def test_digits_are_scikit_learns() -> None:
    """The digits read from scikit-learn's file (without importing scikit-learn) are load_digits()'s."""
    digits = pytest.importorskip("{{ cookiecutter.package_name }}.data.digits", reason="no digits data here")
    from sklearn.datasets import load_digits

    images, labels = digits.load_digits()
    expected = load_digits()
    assert images.dtype == expected.images.dtype and (images == expected.images).all()
    assert (labels == expected.target).all() and labels.dtype.kind == "i"


@pytest.mark.slow
@pytest.mark.skipif(not torch.distributed.is_available(), reason="this torch build has no torch.distributed")
def test_metrics_over_two_ranks_equal_one_process(tmp_path: Path) -> None:
    """Two DDP ranks that each see part of the examples compute the one-process numbers (states are summed)."""
    pytest.importorskip("{{ cookiecutter.package_name }}.tasks.classification", reason="no classification task here")
    import torch.multiprocessing

    evaluation, expected = _evaluate_logits(*_metric_inputs())
    output = tmp_path / "metrics"
    torch.multiprocessing.spawn(_metrics_on_rank, args=(str(tmp_path / "init"), str(output)), nprocs=2)
    for rank in range(2):
        result = torch.load(f"{output}.{rank}", weights_only=True)
        assert result["metrics"] == pytest.approx(expected, rel=1e-6, abs=1e-9)
        assert torch.equal(result["confusion"], evaluation.results["confusion"])
        torch.testing.assert_close(
            result["average_precision"], evaluation.results["average_precision"], rtol=1e-6, atol=0, equal_nan=True
        )


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
def test_bad_value_is_named_with_what_is_allowed(override: str, key: str, allowed: str, tmp_path: Path) -> None:
    """What train() checks first, in this process (the command line's one-line exit is tested below)."""
    from hydra.utils import instantiate

    from {{ cookiecutter.package_name }}.config.checks import check_config
    from {{ cookiecutter.package_name }}.errors import user_error_in

    cfg = compose_config([override], output_dir=tmp_path)
    with pytest.raises(Exception) as caught:
        check_config(cfg)
        instantiate(cfg.precision)
    error = user_error_in(caught.value)
    assert error is not None, caught.value
    assert key in str(error) and allowed in str(error)


def _stderr_and_imports(result: subprocess.CompletedProcess) -> tuple[list[str], set[str]]:
    """The lines a user sees, and the top-level modules imported (``PYTHONPROFILEIMPORTTIME`` lines)."""
    lines = result.stderr.strip().splitlines()
    imports = {line.rsplit("|", 1)[1].strip().split(".")[0] for line in lines if line.startswith("import time:")}
    return [line for line in lines if not line.startswith("import time:")], imports


@pytest.mark.parametrize("override", ["data.batch_size=0", "trainer.max_epochs=abc", "precision.name=fp8"])
def test_bad_value_stops_with_one_line(override: str, tmp_path: Path) -> None:
    """On the command line: exit 1 with one line; a value train() checks first answers before torch loads."""
    result = run_module(
        "train",
        override,
        path_override("hydra.run.dir", tmp_path),
        env=dict(offline_env(), PYTHONPROFILEIMPORTTIME="1"),
    )
    lines, imports = _stderr_and_imports(result)
    assert result.returncode == 1
    assert len(lines) == 1, "\n".join(lines)
    assert "Traceback" not in lines[0] and "Error in call to target" not in lines[0]
    key, allowed = next((key, allowed) for bad, key, allowed in BAD_OVERRIDES if bad == override)
    assert key in lines[0] and allowed in lines[0]
    if not override.startswith("precision."):  # precision is checked as it is built, by torch code
        assert "torch" not in imports


def test_cfg_job_prints_the_config_without_importing_torch() -> None:
    result = run_module("train", "--cfg", "job", env=dict(offline_env(), PYTHONPROFILEIMPORTTIME="1"))
    assert result.returncode == 0, result.stderr[-2000:]
    assert "optimizer:" in result.stdout
    imports = _stderr_and_imports(result)[1]
    assert "hydra" in imports and "torch" not in imports


OWN_VALUES = [  # (config node, argument, a value its rule refuses, what the line says it accepts)
    ("data", "batch_size", 0, ">= 1"),
    ("data", "val_fraction", 1.0, "[0, 1)"),
    ("task", "mode", "up", "max, min"),
    ("trainer", "max_epochs", 0, ">= 1"),
    ("trainer", "early_stopping", {"patience": 0}, ">= 1"),
    ("trainer", "compile", {"mode": "fast"}, "one of default"),
]


@pytest.mark.parametrize(
    ("node", "argument", "value", "allowed"), OWN_VALUES, ids=[f"{n}.{a}" for n, a, _, _ in OWN_VALUES]
)
def test_each_owner_checks_its_own_values_when_built(
    node: str, argument: str, value: Any, allowed: str, tmp_path: Path
) -> None:
    """Built from Python, past the config's check: the data module, the task and the trainer refuse a bad value
    in the same one line, naming it as the config does."""
    from hydra.utils import instantiate

    from {{ cookiecutter.package_name }}.errors import user_error_in

    cfg = compose_config(output_dir=tmp_path)
    extra = {"precision": instantiate(cfg.precision), "output_dir": tmp_path} if node == "trainer" else {}
    with pytest.raises(Exception) as caught:
        instantiate(cfg[node], **extra, **{argument: value})
    error = user_error_in(caught.value)
    assert error is not None, caught.value
    key = f"{node}.{argument}" + (f".{next(iter(value))}" if isinstance(value, dict) else "")
    assert str(error).startswith(f"{key}=") and allowed in str(error)


def test_the_trainer_checks_the_optimizer_and_the_schedules_check_theirs(tmp_path: Path) -> None:
    import functools

    from {{ cookiecutter.package_name }}.errors import UserError
    from {{ cookiecutter.package_name }}.training import schedulers
    from {{ cookiecutter.package_name }}.training.precision import Precision
    from {{ cookiecutter.package_name }}.training.trainer import Trainer

    trainer = Trainer(Precision("fp32"), tmp_path, progress_bar=False)
    with pytest.raises(UserError, match=r"^optimizer\.lr=-1 is not accepted: optimizer\.lr must be a number > 0"):
        trainer.fit(torch.nn.Linear(1, 1), None, None, functools.partial(torch.optim.SGD, lr=-1), None)  # type: ignore[arg-type]
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    with pytest.raises(UserError, match=r"^scheduler\.gamma=0 is not accepted"):
        schedulers.step(optimizer, total_steps=4, steps_per_epoch=2, gamma=0)
    with pytest.raises(UserError, match=r"^scheduler\.warmup_steps=-2 is not accepted"):
        schedulers.constant(optimizer, total_steps=4, steps_per_epoch=2, warmup_steps=-2)


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


def test_evaluation_shards_hold_each_example_once() -> None:
    """11 examples on 3 ranks: training pads to 4 each; validation and test take 4, 4 and 3, no duplicate."""
    from {{ cookiecutter.package_name }}.data.common import EpochSampler

    padded = [list(EpochSampler(11, shuffle=True, seed=1, rank=rank, world_size=3)) for rank in range(3)]
    assert [len(shard) for shard in padded] == [4, 4, 4] and len(set(sum(padded, []))) == 11
    shards = [EpochSampler(11, shuffle=False, seed=1, rank=rank, world_size=3, pad=False) for rank in range(3)]
    assert [len(shard) for shard in shards] == [4, 4, 3]
    assert sorted(sum((list(shard) for shard in shards), [])) == list(range(11))


class SignalState(torch.utils.data.Dataset):
    """Each item: whether SIGTERM is ignored in the process that loads it."""

    def __len__(self) -> int:
        return 2

    def __getitem__(self, index: int) -> bool:
        import signal

        return signal.getsignal(signal.SIGTERM) == signal.SIG_IGN


def test_data_workers_leave_stop_signals_to_the_trainer() -> None:
    """A worker must not die of the SIGTERM SLURM or torchrun sends the trainer's whole process group."""
    from {{ cookiecutter.package_name }}.data.common import DataModule

    module = DataModule(batch_size=1, num_workers=1, persistent_workers=False)
    module.train_set = module.val_set = module.test_set = SignalState()
    assert [bool(item) for item in module.loader("val")] == [True, True]


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

    history = [
        {
            "epoch": epoch,
            "train/loss": 1.0 / (epoch + 1),
            "val/loss": 1.1,
            "val/acc": 0.5,
            "val/f1": 0.4,
            "val/precision": 0.5,
            "val/recall": 0.5,
            "train/lr": 0.1,
        }
        for epoch in range(3)
    ]
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
