"""What a task's arguments accept (``task.*``); torch-free, so that the entry points check a config with it
before torch loads. :class:`~{{ cookiecutter.package_name }}.tasks.base.Task` checks its own with it."""

from __future__ import annotations

from {{ cookiecutter.package_name }}.errors import MODE, Rules

TASK: Rules = {"mode": MODE}
