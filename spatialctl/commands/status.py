"""`spatialctl status MANIFEST --stage S --out DIR`: done / failed / pending counts over a manifest."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from spatialctl import jobs, registry
from spatialctl.errors import UsageError


def _stage(name: str) -> registry.Stage:
    try:
        stage = registry.get(name)
    except KeyError:
        raise UsageError(f"--stage {name}: no such stage") from None
    if not stage.items:
        raise UsageError(f"--stage {name}: this stage does not run over manifests")
    return stage


def status(
    manifest: Annotated[str, typer.Argument(help="A manifest (one input per line) or a single input.")],
    stage: Annotated[str, typer.Option("--stage", help="The stage whose outputs to check, e.g. reconstruct.")],
    out: Annotated[str | None, typer.Option("--out", help="The stage's --out folder (stages that write in place need none).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print counts and failures as JSON.")] = False,
) -> None:
    """Report done / failed / pending items of a stage over a manifest, with each failure's one-line error."""
    entry = _stage(stage)
    counts = {"done": 0, "failed": 0, "pending": 0}
    failures = {}
    for path in jobs.resolve_inputs(manifest):
        state, detail = jobs.item_state(entry.output_for(path, out), None, path)  # changed/damaged: pending
        if state == "failed":
            failures[path] = detail
        counts["failed" if state == "failed" else "done" if state == "done" else "pending"] += 1
    if as_json:
        typer.echo(json.dumps({**counts, "failures": failures}, indent=2))
    else:
        typer.echo(f"{stage}: done {counts['done']}, failed {counts['failed']}, pending {counts['pending']}")
        for path, error in failures.items():
            typer.echo(f"  FAILED {path}: {error}")
