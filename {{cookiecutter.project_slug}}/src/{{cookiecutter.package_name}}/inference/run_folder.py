"""A training run's folder as the starting point of evaluate, predict and export.

``run=<folder>`` loads the run's own saved config (``.hydra/config.yaml``), applies the command
line's overrides to it (``data.root=...``; a group choice such as ``data=image_folder`` or
``precision=fp32`` replaces that node with the option's file), and builds the data, task and
model exactly as training did, with the weights of ``checkpoints/best.pt`` (or ``ckpt=``).
The entry points import ``resolvers`` first: the saved config uses them.
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf, open_dict
from torch import nn

from {{ cookiecutter.package_name }} import runtime
from {{ cookiecutter.package_name }}.config import quoting
from {{ cookiecutter.package_name }}.config import source as config_source
from {{ cookiecutter.package_name }}.config.build import build_run
from {{ cookiecutter.package_name }}.config.checks import check_fit
from {{ cookiecutter.package_name }}.errors import UserError, asked_for_help, closest, first_line, unknown_key
from {{ cookiecutter.package_name }}.inference import inference_module
from {{ cookiecutter.package_name }}.training.checkpoint import load_weights
from {{ cookiecutter.package_name }}.training.sharded_checkpoint import SUFFIX, is_sharded_checkpoint, load_model_weights

log = logging.getLogger(__name__)
_ABSENT = object()


@dataclass
class Arguments:
    """The entry point's own options (``run=``, ``ckpt=``, ...) and the config overrides."""

    options: dict[str, Any]
    overrides: list[str] = field(default_factory=list)


def parse_arguments(argv: list[str], defaults: dict[str, Any], doc: str) -> Arguments:
    """Split ``key=value`` arguments into options named in ``defaults`` and config overrides."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    if asked_for_help(argv, doc):
        raise SystemExit(0)
    argv = quoting.quote_paths(argv)  # run=/home/김철수/... and data.root=~/사진 as typed
    options, overrides = dict(defaults), []
    for arg in argv:
        key = arg.split("=", 1)[0]
        if "=" not in arg:
            raise UserError(f"{arg!r} is not key=value: write e.g. run=outputs/runs/<run folder>.")
        if key not in defaults and "." not in key and (near := closest(key, defaults)):
            raise UserError(
                f"{key} is not an option of this command: did you mean {' or '.join(near)}? "
                f"The options are {', '.join(defaults)}."
            )
        if key in defaults:
            try:
                value = OverridesParser.create().parse_override(arg).value()
            except HydraException as error:
                raise UserError(f"{arg}: {first_line(error)}") from None
            options[key] = None if value in ("null", None) else value
        else:
            overrides.append(arg)
    if not options.get("run"):
        raise UserError("run= is missing: give the run folder, e.g. run=outputs/runs/2025-01-01_12-00-00.")
    return Arguments(options, overrides)


def check_run_folder(folder: Path) -> Path:
    """``folder`` resolved, or one line naming what makes it not a run folder."""
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise UserError(f"run={folder} is not a folder: give the folder of a training run (outputs/runs/<time>).")
    if not (folder / ".hydra" / "config.yaml").is_file():
        raise UserError(
            f"run={folder} is not a run folder: it has no .hydra/config.yaml, which training writes; "
            "point run= at the folder holding checkpoints/ and .hydra/."
        )
    return folder.resolve()


def checkpoint_path(folder: Path, ckpt: Any) -> Path:
    """``best`` or ``last`` in the run's ``checkpoints/`` (a ``.pt`` file, or an FSDP run's ``.dcp`` folder),
    or a path to either."""
    name = str(ckpt or "best")
    path = folder / "checkpoints" / f"{name}.pt" if name in {"best", "last"} else Path(name).expanduser()
    sharded = path.with_suffix(SUFFIX) if name in {"best", "last"} else path
    if is_sharded_checkpoint(sharded):
        return sharded
    if not path.is_file():
        raise UserError(
            f"run={folder} has no {path.relative_to(folder) if path.is_relative_to(folder) else path}: "
            "pick another with ckpt=best|last|<path to a .pt file or .dcp folder>."
        )
    return path


def _apply_group(config: DictConfig, key: str, option: str) -> bool:
    """Replace (or, for ``@package _global_`` options such as ``debug=fast``, merge) a group's option;
    False when ``key`` is not a config group."""
    from hydra.errors import HydraException, MissingConfigException

    try:
        composed = config_source.compose(None, [f"+{key}={option}"])
    except MissingConfigException as error:
        if OmegaConf.select(config, key, default=_ABSENT) is _ABSENT:
            return False
        raise UserError(f"{key}={option}: {first_line(error)}") from None
    except HydraException as error:
        raise UserError(f"{key}={option}: {first_line(error)}") from None
    if not isinstance(composed.get(key, _ABSENT), DictConfig) and set(composed) == {key}:
        return False  # not a group: Hydra took `+key=option` as a new key
    with open_dict(config):
        if set(composed) == {key}:
            config[key] = composed[key]
        else:
            config.merge_with(composed)
    return True


def load_saved_config(folder: Path) -> DictConfig:
    """The config the run saved (``.hydra/config.yaml``), as it was."""
    config = OmegaConf.load(folder / ".hydra" / "config.yaml")
    assert isinstance(config, DictConfig), f"{folder}/.hydra/config.yaml is not a mapping"
    return config


def load_config(folder: Path, overrides: list[str]) -> DictConfig:
    """The run's saved config with ``overrides`` applied and ``paths.output_dir`` set to the run folder."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    config = load_saved_config(folder)
    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except HydraException as error:
        raise UserError(f"{' '.join(overrides)}: {first_line(error)}") from None
    choices = saved_choices(folder)
    for override in parsed:
        key, value = override.key_or_group, override.value()
        current = OmegaConf.select(config, key, default=_ABSENT)
        is_node = isinstance(current, DictConfig) or current is _ABSENT
        if "." not in key and isinstance(value, str) and is_node and _apply_group(config, key, value):
            choices[key] = value
            continue
        if current is _ABSENT and not override.is_add():
            raise unknown_key(
                key,
                config_source.nearest_keys(config, key),
                "a key of this run's config",
                f"A new key needs a +: +{key}=...",
            )
        with open_dict(config):
            OmegaConf.update(config, key, value, force_add=True)
    check_fit(config, choices)  # e.g. data=text on an image classifier's run: one line, before anything is built
    with open_dict(config):
        config.paths.output_dir = str(folder)
    return config


