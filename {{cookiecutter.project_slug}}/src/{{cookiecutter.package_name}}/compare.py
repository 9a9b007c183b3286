"""Set runs side by side: ``python -m {{ cookiecutter.package_name }}.compare <folders or globs...> [output=<folder>]``.

Takes run folders, sweep folders (a multirun, an Optuna study) or any folder above them, and writes
``comparison.html`` (one self-contained page: no network, every script inline) and ``comparison.csv``
into ``output=`` (default: the folder given, or the folder above all of them). The page holds a
sortable runs table (the overrides that differ, status and reason, best monitored value, test
metrics, duration, commit, precision), learning curves per metric with runs toggled by clicking,
seed groups (runs that differ only in ``seed``) as mean ± std, and for sweeps each parameter
against the objective, parallel coordinates and, when an Optuna study exists, its parameter
importances. A folder that is not a run, or a broken one, gets one line and is left out.
"""

from __future__ import annotations

import csv
import glob
import json
import logging
import math
import os
import re
import statistics
import sys
from dataclasses import dataclass, field
from datetime import datetime
from importlib import resources
from pathlib import Path
from typing import Any

from {{ cookiecutter.package_name }}.config import quoting
from {{ cookiecutter.package_name }}.errors import UserError, asked_for_help, closest

log = logging.getLogger(__name__)

OPTIONS = ("output",)
STATUSES = {"completed", "interrupted", "failed"}


class BrokenRun(Exception):
    """A run folder that cannot be read; its message names what is wrong."""


@dataclass
class Run:
    """One row of the table: what a run folder (or an Optuna trial) says about the run."""

    name: str
    folder: str
    status: str
    reason: str | None = None
    overrides: dict[str, str] = field(default_factory=dict)
    monitor: str | None = None
    mode: str | None = None
    best: float | None = None
    best_epoch: int | None = None
    test: dict[str, float] = field(default_factory=dict)
    duration_s: float | None = None
    commit: str | None = None
    precision: str | None = None
    seed: Any = None
    trial: int | None = None
    params: dict[str, Any] = field(default_factory=dict)
    objective: float | None = None
    curves: dict[str, list[list[float]]] = field(default_factory=dict)


# ------------------------------------------------------------------ reading folders
def read_json(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise BrokenRun(f"{path.name} is not valid JSON ({error})") from None
    return value if isinstance(value, dict) else None


def number(text: Any) -> float | None:
    try:
        value = float(text)
    except (TypeError, ValueError):
        return None
    return value if value - value == 0 else None  # not NaN or infinite


def shown(text: Any) -> str:
    """A value as a person reads it: numbers with 4 significant digits (``0.04266``), other text as it is."""
    value = number(text)
    if value is None or isinstance(text, bool) or str(text).lstrip("-").isdigit():
        return str(text)
    return format(value, ".4g")


def short(value: float) -> float:
    """Six significant digits: the page stays small, the curves look the same."""
    return float(format(value, ".6g"))


def read_curves(path: Path) -> dict[str, list[list[float]]]:
    """``metrics.csv`` as ``{metric: [[epoch, value], ...]}``; a truncated or malformed file is a BrokenRun."""
    if not path.is_file():
        return {}
    with open(path, newline="", encoding="utf-8") as handle:
        rows = list(csv.reader(handle))
    if not rows:
        return {}
    header, curves = rows[0], dict[str, list[list[float]]]()
    for line, row in enumerate(rows[1:], start=2):
        if len(row) != len(header):
            raise BrokenRun(f"metrics.csv line {line} has {len(row)} of {len(header)} fields (truncated?)")
        values = dict(zip(header, row, strict=True))
        epoch = number(values.pop("epoch", line - 2))
        for metric, text in values.items():
            value = number(text)
            if value is not None and epoch is not None:
                curves.setdefault(metric, []).append([epoch, short(value)])
    return curves


def read_overrides(folder: Path) -> dict[str, str]:
    path = folder / ".hydra" / "overrides.yaml"
    if not path.is_file():
        return {}
    import yaml

    items = yaml.load(path.read_text(encoding="utf-8"), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader)) or []
    return dict(str(item).lstrip("+~").split("=", 1) for item in items if "=" in str(item))


