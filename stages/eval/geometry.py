"""`eval geometry`: an estimate against ground truth — trajectory, depth and point cloud metrics.

The estimate is a scene store or a trajectory file (TUM, KITTI, EuRoC csv: `spatialctl.trajectory_io`); the
ground truth is a scene store (synth's, or any store in the schema), a trajectory file, or a dataset folder:

- TUM RGB-D: ``groundtruth.txt`` (``timestamp tx ty tz qx qy qz qw``, camera-to-world), ``depth.txt`` +
  ``depth/*.png`` (16-bit, metres × 5000), optional ``rgb.txt`` (its first time is the video's time 0);
- 7-Scenes: ``frame-000123.pose.txt`` (4×4 camera-to-world) + ``frame-000123.depth.png`` (16-bit millimetres,
  65535 = no depth), frames at ``gt_fps`` (30) so frame k is at time k/30 (a store reconstructed from a
  7-Scenes frame folder must carry the same frame-number times);
- EuRoC: a folder with ``mav0/state_groundtruth_estimate0/data.csv``.

Poses are matched by timestamp exactly as evo does (`geometry_metrics.associate`: ``max_dt`` 0.01 s, the
estimate's stamps shifted by ``time_offset``, 0 by default), so absolute stamps (TUM, EuRoC, a store made from
stamped frames) need no option. ``time_offset start`` makes both clocks start together (a store made from a
video, whose clock starts at 0, against absolute stamps). A KITTI file has no stamps: it pairs by index with an
estimate of the same length. TUM depth images (their own clock) meet estimate frames as TUM's associate.py pairs
rgb and depth. The trajectory alignment (Sim(3) by default) also carries the estimate's point
cloud into the truth's world before the point-cloud metrics.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from spatialctl import camera, geometry_metrics, jobs, store, trajectory_io
from spatialctl.camera import parse_intrinsics
from spatialctl.config import check_fields, opt, quiet_opt
from spatialctl.errors import SpatialctlError, UsageError
from spatialctl.stages.eval import report

log = logging.getLogger("spatialctl.eval")

# Published nominal intrinsics (fx, fy, cx, cy) for the 640x480 depth images of each dataset.
TUM_INTRINSICS = (525.0, 525.0, 319.5, 239.5)
SEVEN_SCENES_INTRINSICS = (585.0, 585.0, 320.0, 240.0)
TUM_DEPTH_FACTOR = 5000.0
# TUM's depth images have their own clock: frames meet them as the dataset's associate.py pairs rgb and depth
# (unique pairs, closest first, within its default 0.02 s), not by the trajectory rule.
TUM_DEPTH_MAX_DT = 0.02
SEVEN_SCENES_DEPTH_FACTOR = 1000.0


@dataclass
class GeometryEvalConfig:
    gt: str = opt(help="Ground truth: a scene store (e.g. synth's), a TUM RGB-D folder, a 7-Scenes sequence folder, "
                  "an EuRoC folder or a TUM/KITTI/EuRoC trajectory file.", runtime=True)
    out: str | None = opt(None, "Report folder. Default: ESTIMATE_geometry/ beside the input.", runtime=True)
    align: str = opt("sim3", "Trajectory alignment before ATE (and the scale of RPE): sim3, se3 or none "
                     "(evo -as / -a / no flag).", choices=("sim3", "se3", "none"))
    rpe_delta: float = opt(1.0, "Step of the relative pose error, in --rpe-unit.")
    rpe_unit: str = opt("frames", "Unit of --rpe-delta: frames or m (travelled path, evo's --delta_unit m).",
                        choices=geometry_metrics.RPE_UNITS)
    rpe_all_pairs: bool = opt(False, "RPE over every pair (i, i+delta) instead of evo's default consecutive "
                              "pairs (evo's --all_pairs).", flag="--rpe-all-pairs/--rpe-consecutive")
    depth_align: str = opt("median", "Depth alignment: none, median (per image, Eigen protocol), sequence (one "
                           "scale), scale_shift (per image).", choices=geometry_metrics.DEPTH_ALIGNS)
    min_depth: float = opt(1e-3, "Ground-truth depth must exceed this (metres); predictions are clamped to it.")
    max_depth: float | None = opt(None, "Ground-truth depth must be below this (metres); predictions are clamped "
                                  "to it. Default: no upper bound (KITTI: 80, NYU: 10).")
    depth_crop: str = opt("none", "Evaluation crop of the depth images: none, garg or eigen (KITTI protocols).",
                          choices=geometry_metrics.DEPTH_CROPS)
    max_dt: float = opt(0.01, "Largest time gap (s) when matching poses by timestamp (evo's --t_max_diff).")
    time_offset: str = opt("0", "Seconds added to the estimate's timestamps (evo's --t_offset), or 'start' to "
                           "make both clocks start together.")
    gt_fps: float = opt(30.0, "Frame rate of a 7-Scenes sequence.")
    depth_factor: float | None = opt(None, "Depth PNG units per metre. Default: 5000 (TUM), 1000 (7-Scenes).")
    gt_intrinsics: tuple[float, float, float, float] | None = opt(
        None, "fx,fy,cx,cy of the ground-truth depth images. Default: TUM 525,525,319.5,239.5; 7-Scenes "
        "585,585,320,240.", parse=lambda text: parse_intrinsics(text, "--gt-intrinsics"))
    max_points: int = opt(100_000, "Points sampled per cloud for accuracy/completeness.")
    pc_threshold: float | None = opt(0.05, "Distance for point-cloud precision/recall/F-score (truth units).")
    pc_max_dist: float | None = opt(None, "Leave nearest-neighbour distances of this or more out of accuracy "
                                    "and completeness (the DTU evaluation's outlier cut). Default: keep all.")
    seed: int = 0
    plots: bool = opt(True, "Write the top-down trajectory plot.", flag="--plots/--no-plots")
    quiet: bool = quiet_opt()

    def __post_init__(self):
        self.validate()  # library callers get errors at construction, as before

    def validate(self) -> None:
        check_fields(self)
        checks = [
            (self.rpe_delta > 0 and (self.rpe_unit != "frames" or float(self.rpe_delta).is_integer()),
             f"--rpe-delta {self.rpe_delta}: must be > 0, and whole in frames"),
            (self.max_dt >= 0, f"--max-dt {self.max_dt}: must be >= 0"),
            (self.min_depth >= 0 and (self.max_depth is None or self.max_depth > self.min_depth),
             f"--min-depth {self.min_depth} --max-depth {self.max_depth}: need 0 <= min < max"),
            (self.pc_max_dist is None or self.pc_max_dist > 0, f"--pc-max-dist {self.pc_max_dist}: must be > 0"),
        ]
        for ok, message in checks:
            if not ok:
                raise UsageError(message)
        if self.time_offset != "start":
            try:
                float(self.time_offset)
            except (TypeError, ValueError):
                raise UsageError(f"--time-offset {self.time_offset!r}: expected seconds or 'start'") from None


@dataclass
class GroundTruth:
    kind: str  # store | tum | 7scenes | tum-file | kitti | euroc
    times: np.ndarray | None  # (M,) seconds, on the clock `start` refers to; None: no stamps (pair by index)
    cam2world: np.ndarray  # (M,4,4)
    start: float | None  # the time of the video's first frame on this clock
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
    first = int(pose_files[0].name.split(".")[0].split("-")[1])  # the folder's first frame, even with a lost pose
    gt = GroundTruth("7scenes", np.asarray(indices) / config.gt_fps, np.stack(poses), first / config.gt_fps)
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
    if trajectory_io.is_trajectory(p):
        traj = trajectory_io.read_trajectory(p)
        kind = {"tum": "tum-file"}.get(traj.format, traj.format)
        start = None if traj.times is None else float(traj.times[0])
        return GroundTruth(kind, traj.times, traj.cam2world, start,
                           notes=["ground truth is a trajectory: no depth or point-cloud metrics"])
    if not p.is_dir():
        raise SpatialctlError(f"{path}: no such ground-truth store, trajectory file or folder")
    if (p / "groundtruth.txt").is_file():
        return read_tum(p, config)
    if any(p.glob("frame-*.pose.txt")):
        return read_7scenes(p, config)
    raise SpatialctlError(f"{path}: not a scene store, TUM folder (groundtruth.txt), 7-Scenes folder "
                          "(frame-*.pose.txt), EuRoC folder or trajectory file (TUM/KITTI .txt, EuRoC .csv)")


@dataclass
class Estimate:
    times: np.ndarray | None
    cam2world: np.ndarray
    store: store.SceneStore | None  # None: a trajectory file (trajectory metrics only)
    kind: str


def read_estimate(path: str) -> Estimate:
    p = Path(path)
    if "://" not in path and trajectory_io.is_trajectory(p):
        traj = trajectory_io.read_trajectory(p)
        return Estimate(traj.times, traj.cam2world, None, traj.format)
    s = store.open_scene(path)
    return Estimate(s.read("timestamps"), s.read("cam2world"), s, "store")


# ------------------------------------------------------------------------------------------ association


def match_poses(est: Estimate, gt: GroundTruth, config: GeometryEvalConfig, estimate: str, gt_path: str
                ) -> tuple[np.ndarray, np.ndarray, float | None]:
    """(estimate indices, truth indices, offset): by index when either side has no stamps (same length
    needed), else by timestamp as evo associates (`geometry_metrics.associate`)."""
    if est.times is None or gt.times is None:
        n_e, n_g = len(est.cam2world), len(gt.cam2world)
        if n_e != n_g:
            raise SpatialctlError(f"{estimate if est.times is None else gt_path}: a KITTI trajectory has no "
                                  f"timestamps, so it pairs by index; the estimate has {n_e} poses, the truth {n_g}")
        return np.arange(n_e), np.arange(n_g), None
    if config.time_offset == "start":
        offset = (gt.start if gt.start is not None else float(gt.times[0])) - float(est.times[0])
    else:
        offset = float(config.time_offset)
    gi, ei = geometry_metrics.associate(gt.times, est.times, config.max_dt, offset)
    if len(ei) < 3:
        lo_e, hi_e = float(est.times.min()) + offset, float(est.times.max()) + offset
        lo_g, hi_g = float(gt.times.min()), float(gt.times.max())
        hint = ("the clocks do not overlap: pass --time-offset start (both start together) or the offset in "
                "seconds" if hi_e < lo_g or lo_e > hi_g else "check --max-dt / --time-offset")
        if gt.kind == "7scenes":  # frame k is at k / gt_fps; a frame folder read without --fps is 1 s per frame
            hint += f"; 7-Scenes frame k is at k/{config.gt_fps:g} s (--gt-fps), so the estimate's frames must be too"
        raise SpatialctlError(f"{estimate}: only {len(ei)} poses match {gt_path} in time (estimate "
                              f"{lo_e:.3f}..{hi_e:.3f} s, truth {lo_g:.3f}..{hi_g:.3f} s, max_dt {config.max_dt} s);"
                              f" {hint}")
    return ei, gi, offset


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


def _trajectory(est_poses: np.ndarray, gt_poses: np.ndarray, config: GeometryEvalConfig) -> tuple[dict, object]:
    ate_main = geometry_metrics.ate(est_poses, gt_poses, config.align)
    trajectory = {
        "ate": ate_main.as_dict(),
        "ate_se3": geometry_metrics.ate(est_poses, gt_poses, "se3").as_dict(),
        "ate_sim3": geometry_metrics.ate(est_poses, gt_poses, "sim3").as_dict(),
    }
    scale = ate_main.alignment.scale if config.align == "sim3" else 1.0
    try:
        trajectory["rpe"] = geometry_metrics.rpe(est_poses, gt_poses, config.rpe_delta, scale=scale,
                                                 unit=config.rpe_unit, all_pairs=config.rpe_all_pairs).as_dict()
    except ValueError as e:
        trajectory["rpe"] = None
        trajectory["rpe_skipped"] = str(e)
    return trajectory, ate_main


def _depth(est: Estimate, gt: GroundTruth, q: np.ndarray, ei, gi, config: GeometryEvalConfig, notes: list,
           bar=lambda x: x) -> dict | None:
    if gt.load_depth is None or est.store is None or not est.store.has("depth"):
        if gt.load_depth is not None:
            notes.append("estimate has no depth: depth metrics skipped")
        return None
    if gt.depth_times is not None:  # TUM: depth has its own clock
        d_ei, d_gi = geometry_metrics.associate_unique(q, gt.depth_times, TUM_DEPTH_MAX_DT)
    else:
        d_ei, d_gi = ei, gi
    if not len(d_ei):
        notes.append("no depth image matches an estimate frame in time: depth metrics skipped")
        return None
    hw = est.store.hw
    g0 = gt.load_depth(int(d_gi[0]))
    if not math.isclose(g0.shape[1] / g0.shape[0], hw[1] / hw[0], rel_tol=0.02):
        notes.append(f"depth skipped: ground-truth aspect {g0.shape[1]}x{g0.shape[0]} differs from the "
                     f"estimate's {hw[1]}x{hw[0]}")
        return None
    preds, truths = [], []
    for e_i, g_i in bar(list(zip(d_ei, d_gi, strict=True))):
        preds.append(est.store.read("depth", [int(e_i)])[0].astype(np.float64))
        truths.append(_resize_nearest(gt.load_depth(int(g_i)), hw))
    out = geometry_metrics.depth_metrics(np.stack(preds), np.stack(truths), config.depth_align,
                                         min_depth=config.min_depth, max_depth=config.max_depth,
                                         crop=config.depth_crop)
    out["n_frames"] = int(len(d_ei))
    return out


def _pointcloud(est: Estimate, gt: GroundTruth, q: np.ndarray, ei, gi, gt_poses, al, config: GeometryEvalConfig
                ) -> dict | None:
    s = est.store
    if s is None or not s.has("pointmaps") or (gt.load_points is None and gt.load_depth is None):
        return None
    rng = np.random.default_rng(config.seed)
    pe = []
    for e_i in ei:
        pm = s.read("pointmaps", [int(e_i)])[0].reshape(-1, 3).astype(np.float64)
        valid = s.read("depth", [int(e_i)])[0].reshape(-1) > 0 if s.has("depth") else np.isfinite(pm).all(1)
        pe.append(pm[valid])
    pg = []
    if gt.load_points is not None:
        pg = [gt.load_points(int(g_i)) for g_i in gi]
    elif gt.depth_times is None:  # 7-Scenes: depth frames are the pose frames
        for g_i in gi:
            d = gt.load_depth(int(g_i))
            pm = camera.depth_to_pointmap(d, gt.intrinsics(int(g_i)), gt.cam2world[g_i]).reshape(-1, 3)
            pg.append(pm[d.reshape(-1) > 0])
    else:  # TUM: a depth image is matched to the pose nearest in time
        d_k, d_gi = geometry_metrics.associate_unique(q[ei], gt.depth_times, TUM_DEPTH_MAX_DT)
        for k, d_i in zip(d_k, d_gi, strict=True):
            d = gt.load_depth(int(d_i))
            pm = camera.depth_to_pointmap(d, gt.intrinsics(int(d_i)), gt_poses[k]).reshape(-1, 3)
            pg.append(pm[d.reshape(-1) > 0])
    if not (pe and pg and sum(map(len, pe)) and sum(map(len, pg))):
        return None
    cloud_e = _subsample(np.concatenate(pe), config.max_points, rng)
    cloud_e = al.scale * cloud_e @ al.rot.T + al.t
    cloud_g = _subsample(np.concatenate(pg), config.max_points, rng)
    try:
        return geometry_metrics.pointcloud_metrics(cloud_e, cloud_g, config.pc_threshold, config.pc_max_dist)
    except ValueError as e:
        raise SpatialctlError(f"{est.kind} point cloud: {e}") from None


def run(config: GeometryEvalConfig, estimate: str, progress: Callable[[Iterable], Iterable] | None = None
        ) -> jobs.Summary:
    """Metrics of `estimate` (a scene store or trajectory file) against ``config.gt``; the report goes to
    ``config.out`` (default: ESTIMATE_geometry/ beside the input). ``progress`` wraps the per-frame depth reads;
    ``Summary.details`` is the report dict."""
    config.validate()
    gt_path, out_dir = config.gt, config.out or report.default_out(estimate, "_geometry")
    report.check_out(out_dir)  # before any work: a user's file of a report's name is never replaced
    gt = read_truth(gt_path, config)
    est = read_estimate(estimate)
    notes = list(gt.notes)
    ei, gi, offset = match_poses(est, gt, config, estimate, gt_path)
    if len(ei) < 3:
        raise SpatialctlError(f"{estimate}: {len(ei)} poses; the trajectory metrics need at least 3")
    est_poses = est.cam2world[ei]
    gt_poses = gt.cam2world[gi]
    trajectory, ate_main = _trajectory(est_poses, gt_poses, config)
    summary: dict = {
        "kind": "geometry", "estimate": str(estimate), "estimate_kind": est.kind, "gt": str(gt_path),
        "gt_kind": gt.kind, "n_frames": int(len(ei)), "n_estimate_frames": int(len(est.cam2world)),
        "association": "by index" if offset is None else f"by timestamp (evo), max_dt {config.max_dt} s",
        "time_offset": offset, "estimate_scale": est.store.attrs.get("scale") if est.store is not None else None,
        "trajectory": trajectory,
    }
    q = None if offset is None else est.times + offset
    if offset is not None:
        depth = _depth(est, gt, q, ei, gi, config, notes, progress or (lambda x: x))
        if depth is not None:
            summary["depth"] = depth
        cloud = _pointcloud(est, gt, q, ei, gi, gt_poses, ate_main.alignment, config)
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