def saved_choices(folder: Path) -> dict[str, str]:
    """The option the run picked in each config group (``.hydra/hydra.yaml``), for messages; empty if unknown."""
    try:
        saved = OmegaConf.load(folder / ".hydra" / "hydra.yaml")
        return {str(key): str(value) for key, value in saved.hydra.runtime.choices.items() if value is not None}
    except (OSError, AttributeError, KeyError, ValueError):
        return {}


def load_trained_weights(model: nn.Module, checkpoint: Path) -> None:
    """Load the checkpoint's model weights into ``model``; a checkpoint of another model is one line."""
    own = runtime.unwrap(model).state_dict()
    if is_sharded_checkpoint(checkpoint):  # an FSDP run's shards, gathered in this process alone
        weights = load_model_weights(checkpoint, {key: value.clone() for key, value in own.items()})
    else:
        weights = load_weights(checkpoint)
    missing, unexpected = sorted(own.keys() - weights.keys()), sorted(weights.keys() - own.keys())
    mismatched = sorted(
        key for key in own.keys() & weights.keys() if tuple(own[key].shape) != tuple(weights[key].shape)
    )
    if missing or unexpected or mismatched:
        details = [f"{key} {tuple(weights[key].shape)} vs {tuple(own[key].shape)}" for key in mismatched[:3]]
        details += [f"missing {key}" for key in missing[:3]] + [f"unexpected {key}" for key in unexpected[:3]]
        count = len(missing) + len(unexpected) + len(mismatched)
        raise UserError(
            f"{checkpoint} does not fit the configured model ({count} keys differ: {'; '.join(details)}): "
            "use the run's own model options, or a checkpoint of this model."
        )
    runtime.unwrap(model).load_state_dict(weights)


@dataclass
class LoadedRun:
    """What evaluate, predict and export start from."""

    folder: Path
    config: DictConfig
    checkpoint: Path
    device: torch.device
    precision: Any
    datamodule: Any
    info: Any
    task: Any
    model: nn.Module


def load_run(
    folder: Path | str, overrides: list[str], ckpt: Any = "best", model_options: dict[str, Any] | None = None
) -> LoadedRun:
    """Check the folder, load and override its config, build data, task and model, load the weights.

    ``model_options``: extra arguments of the model's builder (over the inference module's ``load_options``).
    """
    from hydra.utils import instantiate

    from {{ cookiecutter.package_name }}.utils import seed_everything

    folder = check_run_folder(Path(folder))
    checkpoint = checkpoint_path(folder, ckpt)
    config = load_config(folder, overrides)
    if config.get("init_from"):  # the start the run was trained from (merged adapters: in the run folder)
        from {{ cookiecutter.package_name }}.models import init_from  # type: ignore[attr-defined,unused-ignore]

        init_from.apply(config, folder, merge=False)
    seed_everything(int(config.seed))
    device = runtime.choose_device(str(config.trainer.get("device", "auto")))
    precision = instantiate(config.precision).resolve(device)
    # before the data is built: a random init's tokenizer is in the run folder, where the model's is
    options = {**inference_module(config).load_options(folder, config, precision), **(model_options or {})}
    built = build_run(config, options)
    model = built.model
    load_trained_weights(model, checkpoint)
    model = runtime.place(model, device)
    model.eval()
    log.info(
        "Loaded %s (%s) on %s with %s.",
        checkpoint.relative_to(folder) if checkpoint.is_relative_to(folder) else checkpoint,
        type(runtime.unwrap(model)).__name__,
        device,
        precision,
    )
    return LoadedRun(folder, config, checkpoint, device, precision, built.datamodule, built.info, built.task, model)


def output_folder(folder: Path, kind: str, given: Any = None) -> Path:
    """``<run>/<kind>/<date>_<time>`` (or the folder given), created."""
    path = Path(str(given)).expanduser() if given else folder / kind / datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
    if path.exists() and not path.is_dir():
        raise UserError(f"output={path} is a file: give a folder to write into.")
    path.mkdir(parents=True, exist_ok=True)
    return path


def setup_logging(output: Path, name: str) -> None:
    """Log lines to stderr and to ``<output>/<name>.log``, in the training log's format."""
    formatter = logging.Formatter("[%(asctime)s][%(levelname)s] %(message)s", "%H:%M:%S")
    root = logging.getLogger()
    root.setLevel(logging.INFO)
    for handler in (logging.StreamHandler(sys.stderr), logging.FileHandler(output / f"{name}.log", encoding="utf-8")):
        handler.setFormatter(formatter)
        root.addHandler(handler)


def relative(path: Path, folder: Path) -> str:
    """``path`` relative to ``folder`` when inside it, else absolute."""
    return str(path.relative_to(folder)) if path.is_relative_to(folder) else str(path)
