"""Config fields that document themselves: `option(default, help=..., flag=...)`.

A field's `help` is the one text behind both `augserve serve --help` and
`docs/configuration.md` (rendered by `augserve.server.config_doc`), so the two cannot
drift apart.

Example:
    >>> @dataclasses.dataclass(frozen=True)
    ... class Limits:
    ...     window: int = option(8, help="batches in flight per stream", flag="--window")
    >>> help_of(dataclasses.fields(Limits)[0])
    'batches in flight per stream'
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any


def option(
    default: Any = dataclasses.MISSING,
    *,
    help: str,
    flag: str | None = None,
    default_factory: Callable[[], Any] | Any = dataclasses.MISSING,
    parse: Callable[[str], Any] | None = None,
    choices: Sequence[str] | None = None,
    append: bool = False,
    shown: str | None = None,
) -> Any:
    """A dataclass field with its documentation and, optionally, its command-line flag.

    Args:
        default: the default value (or give `default_factory`).
        help: what the field means; one sentence or two, with its unit.
        flag: the `augserve serve` flag that sets it (e.g. "--port"); None: config file only.
        default_factory: builds the default (mutable or machine-dependent defaults).
        parse: converts the flag's text (default: the type of `default`).
        choices: the values the flag accepts.
        append: the flag may be repeated, each adding one item to a tuple.
        shown: how the docs show the default, where its value depends on the machine.
    """
    metadata = {"help": help, "flag": flag, "parse": parse, "choices": choices,
                "append": append, "shown": shown}
    if default_factory is not dataclasses.MISSING:
        return dataclasses.field(default_factory=default_factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def help_of(f: dataclasses.Field[Any]) -> str:
    """The field's help text ("" if it was not declared with `option`)."""
    return str(f.metadata.get("help", ""))


def flag_of(f: dataclasses.Field[Any]) -> str | None:
    """The field's command-line flag, if it has one."""
    return f.metadata.get("flag")


def default_of(f: dataclasses.Field[Any]) -> Any:
    """The field's default value (built, for a `default_factory`)."""
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return f.default


def shown_default(f: dataclasses.Field[Any]) -> str:
    """The default as the docs show it: a TOML value, or the field's `shown` text."""
    if f.metadata.get("shown"):
        return str(f.metadata["shown"])
    value = default_of(f)
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, tuple | list):
        return json.dumps(list(value))
    if isinstance(value, Mapping):
        return "{}" if not value else json.dumps(dict(value))
    return str(value)


def add_flag(parser: argparse.ArgumentParser, f: dataclasses.Field[Any], dest: str) -> None:
    """Add the flag of `f` to `parser`; its value lands in `dest` (None when not given)."""
    flag = flag_of(f)
    if flag is None:
        return
    # argparse formats help with %: a literal one is doubled.
    kwargs: dict[str, Any] = {"dest": dest, "help": help_of(f).replace("%", "%%"),
                              "default": None}
    default = default_of(f)
    if isinstance(default, bool):
        kwargs["action"] = "store_true"
    else:
        parse = f.metadata.get("parse") or type(default)
        kwargs["type"] = parse
        if f.metadata.get("append"):
            kwargs["action"] = "append"
        if f.metadata.get("choices"):
            kwargs["choices"] = tuple(f.metadata["choices"])
    parser.add_argument(flag, **kwargs)
