"""Path values on the command line, for Hydra's override parser.

Hydra reads an unquoted value only if it is made of ASCII letters, digits and a few signs: a
Hangul folder (``run=/home/김철수/outputs/...``), ``~`` (``data.root=~/pictures``) or ``#``, ``&``,
``!`` stop it with a lexer error that does not say quoting fixes it. Every command quotes such a
value before Hydra sees it, when the value is a plain path (no sweep, list, function or
interpolation syntax); for the others it answers in one line with the quoted form. The project's
own overrides that name a folder are written with :func:`path_override`, so a temp folder under a
Korean user name (pytest's ``tmp_path`` on Windows) works too.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence

from {{ cookiecutter.package_name }}.errors import UserError

# Hydra's grammar in an unquoted value: a sweep (a,b), an interpolation, a list, a dict, a quoted string
# or a function call (choice(...), range(...), glob(...)). A value without them is plain text, such as a path.
GRAMMAR = re.compile(r",|\$\{|^[\[{'\"]|^[A-Za-z_]\w*\(")
OPTION = re.compile(r"^(?P<key>[~+]{0,2}[\w.@/-]+)=(?P<value>.*)$", re.DOTALL)


def quoted(value: str) -> str:
    """``value`` as a single-quoted Hydra string: a quote, and backslashes right before one or at the end,
    are escaped (``C:\\Users\\me\\`` stays a Windows path)."""
    escaped = re.sub(r"(\\*)'", lambda match: match.group(1) * 2 + "\\'", value)
    escaped = re.sub(r"(\\+)$", lambda match: match.group(1) * 2, escaped)
    return f"'{escaped}'"


def path_override(key: str, path: str | os.PathLike[str] | Sequence[str | os.PathLike[str]]) -> str:
    """``key='<path>'`` (a list of paths: ``key=['<path>',...]``): an override naming folders or files that
    Hydra reads whatever characters they hold. The one way the project and its tests write such overrides."""
    if isinstance(path, (str, os.PathLike)):
        return f"{key}={quoted(os.fspath(path))}"
    return f"{key}=[{','.join(quoted(os.fspath(item)) for item in path)}]"


def readable(argument: str) -> bool:
    """Whether Hydra's override parser accepts ``argument`` as it is."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    try:
        OverridesParser.create().parse_override(argument)
    except HydraException:
        return False
    return True


def unquoted(value: str) -> str:
    """The string a value stands for: a quoted one (``'~/비교'``, as :func:`path_override` writes) without its
    quotes, anything else as it is."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    if value[:1] in ("'", '"') and readable(f"key={value}"):
        parsed = OverridesParser.create().parse_override(f"key={value}").value()
        if isinstance(parsed, str):
            return parsed
    return value


def value_text(value: str) -> str:
    """A value for ``key=<value>`` that Hydra reads back as the string ``value`` (quoted only where needed)."""
    return value if readable(f"key={value}") else quoted(value)


def quote_paths(argv: list[str]) -> list[str]:
    """The command line with each ``key=value`` that Hydra cannot read unquoted and that is plain text (a path)
    quoted; such a value inside sweep or list syntax stops with the quoted form to type."""
    quoted_argv = []
    for argument in argv:
        match = OPTION.match(argument)
        if argument.startswith("-") or match is None or readable(argument):
            quoted_argv.append(argument)
            continue
        key, value = match.group("key"), match.group("value")
        if not GRAMMAR.search(value):
            quoted_argv.append(f"{key}={quoted(value)}")
            continue
        raise UserError(
            f"{argument}: Hydra reads Korean letters, spaces, ~ and signs such as # & ! only inside quotes; "
            f"write {key}={with_quoted_items(value)} (in bash or PowerShell, inside double quotes as well)."
        )
    return quoted_argv


def with_quoted_items(value: str) -> str:
    """``value`` (a sweep a,b or a list [a,b]) with each item that Hydra cannot read unquoted quoted."""
    inner, opening, closing = value, "", ""
    if value[:1] == "[" and value[-1:] == "]":
        inner, opening, closing = value[1:-1], "[", "]"
    items = [item if readable(f"key={item}") else quoted(item.strip()) for item in inner.split(",")]
    return opening + ",".join(items) + closing
