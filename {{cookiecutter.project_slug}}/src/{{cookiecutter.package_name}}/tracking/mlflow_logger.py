"""MLflow tracking that works offline and loses nothing when a server goes away.

With no server named (``tracking_uri`` and ``MLFLOW_TRACKING_URI`` unset) runs go to the SQLite store
``mlflow.db`` in the project: nothing to start, no network. With a server, every call is also kept in a
journal; a server that does not answer (at the start or in the middle of a run) gives one warning, and the run
goes on in the local store with everything logged so far. ``python -m {{ cookiecutter.package_name }}.tracking.mlflow_sync
<run folder>`` uploads it afterwards. ``mlflow`` is imported only when a run starts.
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
from pathlib import Path
from typing import Any

from {{ cookiecutter.package_name }}.tracking.background import Background
from {{ cookiecutter.package_name }}.tracking.base import Logger, Table
from {{ cookiecutter.package_name }}.tracking.tables import epoch_metric_name, flatten, write_table

log = logging.getLogger(__name__)

# MLflow's limits (mlflow.utils.validation): a parameter value, a key, and the entries of one log_batch call.
MAX_PARAM_VALUE = 6000
MAX_KEY = 250
PARAMS_PER_BATCH = 100
METRICS_PER_BATCH = 1000
RECORD = "mlflow.json"  # in the run folder: where the run went, for resuming and for mlflow_sync
Entry = tuple[str, Any, Any]


def local_uri(store: str | Path) -> str:
    """``sqlite:///<absolute path>`` of the local store."""
    return f"sqlite:///{Path(store).expanduser().resolve().as_posix()}"


def is_local(uri: str) -> bool:
    return uri.startswith(("sqlite:", "file:")) or "://" not in uri


def server_uri(tracking_uri: str | None) -> str | None:
    """The server named by the config or ``MLFLOW_TRACKING_URI``; None for the local store."""
    uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or None
    return None if uri is None or is_local(uri) else uri


def doctor_answer() -> tuple[str, str]:
    """For ``doctor``: where a run would log (no network needed to tell)."""
    uri = server_uri(None)
    if uri is None:
        return "MLflow?", "local store mlflow.db (set MLFLOW_TRACKING_URI=http://host:5000 for a server)"
    return "MLflow?", f"server {uri} (a server that does not answer: the run logs to mlflow.db)"


def clean_key(key: str) -> str:
    """A key MLflow accepts: letters, digits, ``_ - . / space``; at most 250 characters."""
    return re.sub(r"[^\w\-. /]", "_", key)[:MAX_KEY]


def params_of(config: dict[str, Any]) -> dict[str, str]:
    """The resolved config as flat ``section.key`` parameters, each value cut to MLflow's 6000 characters."""
    params = {}
    for key, value in flatten(config).items():
        text = "null" if value is None else str(value)
        params[clean_key(key)] = text if len(text) <= MAX_PARAM_VALUE else text[: MAX_PARAM_VALUE - 1] + "…"
    return params


def tags_of(config: dict[str, Any], group: str | None, extra: dict[str, Any]) -> dict[str, str]:
    """The run's name, commit, sweep and seed as tags (``mlflow.source.git.commit`` shows in the UI)."""
    git = (config.get("provenance") or {}).get("git") or {}
    tags = {
        "mlflow.runName": config.get("name"),
        "mlflow.source.git.commit": git.get("commit"),
        "git.dirty": git.get("dirty"),
        "sweep": group,
        "seed": config.get("seed"),
        **extra,
    }
    return {clean_key(str(key)): str(value) for key, value in tags.items() if value is not None}


