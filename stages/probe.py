"""A linear depth probe on frozen encoder patch features: does a boost make features more depth-aware?

Each frame goes through the encoder; each patch's target is the mean valid depth under it (patches less than
half covered by valid depth are left out). A ridge regression from standardised features to log depth is fitted
on the training frames and scored on the rest by AbsRel and δ<1.25 (no alignment: the probe predicts metric
depth). Frames split by scene when there are several scenes (no frame of a test scene is seen in training),
else the first frames train and the last ones test.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from spatialctl import boost, io, jobs, store
from spatialctl.config import check_fields, device_opt, opt, quiet_opt
from spatialctl.devices import resolve_device
from spatialctl.errors import SpatialctlError, UsageError
from spatialctl.geometry_metrics import depth_metrics

log = logging.getLogger("spatialctl.probe")
MIN_VALID = 0.5  # share of a patch's pixels with valid depth for the patch to count


@dataclass
class ProbeConfig:
    encoder: str = opt(boost.DEFAULT_ENCODER, "Vision encoder: hub id or folder (or a merged boosted folder).")
    boost: str | None = opt(None, "A boost-encoder output folder: report AbsRel before and after boosting.",
                            show_default=False)
    train_fraction: float = opt(0.5, "Share of frames the probe is fitted on (by scene when there are several "
                                "scenes, else the first frames).")
    ridge: float = opt(1e-3, "Ridge penalty of the least-squares fit (relative to the feature scale).")
    image_size: int = opt(224, "Side of a square of the same area the frames are resized to.")
    max_frames: int = opt(32, "At most this many frames per scene (evenly spread).")
    out: str | None = opt(None, "Write the report JSON here as well. Default: stdout only.", runtime=True,
                          show_default=False)
    batch_size: int = field(default=8, metadata={"runtime": True})
    device: str = device_opt()
    quiet: bool = quiet_opt()

    def validate(self) -> None:
        check_fields(self)
        if not 0 < self.train_fraction < 1:
            raise UsageError(f"--train-fraction {self.train_fraction}: must be between 0 and 1")
        if self.ridge < 0 or self.image_size < 1 or self.max_frames < 2:
            raise UsageError("--ridge must be >= 0, --image-size >= 1 and --max-frames >= 2")


def find_scenes(args: list[str]) -> list[str]:
    """Scene stores from stores, folders of them (``*/scene.zarr``, ``*.zarr``) or manifests."""
    out = []
    for arg in jobs.resolve_inputs(args):
        header = store.node_header(arg) if store.exists(arg) else None
        if header is not None and header.get("kind") == "scene":
            out.append(arg)
            continue
        p = Path(arg)
        found = sorted({str(q) for pattern in ("scene.zarr", "*/scene.zarr", "*.zarr", "*/*/scene.zarr")
                        for q in p.glob(pattern)}) if p.is_dir() else []
        if not found:
            raise SpatialctlError(f"{arg}: no scene store there (expected scene.zarr, */scene.zarr or a manifest)")
        out += found
    return list(dict.fromkeys(out))


def patch_depth(depth: np.ndarray, grid: tuple[int, int]) -> np.ndarray:
    """(H, W) depth -> (gh, gw) mean valid depth per patch footprint; 0 where under half the pixels are valid."""
    h, w = depth.shape
    gh, gw = grid
    rows = np.floor(np.arange(gh) * h / gh).astype(int)
    cols = np.floor(np.arange(gw) * w / gw).astype(int)
    valid = (depth > 0) & np.isfinite(depth)
    total = np.add.reduceat(np.add.reduceat(np.where(valid, depth, 0.0), rows, 0), cols, 1)
    count = np.add.reduceat(np.add.reduceat(valid.astype(np.float64), rows, 0), cols, 1)
    area = np.outer(np.diff([*rows, h]), np.diff([*cols, w]))
    return np.where(count >= MIN_VALID * area, total / np.maximum(count, 1), 0.0)


def split(scenes: list[str], n_frames: dict[str, int], fraction: float) -> dict[str, tuple[list[int], list[int]]]:
    """scene -> (train frame indices, test frame indices)."""
    if len(scenes) > 1:
        n_train = min(len(scenes) - 1, max(1, round(fraction * len(scenes))))
        return {s: (list(range(n_frames[s])), []) if i < n_train else ([], list(range(n_frames[s])))
                for i, s in enumerate(scenes)}
    s = scenes[0]
    n_train = min(n_frames[s] - 1, max(1, round(fraction * n_frames[s])))
    return {s: (list(range(n_train)), list(range(n_train, n_frames[s])))}


def _features(model, family, prep, frames: np.ndarray, batch_size: int, device) -> np.ndarray:
    import torch

    out = []
    with torch.no_grad():
        for i in range(0, len(frames), batch_size):
            pixels, grid = prep(frames[i:i + batch_size])
            inputs = boost.model_inputs(family, pixels, grid, prep.patch_size, device)
            dtype = next(model.parameters()).dtype
            inputs["pixel_values"] = inputs["pixel_values"].to(dtype)
            out.append(boost.patch_features(model, family, inputs, grid).float().cpu().numpy())
    return np.concatenate(out)


def fit_ridge(x: np.ndarray, y: np.ndarray, ridge: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(mean, std, weights incl. intercept last) of a ridge fit on standardised features."""
    mean, std = x.mean(0), x.std(0) + 1e-6
    z = np.concatenate([(x - mean) / std, np.ones((len(x), 1))], 1)
    penalty = ridge * len(z) * np.eye(z.shape[1])
    penalty[-1, -1] = 0.0  # the intercept is not shrunk
    w = np.linalg.solve(z.T @ z + penalty, z.T @ y)
    return mean, std, w


