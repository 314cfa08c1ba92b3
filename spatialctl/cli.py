"""The `spatialctl` command: a thin Typer shell over the stages.

Every module in `spatialctl/commands/` that defines `register(app)` adds its subcommand(s); a stage that is not
built has no module there and so is not listed.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys

import typer
from typer.core import TyperGroup

from spatialctl import __version__, commands
from spatialctl.errors import SpatialctlError

# Order in `--help`: the pipeline's order, then utilities.
ORDER = ["synth", "reconstruct", "track", "make_qa", "extract_gen_features", "train_gsm", "boost_encoder", "eval",
         "info", "status"]

class _Group(TyperGroup):
    """Turns a SpatialctlError from any subcommand into its one-line message on stderr and its exit code."""

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


def _register_commands() -> None:
    names = [m.name for m in pkgutil.iter_modules(commands.__path__)]
    for name in sorted(names, key=lambda n: (ORDER.index(n) if n in ORDER else len(ORDER), n)):
        module = importlib.import_module(f"spatialctl.commands.{name}")
        if hasattr(module, "register"):
            module.register(app)


_register_commands()


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        sys.exit(130)
