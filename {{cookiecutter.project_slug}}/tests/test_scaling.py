"""From laptop to cluster, on the CPU: DDP under torchrun, submitit's local launcher, Optuna, exact resume.

The end-to-end tests start real processes and take tens of seconds each (most of it
importing torch in every process); they are marked ``slow``: ``pytest -m "not slow"``
skips them.
"""

from __future__ import annotations

import csv
import json
import os
import re
import signal
import subprocess
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from {{ cookiecutter.package_name }}.config import resolvers
from {{ cookiecutter.package_name }}.config.quoting import path_override
from {{ cookiecutter.package_name }}.training import cluster
from {{ cookiecutter.package_name }}.training.callbacks import Callback

from conftest import (
    PACKAGE,
    PROJECT_ROOT,
    TORCHRUN,
    compose_config,
    evaluated_alone,
    needs_torchrun,
    offline_env,
    run_command,
    run_module,
    train_on_two_ranks,
)

QUICK = ["logger=csv", "debug=fast", "trainer.device=cpu"]  # gloo and CPU numbers, also where a GPU is visible


class SignalAtEpoch(Callback):
    """A callback that sends this process ``signum`` (several: space-separated) once ``epoch`` has been validated."""

    def __init__(self, epoch: int, signum: str = "SIGTERM") -> None:
        self.epoch, self.signals = epoch, [getattr(signal, name) for name in signum.split()]

    def on_validation_end(self, trainer: Any, metrics: dict[str, float]) -> None:
        if trainer.state.epoch == self.epoch:
            for signum in self.signals:
                os.kill(os.getpid(), signum)


def rows(run_dir: Path) -> list[dict[str, str]]:
    with open(run_dir / "metrics.csv", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def best_line(log_file: Path) -> str:
    lines = [line for line in log_file.read_text(encoding="utf-8").splitlines() if "Best val/" in line]
    assert len(lines) == 1, log_file
    return lines[0].split("] ", 1)[1].split(". Outputs")[0]


# ------------------------------------------------------------------ configs and helpers (fast)
def test_ddp_config_composes() -> None:
    cfg = compose_config(["trainer=ddp"], output_dir=Path("unused"))
    assert cfg.trainer.distributed is True and cfg.trainer.backend == "auto"
    assert cfg.trainer.max_epochs == compose_config([], output_dir=Path("unused")).trainer.max_epochs


@pytest.mark.parametrize("launcher, target", [("slurm", "SlurmLauncher"), ("local", "LocalLauncher")])
def test_launcher_configs_compose(launcher: str, target: str) -> None:
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(PROJECT_ROOT / "configs"), version_base="1.3"):
        cfg = compose("train", overrides=[f"hydra/launcher={launcher}"], return_hydra_config=True)
    assert cfg.hydra.launcher._target_.endswith(target)
    if launcher == "slurm":
        assert cfg.hydra.launcher.additional_parameters.requeue is True
        assert cfg.hydra.launcher.max_num_timeout > 0


def test_optuna_direction_follows_the_task_mode() -> None:
    assert resolvers.sweep_direction("max") == "maximize"
    assert resolvers.sweep_direction("min") == "minimize"
    with pytest.raises(ValueError):
        resolvers.sweep_direction("up")


def test_runs_of_one_sweep_share_a_group(tmp_path: Path) -> None:
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig

    for mode, expected in (("RUN", None), ("MULTIRUN", "my-sweep")):
        GlobalHydra.instance().clear()
        with initialize_config_dir(config_dir=str(PROJECT_ROOT / "configs"), version_base="1.3"):
            cfg = compose(
                "train",
                overrides=[f"hydra.mode={mode}", path_override("hydra.sweep.dir", tmp_path / "my-sweep")],
                return_hydra_config=True,
            )
        HydraConfig.instance().set_config(cfg)
        assert resolvers.sweep_group() == expected


