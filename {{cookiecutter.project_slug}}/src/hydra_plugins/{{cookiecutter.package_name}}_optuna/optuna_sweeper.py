"""The Optuna sweeper behind ``hparams_search=optuna``: current Optuna, a study that survives a crash.

Keeps hydra-optuna-sweeper's config shape (``params`` in Hydra's override syntax, ``direction``,
``n_trials``, ``n_jobs``, ``sampler``, ``storage``, ``study_name``, ``max_failure_rate``,
``custom_search_space``) and adds:

- the study lives in the sweep folder (``storage``: a journal file; an ``sqlite:///`` or other
  database URL also works), so running the same command with the same ``hydra.sweep.dir`` continues
  it until it holds ``n_trials`` finished trials, and a second driver on that folder joins it;
- trial ``N`` runs in ``<sweep dir>/N`` (the Optuna trial number, never reused);
- a trial that raises, returns no number, or is killed without a result is recorded as FAIL with
  its reason and the sweep goes on; a trial whose driver died while it ran (its driver's process
  is gone, or its heartbeat is older than ``grace_period`` seconds) is failed and retried;
- ``n_jobs`` trials at once through a launcher that runs jobs in other processes (submitit's
  local or SLURM launcher), each trial launched on its own so that one killed job ends only itself.

Hydra accepts sweepers defined in its plugin namespace only, so the whole sweeper lives here, in
``hydra_plugins.{{ cookiecutter.package_name }}_optuna``.
"""

from __future__ import annotations

import functools
import logging
import math
import os
import socket
import threading
import time
from collections.abc import Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import IntervalSweep, Override, RangeSweep, Transformer
from hydra.core.plugins import Plugins
from hydra.core.utils import JobReturn, JobStatus
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf

from {{ cookiecutter.package_name }}.config import quoting
from {{ cookiecutter.package_name }}.errors import first_line

log = logging.getLogger(__name__)

DRIVER = {"host": socket.gethostname(), "pid": os.getpid()}
DRIVER_DIED = "its sweep driver stopped while it ran"


class SweepFailed(SystemExit):
    """The sweep ended without a usable result: one logged line, exit status 1."""

    def __init__(self, message: str) -> None:
        log.error("%s", message)
        super().__init__(1)


def register(argv: Sequence[str]) -> None:
    """Make sure Hydra knows the sweeper before it composes ``argv``.

    Hydra finds plugins by walking the folders of the ``hydra_plugins`` namespace, which an editable
    install (``pip install -e .``) does not have: registering the class directly works for every
    install. hydra-optuna-sweeper (Optuna 2) registers config schemas under this sweeper's config
    names, which breaks composing them: one line instead.
    """
    import importlib.util

    try:  # find_spec of a submodule imports its parents, which raises when they are missing
        clashing = importlib.util.find_spec("hydra_plugins.hydra_optuna_sweeper") is not None
    except ModuleNotFoundError:
        clashing = False
    if clashing and any("sweeper" in arg or "hparams_search" in arg for arg in argv):
        raise SweepFailed(
            "hydra-optuna-sweeper is installed and clashes with this project's own Optuna sweeper: "
            "pip uninstall hydra-optuna-sweeper (this project needs optuna>=4)."
        )
    Plugins.instance().register(OptunaSweeper)


# ------------------------------------------------------------------ search space
def distribution(override: Override) -> Any:
    """The Optuna distribution of a sweep override (``choice``, ``range``, ``interval``, ``tag(log, ...)``).

    ``range(start, stop, step)`` includes ``stop``, as it did in hydra-optuna-sweeper.
    """
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    value = override.value()
    if override.is_choice_sweep() or (isinstance(value, RangeSweep) and value.shuffle):
        return CategoricalDistribution(list(override.sweep_iterator(transformer=Transformer.encode)))  # type: ignore[arg-type]
    if isinstance(value, RangeSweep):
        if any(isinstance(item, float) for item in (value.start, value.stop, value.step)):
            return FloatDistribution(value.start, value.stop, step=value.step)  # type: ignore[arg-type]
        return IntDistribution(int(value.start), int(value.stop), step=int(value.step))  # type: ignore[arg-type]
    if isinstance(value, IntervalSweep):  # Hydra reads an interval's ends as floats
        return FloatDistribution(float(value.start), float(value.end), log="log" in value.tags)  # type: ignore[arg-type]
    raise ValueError(f"{override.input_line}: Optuna cannot sample this sweep; use choice, range or interval.")


