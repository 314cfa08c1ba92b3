"""The projector from encoder patch features to the LLM's input embeddings (LLaVA-1.5's two-layer MLP)."""

from __future__ import annotations

import os

import torch
from torch import nn

from spatialctl import io
from spatialctl.errors import SpatialctlError

PROJECTOR_FILE = "projector.safetensors"


class Projector(nn.Module):
    """Average-pool the patch grid by ``pool`` (fewer image tokens), then Linear-GELU-Linear to the LLM width."""

    def __init__(self, in_dim: int, out_dim: int, pool: int = 1):
        super().__init__()
        self.in_dim, self.out_dim, self.pool = in_dim, out_dim, pool
        self.fc1 = nn.Linear(in_dim, out_dim)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(out_dim, out_dim)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """(B, gh, gw, C) -> (B, tokens, out_dim)."""
        if self.pool > 1:
            x = nn.functional.avg_pool2d(features.permute(0, 3, 1, 2), self.pool, ceil_mode=True)
            features = x.permute(0, 2, 3, 1)
        x = features.reshape(features.shape[0], -1, features.shape[-1])
        return self.fc2(self.act(self.fc1(x)))

    def meta(self) -> dict:
        return {"in_dim": self.in_dim, "out_dim": self.out_dim, "pool": self.pool}


def save_projector(projector: Projector, out_dir: str) -> str:
    path = os.path.join(out_dir, PROJECTOR_FILE)
    state = {k: v.detach().float().cpu().contiguous() for k, v in projector.state_dict().items()}
    io.save_safetensors(path, state, {k: str(v) for k, v in projector.meta().items()})
    return path


def load_projector(out_dir: str, in_dim: int, out_dim: int) -> Projector:
    from safetensors import safe_open

    path = os.path.join(out_dir, PROJECTOR_FILE)
    if not os.path.isfile(path):
        raise SpatialctlError(f"{path}: no such file; run stage 1 first (--stage 1)")
    try:
        with safe_open(path, "pt") as f:
            meta = f.metadata() or {}
            state = {k: f.get_tensor(k) for k in f.keys()}
        dims = (int(meta["in_dim"]), int(meta["out_dim"]), int(meta.get("pool", 1)))
    except (KeyError, ValueError) as e:
        raise SpatialctlError(f"{path}: missing projector metadata ({type(e).__name__})") from e
    except Exception as e:
        raise SpatialctlError(f"{path}: not a readable safetensors file ({type(e).__name__})") from e
    if dims[:2] != (in_dim, out_dim):
        raise SpatialctlError(f"{path}: projector maps {dims[0]} -> {dims[1]}, but the encoder/LLM need "
                              f"{in_dim} -> {out_dim}")
    projector = Projector(*dims)
    projector.load_state_dict(state)
    return projector
