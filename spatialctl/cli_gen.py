"""Typer commands generated from the stages' config dataclasses: each option is written once, as a config field
(``spatialctl.config.opt``); this module turns the fields into command-line options and every command into the
same three steps: config from the options -> ``config.validate()`` (the whole config, before any side effect)
-> the stage's ``run``. What a command prints afterwards is its ``report`` in ``spatialctl/commands/``.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import typing
from collections.abc import Callable
from typing import Annotated, Any

import typer

from spatialctl.config import is_section, option_fields
from spatialctl.options import finish, progress, setup_logging
from spatialctl.registry import Stage


def _param(f: dataclasses.Field, hint: Any) -> inspect.Parameter:
    m = f.metadata
    kw: dict[str, Any] = {"help": m["help"]}
    if m.get("metavar"):
        kw["metavar"] = m["metavar"]
    show_default = m.get("show_default", True)
    if m.get("parse"):
        # The command line gives text, parsed by the field's own parser; the default text (``show_default``) or
        # None keeps the field's default.
        hint, default = (str | None), show_default if isinstance(show_default, str) else None
        show_default = show_default is not False
    elif m.get("invert"):
        hint, default = bool, False
    elif f.default is not dataclasses.MISSING:
        default = f.default
    elif f.default_factory is not dataclasses.MISSING:
        default = f.default_factory()
    else:
        default = inspect.Parameter.empty  # required
    if typing.get_origin(hint) is tuple:  # tuples of values are repeated options on the command line
        hint = list[typing.get_args(hint)[0]]
    if isinstance(default, tuple):
        default = list(default)
    if m.get("argument"):  # positional arguments are required on the command line (None serves library callers)
        default = inspect.Parameter.empty if default is None else default
        info = typer.Argument(show_default=show_default, **kw)
    else:
        flags = [m.get("flag") or "--" + f.name.replace("_", "-")] + ([m["short"]] if m.get("short") else [])
        info = typer.Option(*flags, show_default=show_default, **kw)
    return inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=Annotated[hint, info])


def _inputs_param(stage: Stage) -> inspect.Parameter:
    spec = stage.inputs
    hint = list[str] if spec.many else str
    if spec.flag is None:
        info = typer.Argument(help=spec.help)
    else:
        info = typer.Option(spec.flag, *([spec.short] if spec.short else []), help=spec.help)
    return inspect.Parameter(spec.name, inspect.Parameter.KEYWORD_ONLY, annotation=Annotated[hint, info])


def config_from_options(cls: type, values: dict[str, Any]):
    """The config a command's option values make (parsing text options), not yet validated."""
    kwargs = {}
    for f in dataclasses.fields(cls):
        if is_section(f):  # a nested config made from the same option values
            kwargs[f.name] = config_from_options(f.default_factory, values)
            continue
        if f.name not in values:
            continue
        value = values[f.name]
        if f.metadata.get("parse"):
            if value is None or value == f.metadata.get("show_default"):
                continue
            value = f.metadata["parse"](value)
            if isinstance(value, dict):  # one option setting several fields (--size WxH: width, height)
                kwargs.update(value)
                continue
        elif f.metadata.get("invert"):
            value = not value
        elif isinstance(value, list) and typing.get_origin(typing.get_type_hints(cls)[f.name]) is tuple:
            value = tuple(value)
        kwargs[f.name] = value
    return cls(**kwargs)


def _report_for(stage: Stage) -> Callable[[Any, Any], None]:
    """What the command prints: ``report`` (or ``report_<sub>`` for a subcommand) in ``spatialctl/commands/<name>``;
    item stages without one share `finish` (counts on stderr, exit 1 when an item failed)."""
    words = stage.name.replace("-", "_").split()
    try:
        module = importlib.import_module("spatialctl.commands." + words[0])
    except ModuleNotFoundError:
        return lambda config, summary: finish(summary, getattr(config, "quiet", False))
    return getattr(module, "report" if len(words) == 1 else f"report_{words[1]}")


def command(stage: Stage) -> Callable[..., None]:
    """The Typer command function of ``stage``: its parameters are the config's options (plus the inputs)."""
    cls = stage.config_class()
    options = option_fields(cls)
    names = [f.name for _, f, _ in options]
    assert len(set(names)) == len(names), f"{stage.name}: an option name is used twice across config sections"
    params = ([_inputs_param(stage)] if stage.inputs else []) + [_param(f, hint) for _, f, hint in options]
    # Typer lists required parameters first anyway; Python wants them before the defaulted ones.
    params.sort(key=lambda p: p.default is not inspect.Parameter.empty)
    report = _report_for(stage)

    def run_command(**values: Any) -> None:
        quiet = bool(values.get("quiet", False))
        setup_logging(quiet)
        inputs = values.pop(stage.inputs.name) if stage.inputs else None
        config = config_from_options(cls, values)
        config.validate()
        bars = {k: progress(quiet, desc, unit) for k, (desc, unit) in stage.progress.items()}
        run = stage.load().run
        report(config, run(config, inputs, **bars))

    run_command.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    run_command.__doc__ = stage.help
    run_command.__name__ = stage.name.split()[-1].replace("-", "_")
    return run_command
