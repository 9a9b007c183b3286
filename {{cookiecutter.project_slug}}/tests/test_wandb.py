"""W&B tracking, offline: what a run logs, read back with W&B's own reader, and that it never blocks."""

from __future__ import annotations

import functools
import json
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from {{ cookiecutter.package_name }}.config.quoting import path_override

from conftest import compose_config, offline_env, run_module

FAKE_KEY = "0123456789abcdef0123456789abcdef01234567"
TINY = [
    "logger=wandb",
    "trainer.max_epochs=2",
    "trainer.limit_train_batches=4",
    "trainer.limit_val_batches=2",
    "trainer.log_every_n_steps=1",
    "trainer.progress_bar=false",
    "data.num_workers=0",
]


def quiet_env(**extra: str) -> dict[str, str]:
    """Offline, and one CPU thread: tiny runs are faster without thread contention."""
    return {**offline_env(), "OMP_NUM_THREADS": "1", **extra}


def run_file(run_dir: Path) -> Path:
    files = sorted((run_dir / "wandb").glob("*run-*/run-*.wandb"))
    assert len(files) == 1, f"expected one W&B run under {run_dir}, found {files}"
    return files[0]


@functools.cache
def inspect(path: Path, *options: str) -> str:
    """Dump a .wandb transaction log with W&B's own reader (`wandb leet inspect`)."""
    result = subprocess.run(
        [sys.executable, "-m", "wandb", "leet", "inspect", *options, str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        env=offline_env(),
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


def records(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in inspect(path, "--json").splitlines() if line.strip()]


def history(path: Path) -> list[dict[str, Any]]:
    return [record["history"]["item"] for record in records(path) if record["type"] == "history"]


@pytest.fixture(scope="module")
def wandb_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess]:
    """Two tiny epochs, offline, with a (fake) API key in the environment."""
    run_dir = tmp_path_factory.mktemp("wandb") / "run"
    env = quiet_env(WANDB_API_KEY=FAKE_KEY)
    result = run_module("train", *TINY, path_override("hydra.run.dir", run_dir), env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return run_dir, result


def test_history_holds_epoch_and_step_metrics(wandb_run: tuple[Path, Any]) -> None:
    rows = history(run_file(wandb_run[0]))
    epochs = [row for row in rows if "epoch" in row and "val/acc" in row]
    assert [row["epoch"] for row in epochs] == [0, 1]
    assert all(isinstance(row["train/loss_epoch"], float) and 0 <= row["val/acc"] <= 1 for row in epochs)
    steps = [row for row in rows if "trainer/global_step" in row]
    assert [row["trainer/global_step"] for row in steps] == list(range(1, 9))
    assert all("train/loss" in row and "train/lr" in row for row in steps)


def test_step_and_epoch_axes_are_declared(wandb_run: tuple[Path, Any]) -> None:
    metrics = {
        record["metric"].get("name"): record["metric"]
        for record in records(run_file(wandb_run[0]))
        if record["type"] == "metric"
    }
    assert metrics["train/loss"]["step_metric"] == "trainer/global_step"
    assert metrics["val/acc"]["step_metric"] == "epoch"
    assert metrics["train/loss_epoch"]["step_metric"] == "epoch"


def test_config_holds_sections_and_the_run_folders_provenance(wandb_run: tuple[Path, Any]) -> None:
    config = json.loads(inspect(run_file(wandb_run[0]), "--summary", "--json"))["config"]
    assert {"model", "data", "optimizer", "trainer", "task", "provenance"} <= set(config)
    on_disk = json.loads((wandb_run[0] / "provenance.json").read_text(encoding="utf-8"))
    assert config["provenance"]["versions"] == on_disk["versions"] and on_disk["versions"]["torch"]
    assert config["provenance"]["hardware"]["cpu"] == on_disk["hardware"]["cpu"]
    assert config["optimizer"]["lr"] > 0 and config["name"]


def test_figures_and_tables_are_logged(wandb_run: tuple[Path, Any]) -> None:
    run_dir = wandb_run[0]
    logged = {key for row in history(run_file(run_dir)) for key in row}
    for name in ("confusion_matrix", "pr_curves", "learning_curves"):
        assert f"plots/{name}._type" in logged, name
        assert list(run_file(run_dir).parent.glob(f"files/media/images/plots/{name}_*.png")), name
        assert (run_dir / "plots" / f"{name}.png").is_file(), name
    for name in ("classification_report", "prediction_samples"):
        assert f"tables/{name}._type" in logged, name
    samples = next(run_file(run_dir).parent.glob("files/media/table/tables/prediction_samples_*.table.json"))
    table = json.loads(samples.read_text(encoding="utf-8"))
    assert table["columns"] == ["image", "true", "predicted", "correct"] and len(table["data"]) == 16
    tables = {
        record["artifact"]["name"]: record["artifact"]["manifest"]["contents"]
        for record in records(run_file(run_dir))
        if record["type"] == "artifact" and record["artifact"]["type"] == "run_table"
    }
    samples_files = next(files for name, files in tables.items() if "prediction_samples" in name)
    assert sum(entry["path"].endswith(".png") for entry in samples_files) == 16


def test_summary_agrees_with_summary_json(wandb_run: tuple[Path, Any]) -> None:
    run_dir = wandb_run[0]
    local = json.loads((run_dir / "summary.json").read_text(encoding="utf-8"))
    dumped = json.loads(inspect(run_file(run_dir), "--summary", "--json"))
    remote = dumped["summary"]
    assert remote[f"best/{local['monitor']}"] == pytest.approx(local["best"]["value"])
    assert remote["best/epoch"] == local["best"]["epoch"]
    assert remote[local["monitor"]]["max"] == pytest.approx(local["best"]["value"])
    assert remote["test/acc"] == pytest.approx(local["test"]["test/acc"])
    assert remote["peak_memory_bytes"] == local["peak_memory_bytes"]
    assert dumped["exit_code"] == 0 and dumped["state"] == "finished"


def test_best_checkpoint_is_a_model_artifact(wandb_run: tuple[Path, Any]) -> None:
    models = [
        record["artifact"]
        for record in records(run_file(wandb_run[0]))
        if record["type"] == "artifact" and record["artifact"]["type"] == "model"
    ]
    assert len(models) == 1 and "best" in models[0]["aliases"]
    metadata = json.loads(models[0]["metadata"])
    assert metadata["metric"] == "val/f1" and metadata["epoch"] in (0, 1)
    assert metadata["config"]["model"]["_target_"]
    assert [entry["path"] for entry in models[0]["manifest"]["contents"]] == ["best.pt"]


def test_api_key_appears_nowhere(wandb_run: tuple[Path, subprocess.CompletedProcess]) -> None:
    run_dir, result = wandb_run
    assert FAKE_KEY not in result.stdout + result.stderr
    leaks = [path for path in run_dir.rglob("*") if path.is_file() and FAKE_KEY.encode() in path.read_bytes()]
    assert not leaks


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_no_mode_no_key_no_network_runs_offline(tmp_path: Path) -> None:
    env = {key: value for key, value in quiet_env().items() if key not in {"WANDB_MODE", "WANDB_SILENT"}}
    env.update(WANDB_CONFIG_DIR=str(tmp_path / "config"), WANDB_BASE_URL=f"http://127.0.0.1:{closed_port()}")
    run_dir = tmp_path / "run"
    result = run_module(
        "train", *TINY, "trainer.max_epochs=1", path_override("hydra.run.dir", run_dir), env=env, timeout=240
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert run_file(run_dir).parent.name.startswith("offline-run-")
    assert result.stderr.count("upload later with `wandb sync") == 1
    assert (run_dir / "summary.json").is_file()


def test_exception_in_training_finishes_the_run_failed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from {{ cookiecutter.package_name }}.train import train
    from {{ cookiecutter.package_name }}.training.trainer import Trainer

    def broken(self: Trainer) -> None:
        raise RuntimeError("boom")

    monkeypatch.setenv("WANDB_CONSOLE", "off")
    monkeypatch.setattr(Trainer, "test", broken)
    cfg = compose_config([*TINY, "trainer.max_epochs=1", "trainer.limit_train_batches=2"], output_dir=tmp_path)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with pytest.raises(RuntimeError, match="boom"):
            train(cfg)
    finally:
        torch.set_num_threads(threads)
    dumped = json.loads(inspect(run_file(tmp_path), "--summary", "--json"))
    assert dumped["exit_code"] == 1


def test_only_the_main_process_logs(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from {{ cookiecutter.package_name }} import runtime
    from {{ cookiecutter.package_name }}.train import build_loggers

    cfg = compose_config(["logger=wandb"], output_dir=tmp_path)
    assert {type(logger).__name__ for logger in build_loggers(cfg).loggers} == {"CSVLogger", "WandbLogger"}
    monkeypatch.setattr(runtime, "is_main_process", lambda: False)
    assert build_loggers(cfg).loggers == []


def test_table_cells_become_images_text_and_numbers() -> None:
    import wandb

    from {{ cookiecutter.package_name }}.tracking.wandb_logger import to_cell

    assert isinstance(to_cell(torch.rand(1, 8, 8)), wandb.Image)
    assert isinstance(to_cell(torch.rand(3, 8, 8)), wandb.Image)
    assert to_cell("Once upon a time") == "Once upon a time"
    assert to_cell(torch.tensor(3)) == 3 and to_cell([1, 2]) == [1, 2]


def test_bad_mode_is_a_user_error(tmp_path: Path) -> None:
    from {{ cookiecutter.package_name }}.errors import UserError
    from {{ cookiecutter.package_name }}.tracking.wandb_logger import WandbLogger

    with pytest.raises(UserError, match="mode"):
        WandbLogger(project="p", save_dir=tmp_path, mode="sometimes")


def test_key_but_no_network_falls_back_offline_quickly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from {{ cookiecutter.package_name }}.tracking.wandb_logger import WandbLogger

    for key, value in {
        "WANDB_CONSOLE": "off",
        "WANDB_API_KEY": FAKE_KEY,
        "WANDB_BASE_URL": f"http://127.0.0.1:{closed_port()}",
    }.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("WANDB_MODE")
    logger = WandbLogger(project="p", save_dir=tmp_path, mode="online", init_timeout=3)
    logger.start({"name": "offline-fallback"})
    try:
        assert Path(logger.run.dir).parent.name.startswith("offline-run-")
    finally:
        logger.finish()


def test_resume_continues_the_same_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from {{ cookiecutter.package_name }}.tracking.wandb_logger import WandbLogger

    monkeypatch.setenv("WANDB_CONSOLE", "off")
    first = WandbLogger(project="p", save_dir=tmp_path, mode="offline")
    first.start({"name": "resumable"})
    run_id = first.run_id
    first.finish(exit_code=0)
    second = WandbLogger(project="p", save_dir=tmp_path, mode="offline")
    second.start({"name": "resumable"}, resume={"run_ids": {"wandb": run_id}, "history": []})
    assert second.run_id == run_id
    second.finish(exit_code=0)


def test_text_tables_are_logged_as_tables(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from {{ cookiecutter.package_name }}.tracking.wandb_logger import WandbLogger

    monkeypatch.setenv("WANDB_CONSOLE", "off")
    logger = WandbLogger(project="p", save_dir=tmp_path, mode="offline")
    logger.start({"name": "text"})
    logger.log_table("generated_samples", (["prompt", "generated"], [["Once upon", "a time there was"]]))
    logger.finish()
    saved = next(tmp_path.glob("wandb/offline-run-*/files/media/table/tables/generated_samples_*.table.json"))
    table = json.loads(saved.read_text(encoding="utf-8"))
    assert table == {"columns": ["prompt", "generated"], "data": [["Once upon", "a time there was"]]}


def test_doctor_says_whether_runs_log_online() -> None:
    without = run_module("doctor")
    assert without.returncode == 0, without.stderr[-2000:]
    assert any(line.startswith("W&B?") and "no API key" in line for line in without.stdout.splitlines())
    with_key = run_module("doctor", env=quiet_env(WANDB_API_KEY=FAKE_KEY))
    assert any(line.startswith("W&B?") and "API key found" in line for line in with_key.stdout.splitlines())