def search_space(lines: Sequence[str]) -> tuple[dict[str, Any], list[str]]:
    """Split overrides into the distributions to sample (by key) and the fixed overrides every trial gets."""
    distributions: dict[str, Any] = {}
    fixed: list[str] = []
    for override in OverridesParser.create().parse_overrides(list(lines)):
        if override.is_sweep_override():
            distributions[override.get_key_element()] = distribution(override)
        else:
            distributions.pop(override.get_key_element(), None)
            fixed.append(str(override.input_line))
    return distributions, fixed


def grid_choices(distributions: dict[str, Any]) -> dict[str, list[Any]]:
    """Every value of each distribution, for the grid sampler (choices and ranges only)."""
    from optuna.distributions import CategoricalDistribution

    grid = {}
    for key, dist in distributions.items():
        if isinstance(dist, CategoricalDistribution):
            grid[key] = list(dist.choices)
        elif getattr(dist, "step", None) is not None:
            count = int(round((dist.high - dist.low) / dist.step)) + 1
            grid[key] = [dist.low + index * dist.step for index in range(count)]
        else:
            raise SweepFailed(
                f"hydra.sweeper.params.{key}: the grid sampler needs choice(...) or range(...), "
                "not an interval; or pick hydra/sweeper/sampler=tpe."
            )
    return grid


def trial_overrides(params: dict[str, Any], fixed: list[str]) -> list[str]:
    """The overrides of one trial; a sampled string Hydra cannot read unquoted (a Korean folder from
    choice(...)) is quoted, as Optuna hands it back without the quotes it was written with."""
    return [
        *fixed,
        *(f"{key}={quoting.value_text(value) if isinstance(value, str) else value}" for key, value in params.items()),
    ]


# ------------------------------------------------------------------ storage and liveness
def open_storage(storage: str | None) -> Any:
    """``None``: in memory; ``<scheme>://...``: a database; anything else: a journal file (created)."""
    if storage is None:
        return None
    if "://" in storage:
        return storage
    from {{ cookiecutter.package_name }}.compare import journal_storage

    return journal_storage(Path(storage).expanduser())


def process_alive(pid: int) -> bool:
    if os.name != "posix":  # os.kill(pid, 0) would end the process on Windows
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def driver_died(trial: Any, grace_period: float, now: float) -> bool:
    """A RUNNING trial of another driver that is gone: its process ended (same host) or its heartbeat is old."""
    driver = trial.system_attrs.get("driver") or {}
    if driver.get("host") == DRIVER["host"] and driver.get("pid") not in (None, DRIVER["pid"]):
        if not process_alive(int(driver["pid"])):
            return True
    beat = trial.system_attrs.get("heartbeat") or trial.datetime_start.timestamp()
    return now - float(beat) > grace_period


class Heartbeat:
    """Stamps ``heartbeat`` on this driver's running trials every ``interval`` seconds, from a daemon thread."""

    def __init__(self, study: Any, interval: float) -> None:
        self.study, self.interval = study, interval
        self.trial_ids: set[int] = set()
        self.lock = threading.Lock()
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._run, name="optuna-heartbeat", daemon=True)

    def _run(self) -> None:
        while not self.stopped.wait(self.interval):
            with self.lock:
                ids = list(self.trial_ids)
            for trial_id in ids:
                try:
                    self.study._storage.set_trial_system_attr(trial_id, "heartbeat", time.time())
                except Exception:  # noqa: BLE001 - the trial finished meanwhile
                    continue

    def __enter__(self) -> Heartbeat:
        if self.study._storage.__class__.__name__ != "InMemoryStorage":
            self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopped.set()

    def add(self, trial_id: int) -> None:
        with self.lock:
            self.trial_ids.add(trial_id)

    def remove(self, trial_id: int) -> None:
        with self.lock:
            self.trial_ids.discard(trial_id)


