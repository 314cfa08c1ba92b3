"""`spatialctl view SCENE.zarr [--out scene.rrd] [--spawn]`: a scene as a Rerun recording."""

from __future__ import annotations

from typing import Annotated

import typer

from spatialctl.options import Quiet, progress, setup_logging


def report(config, result: dict) -> None:
    """What the command prints: the file on stdout; how to open it on stderr."""
    typer.echo(result["out"])
    if config.spawn and not result["spawned"]:
        # Printed even with --quiet: the user asked for a viewer and did not get one.
        typer.echo(f"no Rerun viewer can open here (no display or no `rerun` command); open the recording with: "
                   f"{result['open_command']}", err=True)
    elif not config.quiet and not config.spawn:
        typer.echo(f"open it with: {result['open_command']}", err=True)


def view(
    scene: Annotated[str, typer.Argument(help="Scene store (path or URL).")],
    out: Annotated[str | None, typer.Option("--out", "-o", help="Output .rrd file. Default: the store's path with .rrd (OUT/scene.zarr -> OUT/scene.rrd).", show_default=False)] = None,
    gt: Annotated[str | None, typer.Option("--gt", help="Ground-truth store (synth) to show beside SCENE: world/truth and world/estimate, the estimate aligned to the truth by Sim(3) on camera centres. Default: none.", show_default=False)] = None,
    spawn: Annotated[bool, typer.Option("--spawn", help="Open the Rerun viewer on the written file when one is installed; otherwise print the command that opens it.")] = False,
    max_points: Annotated[int, typer.Option("--max-points", help="World points logged per frame, at most (an even subsample of the confident ones).")] = 5000,
    min_conf: Annotated[float | None, typer.Option("--min-conf", help="Confidence below which points are dropped. Default: 3 (DUSt3R's demo) for reconstructed stores, every valid pixel for synth truth.", show_default=False)] = None,
    jpeg_quality: Annotated[int, typer.Option("--jpeg-quality", help="JPEG quality of the logged RGB frames, 1-100; 0 logs them uncompressed.")] = 90,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace OUT when it exists.")] = False,
    quiet: Quiet = False,
) -> None:
    """Log a scene to a Rerun recording: frames, depth, confidence, points, cameras, masks, boxes, trajectories."""
    from spatialctl.stages.view import ViewConfig, run

    setup_logging(quiet)
    config = ViewConfig(out=out, gt=gt, spawn=spawn, max_points=max_points, min_conf=min_conf,
                        jpeg_quality=jpeg_quality, overwrite=overwrite, quiet=quiet)
    config.validate()
    report(config, run(config, scene, progress=progress(quiet, "view", "frame")))


def register(app: typer.Typer) -> None:
    app.command("view")(view)
