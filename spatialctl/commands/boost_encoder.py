"""What `spatialctl boost-encoder` prints: the output folder, its files and each stage's numbers, as JSON."""

from __future__ import annotations

import json

import typer


def report(config, summary) -> None:
    typer.echo(json.dumps({"out": config.out, "files": summary.outputs, "stages": summary.details}))
