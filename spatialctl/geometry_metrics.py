"""Reconstruction metrics: trajectories (ATE, RPE), depth (AbsRel, δ<1.25) and point clouds.

Conventions: poses are cam2world 4x4 matrices (N,4,4); positions are (N,3). Alignment maps the estimate
onto the ground truth: ``gt ≈ s · R · est + t`` (Umeyama 1991, least squares over positions).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.spatial import cKDTree

from spatialctl import camera


def umeyama(src: np.ndarray, dst: np.ndarray, with_scale: bool = True) -> tuple[float, np.ndarray, np.ndarray]:
    """`camera.umeyama` (``dst ≈ s · R @ src + t``) with its inputs checked; returns (s, R, t)."""
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    if src.shape != dst.shape or src.ndim != 2 or src.shape[1] != 3:
        raise ValueError(f"umeyama needs two (N,3) arrays of the same shape, got {src.shape} and {dst.shape}")
    if src.shape[0] < 3:
        raise ValueError("umeyama needs at least 3 points")
    if with_scale and np.ptp(src, axis=0).max() == 0:
        raise ValueError("umeyama: the source points are all the same point; scale is undefined")
    return camera.umeyama(src, dst, with_scale=with_scale)


def apply_sim3_to_poses(poses: np.ndarray, scale: float, rot: np.ndarray, t: np.ndarray) -> np.ndarray:
    """World-frame similarity applied to cam2world poses: rotations turn, centres move and scale."""
    out = np.array(poses, dtype=np.float64, copy=True)
    out[:, :3, :3] = rot @ out[:, :3, :3]
    out[:, :3, 3] = scale * out[:, :3, 3] @ rot.T + t
    return out


@dataclass
class TrajectoryAlignment:
    scale: float
    rot: np.ndarray
    t: np.ndarray


@dataclass
class ATEResult:
    rmse: float
    mean: float
    median: float
    max: float
    align: str
    alignment: TrajectoryAlignment
    aligned: np.ndarray = field(repr=False)  # estimate positions after alignment (N,3)
    errors: np.ndarray = field(repr=False)  # per-frame position error (N,)

    def as_dict(self) -> dict:
        return {"rmse": self.rmse, "mean": self.mean, "median": self.median, "max": self.max,
                "align": self.align, "scale": self.alignment.scale}


def _positions(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if x.ndim == 3 and x.shape[1:] == (4, 4):
        return x[:, :3, 3]
    if x.ndim == 2 and x.shape[1] == 3:
        return x
    raise ValueError(f"expected (N,4,4) poses or (N,3) positions, got shape {x.shape}")


def align_trajectory(est: np.ndarray, gt: np.ndarray, align: str = "sim3") -> TrajectoryAlignment:
    """Alignment of estimate onto truth from positions: 'sim3' (Umeyama with scale), 'se3', or 'none'."""
    pe, pg = _positions(est), _positions(gt)
    if pe.shape != pg.shape:
        raise ValueError(f"estimate has {pe.shape[0]} positions, ground truth {pg.shape[0]}")
    if align == "none":
        return TrajectoryAlignment(1.0, np.eye(3), np.zeros(3))
    if align not in ("sim3", "se3"):
        raise ValueError(f"align must be sim3, se3 or none, not {align!r}")
    s, r, t = umeyama(pe, pg, with_scale=align == "sim3")
    return TrajectoryAlignment(s, r, t)


def ate(est: np.ndarray, gt: np.ndarray, align: str = "sim3") -> ATEResult:
    """Absolute Trajectory Error of camera positions after the chosen alignment (Sturm et al., TUM RGB-D)."""
    pe, pg = _positions(est), _positions(gt)
    al = align_trajectory(pe, pg, align)
    aligned = al.scale * pe @ al.rot.T + al.t
    err = np.linalg.norm(aligned - pg, axis=1)
    return ATEResult(
        rmse=float(np.sqrt((err**2).mean())), mean=float(err.mean()), median=float(np.median(err)),
        max=float(err.max()), align=align, alignment=al, aligned=aligned, errors=err,
    )


def associate(ref_times: np.ndarray, est_times: np.ndarray, max_diff: float = 0.01, offset: float = 0.0
              ) -> tuple[np.ndarray, np.ndarray]:
    """(ref indices, est indices) of poses matched by time, as evo's `sync.associate_trajectories`: every stamp
    of the shorter trajectory (the estimate on a tie) takes the nearest stamp of the longer one (the first on a
    tie), kept when within `max_diff` seconds after `offset` is added to the estimate's stamps. As in evo, a
    stamp of the longer trajectory may serve two stamps of the shorter one."""
    ref = np.asarray(ref_times, dtype=np.float64)
    est = np.asarray(est_times, dtype=np.float64) + offset
    est_longer = len(est) > len(ref)
    short, long_ = (ref, est) if est_longer else (est, ref)
    idx_short, idx_long = [], []
    for i, t in enumerate(short):
        diffs = np.abs(long_ - t)
        k = int(np.argmin(diffs))
        if diffs[k] <= max_diff:
            idx_short.append(i)
            idx_long.append(k)
    a, b = np.asarray(idx_short, dtype=int), np.asarray(idx_long, dtype=int)
    return (a, b) if est_longer else (b, a)


def associate_unique(times_a: np.ndarray, times_b: np.ndarray, max_diff: float = 0.02
                     ) -> tuple[np.ndarray, np.ndarray]:
    """(a indices, b indices) paired as the TUM RGB-D tools' associate.py pairs rgb and depth images: all pairs
    closer than `max_diff` (its default 0.02 s), closest first, each stamp used at most once; sorted by a."""
    a = np.asarray(times_a, dtype=np.float64)
    b = np.asarray(times_b, dtype=np.float64)
    diff = np.abs(a[:, None] - b[None, :])
    ia, ib = np.nonzero(diff < max_diff)  # strict, as associate.py
    order = np.lexsort((ib, ia, diff[ia, ib]))
    used_a, used_b, pairs = set(), set(), []
    for k in order:
        i, j = int(ia[k]), int(ib[k])
        if i not in used_a and j not in used_b:
            used_a.add(i)
            used_b.add(j)
            pairs.append((i, j))
    pairs.sort()
    return np.asarray([p[0] for p in pairs], dtype=int), np.asarray([p[1] for p in pairs], dtype=int)


RPE_UNITS = ("frames", "m")


def rpe_pairs(poses: np.ndarray, delta: float, unit: str = "frames", all_pairs: bool = False,
              rel_tol: float = 0.1) -> list[tuple[int, int]]:
    """Index pairs (i, j) of the RPE, as evo's `id_pairs_from_delta` picks them from `poses`.

    ``frames``: consecutive pairs of the indices 0, δ, 2δ, ... (evo's default), or with `all_pairs` every
    (i, i+δ). ``m``: consecutive pairs of the first pose and the poses at which the travelled path reaches δ
    metres again (evo's default; evo 1.38), or with `all_pairs` for each i the pose whose path distance from i is nearest δ, kept
    within ``rel_tol·δ``.
    """
    n = len(poses)
    if unit == "frames":
        step = int(delta)
        if step != delta or step < 1:
            raise ValueError(f"an RPE delta in frames must be a whole number >= 1, not {delta}")
        if all_pairs:
            return [(i, i + step) for i in range(n - step)]
        ids = list(range(0, n, step))
        return list(zip(ids[:-1], ids[1:], strict=True))
    if unit != "m":
        raise ValueError(f"RPE delta unit must be one of {RPE_UNITS}, not {unit!r}")
    if not delta > 0:
        raise ValueError(f"an RPE delta in metres must be > 0, not {delta}")
    pos = np.asarray(poses)[:, :3, 3]
    steps = np.linalg.norm(np.diff(pos, axis=0), axis=1)
    if all_pairs:
        dist = np.concatenate([[0.0], np.cumsum(steps)])
        pairs = []
        for i in range(n - 1):
            ahead = dist[i + 1:] - dist[i]
            k = int(np.argmin(np.abs(ahead - delta)))
            if abs(ahead[k] - delta) <= delta * rel_tol:
                pairs.append((i, i + 1 + k))
        return pairs
    ids, path = [0], 0.0
    for i in range(1, n):
        path += float(steps[i - 1])
        if path >= delta:
            ids.append(i)
            path = 0.0
    return list(zip(ids[:-1], ids[1:], strict=True))


@dataclass
class RPEResult:
    trans_rmse: float
    trans_mean: float
    trans_median: float
    rot_rmse_deg: float
    rot_mean_deg: float
    delta: float
    delta_unit: str
    all_pairs: bool
    scale: float
    n_pairs: int

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def rpe(est_poses: np.ndarray, gt_poses: np.ndarray, delta: float = 1, scale: float | str = 1.0,
        unit: str = "frames", all_pairs: bool = False) -> RPEResult:
    """Relative Pose Error over the pairs `rpe_pairs` picks from the (scaled) estimate, as evo_rpe does.

    For each pair, E = (Q_i⁻¹ Q_j)⁻¹ (P_i⁻¹ P_j) with Q the truth and P the estimate (cam2world); the
    translation error is |trans(E)| and the rotation error the angle of rot(E). `scale` multiplies the
    estimate's translations first (an up-to-scale estimate needs it): a number, or "sim3" to take the scale
    of the Umeyama Sim(3) alignment of the positions (evo_rpe -as; a rigid alignment changes no RPE).
    """
    p = np.asarray(est_poses, dtype=np.float64)
    q = np.asarray(gt_poses, dtype=np.float64)
    if p.shape != q.shape or p.ndim != 3 or p.shape[1:] != (4, 4):
        raise ValueError(f"rpe needs two (N,4,4) pose arrays of the same shape, got {p.shape} and {q.shape}")
    s = align_trajectory(p, q, "sim3").scale if scale == "sim3" else float(scale)
    p = p.copy()
    p[:, :3, 3] *= s
    pairs = rpe_pairs(p, delta, unit, all_pairs)
    if not pairs:
        raise ValueError(f"RPE delta {delta} {unit} gives no pose pair among {len(p)} poses")
    i, j = np.asarray(pairs).T
    rel_p = np.linalg.inv(p[i]) @ p[j]
    rel_q = np.linalg.inv(q[i]) @ q[j]
    e = np.linalg.inv(rel_q) @ rel_p
    t_err = np.linalg.norm(e[:, :3, 3], axis=1)
    r_err = np.degrees(camera.rotation_angle(e[:, :3, :3]))
    return RPEResult(
        trans_rmse=float(np.sqrt((t_err**2).mean())), trans_mean=float(t_err.mean()),
        trans_median=float(np.median(t_err)), rot_rmse_deg=float(np.sqrt((r_err**2).mean())),
        rot_mean_deg=float(r_err.mean()), delta=float(delta), delta_unit=unit, all_pairs=bool(all_pairs),
        scale=float(s), n_pairs=int(e.shape[0]),
    )


# ------------------------------------------------------------------------------------------------ depth

DEPTH_ALIGNS = ("none", "median", "sequence", "scale_shift")
DEPTH_CROPS = ("none", "garg", "eigen")
# Crops as fractions of (top, bottom, left, right) of the ground-truth image: Garg et al. 2016 (monodepth2's
# KITTI Eigen-split evaluation) and Eigen et al. 2014 (as BTS/AdaBins apply it).
_CROPS = {"garg": (0.40810811, 0.99189189, 0.03594771, 0.96405229),
          "eigen": (0.3324324, 0.91351351, 0.0359477, 0.96405229)}


def depth_eval_mask(gt: np.ndarray, min_depth: float = 1e-3, max_depth: float | None = None,
                    crop: str = "none") -> np.ndarray:
    """Pixels that count, per image (N,H,W): ``min_depth < gt < max_depth`` (strict, as monodepth2), finite,
    inside the crop."""
    gt = np.asarray(gt, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        mask = np.isfinite(gt) & (gt > min_depth)
        if max_depth is not None:
            mask &= gt < max_depth
    if crop != "none":
        if crop not in _CROPS or gt.ndim < 2:
            raise ValueError(f"depth crop must be one of {DEPTH_CROPS}, not {crop!r}")
        h, w = gt.shape[-2:]
        top, bottom, left, right = _CROPS[crop]
        keep = np.zeros((h, w), dtype=bool)
        keep[int(top * h):int(bottom * h), int(left * w):int(right * w)] = True
        mask &= keep
    return mask


def depth_metrics(pred: np.ndarray, gt: np.ndarray, align: str = "median", *, min_depth: float = 1e-3,
                  max_depth: float | None = None, crop: str = "none") -> dict:
    """Per-image depth errors averaged over images: the Eigen et al. protocol as monodepth2 evaluates it.

    Per image: the evaluated pixels are `depth_eval_mask`; the prediction there is aligned (``none``;
    ``median``: × median(gt)/median(pred) over the evaluated pixels of that image; ``scale_shift``: least
    squares a·pred + b over them; ``sequence``: one median ratio over the evaluated pixels of all images, the
    multi-view protocol that keeps the frames' relative scale), then clamped to [min_depth, max_depth]; then
    AbsRel, SqRel, RMSE, RMSE log and δ < 1.25, 1.25², 1.25³ of that image. The reported value of each is the
    mean over images with at least one evaluated pixel. A non-finite prediction counts as 0 (then clamped).
    """
    pred = np.asarray(pred, dtype=np.float64)
    gt = np.asarray(gt, dtype=np.float64)
    if pred.shape != gt.shape:
        raise ValueError(f"depth shapes differ: prediction {pred.shape}, ground truth {gt.shape}")
    if align not in DEPTH_ALIGNS:
        raise ValueError(f"depth align must be one of {DEPTH_ALIGNS}, not {align!r}")
    if pred.ndim < 3:  # one image (or one flat set of samples)
        pred, gt = pred[None], gt[None]
    mask = depth_eval_mask(gt, min_depth, max_depth, crop)
    if not mask.any():
        raise ValueError("depth_metrics: no pixel has a ground-truth depth inside the evaluated range")
    pred = np.where(np.isfinite(pred), pred, 0.0)
    seq_ratio = None
    if align == "sequence":
        seq_ratio = np.median(gt[mask]) / np.median(pred[mask])
    rows = []
    for i in range(pred.shape[0]):
        m = mask[i]
        if not m.any():
            continue
        d, g = pred[i][m], gt[i][m]
        if align == "median":
            d = d * (np.median(g) / np.median(d))
        elif align == "sequence":
            d = d * seq_ratio
        elif align == "scale_shift":
            (a, b), *_ = np.linalg.lstsq(np.stack([d, np.ones_like(d)], axis=1), g, rcond=None)
            d = a * d + b
        d = np.clip(d, min_depth, max_depth if max_depth is not None else np.inf)
        thresh = np.maximum(g / d, d / g)
        rows.append([
            np.mean(np.abs(g - d) / g), np.mean((g - d) ** 2 / g), np.sqrt(np.mean((g - d) ** 2)),
            np.sqrt(np.mean((np.log(g) - np.log(d)) ** 2)),
            np.mean(thresh < 1.25), np.mean(thresh < 1.25**2), np.mean(thresh < 1.25**3),
        ])
    mean = np.mean(rows, axis=0)
    keys = ("abs_rel", "sq_rel", "rmse", "rmse_log", "delta1", "delta2", "delta3")
    out = {k: float(v) for k, v in zip(keys, mean, strict=True)}
    out.update({"n_images": len(rows), "n_pixels": int(mask.sum()), "align": align, "min_depth": min_depth,
                "max_depth": max_depth, "crop": crop, "averaging": "per image, then mean over images"})
    return out


# ------------------------------------------------------------------------------------------ point cloud


CHAMFER_FORM = "(accuracy + completeness) / 2 of mean unsquared nearest-neighbour distances (DTU 'overall')"


def pointcloud_metrics(pred: np.ndarray, gt: np.ndarray, threshold: float | None = None,
                       max_dist: float | None = None) -> dict:
    """Accuracy (mean distance from each predicted point to its nearest truth point), completeness (truth to
    prediction) and Chamfer = (accuracy + completeness) / 2, the DTU evaluation's "overall"; with `max_dist`,
    distances of `max_dist` or more are left out of each mean as outliers (the DTU evaluation's cut, 20 mm
    there); with `threshold`, precision/recall/F-score over all points too."""
    pred = np.asarray(pred, dtype=np.float64).reshape(-1, 3)
    gt = np.asarray(gt, dtype=np.float64).reshape(-1, 3)
    pred = pred[np.isfinite(pred).all(1)]
    gt = gt[np.isfinite(gt).all(1)]
    if len(pred) == 0 or len(gt) == 0:
        raise ValueError(f"pointcloud_metrics: empty cloud ({len(pred)} predicted, {len(gt)} truth points)")
    d_acc, _ = cKDTree(gt).query(pred)
    d_comp, _ = cKDTree(pred).query(gt)
    out = {"chamfer_form": CHAMFER_FORM, "n_pred": int(len(pred)), "n_gt": int(len(gt))}
    kept_acc, kept_comp = d_acc, d_comp
    if max_dist is not None:
        kept_acc, kept_comp = d_acc[d_acc < max_dist], d_comp[d_comp < max_dist]
        if not len(kept_acc) or not len(kept_comp):
            raise ValueError(f"pointcloud_metrics: every distance is beyond max_dist {max_dist}")
        out.update({"max_dist": float(max_dist), "accuracy_inliers": float(len(kept_acc) / len(d_acc)),
                    "completeness_inliers": float(len(kept_comp) / len(d_comp))})
    out.update({
        "accuracy": float(kept_acc.mean()), "accuracy_median": float(np.median(kept_acc)),
        "completeness": float(kept_comp.mean()), "completeness_median": float(np.median(kept_comp)),
        "chamfer": float((kept_acc.mean() + kept_comp.mean()) / 2),
    })
    if threshold is not None:
        precision = float((d_acc < threshold).mean())
        recall = float((d_comp < threshold).mean())
        f = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
        out.update({"threshold": float(threshold), "precision": precision, "recall": recall, "fscore": f})
    return out
