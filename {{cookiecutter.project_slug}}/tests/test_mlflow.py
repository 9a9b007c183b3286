"""MLflow tracking, read back with MlflowClient: a local SQLite store, a real server over HTTP, a server that
dies mid-run (nothing lost, synced afterwards), and resuming into the same run."""

from __future__ import annotations

import csv
import json
import logging
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from {{ cookiecutter.package_name }}.config.quoting import path_override

from conftest import PACKAGE, PROJECT_ROOT, offline_env, run_module

TINY = [
    "logger=mlflow",
    "trainer.max_epochs=2",
    "trainer.limit_train_batches=4",
    "trainer.limit_val_batches=2",
    "trainer.log_every_n_steps=1",
    "trainer.progress_bar=false",
    "trainer.device=cpu",
    "data.num_workers=0",
]


def quiet_env(**extra: str) -> dict[str, str]:
    env = {key: value for key, value in offline_env().items() if not key.startswith("MLFLOW_")}
    return {**env, "OMP_NUM_THREADS": "1", **extra}


def client_for(uri: str) -> Any:
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=uri)


def csv_rows(run_dir: Path) -> list[dict[str, str]]:
    with open(run_dir / "metrics.csv", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def record(run_dir: Path) -> dict[str, Any]:
    return json.loads((run_dir / "mlflow.json").read_text(encoding="utf-8"))


def history(client: Any, run_id: str, key: str) -> dict[int, float]:
    return {metric.step: metric.value for metric in client.get_metric_history(run_id, key)}


def assert_epochs_match_csv(client: Any, run_id: str, run_dir: Path) -> None:
    """Every epoch metric of metrics.csv is in the MLflow run at its epoch, with the same value."""
    rows = csv_rows(run_dir)
    assert rows
    for column in [name for name in rows[0] if name != "epoch"]:
        key = f"{column}_epoch" if column in ("train/loss", "train/lr") else column
        logged = history(client, run_id, key)
        expected = {int(row["epoch"]): float(row[column]) for row in rows if row[column] != ""}
        assert logged == pytest.approx(expected), column


@pytest.fixture(scope="module")
def local_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """Two tiny epochs logged to a SQLite store of its own."""
    root = tmp_path_factory.mktemp("mlflow")
    store = root / "mlflow.db"
    result = run_module(
        "train",
        *TINY,
        path_override("hydra.run.dir", root / "run"),
        path_override("logger.mlflow.local_store", store),
        env=quiet_env(),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return root / "run", f"sqlite:///{store.as_posix()}"


def test_epoch_and_step_metrics_match_metrics_csv(local_run: tuple[Path, str]) -> None:
    run_dir, uri = local_run
    assert record(run_dir)["tracking_uri"] == uri
    client = client_for(uri)
    run_id = record(run_dir)["run_id"]
    assert_epochs_match_csv(client, run_id, run_dir)
    steps = history(client, run_id, "train/loss")
    global_step = json.loads((run_dir / "summary.json").read_text())["global_step"]
    assert global_step >= 2 and sorted(steps) == list(range(1, global_step + 1))  # one value per optimizer step
    assert client.get_run(run_id).info.status == "FINISHED"


def test_config_is_flat_params_and_tags_name_seed(local_run: tuple[Path, str]) -> None:
    run_dir, uri = local_run
    run = client_for(uri).get_run(record(run_dir)["run_id"])
    params = run.data.params
    assert params["trainer.max_epochs"] == "2"
    assert params["task.monitor"] == json.loads((run_dir / "summary.json").read_text())["monitor"]
    assert float(params["optimizer.lr"]) > 0
    assert all(len(value) <= 6000 for value in params.values())
    assert run.data.tags["seed"] == "42"
    assert run.data.tags["mlflow.runName"] == params["name"] != "None"


def test_figures_tables_summary_and_provenance_are_artifacts(local_run: tuple[Path, str], tmp_path: Path) -> None:
    run_dir, uri = local_run
    client = client_for(uri)
    run_id = record(run_dir)["run_id"]
    folder = Path(client.download_artifacts(run_id, "", str(tmp_path)))
    plots = {path.name for path in (run_dir / "plots").glob("*.png")}
    assert "learning_curves.png" in plots and {path.name for path in (folder / "plots").glob("*.png")} == plots
    tables = sorted((run_dir / "tables").glob("*.csv"))
    assert tables and all((folder / "tables" / table.name).read_text() == table.read_text() for table in tables)
    assert json.loads((folder / "summary.json").read_text()) == json.loads((run_dir / "summary.json").read_text())
    assert json.loads((folder / "provenance.json").read_text())["status"] == "completed"
    summary = json.loads((run_dir / "summary.json").read_text())
    metrics = client.get_run(run_id).data.metrics
    assert metrics[f"best/{summary['monitor']}"] == pytest.approx(summary["best"]["value"])


@pytest.mark.slow
def test_resume_continues_the_same_run(tmp_path: Path) -> None:
    """A run stopped after one epoch and resumed (resume=auto) logs its second epoch into the same run."""
    store, run_dir = tmp_path / "mlflow.db", tmp_path / "run"
    common = [*TINY, path_override("hydra.run.dir", run_dir), path_override("logger.mlflow.local_store", store)]
    first = run_module("train", *common, "trainer.max_epochs=1", env=quiet_env())
    assert first.returncode == 0, first.stderr[-3000:]
    run_id = record(run_dir)["run_id"]
    second = run_module("train", *common, "trainer.max_epochs=2", env=quiet_env())
    assert second.returncode == 0, second.stderr[-3000:]
    client = client_for(f"sqlite:///{store.as_posix()}")
    assert record(run_dir)["run_id"] == run_id
    assert len(client.search_runs([client.get_experiment_by_name("{{ cookiecutter.project_slug }}").experiment_id])) == 1
    monitor = json.loads((run_dir / "summary.json").read_text())["monitor"]
    assert sorted(history(client, run_id, monitor)) == [0, 1]


def test_a_sweep_is_one_experiment(tmp_path: Path) -> None:
    from {{ cookiecutter.package_name }}.tracking.mlflow_logger import MlflowLogger

    for trial in range(2):
        logger = MlflowLogger(save_dir=tmp_path / str(trial), local_store=tmp_path / "mlflow.db", group="sweep-1")
        logger.start({"name": f"trial-{trial}", "seed": trial})
        logger.log_epoch({"val/f1": 0.5 + trial}, 0)
        logger.finish()
    client = client_for(f"sqlite:///{(tmp_path / 'mlflow.db').as_posix()}")
    experiment = client.get_experiment_by_name("{{ cookiecutter.project_slug }}/sweep-1")
    runs = client.search_runs([experiment.experiment_id])
    assert sorted(run.data.tags["seed"] for run in runs) == ["0", "1"]
    assert {run.data.tags["sweep"] for run in runs} == {"sweep-1"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_unreachable_server_warns_once_and_logs_locally(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from {{ cookiecutter.package_name }}.tracking.mlflow_logger import MlflowLogger

    server = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    logger = MlflowLogger(save_dir=tmp_path, local_store=tmp_path / "mlflow.db", tracking_uri=server, http_retries=0)
    with caplog.at_level(logging.WARNING):
        logger.start({"name": "offline", "seed": 1})
        for epoch in range(3):
            logger.log_epoch({"val/f1": 0.1 * epoch}, epoch)
        logger.finish()
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and "does not answer" in warnings[0] and "mlflow_sync" in warnings[0], warnings
    kept = record(tmp_path)
    assert kept["tracking_uri"].startswith("sqlite:") and kept["server"] == server and not kept["synced"]
    assert history(client_for(kept["tracking_uri"]), kept["run_id"], "val/f1") == pytest.approx({0: 0, 1: 0.1, 2: 0.2})


class Server:
    """A real ``mlflow server`` on 127.0.0.1 with a SQLite backend, in its own process group."""

    def __init__(self, root: Path, port: int) -> None:
        self.root, self.port, self.uri = root, port, f"http://127.0.0.1:{port}"
        self.process: subprocess.Popen | None = None

    def start(self) -> Server:
        command = [
            sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(self.port),
            "--backend-store-uri", f"sqlite:///{(self.root / 'server.db').as_posix()}",
            "--artifacts-destination", str(self.root / "server-artifacts"), "--workers", "1",
        ]  # fmt: skip
        log = open(self.root / "server.log", "a")  # noqa: SIM115 - closed with the process
        env = quiet_env(MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false")  # no job runner: it starts faster
        self.process = subprocess.Popen(command, stdout=log, stderr=log, start_new_session=True, env=env)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"{self.uri}/health", timeout=2) as answer:
                    if answer.status == 200:
                        return self
            except OSError:
                time.sleep(0.5)
        self.kill()
        raise AssertionError((self.root / "server.log").read_text()[-3000:])

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            import os

            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(30)


@pytest.fixture
def server(tmp_path: Path) -> Any:
    running = Server(tmp_path, free_port()).start()
    yield running
    running.kill()


def train_command(run_dir: Path, *overrides: str) -> list[str]:
    return [sys.executable, "-m", f"{PACKAGE}.train", *TINY, path_override("hydra.run.dir", run_dir), *overrides]


@pytest.mark.slow
def test_a_run_logs_to_a_real_server_over_http(server: Server, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    env = quiet_env(MLFLOW_TRACKING_URI=server.uri)
    result = run_module(
        "train",
        *TINY,
        path_override("hydra.run.dir", run_dir),
        path_override("logger.mlflow.local_store", tmp_path / "local.db"),
        env=env,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "does not answer" not in result.stderr
    kept = record(run_dir)
    assert kept["tracking_uri"] == server.uri and kept["synced"]
    assert not (tmp_path / "local.db").exists()  # nothing fell back
    client = client_for(server.uri)
    assert_epochs_match_csv(client, kept["run_id"], run_dir)
    names = {artifact.path for artifact in client.list_artifacts(kept["run_id"])}
    assert {"plots", "tables", "summary.json", "provenance.json"} <= names


@pytest.mark.slow
def test_server_killed_mid_run_loses_nothing_and_syncs_later(server: Server, tmp_path: Path) -> None:
    run_dir, local = tmp_path / "run", tmp_path / "local.db"
    overrides = [
        "trainer.max_epochs=40",
        path_override("logger.mlflow.local_store", local),
        "logger.mlflow.http_retries=0",
    ]
    env = quiet_env(MLFLOW_TRACKING_URI=server.uri)
    training = subprocess.Popen(
        train_command(run_dir, *overrides), cwd=PROJECT_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    client = client_for(server.uri)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and training.poll() is None:  # wait until the server holds a first epoch
        if (run_dir / "mlflow.json").is_file() and history(client, record(run_dir)["run_id"], "epoch"):
            break
        time.sleep(0.2)
    assert training.poll() is None, "training ended before the server could be killed"
    server_run = record(run_dir)["run_id"]
    server.kill()
    _, stderr = training.communicate(timeout=600)
    assert training.returncode == 0, stderr[-3000:]
    assert stderr.count("does not answer") == 1, stderr[-3000:]
    kept = record(run_dir)
    assert kept["tracking_uri"].startswith("sqlite:") and kept["server_run_id"] == server_run
    assert_epochs_match_csv(client_for(kept["tracking_uri"]), kept["run_id"], run_dir)  # all of it, locally
    on_server = history(client_for(f"sqlite:///{(tmp_path / 'server.db').as_posix()}"), server_run, "epoch")
    epochs = len(csv_rows(run_dir))  # early stopping may end it before 40
    assert 1 <= len(on_server) < epochs  # what the server got before it died is still there

    server.start()
    sync = run_module("tracking.mlflow_sync", str(run_dir), env=quiet_env())
    assert sync.returncode == 0, sync.stderr[-3000:]
    assert_epochs_match_csv(client, server_run, run_dir)  # the server's run is whole again
    assert len(client.get_metric_history(server_run, "epoch")) == epochs  # and nothing twice
    assert {artifact.path for artifact in client.list_artifacts(server_run)} >= {"plots", "summary.json"}
    assert record(run_dir)["synced"]


def test_a_run_without_mlflow_never_imports_it(tmp_path: Path) -> None:
    """logger=csv: -X importtime lists every module the run imported; mlflow is not among them."""
    command = [sys.executable, "-X", "importtime", "-m", f"{PACKAGE}.train", *TINY[1:], "trainer.max_epochs=1",
               "logger=csv", path_override("hydra.run.dir", tmp_path / 'run')]  # fmt: skip
    result = subprocess.run(command, cwd=PROJECT_ROOT, env=quiet_env(), capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    imported = {
        line.split("|")[-1].strip().split(".")[0] for line in result.stderr.splitlines() if "import time:" in line
    }
    assert "torch" in imported  # the listing is complete
    assert "mlflow" not in imported
