"""Train and test a model: ``python -m {{ cookiecutter.package_name }}.train [overrides]``.

Composes the Hydra config, checks its values, builds data, model, optimizer, scheduler,
precision and loggers from it, fits, tests, and returns the monitored metric (for sweepers).
Torch and the rest of the package load inside :func:`train`, so that ``--cfg job`` and a
bad override answer without importing them.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import hydra
from omegaconf import DictConfig, OmegaConf

import {{ cookiecutter.package_name }}.config.resolvers  # noqa: F401 - registers ${run_time:} and the others
from {{ cookiecutter.package_name }}.config import quoting
from {{ cookiecutter.package_name }}.config import source as config_source
from {{ cookiecutter.package_name }}.config.build import build_run
from {{ cookiecutter.package_name }}.config.checks import check_config, check_overrides, check_targets
from {{ cookiecutter.package_name }}.errors import UserError, exit_on_user_error, in_multirun
from {{ cookiecutter.package_name }}.training import cluster

# SLURM's tasks become torch's ranks before Hydra resolves ${rank_suffix:} and the others: in the
# command's process and in each job submitit starts (which imports this module to run ``main``).
cluster.adopt_slurm_tasks()

if TYPE_CHECKING:
    from {{ cookiecutter.package_name }}.tracking.base import LoggerCollection

log = logging.getLogger(__name__)


def resolve_resume(resume: Any, output_dir: Path) -> Path | None:
    """``auto``: this run folder's last.pt (or sharded last.dcp) if present; ``none``/null: nothing; else a path."""
    if resume is None or str(resume).lower() in {"none", "null", "false", ""}:
        return None
    if str(resume) == "auto":
        last = output_dir / "checkpoints" / "last.pt"
        sharded = output_dir / "checkpoints" / "last.dcp"
        return last if last.is_file() else sharded if sharded.is_dir() else None
    path = Path(str(resume)).expanduser()
    if not (path.is_file() or (path.suffix == ".dcp" and path.is_dir())):
        raise UserError(
            f"resume={resume}: no such checkpoint; give a path to a .pt file or a .dcp folder, auto or none."
        )
    return path


def build_loggers(cfg: DictConfig) -> LoggerCollection:
    """The configured loggers, on the main process only."""
    from hydra.utils import instantiate

    from {{ cookiecutter.package_name }}.runtime import is_main_process
    from {{ cookiecutter.package_name }}.tracking.base import LoggerCollection

    if not is_main_process():
        return LoggerCollection([])
    return LoggerCollection([instantiate(node) for node in cfg.logger.values()])


def run_name(cfg: DictConfig) -> str:
    """``name``, else ``<data set>-<model>`` from the chosen options."""
    from hydra.core.hydra_config import HydraConfig

    if cfg.get("name"):
        return str(cfg.name)
    choices = HydraConfig.get().runtime.choices
    return f"{cfg.data.get('dataset') or choices.get('data')}-{choices.get('model')}"


