"""VEGA-3D fusion as released (H-EmbodVis/VEGA-3D, ``llava/model/feature_fusion.py``, method ``token_gated``):
generative-prior features are projected to the LLM's width and mixed into the VLM's own visual tokens, token by
token, before the language model sees them.

    fgen  = mlp2x_gelu(genfeat)                       Linear(C_gen, C) -> GELU -> Linear(C, C)
    g     = sigmoid(Linear([LN(f2d); LN(fgen)]) -> 1)  one gate per token
    mixed = g * LN(f2d) + (1 - g) * LN(fgen)           the release mixes the normalised features
    out   = mixed                                      ``token_gated``
    out   = f2d + 0.2 * (mixed - f2d)                  ``token_gated_residual`` (keeps most of the 2D token)

Generative features are put on each video's visual-token grid (after Qwen's 2x2 merge, one grid per temporal
patch of 2 frames) by :func:`gen_tokens`.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from spatialctl import io, store
from spatialctl.errors import SpatialctlError

METHODS = ("token_gated", "token_gated_residual")
RESIDUAL_SCALE = 0.2
VEGA_WEIGHTS, VEGA_CONFIG = "vega.safetensors", "vega_config.json"


@dataclass
class VegaConfig:
    hidden_size: int  # the LLM's width (= the merged visual tokens' width)
    gen_dim: int  # channels of the stored generative features (or of the encoder's patch features)
    method: str = "token_gated"
    encoder: str | None = None  # features from this AutoModel vision encoder instead of the store's genfeat

    def __post_init__(self):
        if self.method not in METHODS:
            raise SpatialctlError(f"VEGA fusion method {self.method!r}: choose from {', '.join(METHODS)}")


class VegaFusion(nn.Module):
    """The generative projector and the token-level gate (parameter layout as the release: LayerNorm and Linear
    at their PyTorch default initialisation)."""

    def __init__(self, cfg: VegaConfig):
        super().__init__()
        self.cfg = cfg
        c = cfg.hidden_size
        self.projector = nn.Sequential(nn.Linear(cfg.gen_dim, c), nn.GELU(), nn.Linear(c, c))
        self.norm_2d = nn.LayerNorm(c)
        self.norm_gen = nn.LayerNorm(c)
        self.gate = nn.Linear(2 * c, 1)

    def forward(self, f2d: torch.Tensor, genfeat: torch.Tensor) -> torch.Tensor:
        """f2d (..., N, C) visual tokens, genfeat (..., N, C_gen) on the same tokens -> (..., N, C)."""
        if f2d.shape[:-1] != genfeat.shape[:-1]:
            raise SpatialctlError(f"{genfeat.shape[-2]} generative tokens for {f2d.shape[-2]} visual tokens")
        dtype = self.gate.weight.dtype
        x2d = f2d.to(dtype)
        fgen = self.projector(genfeat.to(dtype))
        n2d, ngen = self.norm_2d(x2d), self.norm_gen(fgen)
        g = torch.sigmoid(self.gate(torch.cat([n2d, ngen], dim=-1)))
        mixed = g * n2d + (1.0 - g) * ngen
        if self.cfg.method == "token_gated_residual":
            mixed = x2d + RESIDUAL_SCALE * (mixed - x2d)
        return mixed.to(f2d.dtype)


def gen_tokens(features: np.ndarray, grid_thw, merge_size: int = 2, temporal_patch_size: int = 2) -> np.ndarray:
    """(T, h, w, C) per-frame generative features -> (t * gh/m * gw/m, C) float32, one row per merged visual
    token in Qwen's order (temporal patch, row, column).

    Frames are padded to whole temporal patches by repeating the last one (as the video processor pads) and each
    patch's frames averaged; each grid is resized to the merged grid by adaptive average pooling (the release pools
    its generative maps the same way)."""
    t, gh, gw = (int(v) for v in np.asarray(grid_thw).reshape(-1)[:3])
    x = np.asarray(features, np.float32)
    if x.ndim != 4:
        raise SpatialctlError(f"generative features must be (T, h, w, C), got {x.shape}")
    if pad := -len(x) % temporal_patch_size:
        x = np.concatenate([x, np.repeat(x[-1:], pad, axis=0)])
    if len(x) // temporal_patch_size != t:
        raise SpatialctlError(f"{len(features)} frames of generative features for {t} temporal patches")
    x = x.reshape(t, temporal_patch_size, *x.shape[1:]).mean(1)
    pooled = F.adaptive_avg_pool2d(torch.from_numpy(x).permute(0, 3, 1, 2), (gh // merge_size, gw // merge_size))
    return pooled.permute(0, 2, 3, 1).reshape(-1, x.shape[-1]).numpy()


def load_genfeat(scene_url: str, frames) -> np.ndarray:
    """The scene store's ``genfeat`` features (T, h, w, C) of the given frames (from ``extract-gen-features``)."""
    s = store.open_scene(scene_url)
    if not s.has("genfeat"):
        raise SpatialctlError(f"{scene_url}: no genfeat group for --fusion vega; run extract-gen-features")
    x = s.open_group("genfeat").read("features", np.asarray(list(frames)))
    if not np.isfinite(x).all():
        raise SpatialctlError(f"{scene_url}: genfeat features hold NaN or infinite values")
    return x


class EncoderFeatures:
    """A frozen AutoModel vision encoder (DINOv3, DINOv2, SigLIP2) as a feature source: frames -> its last hidden
    state's patch tokens (T, gh, gw, C), preprocessed as :mod:`spatialctl.boost` does for the encoder."""

    def __init__(self, encoder: str, batch_size: int = 8):
        from spatialctl import boost

        self.name = encoder
        self.model, self.family, path = boost.load_encoder(encoder)
        self.model.requires_grad_(False)
        self.prep = boost.ImagePrep.for_model(self.model, self.family, path)
        self.width = int(self.model.config.hidden_size)
        self.batch_size = batch_size

    @torch.no_grad()
    def __call__(self, frames: np.ndarray) -> np.ndarray:
        from spatialctl import boost

        out = []
        for i in range(0, len(frames), self.batch_size):
            pixels, grid = self.prep(np.asarray(frames[i:i + self.batch_size]))
            inputs = boost.model_inputs(self.family, pixels, grid, self.prep.patch_size)
            out.append(boost.patch_features(self.model, self.family, inputs, grid).float().numpy())
        return np.concatenate(out)


def save(out_dir: str, module: VegaFusion) -> None:
    from safetensors.torch import save_file

    # named_parameters (the module has no buffers), not state_dict(): under FSDP2 state_dict() returns shards
    state = {k: v.detach().cpu().contiguous() for k, v in module.named_parameters()}
    save_file(state, os.path.join(out_dir, VEGA_WEIGHTS), metadata={"format": "pt"})
    io.write_json(os.path.join(out_dir, VEGA_CONFIG), dataclasses.asdict(module.cfg))


def load(adapter_dir: str) -> VegaFusion | None:
    """The adapter folder's fusion module, or None when it was trained without ``--fusion vega``."""
    from safetensors.torch import load_file

    path = os.path.join(adapter_dir, VEGA_CONFIG)
    if not os.path.isfile(path):
        return None
    try:
        with open(path) as f:
            module = VegaFusion(VegaConfig(**json.load(f)))
        module.load_state_dict(load_file(os.path.join(adapter_dir, VEGA_WEIGHTS)))
    except (OSError, ValueError, TypeError, RuntimeError) as e:
        raise SpatialctlError(f"{adapter_dir}: unreadable VEGA fusion ({type(e).__name__}: {e})") from e
    return module
