"""reconstruct: DUSt3R over a video (or a folder of images) -> a scene store.

Per input: sample frames, resize/crop to the checkpoint's resolution, encode each frame once, run the decoders on
the scene graph's pairs, align all pairwise pointmaps globally (``align.py``, ours), optionally fix the metric
scale with Depth Pro, and write frames, timestamps, intrinsics, cam2world, depth, conf and world pointmaps (plus
encoder features when asked) atomically; then the requested exports. ``--backend pi3|pi3x`` replaces the pairs and
the alignment by feed-forward windows (``feedforward.py``) and writes the same store.

Output location (``output_for``): ``--out`` ending in ``.zarr`` is the store itself (one input); otherwise it is a
folder holding ``<input stem>.zarr`` per input; without ``--out``, the store goes beside the input.

World frame: DUSt3R's world is arbitrary; ``world_up`` is estimated as the mean of the cameras' up directions
(-y of each camera), which holds for hand-held and tripod videos where the camera does not roll much.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from spatialctl import export, jobs, store
from spatialctl.camera import intrinsics_matrix, parse_intrinsics
from spatialctl.config import check_fields, device_opt, opt, overwrite_opt, quiet_opt, shard_opt
from spatialctl.devices import resolve_device
from spatialctl.errors import SpatialctlError, UsageError
from spatialctl.export import parse_formats

from . import feedforward
from .frames import input_stem, load_frames
from .graph import choose_graph, make_pairs, parse_scene_graph

if TYPE_CHECKING:  # annotations only: torch is imported where it is used, so the CLI starts fast
    import torch

STAGE = "reconstruct"
DEFAULT_MODEL = "naver/DUSt3R_ViTLarge_BaseDecoder_512_dpt"
DEFAULT_MAX_FRAMES = 64  # a long video is sampled down to this many frames, spread over it
DEFAULT_MODELS = {"dust3r": DEFAULT_MODEL, "pi3": "yyfz233/Pi3", "pi3x": "yyfz233/Pi3X"}
log = logging.getLogger("spatialctl.reconstruct")
DTYPES = {"auto": "auto", "fp32": None, "bf16": "bfloat16", "fp16": "float16"}  # torch dtype names: torch loads late


@dataclass
class ReconstructConfig:
    out: str | None = opt(None, "A .zarr store (one input) or a folder for <stem>.zarr per input. Default: beside "
                          "each input.", runtime=True, show_default=False)
    model: str | None = opt(None, "Checkpoint: hub id, folder or file (DUSt3R: config.json + model.safetensors or "
                            ".pth; pi3/pi3x: model.safetensors). Default: naver/DUSt3R_ViTLarge_BaseDecoder_512_dpt, "
                            "yyfz233/Pi3 or yyfz233/Pi3X by --backend.", show_default=False)
    backend: str = opt("dust3r", "dust3r (pairs + global alignment), pi3 or pi3x (feed-forward over all frames).",
                       choices=feedforward.BACKENDS)
    window: int = opt(64, "pi3/pi3x: frames per network pass; longer inputs run in overlapping windows aligned by "
                      "Sim(3).")
    overlap: int = opt(8, "pi3/pi3x: frames each window shares with the previous one.")
    poses: str | None = opt(None, "pi3x: known cam2world poses (.npy, N x 4 x 4, OpenCV, one per sampled frame); a "
                            "network condition, kept in the store.", show_default=False)
    scene_graph: str = opt("auto", "Pairs: auto (complete up to 20 frames, else logwin-5), complete, swin-K, "
                           "logwin-K, oneref-I; window graphs also as swin-K-noncyclic.")
    fps: float | None = opt(None, "Videos: sample frames at this rate (default: every frame). Image folders: the "
                            "rate the frames were taken at; timestamps = frame number / fps (default: 1 s apart).",
                            show_default=False)
    stride: int = opt(1, "Then keep every k-th sampled frame.")
    max_frames: int = opt(DEFAULT_MAX_FRAMES, "Keep at most this many frames, spread evenly over the input; 0 keeps "
                          "all.")
    pattern: str | None = opt(None, "Image folders: glob of the frames to use, e.g. '*.color.png'. Default: the "
                              "colour images.", show_default=False)
    allow_truncated: bool = opt(False, "Use the frames of a video that decodes to fewer frames than its container "
                                "declares (a warning, and 'truncated' in the provenance) instead of refusing it.")
    size: int | None = opt(None, "Network long side in pixels. Default: the checkpoint's (224 or 512).",
                           show_default=False)
    batch_size: int = opt(8, "Pairs per decoder batch (and frames per encoder batch).", runtime=True)
    device: str = device_opt()
    dtype: str = opt("auto", "Network precision: auto (bf16/fp16 on GPU, fp32 on CPU), fp32, bf16, fp16.",
                     choices=DTYPES)
    niter: int = opt(300, "Global alignment iterations (Adam, cosine schedule).")
    lr: float = opt(0.01, "Global alignment learning rate.")
    shared_focal: bool = opt(False, "One focal length for all frames (a single camera without zoom). Default: off.")
    intrinsics: tuple[float, float, float, float] | None = opt(
        None, "Known intrinsics fx,fy,cx,cy in pixels of the input frames; kept fixed (pi3x: also a network "
        "condition). Default: estimated.",
        parse=lambda text: parse_intrinsics(text, "--intrinsics"), show_default=False)
    metric_scale: str = opt("none", "none (relative scale), depthpro (rescale to metres with Depth Pro; dust3r) or "
                            "pi3x (Pi3X's own metric scale).", choices=("none", "depthpro", "pi3x"))
    depthpro_model: str = opt("apple/DepthPro-hf", "Depth Pro checkpoint for --metric-scale depthpro: hub id or "
                              "folder.")
    store_features: bool = opt(False, "Also store per-frame features (float16) for train-gsm: DUSt3R's encoder "
                               "tokens, π³'s decoder output. Default: off.")
    export: tuple[str, ...] = opt((), "Comma list of ply, colmap, nerfstudio written to <store stem>_export/. "
                                  "Default: none.", parse=lambda text: tuple(parse_formats(text)), runtime=True,
                                  show_default=False)
    export_min_conf: float = opt(3.0, "Exported points need at least this confidence.", runtime=True)
    shard: str | None = shard_opt()
    overwrite: bool = overwrite_opt()
    quiet: bool = quiet_opt()

    @cached_property
    def graph(self) -> tuple[str, int | None, bool]:
        """The parsed --scene-graph: (kind, k, cyclic)."""
        return parse_scene_graph(self.scene_graph)

    def validate(self) -> None:
        """Check every option and parse text values (intrinsics, export formats) into their typed form."""
        check_fields(self)
        if isinstance(self.intrinsics, str):  # a library caller may give the command line's text
            self.intrinsics = parse_intrinsics(self.intrinsics, "--intrinsics")
        if isinstance(self.export, str):
            self.export = tuple(parse_formats(self.export))
        self.graph  # noqa: B018 - parses --scene-graph (UsageError when bad)
        if self.intrinsics is not None and not (self.intrinsics[0] > 0 and self.intrinsics[1] > 0):
            raise UsageError(f"--intrinsics {self.intrinsics}: focal lengths must be positive")
        if self.stride < 1:
            raise UsageError(f"--stride {self.stride}: must be >= 1")
        if self.max_frames is None or (self.max_frames != 0 and self.max_frames < 2):
            raise UsageError(f"--max-frames {self.max_frames}: need at least 2 frames (0: all)")
        if self.fps is not None and not self.fps > 0:
            raise UsageError(f"--fps {self.fps}: must be positive")
        if self.niter < 0 or not self.lr > 0:
            raise UsageError(f"--niter {self.niter} --lr {self.lr}: need niter >= 0 and lr > 0")
        if self.batch_size < 1:
            raise UsageError(f"--batch-size {self.batch_size}: must be >= 1")
        feedforward.check_config(self)


def _autocast_dtype(name: str):
    """--dtype -> a torch dtype, None (fp32) or "auto"."""
    import torch

    value = DTYPES[name]
    return value if value in (None, "auto") else getattr(torch, value)


def output_for(input: str, out: str | None) -> str:
    if out is not None and out.rstrip("/").endswith(".zarr"):
        return out.rstrip("/")
    folder = out if out is not None else str(Path(input.rstrip("/")).parent)
    return store.join(folder, f"{input_stem(input)}.zarr")


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
            from spatialctl.hub import resolve_model_dir
            from spatialctl.models.depth_pro import DepthPro

            local = resolve_model_dir(self.config.depthpro_model, option="--depthpro-model", what="Depth Pro model")
            self._depthpro = DepthPro(local, self.device)
        return self._depthpro


def preflight_models(config: ReconstructConfig) -> None:
    """Models must be on disk (local files or the hub cache) before any frame is read: fail in well under 2 s."""
    from spatialctl.hub import resolve_model_dir
    from spatialctl.models.checkpoints import check_checkpoint, resolve_checkpoint

    if config.backend == "dust3r":
        resolve_checkpoint(config.model or DEFAULT_MODELS["dust3r"])
    else:  # a wrong or missing π³ checkpoint fails here, before any input is read
        check_checkpoint(config.model or DEFAULT_MODELS[config.backend], config.backend)
    if config.metric_scale == "depthpro":
        resolve_model_dir(config.depthpro_model, option="--depthpro-model", what="Depth Pro model")


def network_size(config: ReconstructConfig, dust3r_config) -> int:
    return config.size if config.size is not None else max(dust3r_config.img_size)


def estimate_world_up(cam2world: np.ndarray) -> list[float]:
    up = -cam2world[:, :3, 1].mean(0)
    norm = np.linalg.norm(up)
    return (up / norm).tolist() if norm > 1e-6 else [0.0, -1.0, 0.0]


def reconstruct(path: str, config: ReconstructConfig, models: _Models,
                progress: Callable[[Iterable], Iterable] | None = None) -> tuple[dict, dict, dict]:
    """One input -> (arrays, attrs, extra provenance), nothing written."""
    import torch

    from spatialctl.models.dust3r_inference import encode_frames, infer_pairs, preprocess

    sampled = load_frames(path, config.fps, config.stride, config.max_frames or None, pattern=config.pattern,
                          allow_truncated=config.allow_truncated)
    frames, timestamps = sampled.frames, sampled.times
    if len(frames) < 2:
        raise SpatialctlError(f"{path}: {len(frames)} frame(s) after sampling; reconstruction needs at least 2")
    if config.backend != "dust3r":
        arrays, attrs, extra = _reconstruct_feedforward(path, frames, timestamps, config, models)
        return arrays, attrs, {**extra, "source": _source(path, sampled)}
    model, dcfg = models.dust3r()
    pre = preprocess(frames, network_size(config, dcfg), patch_size=dcfg.patch_size)
    images = pre.images
    net_frames = ((images + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()
    n, (h, w) = len(images), images.shape[-2:]
    graph = choose_graph(n, config.scene_graph)
    pairs = make_pairs(n, graph)
    log.info("%s", plan_line(path, sampled, config, graph, len(pairs), (h, w), model))
    device = models.device
    autocast = _autocast_dtype(config.dtype)
    encoded = encode_frames(model, images, batch_size=config.batch_size, autocast_dtype=autocast)
    # Full-size predictions of many pairs may not fit beside the model: keep them on the CPU past 4 GB.
    out_device = "cpu" if len(pairs) * h * w * 32 > (4 << 30) else device
    preds = infer_pairs(model, None, pairs, batch_size=config.batch_size, autocast_dtype=autocast,
                        encoded=encoded, out_device=out_device, progress=not config.quiet)
    known = None
    if config.intrinsics is not None:
        known = pre.intrinsics_to_network(intrinsics_matrix(*config.intrinsics))
    from .align import AlignConfig, global_align

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
        "scene_graph": graph,
        "source": _source(path, sampled),
    }
    return arrays, attrs, extra


def _source(path: str, sampled) -> dict:
    """What the store was made from (its fingerprint is added with the provenance), for later stages to find."""
    return {"path": str(Path(path).resolve()), "frames_total": sampled.total, "frames_declared": sampled.declared,
            "truncated": sampled.truncated, "kind": "images" if Path(path).is_dir() else "video"}


def plan_line(path: str, sampled, config: ReconstructConfig, graph: str, n_pairs: int, hw: tuple[int, int],
              model) -> str:
    """What is about to run, in one line: frames kept of how many, pairs, network size, estimated peak memory."""
    n, (h, w) = len(sampled.frames), hw
    span = float(sampled.times[-1] - sampled.times[0])
    why = (f"--max-frames {config.max_frames}, spread over {span:.1f} s" if config.max_frames and sampled.total > n
           else "all sampled frames")
    # Pair predictions (two pointmaps + two confidences per pixel, float32) dominate; the alignment keeps 16 bytes
    # per pixel per pair (align.py) plus per-frame outputs (depth, conf, pointmap: 5 float32); then the weights.
    preds = n_pairs * h * w * 8 * 4
    align = n_pairs * h * w * 16 + n * h * w * 5 * 4
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    gib = (preds + align + weights) / 2**30
    return (f"{path}: plan: {n} of {sampled.total} frames ({why}), scene graph {graph}: {n_pairs} pairs, "
            f"network {w}x{h}, estimated peak memory {gib:.2f} GiB beyond the torch runtime")


def _reconstruct_feedforward(path, frames, timestamps, config, models):
    import sys

    import torch
    from tqdm import tqdm

    device = models.device
    autocast = _autocast_dtype(config.dtype)
    if autocast == "auto":
        autocast = torch.bfloat16 if device.type == "cuda" else None
    known = intrinsics_matrix(*config.intrinsics) if config.intrinsics is not None else None
    poses = feedforward.load_known_poses(config.poses) if config.poses is not None else None
    bar = None if config.quiet else (lambda spans: tqdm(spans, desc=f"{config.backend} windows", unit="window",
                                                        file=sys.stderr, dynamic_ncols=True))
    try:
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
    provenance["source"]["fingerprint"] = provenance["inputs"].get(path)
    store.write_scene(output, arrays, attrs, provenance)


def run(config: ReconstructConfig, inputs: str | Sequence[str],
        progress: Callable[[Iterable], Iterable] | None = None) -> jobs.Summary:
    """Reconstruct each input of this shard; stores already complete with this config are skipped.

    ``progress`` wraps the optimisation's iterations (a tqdm bar from the CLI)."""
    config.validate()
    paths = jobs.select_shard(jobs.resolve_inputs(inputs), jobs.resolve_shard(config.shard))
    if config.out is not None and config.out.rstrip("/").endswith(".zarr") and len(paths) > 1:
        raise UsageError(f"--out {config.out}: one store for {len(paths)} inputs; give a folder instead")
    preflight_models(config)  # before resolve_device: a missing model is reported before torch is imported
    models = _Models(config, resolve_device(config.device))
    items = [jobs.Item(p, output_for(p, config.out)) for p in paths]
    if config.export:
        for item in items:
            export.check_export_dir(export.export_dir_for(item.output))
    summary = jobs.run_items(STAGE, config, items,
                             lambda it: write_item(it.input, it.output, config, models, progress),
                             overwrite=config.overwrite)
    formats = list(config.export)
    if formats:
        # Exports are derived files: written for new stores and for stores a rerun skipped.
        for item in items:
            if item.input in summary.done or item.input in summary.skipped:
                try:
                    export.export_scene(item.output, formats, min_conf=config.export_min_conf)
                except SpatialctlError as e:
                    summary.failed[item.input] = f"{item.output}: export failed: {e}"
    return summary
