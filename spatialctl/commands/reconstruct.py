"""`spatialctl reconstruct INPUT --out scene.zarr`: DUSt3R + global alignment -> a scene store."""

from __future__ import annotations

from typing import Annotated

import typer

from spatialctl.options import Overwrite, Quiet, Shard, finish, progress, setup_logging

DEFAULT_MODEL = "naver/DUSt3R_ViTLarge_BaseDecoder_512_dpt"


def reconstruct(
    inputs: Annotated[list[str], typer.Argument(help="Videos, folders of images, or manifests of them.")],
    out: Annotated[str | None, typer.Option("--out", help="A .zarr store (one input) or a folder for <stem>.zarr per input. Default: beside each input.", show_default=False)] = None,
    model: Annotated[str, typer.Option("--model", help="DUSt3R checkpoint: hub id, folder (config.json + model.safetensors) or .pth file.")] = DEFAULT_MODEL,
    scene_graph: Annotated[str, typer.Option("--scene-graph", help="Pairs: auto (complete up to 20 frames, else logwin-5), complete, swin-K, logwin-K, oneref-I; window graphs also as swin-K-noncyclic.")] = "auto",
    fps: Annotated[float | None, typer.Option("--fps", help="Videos: sample frames at this rate (default: every frame). Image folders: the rate the frames were taken at; timestamps = frame number / fps (default: 1 s apart).", show_default=False)] = None,
    stride: Annotated[int, typer.Option("--stride", help="Then keep every k-th sampled frame.")] = 1,
    max_frames: Annotated[int, typer.Option("--max-frames", help="Keep at most this many frames, spread evenly over the input; 0 keeps all.")] = 64,
    pattern: Annotated[str | None, typer.Option("--pattern", help="Image folders: glob of the frames to use, e.g. '*.color.png'. Default: the colour images.", show_default=False)] = None,
    allow_truncated: Annotated[bool, typer.Option("--allow-truncated", help="Use the frames of a video that decodes to fewer frames than its container declares (a warning, and 'truncated' in the provenance) instead of refusing it.")] = False,
    size: Annotated[int | None, typer.Option("--size", help="Network long side in pixels. Default: the checkpoint's (224 or 512).", show_default=False)] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Pairs per decoder batch (and frames per encoder batch).")] = 8,
    device: Annotated[str, typer.Option("--device", help="torch device; auto picks cuda when available.")] = "auto",
    dtype: Annotated[str, typer.Option("--dtype", help="Network precision: auto (bf16/fp16 on GPU, fp32 on CPU), fp32, bf16, fp16.")] = "auto",
    niter: Annotated[int, typer.Option("--niter", help="Global alignment iterations (Adam, cosine schedule).")] = 300,
    lr: Annotated[float, typer.Option("--lr", help="Global alignment learning rate.")] = 0.01,
    shared_focal: Annotated[bool, typer.Option("--shared-focal", help="One focal length for all frames (a single camera without zoom). Default: off.")] = False,
    intrinsics: Annotated[str | None, typer.Option("--intrinsics", help="Known intrinsics fx,fy,cx,cy in pixels of the input frames; kept fixed. Default: estimated.", show_default=False)] = None,
    metric_scale: Annotated[str, typer.Option("--metric-scale", help="none (relative scale) or depthpro (rescale to metres with Depth Pro).")] = "none",
    depthpro_model: Annotated[str, typer.Option("--depthpro-model", help="Depth Pro checkpoint for --metric-scale depthpro: hub id or folder.")] = "apple/DepthPro-hf",
    store_features: Annotated[bool, typer.Option("--store-features", help="Also store the encoder's per-frame features (float16) for train-gsm. Default: off.")] = False,
    export: Annotated[str | None, typer.Option("--export", help="Comma list of ply, colmap, nerfstudio written to <store stem>_export/. Default: none.", show_default=False)] = None,
    export_min_conf: Annotated[float, typer.Option("--export-min-conf", help="Exported points need at least this confidence.")] = 3.0,
    shard: Shard = None,
    overwrite: Overwrite = False,
    quiet: Quiet = False,
) -> None:
    """Reconstruct each input with DUSt3R and our global alignment into a scene store (frames, depth, conf,
    world pointmaps, intrinsics, cam2world)."""
    from spatialctl.stages.reconstruct import ReconstructConfig, run

    setup_logging(quiet)
    config = ReconstructConfig(model=model, scene_graph=scene_graph, fps=fps, stride=stride, max_frames=max_frames,
                               pattern=pattern, allow_truncated=allow_truncated, size=size, dtype=dtype, niter=niter, lr=lr, shared_focal=shared_focal,
                               intrinsics=intrinsics, metric_scale=metric_scale, depthpro_model=depthpro_model,
                               store_features=store_features, export=export or "", export_min_conf=export_min_conf,
                               out=out, device=device, batch_size=batch_size, shard=shard, overwrite=overwrite,
                               quiet=quiet)
    finish(run(config, inputs, progress=progress(quiet, "global alignment", "it")), quiet)


def register(app: typer.Typer) -> None:
    app.command("reconstruct")(reconstruct)
