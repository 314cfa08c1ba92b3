"""`spatialctl extract-gen-features SCENE.zarr|VIDEO|MANIFEST`: VEGA-3D features from a frozen Wan2.1 DiT."""

from __future__ import annotations

from typing import Annotated

import typer

from spatialctl.models import WAN_T2V_1_3B as DEFAULT_MODEL
from spatialctl.options import Overwrite, Quiet, Shard, finish, progress, setup_logging


def extract_gen_features(
    inputs: Annotated[list[str], typer.Argument(help="Scene stores, videos, or manifests of them.")],
    model: Annotated[str, typer.Option("--model", help="Wan2.1 T2V checkpoint in diffusers layout: hub id or folder.")] = DEFAULT_MODEL,
    timestep: Annotated[float, typer.Option("--timestep", help="Noise level k: the schedule timestep nearest k of 1000.")] = 300.0,
    shift: Annotated[float, typer.Option("--shift", help="Flow-matching timestep shift.")] = 5.0,
    layer: Annotated[int, typer.Option("--layer", help="0-based DiT block whose output is kept; later blocks never run.")] = 20,
    grid: Annotated[str, typer.Option("--grid", help="Output grid: WxH cells (area-pooled), 'qwen' (Qwen2.5-VL merged patch grid of the frame) or 'native' (H/16 x W/16).")] = "14x14",
    resolution: Annotated[str, typer.Option("--resolution", help="WxH the frames are resized to for the VAE (multiples of 16), or 'native'.")] = "832x480",
    clip: Annotated[int, typer.Option("--clip", help="Frames per VAE clip: 1 encodes each frame alone (VEGA-3D); 1+4k encodes consecutive frames together.")] = 1,
    seed: Annotated[int, typer.Option("--seed", help="Noise seed; the same seed gives the same features.")] = 0,
    dtype: Annotated[str, typer.Option("--dtype", help="DiT dtype: auto (bf16 on GPU, fp32 on CPU), bf16, fp16, fp32.")] = "auto",
    prompt_embedding: Annotated[str | None, typer.Option("--prompt-embedding", help="safetensors file with 'prompt_embeds' to use as text context. Default: the empty-prompt context, computed once and cached.", show_default=False)] = None,
    prompt_cache: Annotated[str | None, typer.Option("--prompt-cache", help="Where to cache the empty-prompt context. Default: ~/.cache/spatialctl/wan_empty_prompt/<model>.safetensors.", show_default=False)] = None,
    out: Annotated[str | None, typer.Option("--out", help="Videos only: folder for <stem>.genfeat.zarr. Default: beside the video.", show_default=False)] = None,
    fps: Annotated[float | None, typer.Option("--fps", help="Videos only: sample frames at this rate. Default: every frame.", show_default=False)] = None,
    max_frames: Annotated[int | None, typer.Option("--max-frames", help="Videos only: keep at most this many frames, spread evenly over the video. Default: all.", show_default=False)] = None,
    device: Annotated[str, typer.Option("--device", help="torch device; auto picks cuda when available.")] = "auto",
    batch_size: Annotated[int, typer.Option("--batch-size", help="Frames per DiT pass.")] = 8,
    shard: Shard = None,
    overwrite: Overwrite = False,
    quiet: Quiet = False,
) -> None:
    """Add a `genfeat` group (float16 N x gh x gw x C) to each scene store: Wan2.1 DiT block features (VEGA-3D)."""
    from spatialctl.stages.extract_gen_features import GenFeatConfig, run

    setup_logging(quiet)
    config = GenFeatConfig(model=model, timestep=timestep, shift=shift, layer=layer, grid=grid, resolution=resolution,
                           clip=clip, seed=seed, dtype=dtype, prompt_embedding=prompt_embedding, fps=fps,
                           max_frames=max_frames, out=out, prompt_cache=prompt_cache, device=device,
                           batch_size=batch_size, shard=shard, overwrite=overwrite, quiet=quiet)
    finish(run(config, inputs, progress=progress(quiet, "extract-gen-features")), quiet)


def register(app: typer.Typer) -> None:
    app.command("extract-gen-features")(extract_gen_features)