def seconds_between(start: str | None, end: str | None) -> float | None:
    if not start or not end:
        return None
    parse = "%Y-%m-%dT%H:%M:%SZ"
    try:
        return (datetime.strptime(end, parse) - datetime.strptime(start, parse)).total_seconds()
    except ValueError:
        return None


def last_error(folder: Path) -> str | None:
    """The last ``[ERROR]`` line of the run's log: why it failed."""
    for log_file in sorted(folder.glob("*.log")):
        lines = [
            line for line in log_file.read_text(encoding="utf-8", errors="replace").splitlines() if "][ERROR]" in line
        ]
        if lines:
            return lines[-1].split("][ERROR]", 1)[1].strip()
    return None


def is_run_folder(folder: Path) -> bool:
    return any((folder / name).exists() for name in (".hydra/config.yaml", "summary.json", "provenance.json"))


def read_run(folder: Path, name: str) -> Run:
    """The run in ``folder``; a BrokenRun when it claims to have finished but its records are missing or cut."""
    summary = read_json(folder / "summary.json")
    provenance = read_json(folder / "provenance.json") or {}
    status = provenance.get("status") or ("completed" if summary else None)
    if summary is None and status not in {"failed", "interrupted"}:
        raise BrokenRun("no summary.json (still running, killed, or not a finished run)")
    curves = read_curves(folder / "metrics.csv")
    summary = summary or {}
    best = summary.get("best") or {}
    precision = provenance.get("precision") or {}
    return Run(
        name=name,
        folder=str(folder),
        status=status or "unknown",
        reason=last_error(folder) if status == "failed" else None,
        overrides=read_overrides(folder),
        monitor=summary.get("monitor"),
        mode=summary.get("mode"),
        best=number(best.get("value")),
        best_epoch=best.get("epoch"),
        test={key: short(value) for key, value in (summary.get("test") or {}).items() if number(value) is not None},
        duration_s=seconds_between(provenance.get("started_at"), provenance.get("ended_at")),
        commit=((provenance.get("git") or {}).get("commit") or "")[:10] or None,
        precision=precision.get("resolved") or summary.get("precision"),
        seed=provenance.get("seed"),
        curves=curves,
    )


# ------------------------------------------------------------------ Optuna studies
def journal_storage(path: Path) -> Any:
    """Optuna's journal storage in the file ``path`` (created with its folder), under a lock file."""
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock

    path.parent.mkdir(parents=True, exist_ok=True)
    return JournalStorage(JournalFileBackend(str(path), lock_obj=JournalFileOpenLock(str(path))))


def study_storage(folder: Path) -> Any:
    """The storage of the sweep in ``folder``: its journal file, or the database its multirun.yaml names."""
    journal = folder / "optuna.journal"
    if journal.is_file():
        return journal_storage(journal)
    multirun = folder / "multirun.yaml"
    if multirun.is_file():
        import yaml

        sweeper = ((yaml.safe_load(multirun.read_text(encoding="utf-8")) or {}).get("hydra") or {}).get("sweeper")
        storage = (sweeper or {}).get("storage")
        if isinstance(storage, str) and "://" in storage:
            return storage
    return None


def read_study(folder: Path) -> dict[str, Any] | None:
    """Trials and parameter importances of the Optuna study kept in a sweep folder, if any."""
    storage = study_storage(folder)
    if storage is None:
        return None
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        names = optuna.get_all_study_names(storage)
        study = optuna.load_study(study_name=names[-1], storage=storage)
    except Exception as error:  # noqa: BLE001 - an unreadable study must not stop the page
        log.warning("%s: its Optuna study cannot be read (%s); the page shows the run folders only.", folder, error)
        return None
    trials = study.get_trials(deepcopy=False)
    complete = sum(1 for trial in trials if trial.state == optuna.trial.TrialState.COMPLETE)
    stored = study.user_attrs.get("importances") or {}
    importances = stored.get("values") if stored.get("trials") == complete else parameter_importances(study)
    return {
        "name": study.study_name,
        "direction": study.directions[0].name.lower(),
        "importances": importances,
        "space": search_space(trials),
        "trials": trials,
    }


def search_space(trials: list[Any]) -> dict[str, dict[str, Any]]:
    """Each parameter's distribution as the sweeper sampled it: bounds, and whether on a log scale."""
    space: dict[str, dict[str, Any]] = {}
    for trial in trials:
        for name, distribution in trial.distributions.items():
            space.setdefault(
                name,
                {
                    "log": bool(getattr(distribution, "log", False)),
                    "low": getattr(distribution, "low", None),
                    "high": getattr(distribution, "high", None),
                },
            )
    return space