def start_provenance(
    cfg: DictConfig, trainer: Any, output_dir: Path, info: Any = None, extra: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Collect the run's provenance (once the trainer has resolved its precision), with the data's own
    report where it has one (chat data: format, template, drops by reason) and ``extra`` (the runs it
    started from, the task's choices); rank 0 writes it."""
    from hydra.core.hydra_config import HydraConfig

    from {{ cookiecutter.package_name }} import runtime
    from {{ cookiecutter.package_name }}.tracking import provenance

    precision = provenance.precision_record(str(cfg.precision.name), trainer.precision.name, trainer.device)
    record = provenance.collect(list(HydraConfig.get().overrides.task), cfg.seed, precision)
    if getattr(info, "report", None):
        record["data"] = info.report
    record.update(extra or {})
    if runtime.is_main_process():
        provenance.write(output_dir, record)
    return record


def close_run(output_dir: Path, record: dict[str, Any], status: str, loggers: LoggerCollection, exit_code: int) -> None:
    """Stamp provenance.json with how the run ended (rank 0) and close the loggers."""
    from {{ cookiecutter.package_name }} import runtime
    from {{ cookiecutter.package_name }}.tracking import provenance

    if runtime.is_main_process():
        provenance.finish(output_dir, record, status)
    loggers.finish(exit_code)


def train(cfg: DictConfig) -> float | None:
    """Build everything from ``cfg``, fit, test; return the best value of the monitored metric."""
    check_config(cfg)
    check_targets(cfg)
    from hydra.utils import instantiate

    from {{ cookiecutter.package_name }} import runtime
    from {{ cookiecutter.package_name }}.tracking import provenance
    from {{ cookiecutter.package_name }}.training import distributed
    from {{ cookiecutter.package_name }}.training.fsdp import is_sharded
    from {{ cookiecutter.package_name }}.utils import seed_everything

    output_dir = Path(cfg.paths.output_dir)
    cluster.adopt_slurm_tasks()
    seed_everything(cfg.seed + runtime.rank())
    loggers = build_loggers(cfg)
    trainer = instantiate(cfg.trainer, precision=instantiate(cfg.precision), output_dir=output_dir, loggers=loggers)
    extra: dict[str, Any] = {}
    if cfg.get("init_from"):
        from {{ cookiecutter.package_name }}.models import init_from  # type: ignore[attr-defined,unused-ignore]

        extra["init_from"] = init_from.apply(cfg, output_dir)
    built = build_run(cfg)
    datamodule, info, task, model = built.datamodule, built.info, built.task, built.model
    config = cast(dict[str, Any], OmegaConf.to_container(cfg, resolve=True))
    config["name"] = run_name(cfg)
    record = start_provenance(cfg, trainer, output_dir, info, {**extra, **task.provenance()})
    config["provenance"] = provenance.public(record)

    exit_code, status, closed = 1, "failed", False
    try:
        resume = distributed.agree_on_resume(lambda: resolve_resume(cfg.resume, output_dir), trainer.device)
        best = trainer.fit(
            model,
            task,
            datamodule,
            optimizer_factory=instantiate(cfg.optimizer),
            scheduler_factory=instantiate(cfg.scheduler),
            config=config,
            resume=resume,
        )
        trainer.test()
        if is_sharded(trainer.model):  # rank 0 alone cannot gather the shards: export builds the model folder
            log.info("Sharded run: write the model folder with python -m {{ cookiecutter.package_name }}.export run=%s", output_dir)
        elif runtime.is_main_process():
            task.save_result(model, output_dir)
        exit_code, status = 0, "completed"
    except cluster.TrainingInterrupted as stop:
        log.warning("%s; resume with: resume=%s", stop, output_dir / "checkpoints" / f"last{trainer.checkpoint_suffix}")
        exit_code, status, best = 0, "interrupted", trainer.best_score
        if cluster.under_submitit():  # the W&B run goes on in the requeued job
            loggers.mark_preempting()
        close_run(output_dir, record, status, loggers, exit_code)  # before a requeue ends this job
        closed = True
        cluster.after_stop(stop.signum)  # under submitit: requeue, or wait for SLURM's, or fail
        if in_multirun() and not cluster.under_submitit():  # a trial in this process: no partial result
            raise
    finally:
        if not closed:
            close_run(output_dir, record, status, loggers, exit_code)
        distributed.destroy_distributed()
    log.info("Best %s = %s. Outputs: %s", task.monitor, best, output_dir)
    return best


@hydra.main(version_base="1.3", config_path=config_source.config_path(), config_name="train")
@exit_on_user_error
def main(cfg: DictConfig) -> float | None:
    with cluster.failing_together():
        return train(cfg)


def cli() -> None:
    """``python -m {{ cookiecutter.package_name }}.train`` and the console script: adds the user config folders of
    ``${{ cookiecutter.package_name | upper }}_CONFIG_PATH`` to Hydra's search path."""
    from hydra_plugins.{{ cookiecutter.package_name }}_optuna import optuna_sweeper

    sys.argv[1:] = exit_on_user_error(quoting.quote_paths)(sys.argv[1:])  # data.root=~/사진 as typed
    optuna_sweeper.register(sys.argv[1:])
    sys.argv[1:] = config_source.user_search_path(sys.argv[1:])
    exit_on_user_error(check_overrides)("train", sys.argv[1:])
    main()


if __name__ == "__main__":
    cli()
