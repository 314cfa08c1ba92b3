"""Typed stage configs: each option is defined once, as a dataclass field made with :func:`opt`.

The field carries its type (the annotation), its default and its help text; the command line is generated from
it (``spatialctl/cli_gen.py``). Fields made without ``opt`` are library-only settings with no flag.
``runtime`` fields (quiet, device, ...) change how a run behaves, not what it produces, so they stay out of the
config hash that decides whether an output is up to date.

Every config has ``validate()``: it checks the whole config and parses text values into their typed form once
(stages read the parsed form), before any side effect; bad values raise :class:`UsageError` (exit 2).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import MISSING, field
from typing import Any

from spatialctl.errors import UsageError


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
    parse: Callable[[str], Any] | None = None,
    choices: Sequence[Any] | None = None,
    invert: bool = False,
    check: Callable[[Any], Any] | None = None,
) -> Any:
    """A config field with its command-line face.

    ``flag``: the option's name (default: ``--`` + the field name with dashes; ``--a/--no-a`` for a pair);
    ``short``: a short flag; ``argument=True``: a positional argument; ``runtime=True``: out of the config hash;
    ``parse``: the command line gives text that this function turns into the field's value (comma lists, WxH),
    with ``show_default`` as the text default shown; ``choices``: the allowed values, checked by
    :func:`check_fields`; ``invert=True``: a bool field set to False by its flag (``--no-gsm``); ``check``: a
    function :func:`check_fields` calls on a value that is not None (raising UsageError when it is bad).
    """
    metadata = {"help": help, "flag": flag, "short": short, "metavar": metavar, "runtime": runtime,
                "argument": argument, "show_default": show_default, "parse": parse,
                "choices": tuple(choices) if choices is not None else None, "invert": invert, "check": check}
    if default_factory is not MISSING:
        return field(default_factory=default_factory, metadata=metadata)
    return field(default=default, metadata=metadata)


def is_option(f: dataclasses.Field) -> bool:
    """Whether a config field is on the command line (made with :func:`opt`)."""
    return "help" in f.metadata


def section(cls: type) -> Any:
    """A config field holding a nested config (a section, e.g. train-gsm's ``grpo``): its options are the
    command's options like any other (flags unchanged, names unique across the command), its values live in
    ``config.<section>.<field>``, and its result-changing fields count in the config hash."""
    return field(default_factory=cls, metadata={"section": True})


def is_section(f: dataclasses.Field) -> bool:
    return bool(f.metadata.get("section"))


def option_fields(cls: type) -> list[tuple[str | None, dataclasses.Field, Any]]:
    """(section name or None, field, type hint) of every option of a config class, sections included."""
    import typing

    hints = typing.get_type_hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        if is_section(f):
            out += [(f.name, g, hint) for _, g, hint in option_fields(f.default_factory)]
        elif is_option(f):
            out.append((None, f, hints[f.name]))
    return out


def flag_of(f: dataclasses.Field) -> str:
    """The option's long flag (``--no-x`` pairs give the first), or the argument's upper-case name."""
    if f.metadata.get("argument"):
        return f.name.upper()
    return (f.metadata.get("flag") or "--" + f.name.replace("_", "-")).split("/")[0]


# Options several stages share, defined once (each call makes a fresh field for one config class).

def _check_shard(text: str) -> None:
    from spatialctl.jobs import parse_shard

    parse_shard(text)


def _check_device(name: str) -> None:
    if name in ("auto", "cpu"):
        return  # always valid; asking torch would import it (seconds) before the cheaper checks, model files first
    from spatialctl.devices import resolve_device

    resolve_device(name)


def shard_opt() -> Any:
    return opt(None, "Process shard I of N (0-based) of the inputs. Default: from SLURM_ARRAY_TASK_ID/COUNT (or "
               "MIN/MAX), else everything.", metavar="I/N", runtime=True, show_default=False, check=_check_shard)


def overwrite_opt(help: str = "Redo items that are already complete.") -> Any:
    return opt(False, help, runtime=True)


def quiet_opt() -> Any:
    return opt(False, "No progress bars or info logs (errors still go to stderr).", short="-q", runtime=True)


def device_opt() -> Any:
    return opt("auto", "torch device; auto picks cuda when available.", runtime=True, check=_check_device)


def split_list(text: str | Sequence[str]) -> tuple[str, ...]:
    """"a, b,c" -> ("a", "b", "c"); a sequence passes through as a tuple."""
    items = text.split(",") if isinstance(text, str) else text
    return tuple(str(v).strip() for v in items if str(v).strip())


def parse_float_list(text: str, flag: str, n: int, what: str) -> tuple[float, ...]:
    """"1,2,3,4" -> (1.0, 2.0, 3.0, 4.0), exactly ``n`` numbers, else a UsageError naming ``flag``."""
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        values = ()
    if len(values) != n:
        raise UsageError(f"{flag} {text!r}: expected {what}")
    return values


def check_fields(config) -> None:
    """The checks every config shares: each field with ``choices`` holds one of them, each ``check`` passes
    (--shard I/N, --device exists)."""
    for f in dataclasses.fields(config):
        if is_section(f):
            check_fields(getattr(config, f.name))
            continue
        if f.metadata.get("check") is not None and getattr(config, f.name) is not None:
            f.metadata["check"](getattr(config, f.name))
        choices = f.metadata.get("choices")
        if choices is None:
            continue
        value = getattr(config, f.name)
        values = value if isinstance(value, (tuple, list)) else (value,)
        bad = [v for v in values if v not in choices and not (v is None and f.default is None)]
        if bad:
            raise UsageError(f"{flag_of(f)} {bad[0]!r}: expected one of {', '.join(map(str, choices))}")