def parameter_importances(study: Any) -> dict[str, float]:
    """Optuna's parameter importances (PED-ANOVA) over the completed trials; empty below three of them.

    ``optuna.importance`` imports scikit-learn (seconds): the sweeper stores them in the study when it
    ends, and :func:`read_study` computes them here only for a study without them.
    """
    import warnings

    import optuna

    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    if len(complete) < 3 or len(study.directions) != 1 or not complete[0].params:
        return {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the evaluator is marked experimental
        try:
            found = optuna.importance.get_param_importances(
                study, evaluator=optuna.importance.PedAnovaImportanceEvaluator()
            )
        except (RuntimeError, ValueError) as error:
            log.warning("%s: no parameter importances (%s).", study.study_name, error)
            return {}
    return {key: round(value, 4) for key, value in found.items()}


def store_importances(study: Any) -> None:
    """Keep the importances in the study (with the count of completed trials they are for)."""
    import optuna

    complete = len(study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)))
    study.set_user_attr("importances", {"trials": complete, "values": parameter_importances(study)})


def trial_runs(folder: Path, study: dict[str, Any], runs: dict[str, Run]) -> list[Run]:
    """Attach each trial's number, parameters, state and value to its run; trials without a run folder get a row."""
    extra = []
    for trial in study["trials"]:
        recorded = trial.user_attrs.get("run_dir")  # absolute; the trial number's folder if the sweep moved
        candidates = [Path(path).resolve() for path in (recorded, folder / str(trial.number)) if path]
        run = next((runs[str(path)] for path in candidates if str(path) in runs), None)
        state = trial.state.name
        if run is None:
            run = Run(name=f"{folder.name}/{trial.number}", folder=str(candidates[-1]), status="unknown")
            extra.append(run)
        run.trial, run.params, run.objective = trial.number, dict(trial.params), trial.value
        if state == "FAIL":
            run.status, run.reason = "failed", trial.user_attrs.get("fail_reason") or run.reason
        elif state in {"RUNNING", "WAITING"}:
            run.status = state.lower()
    return extra


# ------------------------------------------------------------------ finding runs
def expand(arguments: list[str]) -> list[Path]:
    """Folders and globs (expanded here too, for shells that do not, ~ included) as existing paths; the rest get a
    line."""
    paths: list[Path] = []
    for argument in map(os.path.expanduser, arguments):
        matches = sorted(glob.glob(argument)) if glob.has_magic(argument) else [argument]
        if not matches or not Path(matches[0]).exists():
            log.warning("%s: no such folder; skipped.", argument)
        paths += [Path(match) for match in matches if Path(match).is_dir()]
    return paths


def run_folders(path: Path, depth: int = 3) -> tuple[list[Path], list[Path]]:
    """(run folders, sweep folders with a study) at or below ``path``; a run folder is not entered, and
    hidden folders (``.hydra``, ``.submitit``) are skipped."""
    if is_run_folder(path):
        return [path], []
    runs: list[Path] = []
    sweeps = [path] if (path / "optuna.journal").is_file() or (path / "multirun.yaml").is_file() else []
    if depth > 0:
        for child in sorted(path.iterdir(), key=lambda item: (len(item.name), item.name)):
            if child.is_dir() and not child.name.startswith("."):
                found, studies = run_folders(child, depth - 1)
                runs += found
                sweeps += studies
    return runs, sweeps


