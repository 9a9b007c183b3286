"""Optuna sweeps that survive a crash, and the comparison page of any set of runs.

The fast tests drive the sweeper's parts and ``compare`` on folders written here; the slow ones run
real sweeps: a trial killed without a result (submitit's local launcher, two trials at once), a
driver killed mid-trial and the same command run again, and a sweep in which every trial fails.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from hydra_plugins.{{ cookiecutter.package_name }}_optuna import optuna_sweeper as sweeper
from {{ cookiecutter.package_name }} import compare
from {{ cookiecutter.package_name }}.config.quoting import path_override
from {{ cookiecutter.package_name }}.errors import UserError
from {{ cookiecutter.package_name }}.training.callbacks import Callback

from conftest import PACKAGE, PROJECT_ROOT, offline_env, run_module

optuna = pytest.importorskip("optuna")
QUICK = ["logger=csv", "debug=fast", "hparams_search=optuna"]


class ExitAtFitStart(Callback):
    """Ends this process at once, with no result: an OOM kill, a node failure (``when`` picks the trials)."""

    def __init__(self, when: Any = True) -> None:
        self.when = str(when).lower() in {"true", "1", "kill"}

    def on_fit_start(self, trainer: Any) -> None:
        if self.when:
            os._exit(9)


def hook_env(**extra: str) -> dict[str, str]:
    env = offline_env()
    env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).parent), env["PYTHONPATH"]])
    env.update(extra)
    return env


def load_study(sweep: Path) -> Any:
    storage = sweeper.open_storage(str(sweep / "optuna.journal"))
    return optuna.load_study(study_name=f"train-{sweep.name}", storage=storage)


# ------------------------------------------------------------------ the sweeper's parts (fast)
def test_search_space_keeps_hydra_optuna_sweepers_syntax() -> None:
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    space, fixed = sweeper.search_space(
        [
            "optimizer.lr=tag(log, interval(1e-4, 1e-1))",
            "a=interval(0.0, 0.1)",
            "b=choice(32, 64)",
            "c=range(1, 5)",
            "d=interval(2, 8)",
            "logger=csv",
            "+e=choice(x, y)",
        ]
    )
    assert space["optimizer.lr"] == FloatDistribution(1e-4, 1e-1, log=True)
    assert space["a"] == FloatDistribution(0.0, 0.1)
    assert space["b"] == CategoricalDistribution([32, 64])
    assert space["c"] == IntDistribution(1, 5)  # range's stop included, as in hydra-optuna-sweeper
    assert space["d"] == FloatDistribution(2.0, 8.0)  # Hydra reads an interval's ends as floats
    assert space["+e"] == CategoricalDistribution(["x", "y"])
    assert fixed == ["logger=csv"]
    assert sweeper.trial_overrides({"b": 64}, fixed) == ["logger=csv", "b=64"]
    assert sweeper.grid_choices({"b": space["b"], "c": space["c"]}) == {"b": [32, 64], "c": [1, 2, 3, 4, 5]}
    with pytest.raises(SystemExit):
        sweeper.grid_choices({"a": space["a"]})


def test_results_become_values_or_reasons() -> None:
    from hydra.core.utils import JobReturn, JobStatus

    assert sweeper.outcome(JobReturn(status=JobStatus.COMPLETED, _return_value=0.5), 1) == ([0.5], None)
    failed = JobReturn(status=JobStatus.FAILED, _return_value=ValueError("loss became nan\nmore"))
    assert sweeper.outcome(failed, 1) == (None, "ValueError: loss became nan")
    assert sweeper.outcome(JobReturn(status=JobStatus.COMPLETED, _return_value=None), 1)[1].startswith("returned None")
    assert sweeper.outcome(JobReturn(status=JobStatus.COMPLETED, _return_value=float("nan")), 1)[0] is None
    killed = sweeper.outcome(RuntimeError("Job 123 has not produced any output"), 1)
    assert killed == (None, "killed without a result (RuntimeError: Job 123 has not produced any output)")


def test_a_trial_whose_driver_died_is_failed_and_retried(tmp_path: Path) -> None:
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    study = optuna.create_study(storage=sweeper.open_storage(str(tmp_path / "optuna.journal")))
    distributions = {"x": optuna.distributions.FloatDistribution(0, 1)}
    orphan = study.ask(distributions)
    study._storage.set_trial_system_attr(orphan._trial_id, "driver", {**sweeper.DRIVER, "pid": int(dead.stdout)})
    alive = study.ask(distributions)  # this process's own trial: left alone
    study._storage.set_trial_system_attr(alive._trial_id, "driver", sweeper.DRIVER)
    study._storage.set_trial_system_attr(alive._trial_id, "heartbeat", time.time())
    study.tell(study.ask(distributions), 0.5)

    sweep = sweeper.OptunaSweeper(sampler=None, direction="minimize", storage=None, study_name=None, n_trials=3)
    sweep.fail_dead_trials(study, own=set())
    trials = study.get_trials()
    assert trials[0].state.name == "FAIL" and trials[0].user_attrs["fail_reason"] == sweeper.DRIVER_DIED
    assert trials[1].state.name == "RUNNING"
    retry = trials[3]
    assert retry.state.name == "WAITING" and retry.params == trials[0].params
    assert retry.system_attrs["failed_trial"] == 0 and "fail_reason" not in retry.user_attrs
    assert sweeper.count_trials(trials) == (1, 2)  # the retried FAIL does not count; RUNNING and WAITING pend
    stale = trials[1]
    assert sweeper.driver_died(stale, grace_period=180, now=time.time() + 1000)  # no heartbeat for long: gone


class FakeLauncher:
    """Runs a trial in no time: its value is ``x``; ``x > 0.8`` dies without a result (as submitit reports it)."""

    def __init__(self) -> None:
        self.jobs: list[int] = []

    def launch(self, job_overrides: list[list[str]], initial_job_idx: int) -> list[Any]:
        from hydra.core.utils import JobReturn, JobStatus

        time.sleep(0.05)
        self.jobs.append(initial_job_idx)
        x = float(dict(item.split("=", 1) for item in job_overrides[0])["x"])
        if x > 0.8:
            raise RuntimeError(f"Job {initial_job_idx} has not produced any output")
        return [JobReturn(status=JobStatus.COMPLETED, _return_value=x)]


def test_two_drivers_on_one_sweep_folder_share_the_study(tmp_path: Path) -> None:
    """Two drivers (two trials at once each) on one folder: one study, every number launched once, n_trials met."""
    import threading

    from omegaconf import OmegaConf

    drivers = []
    for seed in (0, 1):
        driver = sweeper.OptunaSweeper(
            sampler=optuna.samplers.RandomSampler(seed=seed),
            direction="maximize",
            storage=str(tmp_path / "optuna.journal"),
            study_name="shared",
            n_trials=12,
            n_jobs=2,
        )
        driver.config = OmegaConf.create({"hydra": {"sweep": {"dir": str(tmp_path)}}})
        driver.launcher = FakeLauncher()
        drivers.append(driver)
    threads = [threading.Thread(target=driver.sweep, args=(["x=interval(0, 1)"],)) for driver in drivers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    study = optuna.load_study(study_name="shared", storage=sweeper.open_storage(str(tmp_path / "optuna.journal")))
    launched = sorted(drivers[0].launcher.jobs + drivers[1].launcher.jobs)
    assert (
        launched == [trial.number for trial in study.trials] and drivers[0].launcher.jobs and drivers[1].launcher.jobs
    )
    finished, pending = sweeper.count_trials(study.trials)
    assert 12 <= finished <= 12 + 2 and pending == 0  # a driver may ask once while the other's ask is in flight
    failed = [trial for trial in study.trials if trial.state.name == "FAIL"]
    assert all(
        trial.params["x"] > 0.8 and "killed without a result" in trial.user_attrs["fail_reason"] for trial in failed
    )
    assert (tmp_path / "optimization_results.yaml").is_file()


def test_a_new_study_never_trains_in_old_trial_folders(tmp_path: Path) -> None:
    from omegaconf import OmegaConf

    (tmp_path / "0" / ".hydra").mkdir(parents=True)  # a sweep whose journal was deleted, or an in-memory study
    driver = sweeper.OptunaSweeper(
        sampler=optuna.samplers.RandomSampler(seed=0),
        direction="maximize",
        storage=None,
        study_name="fresh",
        n_trials=2,
    )
    driver.config = OmegaConf.create({"hydra": {"sweep": {"dir": str(tmp_path)}}})
    driver.launcher = FakeLauncher()
    with pytest.raises(SystemExit):
        driver.sweep(["x=interval(0, 1)"])
    assert driver.launcher.jobs == []


# ------------------------------------------------------------------ compare (fast)
def fake_run(
    folder: Path,
    overrides: list[str],
    seed: int,
    best: float,
    epochs: int = 3,
    status: str = "completed",
    summary: bool = True,
) -> Path:
    (folder / ".hydra").mkdir(parents=True)
    (folder / ".hydra" / "config.yaml").write_text(f"seed: {seed}\n", encoding="utf-8")
    (folder / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump([*overrides, f"seed={seed}"]), encoding="utf-8")
    lines = ["epoch,train/loss,val/f1"] + [f"{e},{1 / (e + 1 + seed)},{best * (e + 1) / epochs}" for e in range(epochs)]
    (folder / "metrics.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    provenance = {
        "git": {"commit": "abcdef1234567"},
        "precision": {"resolved": "fp32"},
        "seed": seed,
        "started_at": "2025-01-01T10:00:00Z",
        "ended_at": "2025-01-01T10:02:05Z",
        "status": status,
    }
    (folder / "provenance.json").write_text(json.dumps(provenance), encoding="utf-8")
    if summary:
        (folder / "summary.json").write_text(
            json.dumps(
                {
                    "monitor": "val/f1",
                    "mode": "max",
                    "best": {"value": best, "epoch": epochs - 1},
                    "test": {"test/acc": best - 0.01},
                }
            ),
            encoding="utf-8",
        )
    if status == "failed":
        (folder / "train.log").write_text("[10:00:00][ERROR] the training loss became nan by step 7\n")
    return folder


def test_compare_writes_a_page_and_a_table(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    runs = tmp_path / "runs"
    for seed, best in ((1, 0.8), (2, 0.9)):
        fake_run(runs / f"lr-small-{seed}", ["optimizer.lr=0.001"], seed, best)
    fake_run(runs / "lr-big", ["optimizer.lr=0.1"], 1, 0.5)
    fake_run(runs / "nan", ["optimizer.lr=1.0"], 1, 0.0, status="failed", summary=False)
    fake_run(runs / "cut", ["optimizer.lr=0.01"], 1, 0.7)
    with open(runs / "cut" / "metrics.csv", "a", encoding="utf-8") as handle:
        handle.write("3,0.2")  # the last line, cut off mid-write
    fake_run(runs / "no-summary", [], 3, 0.1, summary=False, status="")
    (tmp_path / "notes").mkdir()

    caplog.set_level(logging.WARNING)
    compare.main([str(runs / "*"), str(tmp_path / "notes"), path_override("output", tmp_path / "out")])
    warned = [record.getMessage() for record in caplog.records if record.levelno == logging.WARNING]
    assert len(warned) == 3 and all("\n" not in line for line in warned)
    assert any("notes is not a run folder" in line for line in warned)
    assert any("cut: metrics.csv line 5" in line for line in warned)
    assert any("no-summary: no summary.json" in line for line in warned)

    import csv

    with open(tmp_path / "out" / "comparison.csv", encoding="utf-8") as handle:
        table = {row["name"]: row for row in csv.DictReader(handle)}
    assert set(table) == {"lr-small-1", "lr-small-2", "lr-big", "nan"}
    assert table["nan"]["status"] == "failed" and "became nan" in table["nan"]["reason"]
    assert table["lr-big"]["optimizer.lr"] == "0.1" and table["lr-big"]["seed"] == "1"
    assert table["lr-big"]["duration_s"] == "125.0" and table["lr-big"]["commit"] == "abcdef1234"
    assert float(table["lr-small-2"]["test/acc"]) == pytest.approx(0.89)

    page = (tmp_path / "out" / "comparison.html").read_text(encoding="utf-8")
    data = json.loads(page.split('id="data">', 1)[1].split("</script>", 1)[0])
    assert [group["name"] for group in data["groups"]] == ["optimizer.lr=0.001"]
    assert data["groups"][0]["best"] == [pytest.approx(0.85), pytest.approx(0.0707107, rel=1e-4)]
    assert data["keys"] == ["optimizer.lr", "seed"] and data["metrics"] == ["train/loss", "val/f1"]
    assert "http://" not in page.replace("http://www.w3.org/2000/svg", "") and "https://" not in page


def test_compare_accepts_only_its_options(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"^outptu= is not an option of compare: did you mean output=\?"):
        compare.parse(["outptu=x", str(tmp_path)])
    with pytest.raises(UserError, match="give the folders"):
        compare.parse(["output=x"])
    seeded = tmp_path / "seed=1"
    seeded.mkdir()
    assert compare.parse([str(seeded), "output=o"]) == ([str(seeded)], {"output": "o"})  # an existing path
    result = run_module("compare", "outptu=x", str(tmp_path))
    assert result.returncode == 1 and "did you mean output=?" in result.stderr
    assert "Traceback" not in result.stderr


# ------------------------------------------------------------------ real sweeps (slow)
@pytest.mark.slow
def test_a_killed_trial_fails_alone_while_another_runs_beside_it(tmp_path: Path) -> None:
    """Two trials at once through submitit's local launcher; one ends with os._exit (no result)."""
    sweep = tmp_path / "sweep"
    result = run_module(
        "train",
        *QUICK,
        "hydra/launcher=local",
        "hydra/sweeper/sampler=grid",
        "hydra.sweeper.n_jobs=2",
        "hydra.sweeper.params=null",
        "+trainer.callbacks.exit._target_=test_sweeps.ExitAtFitStart",
        "+trainer.callbacks.exit.when=choice(kill, keep)",
        path_override("hydra.sweep.dir", sweep),
        env=hook_env(),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    trials = {trial.params["+trainer.callbacks.exit.when"]: trial for trial in load_study(sweep).trials}
    assert trials["kill"].state.name == "FAIL"
    assert trials["kill"].user_attrs["fail_reason"].startswith("killed without a result")
    assert trials["keep"].state.name == "COMPLETE"
    assert (sweep / str(trials["keep"].number) / "summary.json").is_file()
    starts = [trial.datetime_start for trial in trials.values()]
    assert all(start < min(t.datetime_complete for t in trials.values()) for start in starts)  # ran at once
    assert (sweep / "comparison.html").is_file()


@pytest.mark.slow
def test_a_sweep_continues_after_its_driver_was_killed(tmp_path: Path) -> None:
    """The driver dies inside trial 0 (the basic launcher runs trials in its process); the same command
    again fails trial 0, retries its parameters as trial 1, and runs trial 2: nothing reused, nothing lost."""
    sweep = tmp_path / "sweep"
    command = [
        *QUICK,
        "hydra.sweeper.n_trials=2",
        path_override("hydra.sweep.dir", sweep),
        "+trainer.callbacks.exit._target_=test_sweeps.ExitAtFitStart",
        "+trainer.callbacks.exit.when=${oc.env:KILL_DRIVER,false}",
    ]
    crashed = run_module("train", *command, env=hook_env(KILL_DRIVER="true"))
    assert crashed.returncode == 9
    assert [trial.state.name for trial in load_study(sweep).trials] == ["RUNNING"]

    resumed = run_module("train", *command, env=hook_env())
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    trials = load_study(sweep).trials
    assert [trial.number for trial in trials] == [0, 1, 2]
    assert [trial.state.name for trial in trials] == ["FAIL", "COMPLETE", "COMPLETE"]
    assert trials[0].user_attrs["fail_reason"] == sweeper.DRIVER_DIED
    assert trials[1].params == trials[0].params and trials[1].system_attrs["failed_trial"] == 0
    assert trials[2].params != trials[0].params  # the seeded sampler does not repeat itself after a restart
    assert all((sweep / str(number) / "summary.json").is_file() for number in (1, 2))
    assert not (sweep / "0" / "summary.json").exists()
    results = yaml.safe_load((sweep / "optimization_results.yaml").read_text(encoding="utf-8"))
    best = max if load_study(sweep).direction.name == "MAXIMIZE" else min  # an LM minimizes val/loss
    assert results["best_value"] == pytest.approx(best(trial.value for trial in trials[1:]))


@pytest.mark.slow
def test_ctrl_c_stops_the_sweep_without_recording_a_partial_result(tmp_path: Path) -> None:
    """SIGINT in the driver's own trial (the basic launcher): the trial is failed, not told its partial value,
    its parameters are queued again, and the sweep stops with one line saying how to continue."""
    sweep = tmp_path / "sweep"
    result = run_module(
        "train",
        *QUICK,
        "hydra.sweeper.n_trials=2",
        "trainer.max_epochs=2",
        path_override("hydra.sweep.dir", sweep),
        "+trainer.callbacks.stop._target_=test_scaling.SignalAtEpoch",
        "+trainer.callbacks.stop.epoch=0",
        "+trainer.callbacks.stop.signum=SIGINT",
        env=hook_env(),
    )
    assert result.returncode == 1
    output = result.stdout + result.stderr
    assert output.count("Sweep stopped by a signal during trial 0") == 1 and "Traceback" not in output
    trials = load_study(sweep).trials
    assert [trial.state.name for trial in trials] == ["FAIL", "WAITING"]
    assert trials[0].user_attrs["fail_reason"].startswith("TrainingInterrupted")
    assert trials[1].params == trials[0].params


@pytest.mark.slow
def test_a_sweep_whose_every_trial_fails_ends_with_one_line(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    result = run_module(
        "train", *QUICK, "hydra.sweeper.n_trials=2", "task.monitor=val/missing", path_override("hydra.sweep.dir", sweep)
    )
    assert result.returncode == 1
    output = result.stdout + result.stderr  # Hydra's own log lines go to stdout
    errors = [line for line in output.splitlines() if "Every trial" in line]
    assert len(errors) == 1 and "val/missing" in errors[0], output[-3000:]
    assert "Traceback" not in output
    assert [trial.state.name for trial in load_study(sweep).trials] == ["FAIL", "FAIL"]
    assert (sweep / "comparison.html").is_file()


def test_hydra_finds_the_sweeper_and_the_page_callback() -> None:
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(PROJECT_ROOT / "configs"), version_base="1.3"):
        cfg = compose("train", overrides=["hparams_search=optuna"], return_hydra_config=True)
    assert cfg.hydra.sweeper._target_ == f"hydra_plugins.{PACKAGE}_optuna.optuna_sweeper.OptunaSweeper"
    assert cfg.hydra.sweeper.storage.endswith("/optuna.journal")
    assert cfg.hydra.callbacks.comparison._target_ == f"{PACKAGE}.compare.WriteComparison"
    from hydra.core.plugins import Plugins

    assert cfg.hydra.sweeper._target_ in Plugins.instance().class_name_to_class
