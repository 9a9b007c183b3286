"""Weights & Biases logging that never blocks or breaks a run.

Without an API key (or when the server cannot be reached in ``init_timeout``
seconds) the run is logged offline, with one line saying how to ``wandb sync`` it.
The API key is read by W&B itself and is never copied into the config or logs.
"""

from __future__ import annotations

import logging
import netrc
import os
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import numpy as np
import wandb
from matplotlib.backends.backend_agg import FigureCanvasAgg

from {{ cookiecutter.package_name }}.errors import UserError
from {{ cookiecutter.package_name }}.tracking.background import Background
from {{ cookiecutter.package_name }}.tracking.base import Logger, Table
from {{ cookiecutter.package_name }}.tracking.tables import STEP_METRICS, epoch_metric_name, image_array, plain_cell

log = logging.getLogger(__name__)

MODES = {"online", "offline", "disabled"}
# STEP_METRICS are logged every N optimizer steps on this axis; their epoch means get an ``_epoch`` suffix.
STEP_AXIS = "trainer/global_step"


def has_credentials() -> bool:
    """True when an API key is set or stored in ~/.netrc for the W&B host (no network needed to tell)."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    host = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname or "api.wandb.ai"
    try:
        return netrc.netrc().authenticators(host) is not None
    except (OSError, netrc.NetrcParseError):
        return False


def doctor_answer() -> tuple[str, str]:
    """For ``doctor``: whether a run would log to W&B online, offline, or not at all."""
    mode = os.environ.get("WANDB_MODE", "online")
    if not has_credentials():
        return "W&B?", f"no API key (WANDB_MODE={mode}): runs log offline; `wandb login` or set WANDB_API_KEY"
    return "W&B?", f"API key found, WANDB_MODE={mode}"


def figure_to_image(figure: Any) -> np.ndarray:
    """Render a matplotlib figure with the Agg canvas (headless) into an RGB array."""
    canvas = FigureCanvasAgg(figure)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def to_cell(value: Any) -> Any:
    """A table cell W&B can show: image tensors become images, other tensors plain values."""
    array = image_array(value)
    return wandb.Image(array) if array is not None else plain_cell(value)


class WandbLogger(Logger):
    """Logs to W&B; with no key or no network it runs offline and says how to sync."""

    name = "wandb"

    def __init__(
        self,
        project: str,
        save_dir: str | Path,
        entity: str | None = None,
        name: str | None = None,
        group: str | None = None,
        tags: list[str] | None = None,
        job_type: str = "train",
        notes: str | None = None,
        mode: str = "online",
        log_checkpoint: bool = True,
        init_timeout: float = 30.0,
    ) -> None:
        mode = "offline" if mode == "dryrun" else mode
        if mode not in MODES:
            raise UserError(f"logger.wandb.mode={mode!r}: use one of {sorted(MODES)} (or set WANDB_MODE).")
        self.settings = {
            "project": project,
            "entity": entity or None,
            "name": name,
            "group": group,
            "tags": list(tags or []),
            "job_type": job_type,
            "notes": notes,
        }
        self.save_dir = Path(save_dir)
        self.mode = mode
        self.log_checkpoint_enabled = log_checkpoint
        self.init_timeout = init_timeout
        self.run: Any = None
        self.background: Background | None = None
        self.epoch_metrics: set[str] = set()

    @property
    def run_id(self) -> str | None:
        return self.run.id if self.run is not None else None

    def _choose_mode(self) -> tuple[str, str]:
        """The mode to start in, and why it is offline when it is."""
        if self.mode == "online" and not has_credentials():
            return "offline", "no API key found (run `wandb login` or set WANDB_API_KEY)"
        return self.mode, f"mode is {self.mode}"

    def _init(self, mode: str, kwargs: dict[str, Any]) -> Any:
        settings = wandb.Settings(init_timeout=self.init_timeout, silent=True)
        return wandb.init(mode=mode, settings=settings, **kwargs)  # type: ignore[arg-type]  # wandb checks it

    def start(self, config: dict[str, Any], resume: dict[str, Any] | None = None) -> None:
        self.save_dir.mkdir(parents=True, exist_ok=True)
        run_id = (resume or {}).get("run_ids", {}).get(self.name)
        settings = dict(self.settings, name=self.settings["name"] or config.get("name"))
        kwargs = dict(
            settings,
            config=config,
            dir=str(self.save_dir),
            id=run_id,
            resume="allow" if run_id else None,
            reinit="finish_previous",
        )
        mode, reason = self._choose_mode()
        level = logging.INFO
        try:
            self.run = self._init(mode, kwargs)
        except Exception as error:  # noqa: BLE001 - a network failure must not stop training
            if mode != "online":
                raise
            mode, reason = "offline", f"the server did not answer ({type(error).__name__})"
            level = logging.WARNING
            self.run = self._init(mode, kwargs)
        if mode == "offline":
            log.log(
                level, "W&B: %s; logging offline, upload later with `wandb sync %s`.", reason, Path(self.run.dir).parent
            )
        self.background = Background("W&B")
        self._define_metrics(config)

    def _define_metrics(self, config: dict[str, Any]) -> None:
        self.run.define_metric(STEP_AXIS, hidden=True)
        for key in STEP_METRICS:
            self.run.define_metric(key, step_metric=STEP_AXIS)
        self.run.define_metric("epoch")
        task = config.get("task") or {}
        if task.get("monitor"):
            self.run.define_metric(task["monitor"], step_metric="epoch", summary=task.get("mode", "max"))
            self.epoch_metrics.add(task["monitor"])

    def _define_epoch_metrics(self, keys: list[str]) -> None:
        for key in keys:
            self.run.define_metric(key, step_metric="epoch")

    def _submit(self, func: Callable[..., Any], *args: Any) -> None:
        if self.background is not None:  # None only before start(), when self.run is None too
            self.background.submit(func, *args)

    def log_step(self, metrics: dict[str, float], step: int) -> None:
        if self.run is None:  # start failed: already reported once
            return
        self._submit(self.run.log, {**metrics, STEP_AXIS: step})

    def log_epoch(self, metrics: dict[str, float], epoch: int) -> None:
        if self.run is None:  # start failed: already reported once
            return
        renamed = {epoch_metric_name(key): value for key, value in metrics.items()}
        new = sorted(renamed.keys() - self.epoch_metrics)
        self.epoch_metrics.update(new)
        self._submit(self._define_epoch_metrics, new)
        self._submit(self.run.log, {**renamed, "epoch": epoch})

    def log_figure(self, name: str, figure: Any) -> None:
        if self.run is None:  # start failed: already reported once
            return
        self._submit(self.run.log, {f"plots/{name}": wandb.Image(figure_to_image(figure), caption=name)})

    def log_table(self, name: str, table: Table) -> None:
        if self.run is None:  # start failed: already reported once
            return
        columns, rows = table
        cells = [[to_cell(cell) for cell in row] for row in rows]
        self._submit(self.run.log, {f"tables/{name}": wandb.Table(columns=list(columns), data=cells)})

    def log_summary(self, summary: dict[str, Any]) -> None:
        if self.run is None:  # start failed: already reported once
            return
        best = summary.get("best") or {}
        values: dict[str, Any] = {f"best/{summary['monitor']}": best.get("value"), "best/epoch": best.get("epoch")}
        values.update(summary.get("test") or {})
        for key in ("epochs", "global_step", "stopped_early", "precision", "peak_memory_bytes"):
            if summary.get(key) is not None:
                values[key] = summary[key]
        if summary.get("peak_memory_bytes"):
            values["peak_memory_gb"] = summary["peak_memory_bytes"] / 2**30
        self._submit(self.run.summary.update, values)

    def log_checkpoint(self, path: Path, metadata: dict[str, Any]) -> None:
        if self.run is None or not self.log_checkpoint_enabled:
            return
        self._submit(self._log_artifact, Path(path), dict(metadata))

    def _log_artifact(self, path: Path, metadata: dict[str, Any]) -> None:
        keys = ("metric", "value", "epoch", "config")
        artifact = wandb.Artifact(
            f"model-{self.run.id}", type="model", metadata={key: metadata[key] for key in keys if key in metadata}
        )
        artifact.add_file(str(path), name=path.name)
        self.run.log_artifact(artifact, aliases=["best", "latest"])

    def mark_preempting(self) -> None:
        if self.run is not None:
            self.run.mark_preempting()

    def finish(self, exit_code: int = 0) -> None:
        if self.background is not None:
            self.background.close(timeout=max(60.0, self.init_timeout))
            self.background = None
        if self.run is not None:
            run, self.run = self.run, None
            run.finish(exit_code=exit_code)
