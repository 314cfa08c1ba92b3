"""reconstruct with π³ / Pi3X: one feed-forward pass per window of frames instead of pairs + global alignment.

Per input: resize every frame like the reference loader (area <= a pixel budget, sides multiples of 14,
Lanczos), run the network over overlapping windows of ``window`` frames (``overlap`` shared with the previous
window), bring each window into the first one's world by a confidence-weighted robust Sim(3) on the shared
frames' world points, and write the usual scene store:

- ``depth``: z of the local pointmap; ``intrinsics``: a pinhole fitted to the local pointmap's ray slopes
  (principal point at the image centre, focal by least squares; ``--intrinsics`` when known);
- ``cam2world``: the network's pose; ``pointmaps``: depth unprojected through K and cam2world, so every stored
  array agrees with every other (the network's own world points differ from them only where its rays are
  not a pinhole's);
- ``conf``: ``1 + exp(logit)`` (DUSt3R's convention, >= 1); the reference's sigmoid(logit) is (conf-1)/conf;
- ``encoder_features`` with ``--store-features``: the decoder output the heads read (last two blocks, 2C
  channels) on the patch grid, float16.

Memory: the network holds one window at a time; device memory is the weights plus a cost linear in the
window's token count (``window_bytes``), checked against free memory before any work. Host memory holds
the outputs of all frames (about 40 bytes per pixel).
"""

from __future__ import annotations

import math
import sys
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from spatialctl import camera
from spatialctl.devices import no_grad
from spatialctl.errors import SpatialctlError, UsageError

if TYPE_CHECKING:  # annotations only: torch is imported where it is used, so the CLI starts fast
    import torch

BACKENDS = ("dust3r", "pi3", "pi3x")
PIXEL_LIMIT = 255000


# ---------------------------------------------------------------------------------------------------- frames


def target_size(h: int, w: int, pixel_limit: int = PIXEL_LIMIT) -> tuple[int, int]:
    """The reference loader's size: area at most ``pixel_limit``, aspect kept, sides multiples of 14."""
    scale = math.sqrt(pixel_limit / (w * h))
    tw, th = w * scale, h * scale
    k, m = round(tw / 14), round(th / 14)
    while (k * 14) * (m * 14) > pixel_limit:
        if k / m > tw / th:
            k -= 1
        else:
            m -= 1
    return max(1, m) * 14, max(1, k) * 14


def pixel_limit_for(size: int | None, h: int, w: int) -> int:
    """``--size`` is the long side; the reference budgets area, so convert (None: the reference's budget)."""
    if size is None:
        return PIXEL_LIMIT
    return int(size * size * min(h, w) / max(h, w))


def resize_frames(frames: np.ndarray, size: int | None) -> np.ndarray:
    n, h, w, _ = frames.shape
    th, tw = target_size(h, w, pixel_limit_for(size, h, w))
    if (th, tw) == (h, w):
        return frames
    return np.stack([np.asarray(Image.fromarray(f).resize((tw, th), Image.Resampling.LANCZOS)) for f in frames])


# ---------------------------------------------------------------------------------------------------- windows


def windows(n: int, window: int, overlap: int) -> list[tuple[int, int]]:
    """[start, end) of each window; consecutive windows share at least ``overlap`` frames, the last ends at n."""
    if n <= window:
        return [(0, n)]
    spans, start = [], 0
    while start + window < n:
        spans.append((start, start + window))
        start += window - overlap
    spans.append((n - window, n))
    return spans