def predict(x: np.ndarray, mean: np.ndarray, std: np.ndarray, w: np.ndarray) -> np.ndarray:
    return np.concatenate([(x - mean) / std, np.ones((len(x), 1))], 1) @ w


def probe_model(model, family, prep, data: dict, config: ProbeConfig, device) -> dict:
    """Fit on the train frames, score on the test frames; ``data``: scene -> (frames, depth, train, test)."""
    xs = {"train": [], "test": []}
    ys = {"train": [], "test": []}
    for frames, depth, train_idx, test_idx in data.values():
        feats = _features(model, family, prep, frames, config.batch_size, device)
        grid = feats.shape[1:3]
        for part, idx in (("train", train_idx), ("test", test_idx)):
            for i in idx:
                target = patch_depth(depth[i], grid).reshape(-1)
                keep = target > 0
                xs[part].append(feats[i].reshape(-1, feats.shape[-1])[keep])
                ys[part].append(target[keep])
    x_train, y_train = np.concatenate(xs["train"]).astype(np.float64), np.concatenate(ys["train"])
    x_test, y_test = np.concatenate(xs["test"]).astype(np.float64), np.concatenate(ys["test"])
    if len(y_train) < 2 or len(y_test) < 1:
        raise SpatialctlError("probe: too few patches with valid depth to fit and test")
    mean, std, w = fit_ridge(x_train, np.log(y_train), config.ridge)
    pred = np.exp(np.clip(predict(x_test, mean, std, w), -30, 30))
    test = depth_metrics(pred, y_test, align="none")
    train_pred = np.exp(np.clip(predict(x_train, mean, std, w), -30, 30))
    # The floor a probe must beat: the training set's mean depth (geometric, as the probe fits log depth, or
    # arithmetic, whichever scores better) predicted for every test patch. A probe that learnt nothing from the
    # features lands here, however small its AbsRel looks on a shallow scene; "beats" asks for 5% below it.
    floor = min(depth_metrics(np.full_like(y_test, c), y_test, align="none")["abs_rel"]
                for c in (np.exp(np.log(y_train).mean()), y_train.mean()))
    return {"abs_rel": test["abs_rel"], "delta1": test["delta1"], "n_test_patches": int(len(y_test)),
            "n_train_patches": int(len(y_train)), "train_abs_rel": depth_metrics(train_pred, y_train, "none")["abs_rel"],
            "mean_depth_abs_rel": floor, "beats_mean_depth": bool(test["abs_rel"] < 0.95 * floor)}


def run(config: ProbeConfig, scenes: list[str], progress: Callable[[Iterable], Iterable] | None = None
        ) -> jobs.Summary:
    """Load scenes and encoder(s); ``Summary.details`` is the report (base, and boosted with its AbsRel change).
    ``progress`` wraps the scenes read."""

    config.validate()
    urls = find_scenes(scenes)
    data_raw = {}
    for url in progress(urls) if progress else urls:
        s = store.open_scene(url)
        if s.n_frames < (2 if len(urls) == 1 else 1):
            raise SpatialctlError(f"{url}: the probe needs at least 2 frames")
        idx = sorted(set(np.linspace(0, s.n_frames - 1, min(config.max_frames, s.n_frames)).round().astype(int)))
        data_raw[url] = (s.read("frames", idx), s.read("depth", idx))
    parts = split(urls, {u: len(v[0]) for u, v in data_raw.items()}, config.train_fraction)
    data = {u: (*data_raw[u], *parts[u]) for u in urls}
    device = resolve_device(config.device)
    base, family, model_dir = boost.load_encoder(config.encoder)
    prep = boost.ImagePrep.for_model(base, family, model_dir, config.image_size)
    report = {"encoder": config.encoder, "family": family.name, "scenes": urls, "image_size": config.image_size,
              "frames": {"train": sum(len(v[2]) for v in data.values()), "test": sum(len(v[3]) for v in data.values())},
              "base": probe_model(base.to(device), family, prep, data, config, device)}
    if config.boost is not None:
        del base
        boosted = boost.load(config.encoder, config.boost).to(device)
        report["boost"] = os.path.abspath(config.boost)
        report["boosted"] = probe_model(boosted, family, prep, data, config, device)
        report["abs_rel_change"] = report["boosted"]["abs_rel"] - report["base"]["abs_rel"]
    for key in ("base", "boosted"):
        if key in report and not math.isfinite(report[key]["abs_rel"]):
            raise SpatialctlError(f"probe: {key} AbsRel is not finite")
    if config.out:
        io.write_json(config.out, report)
    return jobs.Summary(done=urls, outputs=[config.out] if config.out else [], details=report)
