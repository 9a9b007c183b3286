"""Using a trained run: predicting on new inputs and exporting the model, one module per kind of task."""

from __future__ import annotations

import importlib
from typing import Any

from {{ cookiecutter.package_name }}.errors import UserError

# The module of this package that serves each task, by the name of the task's module.
MODULES = {"classification": "images", "causal_lm": "text", "dpo": "text"}


def inference_module(task: Any) -> Any:
    """``inference.images`` or ``inference.text``: the predict and export functions for ``task``."""
    name = MODULES.get(type(task).__module__.rsplit(".", 1)[-1])
    if name is None:
        raise UserError(
            f"nothing predicts or exports {type(task).__name__} yet: add a module to inference/ "
            "and to inference.MODULES."
        )
    return importlib.import_module(f"{__name__}.{name}")