def window_bytes(model, window: int, h: int, w: int, reduced: bool) -> int:
    """Device bytes for one window: weights, then per frame its tokens through the widest layer (MLP 4C plus
    attention q/k/v/out and the 2C decoder output kept for the heads) and the conv heads' activations at up to
    64 frames at a time (Pi3X) or the linear heads' outputs (π³). An estimate with headroom, not a measurement."""
    c = model.config
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    act = 2 if reduced else 4
    tokens = (h // 14) * (w // 14) + 5
    per_frame = tokens * c.dec_dim * 16 * act + h * w * 16 * 4
    if model.architecture == "pi3x":
        heads = min(window, 64) * h * w * (c.conv_dims[-1] * 3 + 64) * 4
    else:
        heads = window * h * w * 8 * 4
    return int(weights + window * per_frame + heads)


def free_bytes(device: torch.device) -> int:
    import torch
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        with open("/proc/meminfo") as f:
            info = dict(line.split(":", 1) for line in f)
        return int(info["MemAvailable"].split()[0]) * 1024
    except (OSError, KeyError, ValueError):
        return sys.maxsize


# ---------------------------------------------------------------------------------------------------- geometry


def weighted_umeyama(src: np.ndarray, dst: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """4x4 similarity S minimising sum w |dst - S src|^2."""
    w = weight / weight.sum()
    mu_s, mu_d = w @ src, w @ dst
    xs, xd = src - mu_s, dst - mu_d
    cov = (xd * w[:, None]).T @ xs
    u, d, vt = np.linalg.svd(cov)
    sign = np.eye(3)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        sign[2, 2] = -1.0
    rot = u @ sign @ vt
    var = (w * (xs**2).sum(1)).sum()
    scale = float(np.trace(np.diag(d) @ sign) / var)
    return camera.similarity_matrix(scale, rot, mu_d - scale * rot @ mu_s)


def robust_sim3(src: np.ndarray, dst: np.ndarray, conf: np.ndarray, iters: int = 5, max_points: int = 50_000):
    """Confidence-weighted Sim(3) dst ≈ S src with Huber reweighting (IRLS): outliers lose weight each pass."""
    keep = np.isfinite(src).all(1) & np.isfinite(dst).all(1) & (conf > 0)
    src, dst, conf = src[keep], dst[keep], conf[keep]
    if len(src) < 3:
        raise SpatialctlError("window alignment: fewer than 3 confident shared points")
    step = max(1, len(src) // max_points)
    src, dst, conf = src[::step].astype(np.float64), dst[::step].astype(np.float64), conf[::step].astype(np.float64)
    robust = np.ones(len(src))
    for _ in range(iters):
        sim = weighted_umeyama(src, dst, conf * robust)
        resid = np.linalg.norm(dst - camera.transform(src, sim), axis=1)
        sigma = 1.4826 * np.median(resid) + 1e-12
        robust = np.minimum(1.0, 1.345 * sigma / np.maximum(resid, 1e-12))
    return sim


def scale_to_known(predicted: np.ndarray, known: np.ndarray) -> float:
    """Scale taking predicted camera centres to known ones: ratio of their spreads about their means (1 when the
    known cameras do not move: a pure rotation fixes no scale)."""
    pc, kc = predicted[:, :3, 3], known[:, :3, 3]
    spread_p, spread_k = np.linalg.norm(pc - pc.mean(0), axis=1).sum(), np.linalg.norm(kc - kc.mean(0), axis=1).sum()
    return float(spread_k / spread_p) if spread_p > 1e-12 and spread_k > 1e-12 else 1.0


def load_known_poses(path: str) -> np.ndarray:
    """(N, 4, 4) OpenCV cam2world from a .npy file, rigid, finite."""
    try:
        poses = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise UsageError(f"--poses {path}: cannot read as .npy ({e})") from None
    if poses.ndim != 3 or poses.shape[1:] != (4, 4) or not np.isfinite(poses).all():
        raise UsageError(f"--poses {path}: expected finite (N, 4, 4) cam2world matrices, got shape {poses.shape}")
    rot = poses[:, :3, :3]
    if np.abs(rot @ np.swapaxes(rot, 1, 2) - np.eye(3)).max() > 1e-4 or (np.linalg.det(rot) < 0).any():
        raise UsageError(f"--poses {path}: the rotations are not rotations (cam2world must be rigid)")
    return poses.astype(np.float64)


def recover_intrinsics(local_points: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """(H, W, 3) camera-frame points -> K with the principal point at the image centre (pixel centres at
    integers) and fx, fy fitting u - cx = fx x/z, v - cy = fy y/z in weighted least squares."""
    h, w = local_points.shape[:2]
    u, v = camera.pixel_grid(h, w)
    cx, cy = (w - 1) / 2, (h - 1) / 2
    z = local_points[..., 2].astype(np.float64)
    ok = (z > 0) & (weight > 0)
    x, y = local_points[..., 0][ok] / z[ok], local_points[..., 1][ok] / z[ok]
    wt = weight[ok].astype(np.float64)
    fx = (wt * x * (u[ok] - cx)).sum() / max((wt * x * x).sum(), 1e-300)
    fy = (wt * y * (v[ok] - cy)).sum() / max((wt * y * y).sum(), 1e-300)
    return camera.intrinsics_matrix(fx, fy, cx, cy)


def to_store(local_points: np.ndarray, cam2world: np.ndarray, conf_logit: np.ndarray,
             known_intrinsics: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Network outputs (N, H, W, 3) local points, (N, 4, 4) cam2world, (N, H, W) logits -> store arrays."""
    n = len(local_points)
    sigmoid = 1.0 / (1.0 + np.exp(-np.clip(conf_logit, -80, 80)))
    depth = local_points[..., 2].astype(np.float32)
    if known_intrinsics is not None:
        intrinsics = np.tile(known_intrinsics, (n, 1, 1))
    else:
        intrinsics = np.stack([recover_intrinsics(local_points[i], sigmoid[i]) for i in range(n)])
    bad = [i for i in range(n) if not (intrinsics[i, 0, 0] > 0 and intrinsics[i, 1, 1] > 0)]
    if bad:
        raise SpatialctlError(f"frame {bad[0]}: the local pointmap gives a non-positive focal length "
                              f"({intrinsics[bad[0], 0, 0]:.3g}, {intrinsics[bad[0], 1, 1]:.3g}); not a trained "
                              "π³ checkpoint?")
    depth = np.where(depth > 0, depth, 0.0).astype(np.float32)
    pointmaps = np.stack([camera.depth_to_pointmap(depth[i], intrinsics[i], cam2world[i]) for i in range(n)])
    conf = np.where(depth > 0, 1.0 + np.exp(np.clip(conf_logit, -80, 80)), 0.0)
    return {"intrinsics": intrinsics.astype(np.float64), "cam2world": cam2world.astype(np.float64),
            "depth": depth, "conf": conf.astype(np.float32), "pointmaps": pointmaps.astype(np.float32)}


# ---------------------------------------------------------------------------------------------------- inference


@no_grad
def infer_window(model, images: torch.Tensor, device, autocast_dtype, intrinsics=None, metric: bool = False,
                 poses=None):
    """One window: (n, 3, H, W) in [0, 1] -> numpy local points, cam2world, conf logits, features."""
    import torch
    kwargs = {}
    if intrinsics is not None:
        kwargs["intrinsics"] = torch.as_tensor(intrinsics, dtype=torch.float32, device=device).expand(
            1, len(images), 3, 3)
    if poses is not None:
        kwargs["poses"] = torch.as_tensor(poses, dtype=torch.float32, device=device)[None]
    with torch.autocast(device_type=device.type, dtype=autocast_dtype or torch.float32,
                        enabled=autocast_dtype is not None):
        out = model(images[None].to(device), **kwargs)
    local, poses = out["local_points"][0].float(), out["camera_poses"][0].float()
    if "metric" in out and not metric:  # back to the network's own (relative) units
        scale = out["metric"][0].float()
        local = local / scale
        poses = poses.clone()
        poses[:, :3, 3] /= scale
    return (local.cpu().numpy(), poses.cpu().double().numpy(), out["conf"][0, ..., 0].float().cpu().numpy(),
            out["features"], None if "metric" not in out else float(out["metric"][0]))


def run_windows(model, frames: np.ndarray, spans, device, autocast_dtype, intrinsics=None, metric=False,
                features: bool = False, progress=None, known_poses=None):
    """All frames through overlapping windows, each aligned to the frames already placed."""
    import torch
    n, h, w, _ = frames.shape
    local = np.zeros((n, h, w, 3), np.float32)
    poses = np.zeros((n, 4, 4))
    logits = np.zeros((n, h, w), np.float32)
    feats, placed, sims, scales = None, np.zeros(n, bool), [], []
    gh, gw = h // 14, w // 14
    for start, end in (progress(spans) if progress else spans):
        images = torch.from_numpy(frames[start:end]).permute(0, 3, 1, 2).float() / 255.0
        loc, pose, logit, feat, scale = infer_window(model, images, device, autocast_dtype, intrinsics, metric,
                                                     None if known_poses is None else known_poses[start:end])
        scales.append(scale)
        shared = [i for i in range(start, end) if placed[i]]
        sim = np.eye(4)
        if shared:
            src, dst, wts = [], [], []
            for i in shared:
                k = i - start
                src.append(camera.transform(loc[k].reshape(-1, 3).astype(np.float64), pose[k]))
                dst.append(camera.transform(local[i].reshape(-1, 3).astype(np.float64), poses[i]))
                sig = lambda a: 1.0 / (1.0 + np.exp(-np.clip(a, -80, 80)))  # noqa: E731
                wts.append(np.sqrt(sig(logit[k]) * sig(logits[i])).reshape(-1))
            sim = robust_sim3(np.concatenate(src), np.concatenate(dst), np.concatenate(wts))
        s = np.cbrt(np.linalg.det(sim[:3, :3]))
        sims.append(sim)
        new = [i for i in range(start, end) if not placed[i]]
        for i in new:
            k = i - start
            pose_i = sim @ pose[k]
            pose_i[:3, :3] /= s  # the similarity's scale goes into the points, not the rotation
            poses[i], local[i], logits[i] = pose_i, loc[k] * s, logit[k]
            placed[i] = True
        if features:
            chunk = feat.float().cpu().reshape(end - start, gh, gw, -1).numpy().astype(np.float16)
            if feats is None:
                feats = np.zeros((n, gh, gw, chunk.shape[-1]), np.float16)
            feats[new] = chunk[[i - start for i in new]]
        del feat
    return local, poses, logits, feats, sims, scales


# ---------------------------------------------------------------------------------------------------- stage


def check_config(config) -> None:
    """Backend options, checked before any work."""
    if config.backend not in BACKENDS:
        raise UsageError(f"--backend {config.backend!r}: expected one of {', '.join(BACKENDS)}")
    if config.metric_scale == "pi3x" and config.backend != "pi3x":
        raise UsageError(f"--metric-scale pi3x needs --backend pi3x (got {config.backend})")
    import dataclasses

    defaults = {f.name: f.default for f in dataclasses.fields(config)}
    only = {"dust3r": ("scene_graph", "niter", "lr", "shared_focal"), "pi3": ("window", "overlap", "poses")}
    for backend, names in only.items():
        changed = [n for n in names if getattr(config, n) != defaults[n]]
        if changed and (backend == "dust3r") != (config.backend == "dust3r"):
            flag = "--" + changed[0].replace("_", "-")
            raise UsageError(f"{flag} applies to --backend {'dust3r' if backend == 'dust3r' else 'pi3/pi3x'} only")
    if config.backend == "dust3r":
        return
    if config.window < 2:
        raise UsageError(f"--window {config.window}: π³ needs at least 2 frames per window")
    if not 1 <= config.overlap < config.window:
        raise UsageError(f"--overlap {config.overlap}: need 1 <= overlap < window ({config.window})")
    if config.backend == "pi3" and (config.intrinsics is not None or config.poses is not None):
        raise UsageError(f"--{'intrinsics' if config.intrinsics is not None else 'poses'}: π³ takes no "
                         "conditions; use --backend pi3x")
    if config.poses is not None:
        load_known_poses(config.poses)
    if config.metric_scale == "depthpro":
        raise UsageError(f"--metric-scale depthpro: not available with --backend {config.backend} "
                         "(use pi3x's own metric scale: --backend pi3x --metric-scale pi3x)")


def reconstruct(frames: np.ndarray, timestamps, config, model, device, autocast_dtype, known_k=None,
                progress=None, known_poses=None) -> tuple[dict, dict, dict]:
    """(arrays, attrs, extra provenance) for one input's sampled frames; nothing written.

    ``known_poses`` (N, 4, 4) go to the network as a condition and are what the store keeps; the predicted
    geometry is rescaled to their units (``scale_to_known``)."""
    if len({f.shape for f in frames}) != 1:
        raise SpatialctlError("frames of mixed sizes")
    if known_poses is not None and len(known_poses) != len(frames):
        raise SpatialctlError(f"--poses holds {len(known_poses)} poses for {len(frames)} sampled frames")
    orig_hw = frames.shape[1:3]
    net = resize_frames(frames, config.size)
    n, h, w, _ = net.shape
    window = min(config.window, n)
    # the weights are already loaded: compare what the window adds with what is still free
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    need = window_bytes(model, window, h, w, autocast_dtype is not None) - weights
    free = free_bytes(device)
    if need > free:
        raise SpatialctlError(f"--window {config.window}: about {need / 2**30:.1f} GiB for {window} frames of "
                              f"{h}x{w} (beyond the weights) but {free / 2**30:.1f} GiB free on {device}; use a "
                              "smaller --window")
    net_k = None
    if known_k is not None:
        sx, sy = w / orig_hw[1], h / orig_hw[0]
        net_k = known_k.copy()
        net_k[0, 0], net_k[1, 1] = known_k[0, 0] * sx, known_k[1, 1] * sy
        net_k[0, 2], net_k[1, 2] = (known_k[0, 2] + 0.5) * sx - 0.5, (known_k[1, 2] + 0.5) * sy - 0.5
    spans = windows(n, config.window, config.overlap)
    # the reference's intrinsics put pixel centres at +0.5; ours at integers
    cond_k = None
    if net_k is not None:
        cond_k = net_k.copy()
        cond_k[:2, 2] += 0.5
    metric = config.metric_scale == "pi3x"
    local, poses, logits, feats, sims, scales = run_windows(
        model, net, spans, device, autocast_dtype, cond_k, metric, config.store_features, progress, known_poses)
    to_known = None
    if known_poses is not None:
        to_known = scale_to_known(poses, known_poses)
        local, poses = local * to_known, known_poses
    arrays = {"frames": net, "timestamps": np.asarray(timestamps, dtype=np.float64),
              **to_store(local, poses, logits, net_k)}
    if feats is not None:
        arrays["encoder_features"] = feats
    attrs = {"scale": "metric" if metric else "relative", "scale_source": "pi3x" if metric else "none"}
    extra = {"network_size": [int(h), int(w)], "original_size": [int(orig_hw[0]), int(orig_hw[1])],
             "windows": {"spans": [list(s) for s in spans],
                         "sim3_scales": [round(float(np.cbrt(np.linalg.det(s[:3, :3]))), 6) for s in sims],
                         "metric_scales": scales, "bytes_estimate": need}, "scale_to_known_poses": to_known}
    return arrays, attrs, extra
