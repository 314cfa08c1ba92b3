"""`spatialctl report SCENE.zarr... [--qa qa.jsonl] --out report/`: a static HTML site of scenes and questions."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from spatialctl.options import Quiet, progress, setup_logging


def report(config, result: dict) -> None:
    """What the command prints: the result as JSON on stdout."""
    typer.echo(json.dumps(result))


def report_command(
    scenes: Annotated[list[str], typer.Argument(help="Scene stores (paths or URLs), or manifests of them.")],
    out: Annotated[str, typer.Option("--out", "-o", help="Output folder of the site (index.html, questions.html, scenes/).")] = "report",
    qa: Annotated[str | None, typer.Option("--qa", help="QA file (make-qa's .jsonl or .parquet) to browse. Default: none.", show_default=False)] = None,
    strip_frames: Annotated[int, typer.Option("--strip-frames", help="Frames in each scene's frame and depth strips (evenly spaced).")] = 8,
    question_frames: Annotated[int, typer.Option("--question-frames", help="Frames shown per question, at most (the ones its text names when recorded).")] = 4,
    page_size: Annotated[int, typer.Option("--page-size", help="Questions, and scenes, per page.")] = 50,
    thumb: Annotated[int, typer.Option("--thumb", help="Longest side of thumbnails, pixels.")] = 320,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace OUT when it holds an earlier report.")] = False,
    quiet: Quiet = False,
) -> None:
    """Write a static HTML report: per scene frame/mask/depth strips, a top-down map and numbers; a QA browser."""
    from spatialctl.stages.report import ReportConfig, run

    setup_logging(quiet)
    config = ReportConfig(out=out, qa=qa, strip_frames=strip_frames, question_frames=question_frames,
                          page_size=page_size, thumb=thumb, overwrite=overwrite, quiet=quiet)
    config.validate()
    report(config, run(config, scenes, progress=progress(quiet, "report scenes", "scene"),
                       question_progress=progress(quiet, "report questions", "question")))


def register(app: typer.Typer) -> None:
    app.command("report")(report_command)
