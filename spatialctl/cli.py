"""The `spatialctl` command: generated from the stage registry (``spatialctl/registry.py``) and the stages'
config dataclasses (``spatialctl/cli_gen.py``); `info` and `status` are utilities written here by hand.

A stage's command is built (and its module imported) only when it is invoked or listed, so `spatialctl info`
does not import every stage.
"""

from __future__ import annotations

import sys

import typer
from typer.core import TyperGroup

from spatialctl import __version__, registry
from spatialctl.commands import info, status
from spatialctl.errors import SpatialctlError

UTILITIES = ["info", "status"]


def _top_level() -> list[str]:
    names: list[str] = []
    for stage in registry.STAGES:
        name = stage.name.split()[0]
        if name not in names:
            names.append(name)
    return names


def _build(name: str):
    from spatialctl.cli_gen import command

    if name in registry.GROUPS:
        group = typer.Typer(name=name, help=registry.GROUPS[name], no_args_is_help=True, add_completion=False)
        for stage in registry.STAGES:
            if stage.name.startswith(name + " "):
                group.command(stage.name.split(" ", 1)[1])(command(stage))
        cmd = typer.main.get_group(group)
    else:
        single = typer.Typer(add_completion=False)
        single.command(name)(command(registry.get(name)))
        cmd = typer.main.get_command(single)
    cmd.name = name
    return cmd


class _Group(TyperGroup):
    """Lists the stages in pipeline order, builds a stage's command when needed, and turns a SpatialctlError
    from any subcommand into its one-line message on stderr and its exit code."""

    def list_commands(self, ctx):
        return _top_level() + UTILITIES

    def get_command(self, ctx, name):
        if name in _top_level():
            return _build(name)
        return super().get_command(ctx, name)

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except SpatialctlError as e:
            typer.echo(f"error: {e}", err=True)
            raise typer.Exit(e.exit_code) from None
        except OSError as e:  # disk full, read-only, permissions outside an item: the path and the reason
            where = f"{e.filename}: " if e.filename else ""
            typer.echo(f"error: {where}{' '.join(str(e.strerror or e).split())}", err=True)
            raise typer.Exit(1) from None


app = typer.Typer(
    name="spatialctl",
    cls=_Group,
    help="Turn ordinary videos into spatial-reasoning training data and models for vision-language models.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"spatialctl {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
) -> None:
    """Stages read and write artifacts on disk; each can run, resume and shard on its own."""


app.command("info")(info.info)
app.command("status")(status.status)


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        sys.exit(130)
