"""The model card (``README.md``) of an export, filled in from ``model_card.md`` beside this module."""

from __future__ import annotations

import json
from pathlib import Path
from string import Template
from typing import Any, cast

from omegaconf import OmegaConf

TEMPLATE = Path(__file__).with_name("model_card.md")


def _read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def _target(node: Any) -> str:
    """A config node in one line: its ``_target_``'s last name and its main options."""
    values = cast(dict[str, Any], OmegaConf.to_container(node, resolve=True)) if node is not None else {}
    target = str(values.pop("_target_", "")).rsplit(".", 1)[-1]
    keep = {
        key: value for key, value in values.items() if isinstance(value, (str, int, float, bool, list)) and value != ""
    }
    return f"{target} " + ", ".join(f"{key}={value}" for key, value in list(keep.items())[:8])


def values(run: Any, module: Any, files: list[Path], export_command: str) -> dict[str, str]:
    """Every ``$name`` of the template; the inference ``module``'s ``CARD`` holds the task's ``kind``, ``library``,
    ``tag`` and ``usage``, and its ``card_details(run)`` what follows the precision (e.g. how the weights were stored)."""
    card = module.CARD
    summary = _read_json(run.folder / "summary.json")
    record = _read_json(run.folder / "provenance.json")
    command = record.get("command", {})
    git = record.get("git", {})
    hardware = record.get("hardware", {})
    gpus = ", ".join(gpu["name"] for gpu in hardware.get("gpus", [])) or "no GPU"
    best = summary.get("best", {})
    metrics = {
        **summary.get("test", {}),
        **{key: value for key, value in summary.get("final", {}).items() if key.startswith("val/")},
    }
    return {
        "library": card["library"],
        "tags": "\n".join(f"- {tag}" for tag in (card["tag"], "{{ cookiecutter.project_slug }}")),
        "title": str(run.config.get("name") or run.folder.name),
        "kind": card["kind"],
        "run": run.folder.name,
        "export_command": export_command,
        "model": _target(run.config.get("model")),
        "data": _target(run.config.get("data")),
        "precision": f"{run.precision.name} (asked: {run.config.precision.name})",
        "details": module.card_details(run),
        "files": ", ".join(f"`{path.name}`" for path in files),
        "usage": card["usage"],
        "monitor": str(summary.get("monitor", "?")),
        "mode": str(summary.get("mode", "?")),
        "best": f"{best.get('value', float('nan')):.4f}" if best.get("value") is not None else "n/a",
        "best_epoch": str(best.get("epoch", "?")),
        "metrics": "\n".join(
            f"| {key} | {value:.4f} |" for key, value in metrics.items() if isinstance(value, (int, float))
        )
        or "| (none recorded) | |",
        "command": " ".join([command.get("entry", "python -m {{ cookiecutter.package_name }}.train"), *command.get("overrides", [])]),
        "code": (
            f"commit {git['commit']}{' with uncommitted changes (git.diff in the run folder)' if git.get('dirty') else ''}"
            if git.get("commit")
            else "not recorded (not run from a git checkout)"
        ),
        "started_at": str(record.get("started_at")),
        "ended_at": str(record.get("ended_at")),
        "hardware": f"{hardware.get('cpu', '?')}; {gpus}",
        "versions": ", ".join(f"{name} {version}" for name, version in record.get("versions", {}).items() if version),
    }


def write_model_card(run: Any, output: Path, module: Any, files: list[Path], export_command: str) -> Path:
    """Write ``output/README.md`` from the template, with what the run's inference ``module`` says of it."""
    text = Template(TEMPLATE.read_text(encoding="utf-8")).substitute(values(run, module, files, export_command))
    path = output / "README.md"
    path.write_text(text, encoding="utf-8")
    return path
