"""User-facing errors: one line of cause and fix instead of a stack trace."""

from __future__ import annotations

import difflib
import functools
import logging
import sys
from collections.abc import Callable, Iterable
from typing import Any

log = logging.getLogger(__name__)


class UserError(Exception):
    """A problem the user can fix; its message says the cause and the fix."""


def asked_for_help(argv: list[str], doc: str) -> bool:
    """Print ``doc`` (a command's module docstring, without reStructuredText's double backticks) when ``argv``
    asks for ``-h``/``--help``; True when it did."""
    if not any(arg in {"-h", "--help"} for arg in argv):
        return False
    sys.stdout.write(doc.replace("``", "") + "\n")
    return True


def first_line(error: BaseException) -> str:
    """The first line of ``error``'s message, or its type's name when it has none: the cause in one line."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def closest(word: str, choices: Iterable[str], count: int = 2) -> list[str]:
    """The names in ``choices`` nearest to ``word`` (a misspelling), best first; none when nothing is near."""
    names = sorted({str(choice) for choice in choices})
    by_case = {name.lower(): name for name in names}
    return [by_case[name] for name in difflib.get_close_matches(word.lower(), list(by_case), n=count, cutoff=0.6)]


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """`` did you mean split?`` (or ``split or splits?``) for a misspelled ``word``; empty when nothing is near."""
    near = closest(word, choices)
    return f" did you mean {' or '.join(near)}?" if near else ""


def unknown_key(key: str, choices: Iterable[str], where: str, fix: str = "") -> UserError:
    """The one-line error for a key that ``where`` does not have, with the nearest valid keys."""
    hint = did_you_mean(key, choices)
    return UserError(f"{key} is not {where}:{hint or ' check the spelling.'}{' ' + fix if fix else ''}")


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
