"""`eval geometry`: an estimated scene store against ground truth — trajectory, depth and point cloud metrics.

Ground truth is a scene store (synth's, or any store in the schema) or a dataset folder:

- TUM RGB-D: ``groundtruth.txt`` (``timestamp tx ty tz qx qy qz qw``, camera-to-world), ``depth.txt`` +
  ``depth/*.png`` (16-bit, metres × 5000), optional ``rgb.txt`` (its first time is the video's time 0);
- 7-Scenes: ``frame-000123.pose.txt`` (4×4 camera-to-world) + ``frame-000123.depth.png`` (16-bit millimetres,
  65535 = no depth), frames at ``gt_fps`` (30) so frame k is at time k/30.

Estimate frames are matched to ground truth by time (nearest, within ``max_dt``) after shifting the estimate's
clock by ``time_offset`` (default: both clocks start together). The trajectory alignment (Sim(3) by default)
also carries the estimate's point cloud into the truth's world before the point-cloud metrics.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from spatialctl import camera, geometry_metrics, jobs, store
from spatialctl.camera import parse_intrinsics
from spatialctl.config import check_fields, opt, quiet_opt
from spatialctl.errors import SpatialctlError, UsageError
from spatialctl.stages.eval import report

log = logging.getLogger("spatialctl.eval")

# Published nominal intrinsics (fx, fy, cx, cy) for the 640x480 depth images of each dataset.
TUM_INTRINSICS = (525.0, 525.0, 319.5, 239.5)
SEVEN_SCENES_INTRINSICS = (585.0, 585.0, 320.0, 240.0)
TUM_DEPTH_FACTOR = 5000.0
SEVEN_SCENES_DEPTH_FACTOR = 1000.0


@dataclass
class GeometryEvalConfig:
    gt: str = opt(help="Ground truth: a scene store (e.g. synth's), a TUM RGB-D folder or a 7-Scenes sequence folder.",
                  runtime=True)
    out: str | None = opt(None, "Report folder. Default: ESTIMATE_geometry/ beside the store.", runtime=True)
    align: str = opt("sim3", "Trajectory alignment before ATE: sim3, se3 or none.", choices=("sim3", "se3", "none"))
    depth_align: str = opt("median", "Depth alignment: none, median (per frame), sequence (one scale), scale_shift "
                           "(per frame).", choices=geometry_metrics.DEPTH_ALIGNS)
    rpe_delta: int = opt(1, "Frame gap of the relative pose error.")
    max_depth: float | None = opt(None, "Ignore ground-truth depth beyond this (metres).")
    max_dt: float = opt(0.02, "Largest time gap (s) when matching frames to ground truth.")
    # seconds added to estimate times; None: the clocks start together
    time_offset: float | None = opt(None, "Seconds added to the estimate's timestamps to reach the truth's clock. "
                                    "Default: clocks start together.")
    gt_fps: float = opt(30.0, "Frame rate of a 7-Scenes sequence.")
    depth_factor: float | None = opt(None, "Depth PNG units per metre. Default: 5000 (TUM), 1000 (7-Scenes).")
    gt_intrinsics: tuple[float, float, float, float] | None = opt(
        None, "fx,fy,cx,cy of the ground-truth depth images. Default: TUM 525,525,319.5,239.5; 7-Scenes "
        "585,585,320,240.", parse=lambda text: parse_intrinsics(text, "--gt-intrinsics"))
    max_points: int = opt(100_000, "Points sampled per cloud for accuracy/completeness.")
    pc_threshold: float | None = opt(0.05, "Distance for point-cloud precision/recall/F-score.")
    seed: int = 0
    plots: bool = opt(True, "Write the top-down trajectory plot.", flag="--plots/--no-plots")
    quiet: bool = quiet_opt()

    def __post_init__(self):
        self.validate()  # library callers get errors at construction, as before

    def validate(self) -> None:
        check_fields(self)
        if self.rpe_delta < 1:
            raise UsageError(f"--rpe-delta {self.rpe_delta}: must be >= 1")


@dataclass
class GroundTruth:
    kind: str  # store | tum | 7scenes
    times: np.ndarray  # (M,) seconds, on the clock `start` refers to
    cam2world: np.ndarray  # (M,4,4)
    start: float  # the time of the video's first frame on this clock
    depth_times: np.ndarray | None = None  # when depth has its own clock (TUM); else depth follows `times`
    load_depth: Callable[[int], np.ndarray] | None = None  # index into depth_times (or times) -> (h,w) metres
    intrinsics: Callable[[int], np.ndarray] | None = None  # same index -> 3x3 for the depth image
    load_points: Callable[[int], np.ndarray] | None = None  # same index -> (P,3) world points
    world_up: np.ndarray | None = None
    notes: list[str] = field(default_factory=list)


# ---------------------------------------------------------------------------------------------- readers


def _read_png16(path: Path) -> np.ndarray:
    from PIL import Image

    try:
        with Image.open(path) as im:
            arr = np.asarray(im)
    except OSError as e:
        raise SpatialctlError(f"{path}: unreadable depth image ({e})") from None
    if arr.dtype not in (np.uint16, np.int32, np.uint8) or arr.ndim != 2:
        raise SpatialctlError(f"{path}: expected a 16-bit single-channel depth PNG, got {arr.dtype} {arr.shape}")
    return arr


def _table(path: Path, width: int) -> list[list[str]]:
    rows = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split()
        if len(parts) < width:
            raise SpatialctlError(f"{path}: line {n} has {len(parts)} fields, expected {width}")
        rows.append(parts)
    if not rows:
        raise SpatialctlError(f"{path}: no entries")
    return rows


def _k(values) -> np.ndarray:
    return camera.intrinsics_matrix(*values)


def read_tum(folder: Path, config: GeometryEvalConfig) -> GroundTruth:
    rows = _table(folder / "groundtruth.txt", 8)
    try:
        vals = np.array([[float(x) for x in r[:8]] for r in rows])
    except ValueError:
        raise SpatialctlError(f"{folder / 'groundtruth.txt'}: non-numeric entries") from None
    poses = np.tile(np.eye(4), (len(vals), 1, 1))
    for i, (_, tx, ty, tz, qx, qy, qz, qw) in enumerate(vals):
        poses[i, :3, :3] = camera.quaternion_to_rotation([qw, qx, qy, qz])
        poses[i, :3, 3] = [tx, ty, tz]
    start = float(vals[0, 0])
    if (folder / "rgb.txt").is_file():
        start = float(_table(folder / "rgb.txt", 2)[0][0])
    gt = GroundTruth("tum", vals[:, 0], poses, start)
    if (folder / "depth.txt").is_file():
        drows = _table(folder / "depth.txt", 2)
        files = [folder / r[1] for r in drows]
        factor = config.depth_factor or TUM_DEPTH_FACTOR
        gt.depth_times = np.array([float(r[0]) for r in drows])
        gt.load_depth = lambda i: _read_png16(files[i]).astype(np.float64) / factor
        k = _k(config.gt_intrinsics or TUM_INTRINSICS)
        gt.intrinsics = lambda i: k
    else:
        gt.notes.append("no depth.txt: depth and point-cloud metrics skipped")
    return gt


def read_7scenes(folder: Path, config: GeometryEvalConfig) -> GroundTruth:
    pose_files = sorted(folder.glob("frame-*.pose.txt"))
    poses, indices = [], []
    for p in pose_files:
        try:
            m = np.loadtxt(p).reshape(4, 4)
        except ValueError:
            raise SpatialctlError(f"{p}: not a 4x4 pose matrix") from None
        if not np.isfinite(m).all():  # a few 7-Scenes frames carry inf for a lost pose
            continue
        poses.append(m)
        indices.append(int(p.name.split(".")[0].split("-")[1]))
    if len(poses) < 3:
        raise SpatialctlError(f"{folder}: fewer than 3 valid frame-*.pose.txt files")
    factor = config.depth_factor or SEVEN_SCENES_DEPTH_FACTOR
    gt = GroundTruth("7scenes", np.asarray(indices) / config.gt_fps, np.stack(poses), 0.0)
    depth_files = [folder / f"frame-{i:06d}.depth.png" for i in indices]
    if all(f.is_file() for f in depth_files):
        def load(i: int) -> np.ndarray:
            raw = _read_png16(depth_files[i]).astype(np.float64)
            raw[raw >= 65535] = 0.0  # 7-Scenes marks missing depth with 65535
            return raw / factor

        gt.load_depth = load
        k = _k(config.gt_intrinsics or SEVEN_SCENES_INTRINSICS)
        gt.intrinsics = lambda i: k
    else:
        gt.notes.append("some frame-*.depth.png missing: depth and point-cloud metrics skipped")
    return gt


def read_store_truth(url: str) -> GroundTruth:
    s = store.open_scene(url)
    times = s.read("timestamps")
    gt = GroundTruth("store", times, s.read("cam2world"), float(times[0]))
    if s.has("depth"):
        gt.load_depth = lambda i: s.read("depth", [i])[0].astype(np.float64)
        gt.intrinsics = lambda i: s.read("intrinsics", [i])[0]
    if s.has("pointmaps") and s.has("depth"):
        def points(i: int) -> np.ndarray:
            pm = s.read("pointmaps", [i])[0].reshape(-1, 3)
            return pm[s.read("depth", [i])[0].reshape(-1) > 0]

        gt.load_points = points
    up = s.attrs.get("world_up")
    gt.world_up = np.asarray(up, dtype=np.float64) if up is not None else None
    return gt


def read_truth(path: str, config: GeometryEvalConfig) -> GroundTruth:
    p = Path(path)
    if "://" in path or (p / "zarr.json").is_file():
        return read_store_truth(path)
    if not p.is_dir():
        raise SpatialctlError(f"{path}: no such ground-truth store or folder")
    if (p / "groundtruth.txt").is_file():
        return read_tum(p, config)
    if any(p.glob("frame-*.pose.txt")):
        return read_7scenes(p, config)
    raise SpatialctlError(f"{path}: not a scene store, TUM folder (groundtruth.txt) or 7-Scenes folder "
                          "(frame-*.pose.txt)")


# ------------------------------------------------------------------------------------------ association


def associate(query: np.ndarray, ref: np.ndarray, max_dt: float) -> tuple[np.ndarray, np.ndarray]:
    """(query indices, ref indices) of nearest-time pairs within `max_dt`; closest pairs first, each ref used
    at most once (TUM's associate rule); sorted by query index."""
    order = np.argsort(ref)
    rs = ref[order]
    pos = np.searchsorted(rs, query)
    lo = np.clip(pos - 1, 0, len(rs) - 1)
    hi = np.clip(pos, 0, len(rs) - 1)
    pick = np.where(np.abs(query - rs[lo]) <= np.abs(query - rs[hi]), lo, hi)
    dt = np.abs(query - rs[pick])
    pairs, used = [], set()
    for i in np.argsort(dt, kind="stable"):
        r = int(order[pick[i]])
        if dt[i] <= max_dt and r not in used:
            used.add(r)
            pairs.append((int(i), r))
    pairs.sort()
    return np.asarray([p[0] for p in pairs], dtype=int), np.asarray([p[1] for p in pairs], dtype=int)


# ---------------------------------------------------------------------------------------------- helpers


def _resize_nearest(depth: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    if depth.shape == hw:
        return depth
    from PIL import Image

    img = Image.fromarray(depth.astype(np.float32), mode="F")
    return np.asarray(img.resize((hw[1], hw[0]), Image.NEAREST), dtype=np.float64)


def _subsample(points: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    if len(points) <= n:
        return points
    return points[rng.choice(len(points), n, replace=False)]


def run(config: GeometryEvalConfig, estimate: str, progress: Callable[[Iterable], Iterable] | None = None
        ) -> jobs.Summary:
    """Measure the store ``estimate`` against ``config.gt``; the report goes to ``config.out`` (default:
    ESTIMATE_geometry/ beside the store). ``progress`` wraps the per-frame depth and point-cloud reads;
    ``Summary.details`` is the report dict."""
    config.validate()
    bar = progress or (lambda x: x)
    gt_path, out_dir = config.gt, config.out or report.default_out(estimate, "_geometry")
    est = store.open_scene(estimate)
    gt = read_truth(gt_path, config)
    notes = list(gt.notes)
    t_est = est.read("timestamps")
    offset = config.time_offset if config.time_offset is not None else gt.start - float(t_est[0])
    q = t_est + offset
    ei, gi = associate(q, gt.times, config.max_dt)
    if len(ei) < 3:
        raise SpatialctlError(f"{estimate}: only {len(ei)} frames match {gt_path} in time (max_dt {config.max_dt} s);"
                              " check --time-offset / --max-dt")
    est_poses, gt_poses = est.read("cam2world", ei), gt.cam2world[gi]
    ate_main, trajectory = trajectory_metrics(est_poses, gt_poses, config)
    summary: dict = {
        "kind": "geometry", "estimate": str(estimate), "gt": str(gt_path), "gt_kind": gt.kind,
        "n_frames": int(len(ei)), "n_estimate_frames": int(est.n_frames), "time_offset": float(offset),
        "estimate_scale": est.attrs.get("scale"), "trajectory": trajectory,
    }
    if gt.load_depth is not None and est.has("depth"):
        depth = depth_summary(est, gt, q, (ei, gi), config, notes, bar)
        if depth is not None:
            summary["depth"] = depth
    elif gt.load_depth is not None:
        notes.append("estimate has no depth: depth metrics skipped")
    if est.has("pointmaps") and (gt.load_points is not None or gt.load_depth is not None):
        cloud = pointcloud_summary(est, gt, q, (ei, gi), ate_main.alignment, config, bar)
        if cloud is not None:
            summary["pointcloud"] = cloud
    summary["notes"] = notes
    for n in notes:
        log.warning(n)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files = report.write_geometry_report(summary, out, ate_main.aligned, gt_poses[:, :3, 3], gt.world_up,
                                         plots=config.plots)
    return jobs.Summary(done=[str(estimate)], outputs=files, details=summary)


def trajectory_metrics(est_poses: np.ndarray, gt_poses: np.ndarray, config: GeometryEvalConfig):
    """(the ATE under ``config.align``, the trajectory section: ATE under each alignment and RPE)."""
    ate_main = geometry_metrics.ate(est_poses, gt_poses, config.align)
    trajectory = {
        "ate": ate_main.as_dict(),
        "ate_se3": geometry_metrics.ate(est_poses, gt_poses, "se3").as_dict(),
        "ate_sim3": geometry_metrics.ate(est_poses, gt_poses, "sim3").as_dict(),
    }
    if len(est_poses) > config.rpe_delta:
        scale = ate_main.alignment.scale if config.align == "sim3" else 1.0
        trajectory["rpe"] = geometry_metrics.rpe(est_poses, gt_poses, config.rpe_delta, scale=scale).as_dict()
    return ate_main, trajectory


def depth_summary(est, gt: GroundTruth, q: np.ndarray, matched, config: GeometryEvalConfig, notes: list[str],
                  bar) -> dict | None:
    """Depth metrics over frames matched on the depth clock (TUM) or the pose clock; None (with a note) when
    nothing can be compared."""
    ei, gi = matched
    d_ei, d_gi = associate(q, gt.depth_times, config.max_dt) if gt.depth_times is not None else (ei, gi)
    if not len(d_ei):
        return None
    hw = est.hw
    g0 = gt.load_depth(int(d_gi[0]))
    if not math.isclose(g0.shape[1] / g0.shape[0], hw[1] / hw[0], rel_tol=0.02):
        notes.append(f"depth skipped: ground-truth aspect {g0.shape[1]}x{g0.shape[0]} differs from the "
                     f"estimate's {hw[1]}x{hw[0]}")
        return None
    preds, truths = [], []
    for e_i, g_i in bar(list(zip(d_ei, d_gi, strict=True))):
        preds.append(est.read("depth", [int(e_i)])[0].astype(np.float64))
        truths.append(_resize_nearest(gt.load_depth(int(g_i)), hw))
    out = geometry_metrics.depth_metrics(np.stack(preds), np.stack(truths), config.depth_align, config.max_depth)
    out["n_frames"] = int(len(d_ei))
    return out


def _truth_points(gt: GroundTruth, q: np.ndarray, ei: np.ndarray, gi: np.ndarray, config: GeometryEvalConfig,
                  bar) -> list[np.ndarray]:
    """The truth's world points: stored pointmaps, else depth lifted with the truth's poses."""
    if gt.load_points is not None:
        return [gt.load_points(int(g_i)) for g_i in bar(list(gi))]
    if gt.depth_times is None:  # 7-Scenes: depth frames are the pose frames
        pairs = [(int(g_i), gt.cam2world[g_i]) for g_i in gi]
    else:  # TUM: a depth image is matched to the pose nearest in time
        d_ei, d_gi = associate(q[ei], gt.depth_times, config.max_dt)
        pairs = [(int(d_i), gt.cam2world[gi[k]]) for k, d_i in zip(d_ei, d_gi, strict=True)]
    out = []
    for index, cam2world in bar(pairs):
        d = gt.load_depth(index)
        pm = camera.depth_to_pointmap(d, gt.intrinsics(index), cam2world).reshape(-1, 3)
        out.append(pm[d.reshape(-1) > 0])
    return out


def pointcloud_summary(est, gt: GroundTruth, q: np.ndarray, matched, alignment, config: GeometryEvalConfig,
                       bar) -> dict | None:
    """Accuracy / completeness of the estimate's pointmaps, carried into the truth's world by the trajectory
    alignment; None when either cloud is empty."""
    ei, gi = matched
    rng = np.random.default_rng(config.seed)
    pe = []
    for e_i in bar(list(ei)):
        pm = est.read("pointmaps", [int(e_i)])[0].reshape(-1, 3).astype(np.float64)
        valid = est.read("depth", [int(e_i)])[0].reshape(-1) > 0 if est.has("depth") else np.isfinite(pm).all(1)
        pe.append(pm[valid])
    pg = _truth_points(gt, q, ei, gi, config, bar)
    if not (pe and pg and sum(map(len, pe)) and sum(map(len, pg))):
        return None
    cloud_e = _subsample(np.concatenate(pe), config.max_points, rng)
    cloud_e = alignment.scale * cloud_e @ alignment.rot.T + alignment.t
    cloud_g = _subsample(np.concatenate(pg), config.max_points, rng)
    return geometry_metrics.pointcloud_metrics(cloud_e, cloud_g, config.pc_threshold)
