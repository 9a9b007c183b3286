"""User-facing errors: one line of cause and fix instead of a stack trace."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)


class UserError(Exception):
    """A problem the user can fix; its message says the cause and the fix."""


def exit_on_user_error(func: Callable[..., Any]) -> Callable[..., Any]:
    """Turn a :class:`UserError` raised by ``func`` into one logged line and exit code 1."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except UserError as error:
            log.error("%s", error)
            raise SystemExit(1) from None

    return wrapper
