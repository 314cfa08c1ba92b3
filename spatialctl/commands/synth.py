"""`spatialctl synth OUT --seed S`: synthetic 4D scenes (video + ground-truth scene store) for testing stages."""

from __future__ import annotations

from typing import Annotated

import typer

from spatialctl.errors import UsageError
from spatialctl.options import Overwrite, Quiet, Shard, finish, progress, setup_logging


def _size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise UsageError(f"--size {text!r}: expected WxH, e.g. 512x384") from None
    return w, h


def synth(
    out: Annotated[str, typer.Argument(help="Output folder: OUT/video.mp4 and OUT/scene.zarr (with --count: OUT/seed-NNNNNN/...).")],
    seed: Annotated[int, typer.Option("--seed", help="Random seed; the same seed and options give bit-identical output.")] = 0,
    preset: Annotated[str, typer.Option("--preset", help="Scale: tiny-tabletop (mm), tabletop (cm), indoor (m, a room), outdoor (10-100s of m).")] = "tabletop",
    frames: Annotated[int, typer.Option("--frames", help="Number of frames.")] = 32,
    size: Annotated[str, typer.Option("--size", help="Frame size WxH in pixels (even for H.264 unless --lossless).")] = "512x384",
    objects: Annotated[int | None, typer.Option("--objects", help="Number of objects K. Default: the preset's (5 tiny-tabletop, 6 tabletop/indoor, 8 outdoor).", show_default=False)] = None,
    moving: Annotated[int, typer.Option("--moving", help="How many of the K objects move (straight, curved, accelerating, stopping).")] = 2,
    camera: Annotated[str, typer.Option("--camera", help="Camera path: orbit, walk, pan or static.")] = "orbit",
    fps: Annotated[float, typer.Option("--fps", help="Frame rate; timestamps are frame / fps.")] = 10.0,
    lossless: Annotated[bool, typer.Option("--lossless", help="Encode the video losslessly (H.264 RGB, qp 0): it decodes to the exact frames.")] = False,
    count: Annotated[int | None, typer.Option("--count", help="Write seeds S..S+C-1, each into OUT/seed-NNNNNN/. Default: one scene directly in OUT.", show_default=False)] = None,
    shard: Shard = None,
    overwrite: Overwrite = False,
    quiet: Quiet = False,
) -> None:
    """Render a synthetic scene with exact ground truth: video.mp4 + scene.zarr (geometry and tracks)."""
    from spatialctl.stages.synth import SynthConfig, run

    setup_logging(quiet)
    width, height = _size(size)
    config = SynthConfig(seed=seed, preset=preset, frames=frames, width=width, height=height, objects=objects,
                         moving=moving, camera=camera, fps=fps, lossless=lossless, count=count, shard=shard,
                         overwrite=overwrite, quiet=quiet)
    unit = "frame" if count is None else "scene"
    finish(run(config, out, progress=progress(quiet, "synth", unit)), quiet)


def register(app: typer.Typer) -> None:
    app.command("synth")(synth)
