"""`spatialctl status MANIFEST --stage S --out DIR`: done / failed / pending counts over a manifest."""

from __future__ import annotations

import importlib
import json
from typing import Annotated

import typer

from spatialctl import jobs
from spatialctl.errors import UsageError


def _output_for(stage: str):
    module_name = stage.replace("-", "_")
    try:
        module = importlib.import_module(f"spatialctl.stages.{module_name}")
    except ModuleNotFoundError:
        raise UsageError(f"--stage {stage}: no such stage") from None
    if not hasattr(module, "output_for"):
        raise UsageError(f"--stage {stage}: this stage does not run over manifests")
    return module.output_for


def status(
    manifest: Annotated[str, typer.Argument(help="A manifest (one input per line) or a single input.")],
    stage: Annotated[str, typer.Option("--stage", help="The stage whose outputs to check, e.g. reconstruct.")],
    out: Annotated[str | None, typer.Option("--out", help="The stage's --out folder (stages that write in place need none).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print counts and failures as JSON.")] = False,
) -> None:
    """Report done / failed / pending items of a stage over a manifest, with each failure's one-line error."""
    output_for = _output_for(stage)
    counts = {"done": 0, "failed": 0, "pending": 0}
    failures = {}
    for path in jobs.resolve_inputs(manifest):
        state, detail = jobs.item_state(output_for(path, out), None)
        if state == "failed":
            failures[path] = detail
        counts["failed" if state == "failed" else "done" if state == "done" else "pending"] += 1
    if as_json:
        typer.echo(json.dumps({**counts, "failures": failures}, indent=2))
    else:
        typer.echo(f"{stage}: done {counts['done']}, failed {counts['failed']}, pending {counts['pending']}")
        for path, error in failures.items():
            typer.echo(f"  FAILED {path}: {error}")


def register(app: typer.Typer) -> None:
    app.command("status")(status)