def test_rank_helpers_follow_the_rank(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RANK", "0")
    assert resolvers.rank_suffix() == "" and resolvers.rank_zero_only(".hydra") == ".hydra"
    monkeypatch.setenv("RANK", "3")
    assert resolvers.rank_suffix() == ".rank3" and resolvers.rank_zero_only(".hydra") is None


@pytest.mark.skipif(not hasattr(signal, "SIGUSR2"), reason="no SIGUSR2 on this platform")
def test_requeue_signal_is_handed_to_submitit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SUBMITIT_PREEMPT_SIGNAL", raising=False)
    assert signal.SIGUSR2 in cluster.stop_signals()
    received: list[int] = []
    previous = signal.signal(signal.SIGUSR2, lambda signum, frame: received.append(signum))
    try:
        cluster.hand_over(signal.SIGTERM)  # a plain stop: nobody is told
        cluster.hand_over(signal.SIGUSR2)  # submitit's signal: its handler requeues
    finally:
        signal.signal(signal.SIGUSR2, previous)
    assert received == [signal.SIGUSR2]


# ------------------------------------------------------------------ end to end (slow)
@pytest.mark.slow
@needs_torchrun
def test_torchrun_two_ranks_share_one_run_folder(tmp_path: Path) -> None:
    """2 CPU processes (gloo): one run folder, one set of checkpoints, the same metrics on both ranks."""
    command = [
        *TORCHRUN,
        "-m",
        f"{PACKAGE}.train",
        "trainer=ddp",
        *QUICK,
        "data.batch_size=8",  # at least 5 batches per rank of every render's default data (the text corpus too)
        path_override("paths.log_dir", tmp_path),
    ]
    result = run_command(command)
    assert result.returncode == 0, result.stderr[-3000:]
    runs = list((tmp_path / "runs").iterdir())
    assert len(runs) == 1, runs
    run = runs[0]
    assert sorted(path.name for path in (run / "checkpoints").iterdir()) == ["best.pt", "last.pt"]
    assert len(rows(run)) == 1 and (run / ".hydra" / "config.yaml").is_file()
    rank0, rank1 = run / "train.log", run / "train.rank1.log"
    assert "DDP: rank 1 of 2 (gloo)" in rank1.read_text(encoding="utf-8")
    assert best_line(rank0) == best_line(rank1)  # validation metrics are all-reduced
    state = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    assert state["global_step"] == 5 and not any(key.startswith("module.") for key in state["model"])


@pytest.mark.slow
@needs_torchrun
def test_ddp_evaluation_counts_each_example_once(tmp_path: Path) -> None:
    """2 gloo ranks on splits of 271 examples (136 + 135, 4 and 3 batches): the val and test metrics
    equal one process's on the same weights, so no example is padded in twice."""
    pytest.importorskip(f"{PACKAGE}.tasks.classification", reason="no classification task here (digits' splits)")
    run = train_on_two_ranks(
        tmp_path / "run",
        "trainer.limit_train_batches=3",
        "data.batch_size=45",
        "data.val_fraction=0.151",
        "data.test_fraction=0.151",
    )
    launch = json.loads((run / "provenance.json").read_text(encoding="utf-8"))["launch"]
    assert (launch["world_size"], launch["backend"]) == (2, "gloo")
    distributed = {
        "test": json.loads((run / "summary.json").read_text(encoding="utf-8"))["test"],
        "val": {key: float(value) for key, value in rows(run)[0].items() if key.startswith("val/")},
    }
    for split in ("test", "val"):
        metrics = evaluated_alone(run, split)
        shared = sorted(set(metrics) & set(distributed[split]))
        assert {f"{split}/acc", f"{split}/loss"} <= set(shared)
        assert {key: distributed[split][key] for key in shared} == pytest.approx(
            {key: metrics[key] for key in shared}, abs=1e-6
        )


RUN_TIME_PROBE = """
import os, time
time.sleep(2.5 * int(os.environ["RANK"]))  # rank 1 asks 2.5 s later than rank 0
from {{ cookiecutter.package_name }}.config import resolvers
print("run_time", os.environ["RANK"], resolvers.run_time("%H-%M-%S"), flush=True)
"""


@pytest.mark.slow
@needs_torchrun
def test_run_time_is_rank_zeros_on_every_rank(tmp_path: Path) -> None:
    """The run folder's time stamp comes from rank 0, even when another rank resolves it later."""
    probe = tmp_path / "probe.py"
    probe.write_text(RUN_TIME_PROBE, encoding="utf-8")
    result = run_command([*TORCHRUN, str(probe)], timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    stamps = dict(line.split()[1:] for line in result.stdout.splitlines() if line.startswith("run_time"))
    assert set(stamps) == {"0", "1"} and stamps["0"] == stamps["1"]


def hook_env() -> dict[str, str]:
    """offline_env() with this folder importable, so that runs can use ``test_scaling.SignalAtEpoch``."""
    env = offline_env()
    env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).parent), env["PYTHONPATH"]])
    return env