class MlflowLogger(Logger):
    """Logs to an MLflow tracking server, or to the project's SQLite store when there is none or it is down."""

    name = "mlflow"

    def __init__(
        self,
        save_dir: str | Path,
        local_store: str | Path = "mlflow.db",
        tracking_uri: str | None = None,
        experiment: str = "{{ cookiecutter.project_slug }}",
        group: str | None = None,
        name: str | None = None,
        tags: dict[str, Any] | None = None,
        log_checkpoint: bool = False,
        http_timeout: float = 10.0,
        http_retries: int = 1,
    ) -> None:
        self.save_dir = Path(save_dir)
        self.local = local_uri(local_store)
        self.server = server_uri(tracking_uri)
        self.experiment = f"{experiment}/{group}" if group else experiment
        self.group, self.name_override, self.extra_tags = group, name, dict(tags or {})
        self.log_checkpoint_enabled = log_checkpoint
        self.http = {
            "MLFLOW_HTTP_REQUEST_TIMEOUT": str(int(http_timeout)),
            "MLFLOW_HTTP_REQUEST_MAX_RETRIES": str(int(http_retries)),
        }
        self.staging = self.save_dir / "mlflow_artifacts"
        self.journal: list[Entry] = []
        self.uri: str | None = None
        self.client: Any = None
        self._run_id: str | None = None
        self.server_run_id: str | None = None
        self.status = "FINISHED"
        self.background: Background | None = None
        self.resume_id: str | None = None
        self.known_params: dict[str, str] = {}
        self.run_name: str | None = name

    @property
    def run_id(self) -> str | None:
        return self.server_run_id or self._run_id

    # -- the store ------------------------------------------------------------------------------------------

    def _open(self, uri: str, resume_id: str | None) -> None:
        """Connect to ``uri`` and continue ``resume_id`` there if it has it, else create the run."""
        from mlflow import MlflowClient

        client = MlflowClient(tracking_uri=uri)
        experiment_id = self._experiment_id(client, uri)
        run = None
        if resume_id:
            try:
                run = client.get_run(resume_id)
            except Exception as error:
                if getattr(error, "error_code", "") != "RESOURCE_DOES_NOT_EXIST":
                    raise  # the server did not answer: the caller falls back
                log.info("MLflow: run %s is not in %s; a new run there continues it.", resume_id, uri)
        run_id = None
        if run is not None:
            run_id = run.info.run_id
            client.update_run(run_id, status="RUNNING")
            self.known_params = dict(run.data.params)
        if run_id is None:
            tags = {"resumed_from": resume_id} if resume_id else {}
            run_id = client.create_run(experiment_id, run_name=self.run_name, tags=tags).info.run_id
            self.known_params = {}
        self.client, self.uri, self._run_id = client, uri, run_id
        if not is_local(uri):
            self.server_run_id = run_id
        self._write_record()

    def _experiment_id(self, client: Any, uri: str) -> str:
        found = client.get_experiment_by_name(self.experiment)
        if found is not None:
            return found.experiment_id
        location = (
            (Path(self.local.removeprefix("sqlite:///")).parent / "mlartifacts").as_uri() if is_local(uri) else None
        )
        try:
            return client.create_experiment(self.experiment, artifact_location=location)
        except Exception:  # noqa: BLE001 - another trial of the sweep created it first
            found = client.get_experiment_by_name(self.experiment)
            if found is None:
                raise
            return found.experiment_id

    def _write_record(self) -> None:
        record = {
            "tracking_uri": self.uri,
            "run_id": self._run_id,
            "experiment": self.experiment,
            "server": self.server,
            "server_run_id": self.server_run_id,
            "synced": self.uri == self.server,
        }
        (self.save_dir / RECORD).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")

    def _fall_back(self, error: Exception) -> None:
        """The server stopped answering: one warning, then the local store, with the journal replayed."""
        log.warning(
            "MLflow: the server %s does not answer (%s); logging to %s instead, nothing is lost. "
            "Upload it later with `python -m {{ cookiecutter.package_name }}.tracking.mlflow_sync %s`.",
            self.server,
            type(error).__name__,
            self.local,
            self.save_dir,
        )
        self._open(self.local, self.resume_id or self.server_run_id)  # also rewrites mlflow.json
        for entry in self.journal:
            self._apply(entry)

    def _apply(self, entry: Entry) -> None:
        from mlflow.entities import Metric, Param, RunTag

        kind, payload, extra = entry
        if kind == "params":
            items = [(key, value) for key, value in payload.items() if self.known_params.get(key, value) == value]
            for start in range(0, len(items), PARAMS_PER_BATCH):
                chunk = [Param(key, value) for key, value in items[start : start + PARAMS_PER_BATCH]]
                self.client.log_batch(self._run_id, params=chunk)
        elif kind == "tags":
            self.client.log_batch(self._run_id, tags=[RunTag(key, value) for key, value in payload.items()])
        elif kind == "metrics":
            metrics = [Metric(key, value, timestamp, step) for key, value, timestamp, step in payload]
            for start in range(0, len(metrics), METRICS_PER_BATCH):
                self.client.log_batch(self._run_id, metrics=metrics[start : start + METRICS_PER_BATCH])
        elif kind == "artifact":
            self.client.log_artifact(self._run_id, str(payload), extra)
        elif kind == "end":
            self.client.set_terminated(self._run_id, status=payload)

    def _record(self, kind: str, payload: Any, extra: Any = None) -> None:
        """Run on the worker thread: journal the entry, send it, and fall back to the local store on failure."""
        entry = (kind, payload, extra)
        self.journal.append(entry)
        try:
            self._apply(entry)
        except Exception as error:
            if self.uri is None or is_local(self.uri):
                raise
            self._fall_back(error)

    def _submit(self, kind: str, payload: Any, extra: Any = None) -> None:
        if self.background is not None:
            self.background.submit(self._record, kind, payload, extra)

    # -- the Logger interface -------------------------------------------------------------------------------

    def start(self, config: dict[str, Any], resume: dict[str, Any] | None = None) -> None:
        self.save_dir.mkdir(parents=True, exist_ok=True)
        for key, value in self.http.items():
            os.environ.setdefault(key, value)
        self.run_name = self.name_override or config.get("name")
        self.resume_id = resume_id = (resume or {}).get("run_ids", {}).get(self.name)
        if self.server is not None:
            logging.getLogger("urllib3.connectionpool").setLevel(logging.ERROR)  # one warning, ours, not a retry each
            try:
                self._open(self.server, resume_id)
            except Exception as error:  # noqa: BLE001 - a server that is down must not stop training
                self._fall_back(error)
        else:
            self._open(self.local, resume_id)
            log.info("MLflow: logging to %s (see it with `mlflow ui --backend-store-uri %s`).", self.uri, self.uri)
        self.background = Background("MLflow")
        self._submit("params", params_of(config))
        self._submit("tags", tags_of(config, self.group, self.extra_tags))

    def log_step(self, metrics: dict[str, float], step: int) -> None:
        now = int(time.time() * 1000)
        self._submit("metrics", [(clean_key(key), float(value), now, step) for key, value in metrics.items()])

    def log_epoch(self, metrics: dict[str, float], epoch: int) -> None:
        now = int(time.time() * 1000)
        values = [(clean_key(epoch_metric_name(key)), float(value), now, epoch) for key, value in metrics.items()]
        self._submit("metrics", [*values, ("epoch", float(epoch), now, epoch)])

    def _stage(self, relative: str) -> Path:
        path = self.staging / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def log_figure(self, name: str, figure: Any) -> None:
        path = self._stage(f"plots/{name}.png")
        figure.savefig(path, dpi=120)
        self._submit("artifact", path, "plots")

    def log_table(self, name: str, table: Table) -> None:
        written = write_table(table, self.staging / "tables", name)
        self._submit("artifact", written[0], "tables")
        for image in written[1:]:
            self._submit("artifact", image, f"tables/{name}")

    def log_summary(self, summary: dict[str, Any]) -> None:
        best = summary.get("best") or {}
        values = {f"best/{summary.get('monitor')}": best.get("value"), "best/epoch": best.get("epoch")}
        values.update(summary.get("test") or {})
        step, now = int(summary.get("epochs") or 0), int(time.time() * 1000)
        numbers = [(clean_key(k), float(v), now, step) for k, v in values.items() if isinstance(v, (int, float))]
        self._submit("metrics", numbers)
        path = self._stage("summary.json")
        path.write_text(json.dumps(summary, indent=2, default=str) + "\n", encoding="utf-8")
        self._submit("artifact", path, None)

    def log_checkpoint(self, path: Path, metadata: dict[str, Any]) -> None:
        if self.log_checkpoint_enabled:
            self._submit("artifact", Path(path), "checkpoints")

    def mark_preempting(self) -> None:
        self.status = "KILLED"  # the requeued job continues the run (RUNNING again)

    def finish(self, exit_code: int = 0) -> None:
        if self.background is None:
            return
        provenance = self.save_dir / "provenance.json"
        if provenance.is_file():
            self._submit("artifact", provenance, None)
        self._submit("end", "FAILED" if exit_code else self.status)
        background, self.background = self.background, None
        background.close(timeout=120.0)
