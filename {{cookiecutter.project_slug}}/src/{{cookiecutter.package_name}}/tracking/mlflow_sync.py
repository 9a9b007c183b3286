"""Upload a run that MLflow logged locally (its server was down) to the server: ``python -m
{{ cookiecutter.package_name }}.tracking.mlflow_sync <run folder> [<server URI>]``.

Reads ``<run folder>/mlflow.json``, copies the local run's parameters, tags, metric history and artifacts into
the server's run (the one the run started on, or a new one in the same experiment), skipping what the server
already holds, and marks the run folder synced. Safe to run again.
"""

from __future__ import annotations

import json
import logging
import sys
import tempfile
from pathlib import Path
from typing import Any

from {{ cookiecutter.package_name }}.errors import UserError, asked_for_help, exit_on_user_error
from {{ cookiecutter.package_name }}.tracking.mlflow_logger import METRICS_PER_BATCH, RECORD, server_uri

log = logging.getLogger(__name__)


def server_run(client: Any, record: dict[str, Any], name: str | None) -> str:
    """The server's run for this record: the one it started on, if the server has it, else a new one."""
    if record.get("server_run_id"):
        try:
            return client.get_run(record["server_run_id"]).info.run_id
        except Exception as error:
            if getattr(error, "error_code", "") != "RESOURCE_DOES_NOT_EXIST":
                raise
    experiment = client.get_experiment_by_name(record["experiment"])
    experiment_id = experiment.experiment_id if experiment else client.create_experiment(record["experiment"])
    return client.create_run(experiment_id, run_name=name).info.run_id


def sync(run_folder: Path, server: str | None = None) -> str:
    """Copy the run folder's local MLflow run to ``server`` (default: the one it was meant for); its run id."""
    from mlflow import MlflowClient
    from mlflow.entities import Metric, Param, RunTag

    path = run_folder / RECORD
    if not path.is_file():
        raise UserError(f"{path} does not exist: give a run folder that logged with logger=mlflow.")
    record = json.loads(path.read_text(encoding="utf-8"))
    server = server or record.get("server") or server_uri(None)
    if not server:
        raise UserError("No server to upload to: give its URI, e.g. `mlflow_sync <run folder> http://host:5000`.")
    if record.get("synced") and record.get("tracking_uri") == server:
        log.info("%s is on %s already (run %s).", run_folder, server, record["run_id"])
        return str(record["run_id"])
    local, remote = MlflowClient(record["tracking_uri"]), MlflowClient(server)
    source = local.get_run(record["run_id"])
    target = server_run(remote, record, source.info.run_name)
    held = remote.get_run(target).data
    params = [Param(k, v) for k, v in source.data.params.items() if k not in held.params]
    for start in range(0, len(params), 100):
        remote.log_batch(target, params=params[start : start + 100])
    remote.log_batch(target, tags=[RunTag(k, v) for k, v in source.data.tags.items() if not k.startswith("mlflow.log")])
    for key in source.data.metrics:
        seen = {(m.step, m.timestamp) for m in remote.get_metric_history(target, key)} if key in held.metrics else set()
        missing = [
            Metric(key, m.value, m.timestamp, m.step)
            for m in local.get_metric_history(record["run_id"], key)
            if (m.step, m.timestamp) not in seen
        ]
        for start in range(0, len(missing), METRICS_PER_BATCH):
            remote.log_batch(target, metrics=missing[start : start + METRICS_PER_BATCH])
    with tempfile.TemporaryDirectory() as folder:
        local_artifacts = local.download_artifacts(record["run_id"], "", folder)
        if any(Path(local_artifacts).iterdir()):
            remote.log_artifacts(target, local_artifacts)
    remote.set_terminated(target, status=source.info.status)
    record.update(server=server, server_run_id=target, synced=True)
    path.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    log.info("Uploaded %s to %s as run %s.", run_folder, server, target)
    return target


@exit_on_user_error
def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if asked_for_help(args if 0 < len(args) <= 2 else ["--help"], __doc__ or ""):  # no or too many arguments: usage
        return
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    sync(Path(args[0]), args[1] if len(args) > 1 else None)


if __name__ == "__main__":
    main()
