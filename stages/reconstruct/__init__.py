"""reconstruct: DUSt3R over a video (or a folder of images) -> a scene store.

Per input: sample frames, resize/crop to the checkpoint's resolution, encode each frame once, run the decoders on
the scene graph's pairs, align all pairwise pointmaps globally (``align.py``, ours), optionally fix the metric
scale with Depth Pro, and write frames, timestamps, intrinsics, cam2world, depth, conf and world pointmaps (plus
encoder features when asked) atomically; then the requested exports.

Output location (``output_for``): ``--out`` ending in ``.zarr`` is the store itself (one input); otherwise it is a
folder holding ``<input stem>.zarr`` per input; without ``--out``, the store goes beside the input.

World frame: DUSt3R's world is arbitrary; ``world_up`` is estimated as the mean of the cameras' up directions
(-y of each camera), which holds for hand-held and tripod videos where the camera does not roll much.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from spatialctl import export, jobs, store
from spatialctl.config import opt
from spatialctl.errors import SpatialctlError, UsageError

from . import feedforward
from .align import AlignConfig, global_align
from .frames import input_stem, load_frames
from .graph import make_pairs, parse_scene_graph

STAGE = "reconstruct"
DEFAULT_MODEL = "naver/DUSt3R_ViTLarge_BaseDecoder_512_dpt"
DEFAULT_MODELS = {"dust3r": DEFAULT_MODEL, "pi3": "yyfz233/Pi3", "pi3x": "yyfz233/Pi3X"}
log = logging.getLogger("spatialctl.reconstruct")
DTYPES = {"auto": "auto", "fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass
class ReconstructConfig:
    model: str | None = None  # None: the backend's published checkpoint (DEFAULT_MODELS)
    scene_graph: str = "complete"
    fps: float | None = None
    stride: int = 1
    max_frames: int | None = None
    size: int | None = None  # long side for the network; None: the checkpoint's (224 or 512)
    dtype: str = "auto"  # network autocast: auto (bf16/fp16 on GPU, fp32 on CPU), fp32, bf16, fp16
    niter: int = 300
    lr: float = 0.01
    shared_focal: bool = False
    intrinsics: str | None = None  # "fx,fy,cx,cy" in pixels of the input frames: known, kept fixed
    metric_scale: str = "none"  # none | depthpro
    depthpro_model: str = "apple/DepthPro-hf"
    store_features: bool = False
    export: str = field(default="", metadata={"runtime": True})
    export_min_conf: float = field(default=3.0, metadata={"runtime": True})
    out: str | None = field(default=None, metadata={"runtime": True})
    device: str = field(default="auto", metadata={"runtime": True})
    batch_size: int = field(default=8, metadata={"runtime": True})
    backend: str = opt("dust3r", "dust3r (pairs + global alignment), pi3 or pi3x (feed-forward, all frames at once).")
    window: int = opt(64, "pi3/pi3x: frames per network pass; longer inputs run in overlapping windows.")
    overlap: int = opt(8, "pi3/pi3x: frames each window shares with the previous one (for the Sim(3) alignment).")
    poses: str | None = opt(None, "pi3x: known cam2world poses (.npy, N x 4 x 4, OpenCV, one per sampled frame): "
                                  "a network condition, kept in the store.")
    shard: str | None = field(default=None, metadata={"runtime": True})
    overwrite: bool = field(default=False, metadata={"runtime": True})
    quiet: bool = field(default=False, metadata={"runtime": True})


def output_for(input: str, out: str | None) -> str:
    if out is not None and out.rstrip("/").endswith(".zarr"):
        return out.rstrip("/")
    folder = out if out is not None else str(Path(input.rstrip("/")).parent)
    return store.join(folder, f"{input_stem(input)}.zarr")


def check_config(config: ReconstructConfig) -> None:
    parse_scene_graph(config.scene_graph)
    export.parse_formats(config.export)
    if config.dtype not in DTYPES:
        raise UsageError(f"--dtype {config.dtype!r}: expected one of {', '.join(DTYPES)}")
    if config.metric_scale not in ("none", "depthpro", "pi3x"):
        raise UsageError(f"--metric-scale {config.metric_scale!r}: expected none, depthpro or pi3x")
    feedforward.check_config(config)
    if config.stride < 1:
        raise UsageError(f"--stride {config.stride}: must be >= 1")
    if config.max_frames is not None and config.max_frames < 2:
        raise UsageError(f"--max-frames {config.max_frames}: need at least 2 frames")
    if config.fps is not None and not config.fps > 0:
        raise UsageError(f"--fps {config.fps}: must be positive")
    if config.niter < 0 or not config.lr > 0:
        raise UsageError(f"--niter {config.niter} --lr {config.lr}: need niter >= 0 and lr > 0")
    if config.batch_size < 1:
        raise UsageError(f"--batch-size {config.batch_size}: must be >= 1")
    if config.intrinsics is not None:
        parse_intrinsics(config.intrinsics)


def parse_intrinsics(text: str) -> np.ndarray:
    try:
        fx, fy, cx, cy = (float(v) for v in text.split(","))
    except ValueError:
        raise UsageError(f"--intrinsics {text!r}: expected fx,fy,cx,cy in pixels") from None
    if not (fx > 0 and fy > 0):
        raise UsageError(f"--intrinsics {text!r}: focal lengths must be positive")
    return np.array([[fx, 0, cx], [0, fy, cy], [0, 0, 1.0]])


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        return torch.device(name)
    except RuntimeError:
        raise UsageError(f"--device {name!r}: not a torch device") from None


class _Models:
    """Load DUSt3R (and Depth Pro) once for all items of a run."""

    def __init__(self, config: ReconstructConfig, device: torch.device):
        self.config, self.device = config, device
        self._dust3r = self._depthpro = self._pi3 = None

    @property
    def name(self) -> str:
        return self.config.model or DEFAULT_MODELS[self.config.backend]

    def dust3r(self):
        if self._dust3r is None:
            from spatialctl.models.dust3r_loading import load_dust3r

            self._dust3r = load_dust3r(self.name, device=self.device)
        return self._dust3r

    def pi3(self):
        if self._pi3 is None:
            from spatialctl.models.pi3 import load_model

            # Pi3X's condition branches (a second DINOv2) are built only when a condition is given.
            conditioned = self.config.intrinsics is not None or self.config.poses is not None
            self._pi3 = load_model(self.name, self.config.backend, self.device, conditioned=conditioned)
        return self._pi3

    def depthpro(self):
        if self._depthpro is None:
            from spatialctl.models.depth_pro import DepthPro

            self._depthpro = DepthPro(self.config.depthpro_model, self.device)
        return self._depthpro


def network_size(config: ReconstructConfig, dust3r_config) -> int:
    return config.size if config.size is not None else max(dust3r_config.img_size)


def estimate_world_up(cam2world: np.ndarray) -> list[float]:
    up = -cam2world[:, :3, 1].mean(0)
    norm = np.linalg.norm(up)
    return (up / norm).tolist() if norm > 1e-6 else [0.0, -1.0, 0.0]


def reconstruct(path: str, config: ReconstructConfig, models: _Models,
                progress: Callable[[Iterable], Iterable] | None = None) -> tuple[dict, dict, dict]:
    """One input -> (arrays, attrs, extra provenance), nothing written."""
    from spatialctl.models.dust3r_inference import encode_frames, infer_pairs, preprocess

    frames, timestamps = load_frames(path, config.fps, config.stride, config.max_frames)
    if len(frames) < 2:
        raise SpatialctlError(f"{path}: {len(frames)} frame(s) after sampling; reconstruction needs at least 2")
    if config.backend != "dust3r":
        return _reconstruct_feedforward(path, frames, timestamps, config, models, progress)
    model, dcfg = models.dust3r()
    pre = preprocess(frames, network_size(config, dcfg), patch_size=dcfg.patch_size)
    images = pre.images
    net_frames = ((images + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()
    n, (h, w) = len(images), images.shape[-2:]
    pairs = make_pairs(n, config.scene_graph)
    device = models.device
    autocast = DTYPES[config.dtype]
    encoded = encode_frames(model, images, batch_size=config.batch_size, autocast_dtype=autocast)
    # Full-size predictions of many pairs may not fit beside the model: keep them on the CPU past 4 GB.
    out_device = "cpu" if len(pairs) * h * w * 32 > (4 << 30) else device
    preds = infer_pairs(model, None, pairs, batch_size=config.batch_size, autocast_dtype=autocast,
                        encoded=encoded, out_device=out_device, progress=not config.quiet)
    known = None
    if config.intrinsics is not None:
        known = pre.intrinsics_to_network(parse_intrinsics(config.intrinsics))
    align_cfg = AlignConfig(niter=config.niter, lr=config.lr, shared_focal=config.shared_focal, device=str(device))
    result = global_align(preds.pairs, preds.pts_i, preds.conf_i, preds.pts_j, preds.conf_j, n, align_cfg,
                          known_intrinsics=known, progress=progress)
    del preds

    cam2world, depth, pointmaps = result.cam2world, result.depth, result.pointmaps
    scale, scale_source, factor = "relative", "none", 1.0
    if config.metric_scale == "depthpro":
        from spatialctl.models.depth_pro import scale_factor

        depthpro = models.depthpro()
        # Known intrinsics beat Depth Pro's FOV estimate; without a FOV head our aligned focal is all there is.
        use_ours = known is not None or not depthpro.model.config.use_fov_model
        metric = depthpro.metric_depth(net_frames, result.intrinsics[:, 0, 0] if use_ours else None)
        factor = scale_factor(metric, depth, result.conf)
        cam2world = cam2world.copy()
        cam2world[:, :3, 3] *= factor
        depth, pointmaps = depth * factor, pointmaps * factor
        scale, scale_source = "metric", "depthpro"

    arrays = {
        "frames": net_frames,
        "timestamps": np.asarray(timestamps, dtype=np.float64),
        "intrinsics": result.intrinsics.astype(np.float64),
        "cam2world": cam2world.astype(np.float64),
        "depth": depth.astype(np.float32),
        "conf": result.conf.astype(np.float32),
        "pointmaps": pointmaps.astype(np.float32),
    }
    if config.store_features:
        gh, gw = encoded.grid_hw
        arrays["encoder_features"] = encoded.tokens.float().cpu().reshape(n, gh, gw, -1).numpy().astype(np.float16)
    attrs = {"scale": scale, "scale_source": scale_source, "world_up": estimate_world_up(cam2world)}
    extra = {
        "alignment": {"loss_curve": [round(x, 7) for x in result.loss_curve], "init_loss": result.init_loss,
                      "state_bytes": result.state_bytes, "pairs": int(len(pairs)), "frames": int(n)},
        "network_size": [int(h), int(w)],
        "original_size": list(pre.orig_hw),
        "metric_scale_factor": factor,
    }
    return arrays, attrs, extra


def _reconstruct_feedforward(path, frames, timestamps, config, models, progress):
    import sys

    from tqdm import tqdm

    device = models.device
    autocast = DTYPES[config.dtype]
    if autocast == "auto":
        autocast = torch.bfloat16 if device.type == "cuda" else None
    known = parse_intrinsics(config.intrinsics) if config.intrinsics is not None else None
    try:
        bar = None if config.quiet else (lambda spans: tqdm(spans, desc=f"{config.backend} windows", unit="window",
                                                            file=sys.stderr, dynamic_ncols=True))
        poses = feedforward.load_known_poses(config.poses) if config.poses is not None else None
        arrays, attrs, extra = feedforward.reconstruct(frames, timestamps, config, models.pi3(), device, autocast,
                                                       known, bar, poses)
    except SpatialctlError as e:
        raise SpatialctlError(f"{path}: {e}") from None
    attrs["world_up"] = estimate_world_up(arrays["cam2world"])
    return arrays, attrs, extra


def write_item(path: str, output: str, config: ReconstructConfig, models: _Models,
               progress: Callable[[Iterable], Iterable] | None = None) -> None:
    arrays, attrs, extra = reconstruct(path, config, models, progress)
    provenance = {**jobs.provenance(STAGE, config, [path]), **extra}
    store.write_scene(output, arrays, attrs, provenance)


def run(config: ReconstructConfig, inputs: str | Sequence[str],
        progress: Callable[[Iterable], Iterable] | None = None) -> jobs.Summary:
    """Reconstruct each input of this shard; stores already complete with this config are skipped.

    ``progress`` wraps the optimisation's iterations (a tqdm bar from the CLI)."""
    check_config(config)
    paths = jobs.select_shard(jobs.resolve_inputs(inputs), jobs.resolve_shard(config.shard))
    if config.out is not None and config.out.rstrip("/").endswith(".zarr") and len(paths) > 1:
        raise UsageError(f"--out {config.out}: one store for {len(paths)} inputs; give a folder instead")
    models = _Models(config, resolve_device(config.device))
    if config.backend != "dust3r":  # a wrong or missing checkpoint fails here, before any input is read
        from spatialctl.models.pi3 import check_checkpoint

        check_checkpoint(models.name, config.backend)
    items = [jobs.Item(p, output_for(p, config.out)) for p in paths]
    summary = jobs.run_items(STAGE, config, items,
                             lambda it: write_item(it.input, it.output, config, models, progress),
                             overwrite=config.overwrite)
    formats = export.parse_formats(config.export)
    if formats:
        # Exports are derived files: written for new stores and for stores a rerun skipped.
        for item in items:
            if item.input in summary.done or item.input in summary.skipped:
                try:
                    export.export_scene(item.output, formats, min_conf=config.export_min_conf)
                except SpatialctlError as e:
                    summary.failed[item.input] = f"{item.output}: export failed: {e}"
    return summary
