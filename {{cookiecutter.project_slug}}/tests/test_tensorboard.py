"""TensorBoard tracking, read back with TensorBoard's own event reader and compared with metrics.csv."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from {{ cookiecutter.package_name }}.config.quoting import path_override

from conftest import PACKAGE, PROJECT_ROOT, offline_env

TINY = [
    "trainer.max_epochs=2",
    "trainer.limit_train_batches=4",
    "trainer.limit_val_batches=2",
    "trainer.log_every_n_steps=1",
    "trainer.progress_bar=false",
    "trainer.device=cpu",
    "data.num_workers=0",
]


def train(run_dir: Path, *overrides: str) -> subprocess.CompletedProcess:
    """A tiny run with ``-X importtime``: stderr lists every module it imported."""
    command = [sys.executable, "-X", "importtime", "-m", f"{PACKAGE}.train", *TINY, path_override("hydra.run.dir", run_dir),
               *overrides]  # fmt: skip
    env = {**offline_env(), "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def imported(result: subprocess.CompletedProcess) -> set[str]:
    return {line.split("|")[-1].strip().split(".")[0] for line in result.stderr.splitlines() if "import time:" in line}


def events(log_dir: Path) -> Any:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    reader = EventAccumulator(str(log_dir), size_guidance={"scalars": 0, "images": 0, "tensors": 0})
    reader.Reload()
    return reader


@pytest.fixture(scope="module")
def tensorboard_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess]:
    run_dir = tmp_path_factory.mktemp("tensorboard") / "run"
    return run_dir, train(run_dir, "logger=tensorboard")


def test_scalars_match_metrics_csv(tensorboard_run: tuple[Path, subprocess.CompletedProcess]) -> None:
    run_dir, _ = tensorboard_run
    reader = events(run_dir / "tensorboard")
    with open(run_dir / "metrics.csv", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    for column in [name for name in rows[0] if name != "epoch"]:
        tag = f"{column}_epoch" if column in ("train/loss", "train/lr") else column
        logged = {event.step: event.value for event in reader.Scalars(tag)}
        expected = {int(row["epoch"]): float(row[column]) for row in rows if row[column] != ""}
        assert logged == pytest.approx(expected, rel=1e-6), column
    global_step = json.loads((run_dir / "summary.json").read_text())["global_step"]
    assert [event.step for event in reader.Scalars("train/loss")] == list(range(1, global_step + 1))


def test_figures_tables_summary_provenance_and_hparams(
    tensorboard_run: tuple[Path, subprocess.CompletedProcess],
) -> None:
    run_dir, _ = tensorboard_run
    reader = events(run_dir / "tensorboard")
    tags = reader.Tags()
    plots = {f"plots/{path.stem}" for path in (run_dir / "plots").glob("*.png")}
    assert "plots/learning_curves" in plots and plots <= set(tags["images"])
    texts = set(tags["tensors"])
    tables = {f"tables/{path.stem}/text_summary" for path in (run_dir / "tables").glob("*.csv")}
    assert tables and tables <= texts
    assert {"summary/text_summary", "provenance/text_summary", "config/text_summary"} <= texts
    hparams = reader.PluginTagToContent("hparams")
    assert {"_hparams_/experiment", "_hparams_/session_start_info"} <= set(hparams)
    assert b"trainer.max_epochs" in hparams["_hparams_/session_start_info"]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert reader.Scalars(f"best/{summary['monitor']}")[-1].value == pytest.approx(summary["best"]["value"])


def test_only_runs_that_use_it_import_tensorboard(
    tensorboard_run: tuple[Path, subprocess.CompletedProcess], tmp_path: Path
) -> None:
    assert "tensorboard" in imported(tensorboard_run[1])  # the listing shows it when it is used
    plain = imported(train(tmp_path / "run", "logger=csv", "trainer.max_epochs=1"))
    assert "torch" in plain and "tensorboard" not in plain


def test_resume_writes_on_in_the_same_folder(tmp_path: Path) -> None:
    from {{ cookiecutter.package_name }}.tracking.tensorboard_logger import TensorBoardLogger

    first = TensorBoardLogger(save_dir=tmp_path / "first")
    first.start({"seed": 1})
    first.log_epoch({"val/f1": 0.25}, 0)
    run_id = first.run_id
    first.finish()
    second = TensorBoardLogger(save_dir=tmp_path / "second")  # e.g. resume=<first>/checkpoints/last.pt
    second.start({"seed": 1}, resume={"run_ids": {"tensorboard": run_id}, "history": []})
    second.log_epoch({"val/f1": 0.5}, 1)
    second.finish()
    assert second.run_id is None and not (tmp_path / "second" / "tensorboard").exists()
    assert {event.step: event.value for event in events(Path(run_id)).Scalars("val/f1")} == {0: 0.25, 1: 0.5}
