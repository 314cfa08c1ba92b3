"""What `spatialctl view` prints: the recording's path on stdout; how to open it on stderr."""

from __future__ import annotations

import typer


def report(config, summary) -> None:
    result = summary.details
    typer.echo(result["out"])
    if config.spawn and not result["spawned"]:
        # Printed even with --quiet: the user asked for a viewer and did not get one.
        typer.echo(f"no Rerun viewer can open here (no display or no `rerun` command); open the recording with: "
                   f"{result['open_command']}", err=True)
    elif not config.quiet and not config.spawn:
        typer.echo(f"open it with: {result['open_command']}", err=True)
