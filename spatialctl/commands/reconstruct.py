"""`spatialctl reconstruct INPUT --out scene.zarr`: DUSt3R + global alignment, or π³ / Pi3X -> a scene store."""

from __future__ import annotations

from typing import Annotated

import typer

from spatialctl.options import Overwrite, Quiet, Shard, finish, progress, setup_logging


def reconstruct(
    inputs: Annotated[list[str], typer.Argument(help="Videos, folders of images, or manifests of them.")],
    out: Annotated[str | None, typer.Option("--out", help="A .zarr store (one input) or a folder for <stem>.zarr per input. Default: beside each input.", show_default=False)] = None,
    model: Annotated[str | None, typer.Option("--model", help="Checkpoint: hub id, folder or file (DUSt3R: config.json + model.safetensors or .pth; pi3/pi3x: model.safetensors). Default: naver/DUSt3R_ViTLarge_BaseDecoder_512_dpt, yyfz233/Pi3 or yyfz233/Pi3X by --backend.", show_default=False)] = None,
    backend: Annotated[str, typer.Option("--backend", help="dust3r (pairs + global alignment), pi3 or pi3x (feed-forward over all frames).")] = "dust3r",
    window: Annotated[int, typer.Option("--window", help="pi3/pi3x: frames per network pass; longer inputs run in overlapping windows aligned by Sim(3).")] = 64,
    overlap: Annotated[int, typer.Option("--overlap", help="pi3/pi3x: frames each window shares with the previous one.")] = 8,
    poses: Annotated[str | None, typer.Option("--poses", help="pi3x: known cam2world poses (.npy, N x 4 x 4, OpenCV, one per sampled frame); a network condition, kept in the store.", show_default=False)] = None,
    scene_graph: Annotated[str, typer.Option("--scene-graph", help="Pairs: complete, swin-K, logwin-K, oneref-I; window graphs also as swin-K-noncyclic.")] = "complete",
    fps: Annotated[float | None, typer.Option("--fps", help="Sample frames at this rate. Default: every frame.", show_default=False)] = None,
    stride: Annotated[int, typer.Option("--stride", help="Then keep every k-th sampled frame.")] = 1,
    max_frames: Annotated[int | None, typer.Option("--max-frames", help="Keep at most this many frames. Default: all.", show_default=False)] = None,
    size: Annotated[int | None, typer.Option("--size", help="Network long side in pixels. Default: the checkpoint's (224 or 512).", show_default=False)] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Pairs per decoder batch (and frames per encoder batch).")] = 8,
    device: Annotated[str, typer.Option("--device", help="torch device; auto picks cuda when available.")] = "auto",
    dtype: Annotated[str, typer.Option("--dtype", help="Network precision: auto (bf16/fp16 on GPU, fp32 on CPU), fp32, bf16, fp16.")] = "auto",
    niter: Annotated[int, typer.Option("--niter", help="Global alignment iterations (Adam, cosine schedule).")] = 300,
    lr: Annotated[float, typer.Option("--lr", help="Global alignment learning rate.")] = 0.01,
    shared_focal: Annotated[bool, typer.Option("--shared-focal", help="One focal length for all frames (a single camera without zoom). Default: off.")] = False,
    intrinsics: Annotated[str | None, typer.Option("--intrinsics", help="Known intrinsics fx,fy,cx,cy in pixels of the input frames; kept fixed (pi3x: also a network condition). Default: estimated.", show_default=False)] = None,
    metric_scale: Annotated[str, typer.Option("--metric-scale", help="none (relative scale), depthpro (rescale to metres with Depth Pro; dust3r) or pi3x (Pi3X's own metric scale).")] = "none",
    depthpro_model: Annotated[str, typer.Option("--depthpro-model", help="Depth Pro checkpoint for --metric-scale depthpro: hub id or folder.")] = "apple/DepthPro-hf",
    store_features: Annotated[bool, typer.Option("--store-features", help="Also store per-frame features (float16) for train-gsm: DUSt3R's encoder tokens, π³'s decoder output. Default: off.")] = False,
    export: Annotated[str | None, typer.Option("--export", help="Comma list of ply, colmap, nerfstudio written to <store stem>_export/. Default: none.", show_default=False)] = None,
    export_min_conf: Annotated[float, typer.Option("--export-min-conf", help="Exported points need at least this confidence.")] = 3.0,
    shard: Shard = None,
    overwrite: Overwrite = False,
    quiet: Quiet = False,
) -> None:
    """Reconstruct each input with DUSt3R and our global alignment, or with π³ / Pi3X, into a scene store
    (frames, depth, conf, world pointmaps, intrinsics, cam2world)."""
    from spatialctl.stages.reconstruct import ReconstructConfig, run

    setup_logging(quiet)
    config = ReconstructConfig(model=model, backend=backend, window=window, overlap=overlap, poses=poses, scene_graph=scene_graph,
                               fps=fps, stride=stride, max_frames=max_frames, size=size, dtype=dtype, niter=niter, lr=lr, shared_focal=shared_focal,
                               intrinsics=intrinsics, metric_scale=metric_scale, depthpro_model=depthpro_model,
                               store_features=store_features, export=export or "", export_min_conf=export_min_conf,
                               out=out, device=device, batch_size=batch_size, shard=shard, overwrite=overwrite,
                               quiet=quiet)
    finish(run(config, inputs, progress=progress(quiet, "global alignment", "it")), quiet)


def register(app: typer.Typer) -> None:
    app.command("reconstruct")(reconstruct)
