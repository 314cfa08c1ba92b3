"""What `spatialctl make-qa` prints: the stats summary (with --stats) and the blind audit on stderr, the result as
JSON on stdout."""

from __future__ import annotations

import json

import typer


def report(config, summary) -> None:
    result = summary.details
    if config.stats and not config.quiet:
        from spatialctl.stages.make_qa.stats import render

        typer.echo(render(result["stats"]), err=True)
    if "audit" in result and not config.quiet:
        from spatialctl.stages.make_qa.audit import render as render_audit

        typer.echo(render_audit(result["audit"]), err=True)
    typer.echo(json.dumps({k: v for k, v in result.items() if k not in ("stats", "audit")}))
    raise typer.Exit(summary.exit_code)
