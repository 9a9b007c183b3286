"""User-facing errors: one line of cause and fix instead of a stack trace.

It also holds the words in which each owner states what its values accept (:class:`Rule`); the owners'
tables (``data/rules.py``, ``tasks/rules.py``, ``training/rules.py``) import nothing heavier, so that the
entry points check a whole config with them before torch loads.
"""

from __future__ import annotations

import difflib
import functools
import logging
import math
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
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


@dataclass(frozen=True)
class Rule:
    """What one value accepts: a kind (``int``, ``float``, ``bool``, ``str``) and optional bounds or choices."""

    kind: type
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    optional: bool = False
    choices: tuple[str, ...] = ()

    def accepts(self, value: Any) -> bool:
        if value is None:
            return self.optional
        if self.kind is dict:  # a switch or a mapping of options (trainer.compile); each option has its own rule
            return isinstance(value, bool | Mapping) and set(self.choices) >= set(
                value if not isinstance(value, bool) else ()
            )
        if self.kind is bool or self.kind is str:
            return isinstance(value, self.kind) and (not self.choices or value in self.choices)
        if isinstance(value, bool) or not isinstance(value, int if self.kind is int else (int, float)):
            return False
        if not math.isfinite(value):
            return False
        if self.low is not None and (value < self.low or (self.low_open and value == self.low)):
            return False
        return self.high is None or not (value > self.high or (self.high_open and value == self.high))

    def describe(self) -> str:
        if self.kind is dict:
            return "true, false or a mapping of " + ", ".join(self.choices)
        if self.choices:
            text = "one of " + ", ".join(self.choices)
        elif self.kind is bool:
            text = "true or false"
        else:
            text = "an integer" if self.kind is int else "a number"
            if self.low is not None and self.high is not None:
                text += (
                    f" in {'(' if self.low_open else '['}{self.low:g}, {self.high:g}{')' if self.high_open else ']'}"
                )
            elif self.low is not None:
                text += f" {'>' if self.low_open else '>='} {self.low:g}"
        return text + (" or null" if self.optional else "")


def at_least(low: float, kind: type = int, optional: bool = False) -> Rule:
    return Rule(kind, low=low, optional=optional)


def above(low: float, optional: bool = False) -> Rule:
    return Rule(float, low=low, low_open=True, optional=optional)


FRACTION = Rule(float, low=0.0, high=1.0, high_open=True)  # [0, 1)
FLAG = Rule(bool)
MODE = Rule(str, choices=("max", "min"))  # a monitored metric: bigger or smaller is better
Rules = Mapping[str, Rule]  # an owner's table: argument (``early_stopping.patience`` for a nested one) -> rule

_ABSENT = object()


def check_value(key: str, value: Any, rule: Rule) -> None:
    """One line naming ``key`` and what it accepts when ``rule`` rejects ``value``."""
    if not rule.accepts(value):
        shown = "null" if value is None else str(value).lower() if isinstance(value, bool) else str(value)
        raise UserError(f"{key}={shown} is not accepted: {key} must be {rule.describe()}.")


def check_arguments(node: str, rules: Rules, arguments: Mapping[str, Any]) -> None:
    """Check each of ``arguments`` (a mapping, nested ones included) that ``rules`` has a rule for, naming it
    ``<node>.<argument>`` as the config does; arguments without a rule, and rules without an argument, pass."""
    for name, rule in rules.items():
        value: Any = arguments
        for part in name.split("."):
            value = value.get(part, _ABSENT) if isinstance(value, Mapping) else _ABSENT
        if value is not _ABSENT:
            check_value(f"{node}.{name}" if node else name, value, rule)
