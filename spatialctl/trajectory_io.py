"""Camera trajectories in the common file formats, read the way evo reads them (`evo.tools.file_interface`).

- TUM (``.txt``): ``timestamp tx ty tz qx qy qz qw`` per line, ``#`` comments; seconds.
- KITTI (``.txt``): 12 numbers per line, the top 3x4 of each pose row-major; no timestamps, so a KITTI
  trajectory pairs with another by index (evo likewise needs equal lengths for ``evo_ape kitti``).
- EuRoC (``.csv``, or a folder holding ``mav0/state_groundtruth_estimate0/data.csv`` or ``data.csv``):
  ``timestamp[ns], px, py, pz, qw, qx, qy, qz, ...`` with a ``#`` header; stamps become seconds (÷1e9).

Poses are returned as (N,4,4) pose-to-world matrices exactly as the file states them (for EuRoC ground truth
that is the body (IMU) frame, as evo uses it).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from spatialctl import camera
from spatialctl.errors import SpatialctlError

EUROC_GT = ("mav0/state_groundtruth_estimate0/data.csv", "state_groundtruth_estimate0/data.csv", "data.csv")


@dataclass
class Trajectory:
    cam2world: np.ndarray  # (N,4,4)
    times: np.ndarray | None  # (N,) seconds; None: no stamps (KITTI), pair by index
    format: str  # tum | kitti | euroc
    path: str


def _numbers(path: Path, sep: str | None) -> np.ndarray:
    rows = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        try:
            rows.append([float(x) for x in line.split(sep)])
        except ValueError:
            raise SpatialctlError(f"{path}: line {n} is not a row of numbers") from None
        if len(rows[-1]) != len(rows[0]):
            raise SpatialctlError(f"{path}: line {n} has {len(rows[-1])} fields, the first row {len(rows[0])}")
    if not rows:
        raise SpatialctlError(f"{path}: no poses")
    return np.asarray(rows, dtype=np.float64)


def _from_quaternions(xyz: np.ndarray, wxyz: np.ndarray, path: Path) -> np.ndarray:
    norms = np.linalg.norm(wxyz, axis=1)
    if not np.all(np.isfinite(xyz)) or not np.all(norms > 0):
        raise SpatialctlError(f"{path}: a pose has a non-finite position or a zero quaternion")
    poses = np.tile(np.eye(4), (len(xyz), 1, 1))
    for i, q in enumerate(wxyz):
        poses[i, :3, :3] = camera.quaternion_to_rotation(q)
    poses[:, :3, 3] = xyz
    return poses


def read_tum(path: Path) -> Trajectory:
    m = _numbers(path, None)
    if m.shape[1] != 8:
        raise SpatialctlError(f"{path}: TUM lines have 8 fields (timestamp tx ty tz qx qy qz qw), not {m.shape[1]}")
    return Trajectory(_from_quaternions(m[:, 1:4], m[:, [7, 4, 5, 6]], path), m[:, 0], "tum", str(path))


def read_kitti(path: Path) -> Trajectory:
    m = _numbers(path, None)
    if m.shape[1] != 12:
        raise SpatialctlError(f"{path}: KITTI lines have 12 fields (a 3x4 pose), not {m.shape[1]}")
    poses = np.tile(np.eye(4), (len(m), 1, 1))
    poses[:, :3, :4] = m.reshape(-1, 3, 4)
    return Trajectory(poses, None, "kitti", str(path))


def read_euroc(path: Path) -> Trajectory:
    m = _numbers(path, ",")
    if m.shape[1] < 8:
        raise SpatialctlError(f"{path}: EuRoC rows have at least 8 fields (t[ns], p xyz, q wxyz), not {m.shape[1]}")
    return Trajectory(_from_quaternions(m[:, 1:4], m[:, 4:8], path), m[:, 0] / 1e9, "euroc", str(path))


def euroc_file(folder: Path) -> Path | None:
    for rel in EUROC_GT:
        if (folder / rel).is_file():
            return folder / rel
    return None


def is_trajectory(path: str | Path) -> bool:
    """A trajectory file (or an EuRoC folder) rather than a scene store or a dataset folder."""
    p = Path(path)
    if p.is_file():
        return p.suffix.lower() in (".txt", ".csv", ".tum", ".kitti")
    return p.is_dir() and euroc_file(p) is not None and not (p / "zarr.json").is_file()


def read_trajectory(path: str | Path) -> Trajectory:
    """A trajectory file in any of the formats above, told apart by its content (8 fields: TUM, 12: KITTI,
    commas: EuRoC)."""
    p = Path(path)
    if p.is_dir():
        f = euroc_file(p)
        if f is None:
            raise SpatialctlError(f"{p}: no EuRoC ground truth ({' or '.join(EUROC_GT)})")
        return read_euroc(f)
    if not p.is_file():
        raise SpatialctlError(f"{p}: no such trajectory file")
    first = next((ln.strip() for ln in p.read_text().splitlines() if ln.strip() and not ln.startswith("#")), "")
    if "," in first:
        return read_euroc(p)
    n = len(first.split())
    if n == 8:
        return read_tum(p)
    if n == 12:
        return read_kitti(p)
    raise SpatialctlError(f"{p}: not a trajectory file (TUM has 8 fields per line, KITTI 12, EuRoC csv commas); "
                          f"the first row has {n}")
