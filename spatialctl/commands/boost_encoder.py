"""What `spatialctl boost-encoder` prints: the output folder, its files and each stage's numbers, as JSON."""

from __future__ import annotations

import json

import typer


def report(config, result) -> None:
    typer.echo(json.dumps({"out": result.out, "files": result.files, "stages": result.stages}))
