"""What `spatialctl eval qa|run|geometry|probe|blind` print (the commands themselves are generated from the configs)."""

from __future__ import annotations

import json
from pathlib import Path

import typer


def report_qa(config, summary) -> None:
    """eval qa / geometry: the markdown report on stdout, its folder on stderr."""
    md = next(Path(f) for f in summary.outputs if str(f).endswith("report.md"))
    typer.echo(md.read_text())
    if not config.quiet:
        typer.echo(f"report: {md.parent}", err=True)


def report_run(config, summary) -> None:
    """eval run: counts on stderr."""
    if not config.quiet:
        typer.echo(f"answered {len(summary.done)}, skipped {len(summary.skipped)} (already in {config.out})",
                   err=True)


def report_probe(config, summary) -> None:
    """eval probe: the report JSON on stdout (and in --out)."""
    typer.echo(json.dumps(summary.details, indent=2))


def report_blind(config, result: dict) -> None:
    """eval blind: the audit table on stdout, the files on stderr."""
    from spatialctl.stages.make_qa.audit import render

    typer.echo(render(result["audit"]))
    if not config.quiet:
        typer.echo(f"audit: {result['files'][0]}, {result['files'][1]}", err=True)


report_geometry = report_qa
