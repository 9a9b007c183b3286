"""Using a trained run: one module per kind of task, each offering the same small interface.

- ``PREDICT_OPTIONS`` / ``EXPORT_OPTIONS``: its options of ``predict`` and ``export``, with their defaults,
  and ``PREDICT_HELP`` / ``EXPORT_HELP``: their lines of ``--help``;
- ``load_options(folder, config, precision)``: what its model's builder needs to load the trained weights;
- ``export_overrides(config, options)``: config overrides and builder arguments ``export`` loads with;
- ``predict(run, source, output, options)`` and ``export(run, output, options)``;
- ``CARD`` and ``card_details(run)``: what the model card says of an export.

A render holds only the modules of its tasks, so ``--help`` lists only their options.
"""

from __future__ import annotations

import importlib
import importlib.util
from types import ModuleType
from typing import Any

from {{ cookiecutter.package_name }}.errors import UserError

# The module that serves a run, by the module (in this package) of its data's, else its task's ``_target_``.
MODULES = {"data.chat": "chat", "data.preference": "chat", "tasks.causal_lm": "text", "tasks.classification": "images"}


def _module_of(target: Any) -> str:
    return str(target or "").removeprefix("{{ cookiecutter.package_name }}.").rpartition(".")[0]


def inference_module(config: Any) -> ModuleType:
    """``inference.images``, ``inference.text`` or ``inference.chat``: the module that serves a run's config."""
    for group in ("data", "task"):
        name = MODULES.get(_module_of((config.get(group) or {}).get("_target_")))
        if name is not None:
            return importlib.import_module(f"{__name__}.{name}")
    task = (config.get("task") or {}).get("_target_")
    raise UserError(f"nothing predicts or exports {task} yet: add a module to inference/ and to inference.MODULES.")


def available_modules() -> list[ModuleType]:
    """The inference modules this project has, in :data:`MODULES` order, each once."""
    names = dict.fromkeys(MODULES.values())
    return [
        importlib.import_module(f"{__name__}.{name}")
        for name in names
        if importlib.util.find_spec(f"{__name__}.{name}") is not None
    ]


def command_options(command: str, base: dict[str, Any]) -> dict[str, Any]:
    """``base`` and every available module's options of ``command`` (``predict`` or ``export``)."""
    options = dict(base)
    for module in available_modules():
        options.update(getattr(module, f"{command.upper()}_OPTIONS"))
    return options


def command_help(command: str, doc: str) -> str:
    """``doc`` with each available module's ``--help`` lines of ``command`` in place of ``{tasks}``."""
    lines = dict.fromkeys(getattr(module, f"{command.upper()}_HELP") for module in available_modules())
    return doc.replace("{tasks}", "".join(lines).rstrip("\n"))


def foreign_options(module: ModuleType, command: str, options: dict[str, Any], base: dict[str, Any]) -> None:
    """One line for an option given that belongs to another task's module, not to the run's ``module``."""
    own = set(base) | set(getattr(module, f"{command.upper()}_OPTIONS"))
    defaults = command_options(command, base)
    for key, value in options.items():
        if key not in own and value != defaults[key]:
            shown = str(value).lower() if isinstance(value, bool) else value
            raise UserError(f"{key}={shown} does not apply to this run: it is {module.CARD['kind'].lower()}.")