def collect(paths: list[Path]) -> tuple[list[Run], list[dict[str, Any]]]:
    """Every readable run below ``paths``, and the Optuna studies found; each problem is one logged line."""
    folders: list[Path] = []
    sweeps: list[Path] = []
    for path in paths:
        found, studies = run_folders(path)
        if not found and not studies:
            log.warning(
                "%s is not a run folder (no .hydra/config.yaml, summary.json or provenance.json) and "
                "holds none; skipped.",
                path,
            )
        folders += [folder for folder in found if folder.resolve() not in {f.resolve() for f in folders}]
        sweeps += [sweep for sweep in studies if sweep.resolve() not in {s.resolve() for s in sweeps}]
    base = common_parent(folders) if len(folders) > 1 else (folders[0].parent if folders else Path("."))
    runs: dict[str, Run] = {}
    broken: dict[str, str] = {}
    for folder in folders:
        try:
            runs[str(folder.resolve())] = read_run(folder, folder.resolve().relative_to(base.resolve()).as_posix())
        except BrokenRun as error:
            broken[str(folder.resolve())] = str(error)
    extra: list[Run] = []
    summaries: list[dict[str, Any]] = []
    for sweep in sweeps:
        study = read_study(sweep)
        if study is not None:
            extra += trial_runs(sweep, study, runs)
            summaries.append({key: value for key, value in study.items() if key != "trials"})
    noted = {run.folder and str(Path(run.folder).resolve()) for run in extra}
    for where, problem in broken.items():
        if where not in noted:
            log.warning("%s: %s; left out.", where, problem)
    return [*runs.values(), *extra], summaries


def common_parent(folders: list[Path]) -> Path:
    parts = [folder.resolve().parts for folder in folders]
    shared = []
    for items in zip(*parts, strict=False):
        if len(set(items)) != 1:
            break
        shared.append(items[0])
    return Path(*shared) if shared else Path("/")


# ------------------------------------------------------------------ what the page shows
def differing_keys(runs: list[Run]) -> list[str]:
    """The override keys whose value is not the same in every run (a key some runs lack counts)."""
    keys = sorted({key for run in runs for key in run.overrides})
    return [key for key in keys if len({run.overrides.get(key) for run in runs}) > 1]


def mean_std(values: list[float]) -> list[float]:
    return [short(statistics.fmean(values)), short(statistics.stdev(values)) if len(values) > 1 else 0.0]


def seed_groups(runs: list[Run]) -> list[dict[str, Any]]:
    """Runs with the same overrides apart from ``seed`` (and the same commit), at least two seeds: mean ± std."""
    buckets: dict[tuple, list[int]] = {}
    for index, run in enumerate(runs):
        if run.status != "completed":
            continue
        key = (tuple(sorted((k, v) for k, v in run.overrides.items() if k != "seed")), run.commit, run.monitor)
        buckets.setdefault(key, []).append(index)
    groups = []
    for (overrides, _, monitor), members in buckets.items():
        if len({str(runs[index].overrides.get("seed", runs[index].seed)) for index in members}) < 2:
            continue
        chosen = [runs[index] for index in members]
        curves = {}
        for metric in sorted({metric for run in chosen for metric in run.curves}):
            by_epoch: dict[float, list[float]] = {}
            for run in chosen:
                for epoch, value in run.curves.get(metric, []):
                    by_epoch.setdefault(epoch, []).append(value)
            curves[metric] = [
                [epoch, *mean_std(values)] for epoch, values in sorted(by_epoch.items()) if len(values) > 1
            ]
        tests = sorted({key for run in chosen for key in run.test})
        groups.append(
            {
                "name": " ".join(f"{k}={shown(v)}" for k, v in overrides) or "defaults",
                "members": members,
                "monitor": monitor,
                "best": mean_std([run.best for run in chosen if run.best is not None] or [math.nan]),
                "test": {key: mean_std([run.test[key] for run in chosen if key in run.test]) for key in tests},
                "curves": curves,
            }
        )
    return groups


def page_data(runs: list[Run], studies: list[dict[str, Any]], title: str) -> dict[str, Any]:
    keys = differing_keys(runs)
    param_keys = sorted({key for run in runs for key in run.params}) or keys
    return {
        "title": title,
        "created": datetime.now().strftime("%Y-%m-%d %H:%M"),
        "keys": keys,
        "params": param_keys,
        "tests": sorted({key for run in runs for key in run.test}),
        "metrics": sorted({metric for run in runs for metric in run.curves}),
        "runs": [
            {
                **finite({**vars(run), "curves": {}}),
                "curves": run.curves,
                "overrides": {key: run.overrides.get(key) for key in keys},
            }
            for run in runs
        ],
        "groups": finite(seed_groups(runs)),
        "studies": finite(studies),
    }


