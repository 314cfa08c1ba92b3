"""Typed stage configs: each option is defined once, as a dataclass field made with :func:`opt`.

The field carries its type (the annotation), its default and its help text; the command line is built from it.
``runtime`` fields (quiet, device, ...) change how a run behaves, not what it produces, so they stay out of the
config hash that decides whether an output is up to date.
"""

from __future__ import annotations

from dataclasses import MISSING, field
from typing import Any


def opt(
    default: Any = MISSING,
    help: str = "",
    *,
    flag: str | None = None,
    short: str | None = None,
    metavar: str | None = None,
    runtime: bool = False,
    argument: bool = False,
    default_factory: Any = MISSING,
    show_default: bool | str = True,
) -> Any:
    """A config field with its command-line face: ``--flag`` (default: the field name with dashes), help text,
    an optional short flag, ``argument=True`` for a positional argument, ``runtime=True`` to keep it out of
    the config hash."""
    metadata = {"help": help, "flag": flag, "short": short, "metavar": metavar, "runtime": runtime,
                "argument": argument, "show_default": show_default}
    if default_factory is not MISSING:
        return field(default_factory=default_factory, metadata=metadata)
    return field(default=default, metadata=metadata)