def retry(study: Any, trial: Any, max_retry: int) -> None:
    """Queue ``trial``'s parameters as a new trial, recording the numbers it retries (as Optuna's retry callbacks do)."""
    import optuna

    history = [*trial.system_attrs.get("retry_history", []), trial.number]
    if len(history) > max_retry:
        return
    system_attrs = {"failed_trial": history[0], "retry_history": history}
    user_attrs = {key: value for key, value in trial.user_attrs.items() if key not in {"fail_reason", "run_dir"}}
    study.add_trial(
        optuna.trial.create_trial(
            state=optuna.trial.TrialState.WAITING,
            params=trial.params,
            distributions=trial.distributions,
            user_attrs=user_attrs,
            system_attrs=system_attrs,
        )
    )


# ------------------------------------------------------------------ counting
def retried_numbers(trials: Sequence[Any]) -> set[int]:
    """Numbers of the failed trials that were retried as new trials (they do not count)."""
    return {number for trial in trials for number in trial.system_attrs.get("retry_history", [])}


def count_trials(trials: Sequence[Any]) -> tuple[int, int]:
    """(finished, running or waiting): finished counts COMPLETE, PRUNED and FAIL, less retried FAILs."""
    from optuna.trial import TrialState

    retried = retried_numbers(trials)
    finished = sum(
        1
        for trial in trials
        if trial.state.is_finished() and not (trial.state == TrialState.FAIL and trial.number in retried)
    )
    pending = sum(1 for trial in trials if trial.state in (TrialState.RUNNING, TrialState.WAITING))
    return finished, pending


def tell_study(study: Any, trial: Any, **result: Any) -> None:
    """``study.tell``; the grid sampler's "grid done" signal (raised after the result is stored) is not an error."""
    try:
        study.tell(trial, **result)
    except RuntimeError as error:
        if "Study.stop" not in str(error):
            raise


def described(error: BaseException) -> str:
    """``ValueError: loss became nan``: the error's type and the first line of its message."""
    name = type(error).__name__
    return f"{name}: {first_line(error)}" if str(error).strip() else name


def outcome(result: JobReturn | BaseException, directions: int) -> tuple[list[float] | None, str | None]:
    """(values, None) for a usable result, else (None, the reason the trial failed)."""
    if isinstance(result, BaseException):
        return None, f"killed without a result ({described(result)})"
    if result.status != JobStatus.COMPLETED:
        return None, described(result._return_value)
    value = result._return_value
    values = list(value) if isinstance(value, (list, tuple)) else [value]
    try:
        numbers = [float(item) for item in values]
    except (TypeError, ValueError):
        return None, f"returned {value!r}, not a number"
    if len(numbers) != directions or any(math.isnan(number) for number in numbers):
        return None, f"returned {value!r}, not {directions} number(s)"
    return numbers, None


