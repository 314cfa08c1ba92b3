"""`spatialctl track SCENE.zarr|MANIFEST`: open-vocabulary objects, SAM 2 video masks and 3D trajectories."""

from __future__ import annotations

from typing import Annotated

import typer

from spatialctl.options import Overwrite, Quiet, Shard, finish, progress, setup_logging


def track(
    inputs: Annotated[list[str], typer.Argument(help="Scene stores, or manifests of them.")],
    labels: Annotated[str | None, typer.Option("--labels", help="Comma-separated object names, e.g. \"person,car,cup\", or \"auto\" to propose each scene's labels with CLIP. Default: a built-in vocabulary of common indoor/outdoor objects.", show_default=False)] = None,
    labels_file: Annotated[str | None, typer.Option("--labels-file", help="File of object names, one per line (or comma-separated). Default: none.", show_default=False)] = None,
    detector: Annotated[str, typer.Option("--detector", help="Open-vocabulary detector: grounding-dino or owlv2.")] = "grounding-dino",
    detector_model: Annotated[str | None, typer.Option("--detector-model", help="Detector hub id or local folder. Default: IDEA-Research/grounding-dino-tiny (owlv2: google/owlv2-base-patch16-ensemble).", show_default=False)] = None,
    sam2_model: Annotated[str, typer.Option("--sam2-model", help="SAM 2 video model: hub id or local folder (e.g. facebook/sam2.1-hiera-large).")] = "facebook/sam2.1-hiera-tiny",
    keyframe_every: Annotated[int, typer.Option("--keyframe-every", help="Detect objects every K frames; new ones start tracks.")] = 8,
    box_threshold: Annotated[float, typer.Option("--box-threshold", help="Minimum detection score of a box.")] = 0.35,
    text_threshold: Annotated[float, typer.Option("--text-threshold", help="Grounding DINO: minimum score of the label's text tokens.")] = 0.25,
    backend: Annotated[str, typer.Option("--backend", help="gdino-sam2 (detector boxes prompt SAM 2) or sam3 (SAM 3 text prompts).")] = "gdino-sam2",
    sam3_model: Annotated[str | None, typer.Option("--sam3-model", help="SAM 3 video model: hub id (already downloaded) or local folder. Default: facebook/sam3.", show_default=False)] = None,
    sam3_threshold: Annotated[float | None, typer.Option("--sam3-threshold", help="SAM 3: detection score to report or start an object. Default: the checkpoint's.", show_default=False)] = None,
    chunk_frames: Annotated[int, typer.Option("--chunk-frames", help="SAM 3: frames per session; objects carry over with their last mask.")] = 64,
    tagger_model: Annotated[str | None, typer.Option("--tagger-model", help="--labels auto: CLIP model. Default: openai/clip-vit-base-patch32.", show_default=False)] = None,
    auto_max_labels: Annotated[int, typer.Option("--auto-max-labels", help="--labels auto: at most this many labels per scene.")] = 8,
    auto_min_score: Annotated[float, typer.Option("--auto-min-score", help="--labels auto: minimum best-frame probability of a label.")] = 0.05,
    device: Annotated[str, typer.Option("--device", help="torch device; auto picks cuda when available.")] = "auto",
    shard: Shard = None,
    overwrite: Overwrite = False,
    quiet: Quiet = False,
) -> None:
    """Add a `tracks` group to each scene store: per object a label, masks, 3D centroids, boxes and velocities."""
    from spatialctl.stages.track import TrackConfig, run
    from spatialctl.stages.track.detect import parse_labels

    setup_logging(quiet)
    config = TrackConfig(labels=parse_labels(labels, labels_file), detector=detector, detector_model=detector_model,
                         sam2_model=sam2_model, keyframe_every=keyframe_every, box_threshold=box_threshold,
                         text_threshold=text_threshold, backend=backend, sam3_model=sam3_model,
                         sam3_threshold=sam3_threshold, chunk_frames=chunk_frames, tagger_model=tagger_model,
                         auto_max_labels=auto_max_labels, auto_min_score=auto_min_score, device=device, shard=shard,
                         overwrite=overwrite, quiet=quiet)
    finish(run(config, inputs, progress=progress(quiet, "track", "scene"),
               frame_progress=progress(quiet, "frames", "frame")), quiet)


def register(app: typer.Typer) -> None:
    app.command("track")(track)
