"""Geometry tokens: every source pooled to the same ``geo_grid`` x ``geo_grid`` cells per frame, so sources line
up token by token: DUSt3R encoder features (``encoder_features``), pointmap patches (xyz normalised per sample +
log confidence + the sample's log scale, so metric size survives normalisation), and VEGA-3D ``genfeat`` features
(mixed in by the module through :class:`spatialctl.fusion.AdaptiveGatedFusion`).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from spatialctl import store
from spatialctl.errors import SpatialctlError
from spatialctl.gsm.module import GSMConfig


def pool_grid(x: np.ndarray, g: int) -> np.ndarray:
    """(T, h, w, C) -> (T, g, g, C) float32 by adaptive average pooling (replicates when h or w < g)."""
    t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).permute(0, 3, 1, 2)
    return F.adaptive_avg_pool2d(t, (g, g)).permute(0, 2, 3, 1).numpy()


def pointmap_tokens(pointmaps: np.ndarray, conf: np.ndarray, g: int, patch: int) -> np.ndarray:
    """(T, H, W, 3) world points + (T, H, W) conf -> (T, g, g, 4 * patch^2 + 1).

    Points are centred on the valid points' median and divided by their mean distance to it; the log of that
    scale is appended so absolute size stays recoverable. Invalid pixels (conf 0) stay 0.
    """
    valid = conf > 0
    pts = pointmaps[valid].astype(np.float64)
    if len(pts):
        centre = np.median(pts, axis=0)
        scale = float(np.mean(np.linalg.norm(pts - centre, axis=1))) or 1.0
    else:
        centre, scale = np.zeros(3), 1.0
    xyz = np.where(valid[..., None], (pointmaps - centre) / scale, 0.0).astype(np.float32)
    c = np.log1p(np.maximum(conf, 0)).astype(np.float32)[..., None]
    side = g * patch
    t, h, w = conf.shape
    rows = (np.arange(side) * h // side)[:, None]  # nearest-neighbour resampling keeps points on surfaces
    cols = (np.arange(side) * w // side)[None, :]
    cells = np.concatenate([xyz, c], -1)[:, rows, cols]  # (T, side, side, 4)
    cells = cells.reshape(t, g, patch, g, patch, 4).transpose(0, 1, 3, 2, 4, 5).reshape(t, g, g, 4 * patch * patch)
    log_scale = np.full((t, g, g, 1), math.log(scale), np.float32)
    return np.concatenate([cells, log_scale], -1)


def load_geometry(scene_url: str, frames, cfg: GSMConfig) -> dict[str, np.ndarray]:
    """Per-source (T, g, g, C) float32 features of the given frames of a scene store."""
    s = store.open_scene(scene_url)
    frames = list(frames)
    out = {}
    g = cfg.geo_grid
    for source in cfg.geometry:
        if source == "dust3r":
            if not s.has("encoder_features"):
                raise SpatialctlError(f"{scene_url}: no encoder_features for --geometry dust3r; "
                                      "rerun reconstruct with encoder features stored, or drop dust3r")
            out[source] = pool_grid(s.read("encoder_features", frames), g)
        elif source == "pointmap":
            out[source] = pointmap_tokens(s.read("pointmaps", frames), s.read("conf", frames), g, cfg.pointmap_patch)
        else:
            if not s.has("genfeat"):
                raise SpatialctlError(f"{scene_url}: no genfeat group for --geometry genfeat; run extract-gen-features")
            out[source] = pool_grid(s.open_group("genfeat").read("features", np.asarray(frames)), g)
    for source, x in out.items():
        if not np.isfinite(x).all():
            raise SpatialctlError(f"{scene_url}: {source} geometry features hold NaN or infinite values")
    return out


def geometry_dims(geometry: dict[str, np.ndarray]) -> dict[str, int]:
    return {s: int(x.shape[-1]) for s, x in geometry.items() if s != "pointmap"}
