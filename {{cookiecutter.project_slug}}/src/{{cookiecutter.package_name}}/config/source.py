"""Where the entry points find their Hydra configs, in a source checkout and after ``pip install``.

- A source checkout (``src/`` beside ``configs/``) reads ``configs/``, the folder you edit.
- An installed package reads the copy shipped inside it, ``pkg://{{ cookiecutter.package_name }}.configs``
  (``setup.py`` maps ``configs/`` to that package in the wheel).
- Your own folders of configs (e.g. ``experiment/my_run.yaml``) join the search path with
  ``hydra.searchpath=[file:///path/to/configs]`` on the command line, or through the environment
  variable ``{{ cookiecutter.package_name | upper }}_CONFIG_PATH`` (folders separated by ``os.pathsep``).
"""

from __future__ import annotations

import os
from pathlib import Path

from omegaconf import DictConfig

from {{ cookiecutter.package_name }}.config import quoting

PACKAGE = "{{ cookiecutter.package_name }}"
SOURCE_CONFIGS = Path(__file__).resolve().parents[3] / "configs"
ENV_VAR = "{{ cookiecutter.package_name | upper }}_CONFIG_PATH"


def config_path() -> str:
    """The checkout's ``configs/`` when this code runs from a checkout, else the package's own copy."""
    if (SOURCE_CONFIGS / "train.yaml").is_file():
        return str(SOURCE_CONFIGS)
    return f"pkg://{PACKAGE}.configs"


def user_search_path(overrides: list[str]) -> list[str]:
    """``overrides`` plus a ``hydra.searchpath`` of the folders in the environment variable, if set
    (a ``hydra.searchpath`` given on the command line wins)."""
    folders = [folder for folder in os.environ.get(ENV_VAR, "").split(os.pathsep) if folder.strip()]
    if not folders or any(item.lstrip("+~").startswith("hydra.searchpath") for item in overrides):
        return list(overrides)
    # quoted: a folder under a Korean user name (C:/Users/김철수/...) is beyond Hydra's unquoted values
    searchpath = quoting.path_override(
        "hydra.searchpath", [f"file://{Path(folder).expanduser().resolve().as_posix()}" for folder in folders]
    )
    # beside the other overrides: Hydra's parser takes them as one run of positional arguments
    first = next(
        (index for index, item in enumerate(overrides) if "=" in item and not item.startswith("-")), len(overrides)
    )
    return [*overrides[:first], searchpath, *overrides[first:]]


def compose(config_name: str | None, overrides: list[str]) -> DictConfig:
    """Compose with the same search path as the entry points (outside a running Hydra app)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir, initialize_config_module
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    path = config_path()
    context: initialize_config_module | initialize_config_dir
    if path.startswith("pkg://"):
        context = initialize_config_module(config_module=path.removeprefix("pkg://"), version_base="1.3")
    else:
        context = initialize_config_dir(config_dir=path, version_base="1.3")
    try:
        with context:
            return hydra_compose(config_name=config_name, overrides=user_search_path(overrides))
    finally:
        GlobalHydra.instance().clear()


def config_groups() -> list[str]:
    """The config groups (folders) of the configs the entry points read."""
    from importlib.resources import files

    path = config_path()
    root = files(path.removeprefix("pkg://")) if path.startswith("pkg://") else Path(path)
    return sorted(item.name for item in root.iterdir() if item.is_dir() and not item.name.startswith("_"))


def group_options(group: str) -> list[str]:
    """The options (``.yaml`` files) of a config group of the configs the entry points read."""
    from importlib.resources import files

    path = config_path()
    root = files(path.removeprefix("pkg://")) if path.startswith("pkg://") else Path(path)
    folder = root.joinpath(*group.split("/"))
    return sorted(item.name.removesuffix(".yaml") for item in folder.iterdir() if item.name.endswith(".yaml"))


def nearest_keys(cfg: DictConfig, key: str) -> list[str]:
    """Full keys of ``cfg`` that differ from ``key`` in its first segment that ``cfg`` lacks."""
    parts, node = key.split("."), cfg
    for index, part in enumerate(parts):
        if isinstance(node, DictConfig) and part in node:
            node = node[part]
            continue
        siblings = [str(name) for name in node.keys()] if isinstance(node, DictConfig) else []
        if index == 0:
            siblings += config_groups()
        return [".".join([*parts[:index], name, *parts[index + 1 :]]) for name in siblings]
    return []