def write_csv(path: Path, data: dict[str, Any]) -> None:
    columns = [
        "name",
        "status",
        "reason",
        *data["keys"],
        "trial",
        *[f"param:{key}" for key in data["params"]],
        "objective",
        "monitor",
        "best",
        "best_epoch",
        *data["tests"],
        "duration_s",
        "commit",
        "precision",
        "seed",
        "folder",
    ]
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(columns)
        for run in data["runs"]:
            params = run["params"]
            row = {**run, **run["overrides"], **run["test"], **{f"param:{k}": params.get(k) for k in data["params"]}}
            writer.writerow(["" if row.get(column) is None else row.get(column) for column in columns])


def render_html(data: dict[str, Any]) -> str:
    """The page: the template with the data inlined (``</`` escaped so that no value can end the script)."""
    template = resources.files("{{ cookiecutter.package_name }}").joinpath("comparison.html").read_text(encoding="utf-8")
    payload = json.dumps(data, separators=(",", ":"), allow_nan=False, default=str).replace("</", "<\\/")
    return template.replace("__TITLE__", re.sub(r"[<>&\"]", "", data["title"])).replace("__DATA__", payload)


def finite(value: Any) -> Any:
    """NaN and infinities as null, so the page's JSON stays valid (curves hold finite numbers only)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: finite(item) for key, item in value.items()}
    if isinstance(value, list):
        return [finite(item) for item in value]
    return value


def write_comparison(paths: list[Path], output: Path | None = None) -> Path | None:
    """Write ``comparison.html`` and ``comparison.csv`` for the runs below ``paths``; None when there are none."""
    runs, studies = collect(paths)
    if not runs:
        log.warning("No runs to compare in %s.", ", ".join(str(path) for path in paths))
        return None
    folders = [path.resolve() for path in paths]
    output = Path(output) if output else (folders[0] if len(folders) == 1 else common_parent(folders))
    output.mkdir(parents=True, exist_ok=True)
    title = output.resolve().name or "runs"
    data = page_data(runs, studies, title)
    write_csv(output / "comparison.csv", data)
    page = output / "comparison.html"
    page.write_text(render_html(data), encoding="utf-8")
    log.info("Compared %d runs: %s", len(runs), page)
    return page


# ------------------------------------------------------------------ command line and Hydra callback
def parse(argv: list[str]) -> tuple[list[str], dict[str, str]]:
    """Folders and globs, and ``key=value`` options (only :data:`OPTIONS`; a path that exists is a path)."""
    folders, options = [], {}
    for argument in argv:
        key, sep, value = argument.partition("=")
        if not sep or Path(argument).exists() or glob.has_magic(key):
            folders.append(argument)
        elif key in OPTIONS:
            options[key] = quoting.unquoted(value)  # output='~/비교 결과' as the Hydra commands take it
        else:
            close = closest(key, OPTIONS, count=1)
            hint = f"did you mean {close[0]}=? " if close else ""
            raise UserError(
                f"{key}= is not an option of compare: {hint}the options are "
                f"{', '.join(f'{name}=' for name in OPTIONS)}; anything else is a folder or a glob."
            )
    if not folders:
        raise UserError("give the folders to compare, e.g. outputs/multiruns/<sweep> or 'outputs/runs/*'.")
    return folders, options


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s][%(levelname)s] %(message)s", datefmt="%H:%M:%S")
    argv = sys.argv[1:] if argv is None else argv
    if asked_for_help(argv, __doc__ or ""):
        return
    try:
        folders, options = parse(argv)
        output = Path(options["output"]).expanduser() if options.get("output") else None
        page = write_comparison(expand(folders), output)
    except UserError as error:
        log.error("%s", error)
        raise SystemExit(1) from None
    if page is None:
        raise SystemExit(1)


try:
    from hydra.experimental.callback import Callback as _HydraCallback
except ImportError:  # pragma: no cover - Hydra is a dependency
    _HydraCallback = object  # type: ignore[assignment,misc]


class WriteComparison(_HydraCallback):  # type: ignore[misc,valid-type]
    """Hydra callback: a multirun writes ``comparison.html`` into its sweep folder when it ends."""

    def on_multirun_end(self, config: Any, **kwargs: Any) -> None:
        folder = Path(str(config.hydra.sweep.dir))
        try:
            write_comparison([folder], folder)
        except Exception as error:  # noqa: BLE001 - the page must never fail the sweep
            log.warning("Could not write %s/comparison.html: %s", folder, error)


if __name__ == "__main__":
    main()
