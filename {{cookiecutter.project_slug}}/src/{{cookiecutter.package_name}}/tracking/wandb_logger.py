"""Weights & Biases logging that never blocks or breaks a run."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import wandb

from {{ cookiecutter.package_name }}.tracking.base import Logger, Table

log = logging.getLogger(__name__)


def has_credentials() -> bool:
    """True when an API key is set or stored in ~/.netrc (no network needed to tell)."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        import netrc

        return netrc.netrc().authenticators("api.wandb.ai") is not None
    except (OSError, netrc.NetrcParseError):
        return False


class WandbLogger(Logger):
    """Logs to W&B; with no key or no network it runs offline and says how to sync."""

    name = "wandb"

    def __init__(self, project: str, save_dir: str | Path, entity: str | None = None, name: str | None = None,
                 group: str | None = None, tags: list[str] | None = None, job_type: str = "train",
                 notes: str | None = None, mode: str = "online", log_checkpoint: bool = True) -> None:
        self.settings = {"project": project, "entity": entity, "name": name, "group": group,
                         "tags": list(tags or []), "job_type": job_type, "notes": notes}
        self.save_dir = Path(save_dir)
        self.mode = mode
        self.log_checkpoint_enabled = log_checkpoint
        self.run: Any = None

    @property
    def run_id(self) -> str | None:
        return self.run.id if self.run is not None else None

    def _choose_mode(self) -> str:
        if self.mode == "online" and not has_credentials():
            log.warning("W&B: no API key found, logging offline; upload later with `wandb sync %s`.",
                        self.save_dir / "wandb")
            return "offline"
        return self.mode

    def start(self, config: dict[str, Any], resume: dict[str, Any] | None = None) -> None:
        self.save_dir.mkdir(parents=True, exist_ok=True)
        run_id = (resume or {}).get("run_ids", {}).get(self.name)
        mode = self._choose_mode()
        kwargs = dict(self.settings, config=config, dir=str(self.save_dir), id=run_id,
                      resume="allow" if run_id else None)
        try:
            self.run = wandb.init(mode=mode, settings=wandb.Settings(init_timeout=60), **kwargs)
        except Exception as error:  # noqa: BLE001 - a network failure must not stop training
            log.warning("W&B: could not start online (%s); logging offline instead.", error)
            self.run = wandb.init(mode="offline", **kwargs)

    def log_step(self, metrics: dict[str, float], step: int) -> None:
        self.run.log({**metrics, "trainer/global_step": step})

    def log_epoch(self, metrics: dict[str, float], epoch: int) -> None:
        self.run.log({**metrics, "epoch": epoch})

    def log_figure(self, name: str, figure: Any) -> None:
        self.run.log({f"plots/{name}": wandb.Image(figure)})

    def log_table(self, name: str, table: Table) -> None:
        columns, rows = table
        cells = [[wandb.Image(cell.numpy().transpose(1, 2, 0).squeeze()) if hasattr(cell, "numpy") else cell
                  for cell in row] for row in rows]
        self.run.log({f"tables/{name}": wandb.Table(columns=columns, data=cells)})

    def log_summary(self, summary: dict[str, Any]) -> None:
        self.run.summary.update({"best/" + summary["monitor"]: summary["best"]["value"],
                                 "best/epoch": summary["best"]["epoch"], **summary.get("test", {})})

    def log_checkpoint(self, path: Path, metadata: dict[str, Any]) -> None:
        if not self.log_checkpoint_enabled:
            return
        artifact = wandb.Artifact(f"model-{self.run.id}", type="model",
                                  metadata={key: metadata[key] for key in ("metric", "value", "epoch")})
        artifact.add_file(str(path))
        self.run.log_artifact(artifact, aliases=["best"])

    def finish(self, exit_code: int = 0) -> None:
        if self.run is not None:
            self.run.finish(exit_code=exit_code)
            self.run = None