@pytest.mark.slow
@pytest.mark.skipif(not hasattr(signal, "SIGUSR2"), reason="submitit needs SIGUSR2")
def test_local_launcher_multirun_requeues_after_usr2(tmp_path: Path) -> None:
    """2 jobs through submitit, stopped after epoch 0 by USR2 (job 0) and by SIGTERM then USR2 (job 1,
    SLURM's order on preemption): each saves last.pt, is requeued (not ended as a success) and resumes.

    The slowest test here (4 process starts; about 2 minutes on 2 busy cores).
    """
    result = run_module(
        "train",
        "-m",
        "hydra/launcher=local",
        "logger=csv",
        "trainer.device=cpu",
        "trainer.max_epochs=2",
        "trainer.limit_train_batches=3",
        "trainer.limit_val_batches=1",
        "trainer.progress_bar=false",
        "+trainer.callbacks.stop._target_=test_scaling.SignalAtEpoch",
        "+trainer.callbacks.stop.epoch=0",
        "+trainer.callbacks.stop.signum=SIGUSR2,'SIGTERM SIGUSR2'",
        path_override("hydra.sweep.dir", tmp_path),
        env=hook_env(),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    job_folders = [path for path in (tmp_path / ".submitit").iterdir() if any(path.glob("*_log.*"))]
    assert len(job_folders) == 2
    for folder in job_folders:  # submitit's own record of the requeue
        assert "Requeued job" in "".join(path.read_text(encoding="utf-8") for path in folder.glob("*_log.*"))
    for job in ("0", "1"):
        assert [row["epoch"] for row in rows(tmp_path / job)] == ["0", "1"]
        assert "Resumed from" in (tmp_path / job / "train.log").read_text(encoding="utf-8")
        state = torch.load(tmp_path / job / "checkpoints" / "last.pt", weights_only=True)
        assert (state["epoch"], state["global_step"]) == (2, 6)


@pytest.mark.slow
def test_optuna_sweep_writes_results(tmp_path: Path) -> None:
    result = run_module(
        "train", "hparams_search=optuna", "hydra.sweeper.n_trials=3", *QUICK, path_override("hydra.sweep.dir", tmp_path)
    )
    assert result.returncode == 0, result.stderr[-3000:]
    results = yaml.safe_load((tmp_path / "optimization_results.yaml").read_text(encoding="utf-8"))
    assert set(results["best_params"]) == {"optimizer.lr", "optimizer.weight_decay", "data.batch_size"}
    trials = [json.loads((tmp_path / str(n) / "summary.json").read_text())["best"]["value"] for n in range(3)]
    mode = yaml.safe_load((tmp_path / "0" / ".hydra" / "config.yaml").read_text(encoding="utf-8"))["task"]["mode"]
    best = max if mode == "max" else min  # val/f1 is maximized in an image render, an LM's val/loss minimized
    assert results["best_value"] == pytest.approx(best(trials))


@pytest.mark.slow
def test_sigterm_then_resume_matches_an_uninterrupted_run(tmp_path: Path) -> None:
    """SIGTERM after epoch 2 -> last.pt mid-epoch, exit 0; resume=auto -> the same weights and metrics."""
    common = [
        "logger=csv",
        "trainer.max_epochs=4",
        "trainer.limit_train_batches=4",
        "trainer.limit_val_batches=2",
        "trainer.deterministic=true",
        "trainer.progress_bar=false",
        "data.num_workers=0",
        "trainer.device=cpu",
    ]
    env = hook_env()
    reference, resumed = tmp_path / "reference", tmp_path / "resumed"

    def train(run_dir: Path, *extra: str) -> subprocess.CompletedProcess:
        result = run_module("train", *common, *extra, path_override("hydra.run.dir", run_dir), env=env)
        assert result.returncode == 0, result.stderr[-3000:]
        return result

    train(reference)
    stopped = train(
        resumed, "+trainer.callbacks.stop._target_=test_scaling.SignalAtEpoch", "+trainer.callbacks.stop.epoch=1"
    )
    assert "stopped by signal" in stopped.stderr
    interrupted = torch.load(resumed / "checkpoints" / "last.pt", weights_only=True)
    assert (interrupted["epoch"], interrupted["batches_done"]) == (2, 1)  # saved at the next step boundary
    assert len(rows(resumed)) == 2
    train(resumed)  # resume=auto is the default

    assert rows(resumed) == rows(reference)
    final: list[dict[str, Any]] = [
        torch.load(run / "checkpoints" / "last.pt", weights_only=True) for run in (reference, resumed)
    ]
    assert final[0]["global_step"] == final[1]["global_step"] == 16
    for name, tensor in final[0]["model"].items():
        assert torch.equal(tensor, final[1]["model"][name]), name
    summaries = [json.loads((run / "summary.json").read_text()) for run in (reference, resumed)]
    assert summaries[0]["test"] == summaries[1]["test"]


def test_corrupt_checkpoint_stops_resume_with_one_line(tmp_path: Path) -> None:
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "last.pt").write_bytes(b"PK\x03\x04 not a checkpoint")
    result = run_module("train", *QUICK, path_override("hydra.run.dir", tmp_path))
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert re.search(r"last\.pt is truncated or corrupt .*resume=none", result.stderr)
    assert not (tmp_path / "metrics.csv").exists()  # nothing was trained from it