# ------------------------------------------------------------------ the sweeper
class OptunaSweeper(Sweeper):
    """A Hydra sweeper that asks an Optuna study for each trial's parameters and tells it the result."""

    def __init__(
        self,
        sampler: Any,
        direction: Any,
        storage: str | None,
        study_name: str | None,
        n_trials: int,
        n_jobs: int = 1,
        max_failure_rate: float = 1.0,
        params: DictConfig | None = None,
        custom_search_space: str | None = None,
        heartbeat_interval: float = 60.0,
        grace_period: float = 180.0,
        max_retry: int = 1,
    ) -> None:
        self.sampler, self.storage, self.study_name = sampler, storage, study_name
        self.directions = (
            [str(item) for item in direction]
            if OmegaConf.is_list(direction) or isinstance(direction, list)
            else [str(direction)]
        )
        self.n_trials, self.n_jobs, self.max_failure_rate = int(n_trials), max(1, int(n_jobs)), max_failure_rate
        self.params = {str(key): value for key, value in (params or {}).items()}
        self.custom_search_space = custom_search_space
        self.heartbeat_interval, self.grace_period, self.max_retry = heartbeat_interval, grace_period, max_retry
        self.config: DictConfig | None = None
        self.launcher: Any = None
        self.hydra_context: HydraContext | None = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config, self.hydra_context = config, hydra_context
        self.launcher = Plugins.instance().instantiate_launcher(
            config=config, hydra_context=hydra_context, task_function=task_function
        )

    @property
    def sweep_dir(self) -> Path:
        assert self.config is not None
        return Path(str(self.config.hydra.sweep.dir))

    def in_process(self) -> bool:
        """Hydra's basic launcher runs jobs in this process (one at a time, in the main thread)."""
        return type(self.launcher).__name__ == "BasicLauncher"

    def create_study(self, distributions: dict[str, Any]) -> Any:
        import optuna

        sampler = self.sampler
        if isinstance(sampler, functools.partial):  # the grid sampler, given the search space here
            grid = grid_choices(distributions)
            sampler = sampler(grid)
            self.n_trials = min(self.n_trials, math.prod(len(values) for values in grid.values()))
        storage = open_storage(self.storage)
        study = optuna.create_study(
            study_name=self.study_name,
            storage=storage,
            sampler=sampler,
            directions=self.directions,  # type: ignore[arg-type]  # Optuna checks them
            load_if_exists=True,
        )
        if study.trials:  # continued or joined: a seeded sampler would draw the first trials' parameters again
            study.sampler.reseed_rng()
        log.info(
            "Study %s (%s), %s, %s: %d trials in it.",
            study.study_name,
            self.storage or "in memory",
            type(sampler).__name__,
            "/".join(self.directions),
            len(study.trials),
        )
        return study

    def fail_dead_trials(self, study: Any, own: set[int]) -> None:
        """Fail the RUNNING trials whose driver died, and queue their parameters again."""
        from optuna.exceptions import UpdateFinishedTrialError
        from optuna.trial import TrialState

        now = time.time()
        for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            if trial.number in own or not driver_died(trial, self.grace_period, now):
                continue
            try:
                study._storage.set_trial_user_attr(trial._trial_id, "fail_reason", DRIVER_DIED)
                study._storage.set_trial_state_values(trial._trial_id, state=TrialState.FAIL)
            except UpdateFinishedTrialError:
                continue
            log.warning("Trial %d failed: %s; its parameters are tried again.", trial.number, DRIVER_DIED)
            retry(study, study._storage.get_trial(trial._trial_id), self.max_retry)

    def check_folder_matches(self, study: Any) -> None:
        """A new study in a folder that already holds trial folders would train new trials in old folders."""
        if study.trials or not self.sweep_dir.is_dir():
            return
        taken = sorted(
            int(path.name) for path in self.sweep_dir.iterdir() if path.name.isdigit() and (path / ".hydra").is_dir()
        )
        if taken:
            raise SweepFailed(
                f"hydra.sweep.dir={self.sweep_dir} already holds trial folders ({', '.join(map(str, taken[:5]))}"
                f"{', ...' if len(taken) > 5 else ''}) but the study in {self.storage or 'memory'} has "
                "no trials: give a new hydra.sweep.dir, or the storage that holds this sweep's study."
            )

    def ask(self, study: Any, distributions: dict[str, Any], fixed: list[str]) -> tuple[Any, list[str]]:
        trial = study.ask(fixed_distributions=distributions)
        if self.custom_search_space:
            from hydra.utils import get_method

            get_method(self.custom_search_space)(self.config, trial)
        study._storage.set_trial_system_attr(trial._trial_id, "driver", DRIVER)
        study._storage.set_trial_system_attr(trial._trial_id, "heartbeat", time.time())
        return trial, trial_overrides(trial.params, fixed)

    def launch(self, number: int, overrides: list[str]) -> JobReturn | BaseException:
        """One trial through the launcher, as job ``number`` (its folder); an exception is its result."""
        try:
            return self.launcher.launch([overrides], initial_job_idx=number)[0]
        except Exception as error:  # noqa: BLE001 - a killed job (e.g. submitit's UncompletedJobError) fails one trial
            return error

    def tell(self, study: Any, trial: Any, result: JobReturn | BaseException) -> bool:
        """Record the trial's result; False when it failed."""
        from optuna.trial import TrialState

        values, reason = outcome(result, len(self.directions))
        if reason and reason.startswith("TrainingInterrupted"):  # Ctrl+C or SIGTERM to the driver's own process
            trial.set_user_attr("fail_reason", reason)
            tell_study(study, trial, state=TrialState.FAIL)
            retry(study, study._storage.get_trial(trial._trial_id), self.max_retry)
            raise SweepFailed(
                f"Sweep stopped by a signal during trial {trial.number} (its parameters are queued "
                f"again): run the same command with hydra.sweep.dir={self.sweep_dir} to continue."
            )
        if isinstance(result, JobReturn) and result.hydra_cfg is not None:
            trial.set_user_attr("run_dir", str(result.hydra_cfg.hydra.runtime.output_dir))
        if reason is not None:
            trial.set_user_attr("fail_reason", reason)
            log.warning("Trial %d failed: %s", trial.number, reason)
            tell_study(study, trial, state=TrialState.FAIL)
            return False
        tell_study(study, trial, values=values)
        return True

    def sweep(self, arguments: list[str]) -> list[Any]:
        assert self.config is not None and self.launcher is not None
        distributions, fixed = search_space([f"{key}={value}" for key, value in self.params.items()] + arguments)
        study = self.create_study(distributions)
        self.check_folder_matches(study)
        self.sweep_dir.mkdir(parents=True, exist_ok=True)
        n_jobs = 1 if self.in_process() else self.n_jobs
        if self.in_process() and self.n_jobs > 1:
            log.warning(
                "hydra.sweeper.n_jobs=%d needs a launcher that starts processes (hydra/launcher=local or "
                "slurm); the basic launcher runs one trial at a time.",
                self.n_jobs,
            )
        reported, failed = 0, 0
        running: dict[Future, Any] = {}
        with Heartbeat(study, self.heartbeat_interval) as heartbeat, ThreadPoolExecutor(n_jobs) as pool:
            while True:
                if failed and failed / reported > self.max_failure_rate and not running:
                    self.write_comparison()
                    raise SweepFailed(
                        f"{failed} of {reported} trials failed, more than hydra.sweeper.max_failure_rate="
                        f"{self.max_failure_rate}; the reasons are in {self.sweep_dir}/comparison.html."
                    )
                self.fail_dead_trials(study, {trial.number for trial in running.values()})
                finished, pending = count_trials(study.get_trials(deepcopy=False))
                stop_asking = failed and failed / reported > self.max_failure_rate
                while not stop_asking and len(running) < n_jobs and finished + pending < self.n_trials:
                    trial, overrides = self.ask(study, distributions, fixed)
                    heartbeat.add(trial._trial_id)
                    pending += 1
                    log.info("Trial %d: %s", trial.number, " ".join(overrides[len(fixed) :]))
                    if n_jobs == 1:
                        future: Future = Future()
                        future.set_result(self.launch(trial.number, overrides))
                    else:
                        future = pool.submit(self.launch, trial.number, overrides)
                    running[future] = trial
                if not running:
                    break
                done, _ = wait(list(running), return_when=FIRST_COMPLETED)
                for future in done:
                    trial = running.pop(future)
                    heartbeat.remove(trial._trial_id)
                    reported += 1
                    failed += not self.tell(study, trial, future.result())
        return self.finish(study)

    def write_comparison(self) -> None:
        """The comparison page of a sweep that stops here (Hydra's multirun-end callback does not run then)."""
        from {{ cookiecutter.package_name }}.compare import write_comparison

        write_comparison([self.sweep_dir], self.sweep_dir)

    def finish(self, study: Any) -> list[Any]:
        """Write ``optimization_results.yaml``; stop with one line when no trial completed."""
        from optuna.trial import TrialState

        complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if not complete:
            self.write_comparison()
            reasons = [trial.user_attrs.get("fail_reason") for trial in study.get_trials(deepcopy=False)]
            last = next((reason for reason in reversed(reasons) if reason), "no trial ran")
            raise SweepFailed(
                f"Every trial of study {study.study_name} failed (last: {last}); see {self.sweep_dir}/comparison.html."
            )
        if len(self.directions) == 1:
            results = {"name": "optuna", "best_params": study.best_trial.params, "best_value": study.best_value}
        else:
            results = {
                "name": "optuna",
                "solutions": [{"params": trial.params, "values": trial.values} for trial in study.best_trials],
            }
        OmegaConf.save(OmegaConf.create(results), self.sweep_dir / "optimization_results.yaml")
        from {{ cookiecutter.package_name }}.compare import store_importances

        store_importances(study)
        log.info("Best trial of %d: %s", len(complete), results.get("best_params", "see optimization_results.yaml"))
        return [trial.values for trial in complete]
