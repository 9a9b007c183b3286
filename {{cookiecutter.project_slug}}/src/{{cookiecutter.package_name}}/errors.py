"""User-facing errors: one line of cause and fix instead of a stack trace."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)


class UserError(Exception):
    """A problem the user can fix; its message says the cause and the fix."""


def in_multirun() -> bool:
    """True inside one job of a Hydra multirun (a sweep), where a failure must stay that job's."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def user_error_in(error: BaseException) -> UserError | None:
    """The :class:`UserError` that caused ``error``, also through Hydra's ``instantiate`` wrapper."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        if isinstance(current, UserError):
            return current
        seen.add(id(current))
        current = current.__cause__
    return None


def exit_on_user_error(func: Callable[..., Any]) -> Callable[..., Any]:
    """Turn a :class:`UserError` raised by ``func`` (or inside ``instantiate``) into one logged line, exit 1.

    In a multirun the error is logged and raised on instead: Hydra records that job as failed
    (Optuna marks the trial failed) and the other jobs go on; ``SystemExit`` would end the sweep.
    """

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except Exception as error:
            cause = user_error_in(error)
            if cause is None:
                raise
            log.error("%s", cause)
            if in_multirun():
                raise cause from None
            raise SystemExit(1) from None

    return wrapper
