"""What `spatialctl report` prints: the result (folder, counts) as JSON on stdout."""

from __future__ import annotations

import json

import typer


def report(config, summary) -> None:
    typer.echo(json.dumps(summary.details))
