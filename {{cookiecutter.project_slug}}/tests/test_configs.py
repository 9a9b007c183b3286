"""Every option of every config group composes and resolves."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import CONFIG_DIR, compose_config, resolved

OPTIONAL_GROUPS = {"debug", "experiment", "hparams_search"}


def group_options() -> list[tuple[str, str]]:
    options = []
    for group_dir in sorted(path for path in CONFIG_DIR.iterdir() if path.is_dir()):
        if group_dir.name == "hydra":
            continue
        options += [(group_dir.name, path.stem) for path in sorted(group_dir.glob("*.yaml"))]
    return options


def test_every_group_has_options() -> None:
    groups = {group for group, _ in group_options()}
    assert {
        "task",
        "data",
        "model",
        "optimizer",
        "scheduler",
        "precision",
        "trainer",
        "logger",
        "paths",
        "debug",
        "experiment",
    } <= groups


@pytest.mark.parametrize(("group", "option"), group_options())
def test_option_composes(group: str, option: str, tmp_path: Path) -> None:
    # The quantization group belongs to model=causal_lm (its defaults list brings it in).
    needs = ["model=causal_lm"] if group == "quantization" else []
    cfg = compose_config([*needs, f"{group}={option}"], output_dir=tmp_path)
    config = resolved(cfg)
    for key in ("task", "data", "model", "optimizer", "scheduler", "precision", "trainer", "logger"):
        assert config[key], f"{key} is empty with {group}={option}"
    if group not in OPTIONAL_GROUPS and group not in {"paths"}:
        assert config[group] is not None


def test_root_defaults(tmp_path: Path) -> None:
    cfg = compose_config(output_dir=tmp_path)
    assert cfg.seed == 42
    assert cfg.precision.name == "{{ cookiecutter.precision }}"
    assert cfg.paths.output_dir == str(tmp_path)
    assert cfg.task.mode in {"max", "min"}
