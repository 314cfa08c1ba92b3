"""extract-gen-features: VEGA-3D generative priors from a frozen Wan2.1 DiT, cached per scene.

Input: scene stores (features go to the store's ``genfeat`` group) or videos (features go to a standalone
``genfeat`` store, ``<out>/<stem>.genfeat.zarr``, holding ``features`` and the frames' ``timestamps``: a
video has no geometry, so it cannot be a scene store). Output features are float16 (N, gh, gw, C), one
grid per frame, with every parameter that shaped them in the group's attributes and provenance.

A rerun with the same parameters is a cache hit: ``jobs.run_items`` sees the complete group with the
same config hash and skips it before any model is loaded (models load lazily, on the first item that
needs work, and are shared by the rest).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from tqdm import tqdm

from spatialctl import jobs, store
from spatialctl.config import check_fields, device_opt, opt, overwrite_opt, quiet_opt, shard_opt
from spatialctl.devices import resolve_device
from spatialctl.errors import SpatialctlError, UsageError
from spatialctl.models import wan_features
from spatialctl.video import VIDEO_SUFFIXES, read_video

if TYPE_CHECKING:  # annotations only: torch is imported where it is used, so the CLI starts fast
    import torch

STAGE = "extract-gen-features"
log = logging.getLogger("spatialctl")
FP16_MAX = 65504.0


@dataclass
class GenFeatConfig:
    model: str = opt(wan_features.DEFAULT_MODEL, "Wan2.1 T2V checkpoint in diffusers layout: hub id or folder.")
    timestep: float = opt(300.0, "Noise level k: the schedule timestep nearest k of 1000.")
    shift: float = opt(5.0, "Flow-matching timestep shift.")
    layer: int = opt(20, "0-based DiT block whose output is kept; later blocks never run.")
    grid: str = opt("14x14", "Output grid: WxH cells (area-pooled), 'qwen' (Qwen2.5-VL merged patch grid of the "
                    "frame) or 'native' (H/16 x W/16).")
    resolution: str = opt("1280x720", "WxH the frames are resized to (covering it) and centre-cropped to for the VAE "
                          "(multiples of 16; VEGA-3D's Wan size), or 'native'.")
    clip: int = opt(1, "Frames per VAE clip: 1 encodes each frame alone (VEGA-3D); 1+4k encodes consecutive frames "
                    "together.")
    seed: int = opt(0, "Noise seed; the same seed gives the same features.")
    dtype: str = opt("auto", "DiT dtype: auto (bf16 on GPU, fp32 on CPU), bf16, fp16, fp32.",
                     choices=("auto", "bf16", "fp16", "fp32"))
    prompt_embedding: str | None = opt(None, "safetensors file with 'prompt_embeds' to use as text context. Default: "
                                       "the empty-prompt context, computed once and cached.", show_default=False)
    prompt_cache: str | None = opt(None, "Where to cache the empty-prompt context. Default: "
                                   "~/.cache/spatialctl/wan_empty_prompt/<model>.safetensors.", runtime=True,
                                   show_default=False)
    out: str | None = opt(None, "Videos only: folder for <stem>.genfeat.zarr. Default: beside the video.",
                          runtime=True, show_default=False)
    fps: float | None = opt(None, "Videos only: sample frames at this rate. Default: every frame.", show_default=False)
    max_frames: int | None = opt(None, "Videos only: keep at most this many frames, spread evenly over the video. Default: all.",
                                 show_default=False)
    device: str = device_opt()
    batch_size: int = opt(8, "Frames per DiT pass.", runtime=True)
    shard: str | None = shard_opt()
    overwrite: bool = overwrite_opt()
    quiet: bool = quiet_opt()

    @cached_property
    def grid_cells(self) -> tuple[int, int] | str:
        """The parsed --grid: (rows, columns), "qwen" or "native"."""
        return _parse_grid(self.grid)

    @cached_property
    def resolution_hw(self) -> tuple[int, int] | None:
        """The parsed --resolution: (height, width), or None for native."""
        try:
            return wan_features.parse_resolution(self.resolution)
        except SpatialctlError as e:
            raise UsageError(f"--resolution: {e}") from None

    def validate(self) -> None:
        """Usage errors before any work: bad values exit 2 whatever the inputs."""
        check_fields(self)
        self.grid_cells, self.resolution_hw  # noqa: B018 - parse --grid and --resolution
        if self.clip < 1 or (self.clip - 1) % 4:
            raise UsageError(f"--clip {self.clip}: must be 1 + 4k (1, 5, 9, ...), Wan's VAE packs 4 frames per latent")
        if not 0 <= self.timestep <= 1000:
            raise UsageError(f"--timestep {self.timestep}: must be within 0..1000")
        if self.shift <= 0:
            raise UsageError(f"--shift {self.shift}: must be positive")
        if self.layer < 0:
            raise UsageError(f"--layer {self.layer}: must be >= 0")
        if self.batch_size < 1:
            raise UsageError(f"--batch-size {self.batch_size}: must be >= 1")


# ---------------------------------------------------------------------------------------------------- paths


def is_video(path: str) -> bool:
    return path.lower().endswith(VIDEO_SUFFIXES)


def output_for(input: str, out: str | None) -> str:
    """A scene store's ``genfeat`` group, or ``<out or the video's folder>/<stem>.genfeat.zarr`` for a video."""
    if is_video(input):
        folder = out if out is not None else str(Path(input).parent)
        return store.join(folder, Path(input).stem + ".genfeat.zarr")
    return store.join(input.rstrip("/"), "genfeat")


# ---------------------------------------------------------------------------------------------------- options


_DTYPES = {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}  # torch dtype names: torch loads late


def _resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    import torch
    if name == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    if name not in _DTYPES:
        raise UsageError(f"--dtype {name!r}: choose auto, bf16, fp16 or fp32")
    return getattr(torch, _DTYPES[name])


def _parse_grid(text: str) -> tuple[int, int] | str:
    if text in ("qwen", "native"):
        return text
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise UsageError(f"--grid {text!r}: expected WxH (e.g. 14x14), qwen or native") from None
    if w < 1 or h < 1:
        raise UsageError(f"--grid {text!r}: cells must be positive")
    return h, w


# ---------------------------------------------------------------------------------------------------- models


def model_dir(config: GenFeatConfig) -> str:
    """The Wan2.1 folder on local disk (or the hub cache): checked before any work, no network, no retries."""
    from spatialctl.hub import resolve_model_dir

    return resolve_model_dir(config.model, option="--model", what="Wan2.1 model", marker="transformer/config.json")


class _LazyExtractor:
    """Loads the VAE, the DiT and the context on first use, so skipped (cached) items load nothing."""

    def __init__(self, config: GenFeatConfig):
        self.config = config
        self._extractor: wan_features.WanFeatureExtractor | None = None

    def get(self) -> wan_features.WanFeatureExtractor:
        if self._extractor is None:
            c = self.config
            if c.quiet:  # the libraries' own loading bars too
                import diffusers.utils.logging
                import transformers.utils.logging

                diffusers.utils.logging.disable_progress_bar()
                transformers.utils.logging.disable_progress_bar()
            device = resolve_device(c.device)
            dtype = _resolve_dtype(c.dtype, device)
            local = model_dir(c)
            if c.prompt_embedding is not None:
                context = wan_features.load_prompt_embedding(c.prompt_embedding)
            else:
                cache = c.prompt_cache or wan_features.default_prompt_cache(c.model)
                context = wan_features.empty_prompt_context(local, cache, device=device, dtype=dtype)
            vae = wan_features.load_vae(local, device)
            transformer = wan_features.load_transformer(local, device, dtype)
            self._extractor = wan_features.WanFeatureExtractor(
                vae, transformer, context, layer=c.layer, timestep=c.timestep, shift=c.shift, seed=c.seed,
                drop_unused=True)
        return self._extractor


# ---------------------------------------------------------------------------------------------------- one item


@dataclass
class _Frames:
    """Frames of one input, read lazily for scene stores (one batch at a time)."""

    n: int
    hw: tuple[int, int]
    read: Callable[[np.ndarray], np.ndarray]
    timestamps: np.ndarray | None = None


def _open_frames(path: str, config: GenFeatConfig) -> _Frames:
    if is_video(path):
        frames, times = read_video(path, fps=config.fps, max_frames=config.max_frames)
        return _Frames(len(frames), frames.shape[1:3], lambda idx: frames[idx], times)
    scene = store.open_scene(path)
    return _Frames(scene.n_frames, scene.hw, lambda idx: scene.read("frames", frames=idx))


def clip_starts(n_frames: int, clip: int) -> list[int]:
    return list(range(0, n_frames, clip))


def _clip_indices(start: int, clip: int, n_frames: int) -> np.ndarray:
    # The last clip is padded by repeating the last frame; padded frames' features are dropped.
    return np.minimum(np.arange(start, start + clip), n_frames - 1)


def extract(path: str, config: GenFeatConfig, extractor: wan_features.WanFeatureExtractor,
            frames: _Frames | None = None) -> tuple[np.ndarray, dict]:
    """Features (N, gh, gw, C) float16 of one input and the attributes describing them."""
    import torch
    frames = frames or _open_frames(path, config)
    h, w = frames.hw
    size_hw = config.resolution_hw or wan_features.native_size(h, w)
    grid = config.grid_cells
    native_hw = (size_hw[0] // wan_features.PATCH_STRIDE, size_hw[1] // wan_features.PATCH_STRIDE)
    grid_hw = native_hw if grid == "native" else wan_features.qwen_merged_grid(h, w) if grid == "qwen" else grid
    clips_per_batch = max(1, config.batch_size // config.clip)
    starts = clip_starts(frames.n, config.clip)
    out = np.zeros((frames.n, *grid_hw, extractor.width), dtype=np.float16)
    bar = tqdm(total=frames.n, desc=Path(path).name, unit="frame", file=sys.stderr, disable=config.quiet,
               dynamic_ncols=True)
    for b0 in range(0, len(starts), clips_per_batch):
        batch_starts = starts[b0: b0 + clips_per_batch]
        index = np.stack([_clip_indices(s, config.clip, frames.n) for s in batch_starts])
        pixels = frames.read(np.unique(index))
        lookup = {int(f): i for i, f in enumerate(np.unique(index))}
        clips = torch.from_numpy(np.ascontiguousarray(pixels[[[lookup[int(f)] for f in row] for row in index]]))
        feats = extractor(clips, size_hw, keys=batch_starts)  # (B, T', h16, w16, C)
        b, t = feats.shape[:2]
        pooled = wan_features.pool_to_grid(feats.reshape(b * t, *feats.shape[2:]), grid_hw)
        pooled = pooled.reshape(b, t, *grid_hw, -1).cpu().numpy()
        if not np.isfinite(pooled).all():
            raise SpatialctlError(f"{path}: the DiT produced NaN or Inf features (dtype {extractor.dtype})")
        if np.abs(pooled).max() > FP16_MAX:
            raise SpatialctlError(f"{path}: features exceed the float16 range; store them from an fp32 run")
        for row, start in enumerate(batch_starts):
            for pos in range(min(config.clip, frames.n - start)):
                out[start + pos] = pooled[row, wan_features.latent_index(pos)]
        bar.update(sum(min(config.clip, frames.n - s) for s in batch_starts))
    bar.close()
    level = extractor.level
    attrs = {
        "model": config.model,
        "timestep_requested": float(config.timestep),
        "timestep": level.timestep,
        "sigma": level.sigma,
        "shift": float(config.shift),
        "schedule": "diffusers FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift), training table",
        "layer": int(config.layer),
        "num_layers": extractor.num_layers,
        "resolution": [int(size_hw[1]), int(size_hw[0])],  # W, H fed to the VAE
        "frame_hw": [int(h), int(w)],
        "grid_mode": config.grid if isinstance(grid, str) else "pooled",
        "grid": [int(grid_hw[0]), int(grid_hw[1])],  # rows, cols of the stored features
        "dit_grid": [int(native_hw[0]), int(native_hw[1])],
        "clip": int(config.clip),
        "seed": int(config.seed),
        "noise": "torch.randn float32 on CPU from SeedSequence([seed, first frame of the clip])",
        "dtype": str(extractor.dtype).removeprefix("torch."),
        "prompt_embedding": config.prompt_embedding or "empty prompt (UMT5, 512 tokens)",
        "feature_width": int(extractor.width),
    }
    return out, attrs


def _work(item: jobs.Item, config: GenFeatConfig, lazy: _LazyExtractor) -> None:
    frames = _open_frames(item.input, config)  # bad input fails before any model loads
    features, attrs = extract(item.input, config, lazy.get(), frames)
    inputs = [item.input] + ([config.prompt_embedding] if config.prompt_embedding else [])
    provenance = jobs.provenance(STAGE, config, inputs)
    if is_video(item.input):
        store.write_node(item.output, "genfeat",
                         {"features": features, "timestamps": frames.timestamps}, attrs, provenance)
    else:
        store.write_group(item.input, "genfeat", {"features": features}, attrs, provenance)


# ---------------------------------------------------------------------------------------------------- run


def run(config: GenFeatConfig, inputs: str | Sequence[str],
        progress: Callable[[Iterable], Iterable] | None = None) -> jobs.Summary:
    """Add VEGA-3D features to each input (scene store or video) of this shard; skip those already done."""
    config.validate()
    paths = jobs.select_shard(jobs.resolve_inputs(inputs), jobs.resolve_shard(config.shard))
    items = [jobs.Item(p, output_for(p, config.out)) for p in paths]
    lazy = _LazyExtractor(config)
    model_dir(config)
    return jobs.run_items(STAGE, config, items, lambda it: _work(it, config, lazy),
                          overwrite=config.overwrite, progress=progress, kind="genfeat")
