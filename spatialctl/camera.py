"""Camera maths shared by stages (numpy, float64 where poses are concerned).

OpenCV camera convention: x right, y down, z forward; pixel (u, v) = column, row with centres at integers.
Poses are 4x4 ``cam2world`` matrices unless a name says otherwise.
"""

from __future__ import annotations

import numpy as np

from spatialctl.config import parse_float_list
from spatialctl.errors import UsageError


def pixel_grid(height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """(u, v) pixel-centre coordinates, each (H, W)."""
    v, u = np.mgrid[0:height, 0:width]
    return u.astype(np.float64), v.astype(np.float64)


def intrinsics_matrix(fx: float, fy: float, cx: float, cy: float) -> np.ndarray:
    return np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]])


def unproject_depth(depth: np.ndarray, intrinsics: np.ndarray) -> np.ndarray:
    """(H, W) z-depth -> (H, W, 3) camera-frame points."""
    h, w = depth.shape
    u, v = pixel_grid(h, w)
    fx, fy, cx, cy = intrinsics[0, 0], intrinsics[1, 1], intrinsics[0, 2], intrinsics[1, 2]
    z = depth.astype(np.float64)
    return np.stack([(u - cx) / fx * z, (v - cy) / fy * z, z], axis=-1)


def transform(points: np.ndarray, pose: np.ndarray) -> np.ndarray:
    """Apply a 4x4 rigid (or similarity) transform to (..., 3) points."""
    return points @ pose[:3, :3].T + pose[:3, 3]


def depth_to_pointmap(depth: np.ndarray, intrinsics: np.ndarray, cam2world: np.ndarray) -> np.ndarray:
    """(H, W) depth -> (H, W, 3) world points; 0 where depth is 0 (the schema's invalid pixels)."""
    world = transform(unproject_depth(depth, intrinsics), cam2world)
    world[depth <= 0] = 0.0
    return world


def project(points_world: np.ndarray, intrinsics: np.ndarray, cam2world: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(..., 3) world points -> ((..., 2) pixel (u, v), (...,) z-depth in the camera)."""
    cam = transform(points_world, invert(cam2world))
    z = cam[..., 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        uv = (cam[..., :2] / z[..., None]) * np.diag(intrinsics)[:2] + intrinsics[:2, 2]
    return uv, z


def invert(pose: np.ndarray) -> np.ndarray:
    """Inverse of a rigid 4x4 transform (batched over leading dims)."""
    rot = pose[..., :3, :3]
    out = np.zeros_like(pose)
    out[..., :3, :3] = np.swapaxes(rot, -1, -2)
    out[..., :3, 3] = -np.einsum("...ji,...j->...i", rot, pose[..., :3, 3])
    out[..., 3, 3] = 1.0
    return out


def look_at(eye: np.ndarray, target: np.ndarray, up: np.ndarray = np.array([0.0, 0.0, 1.0])) -> np.ndarray:
    """cam2world of an OpenCV camera at ``eye`` looking at ``target`` with image-up along ``up``."""
    z = np.asarray(target, float) - np.asarray(eye, float)
    z /= np.linalg.norm(z)
    x = np.cross(z, up)
    if np.linalg.norm(x) < 1e-9:  # looking straight along up: any perpendicular will do
        x = np.cross(z, np.array([1.0, 0.0, 0.0]) if abs(z[0]) < 0.9 else np.array([0.0, 1.0, 0.0]))
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    pose = np.eye(4)
    pose[:3, 0], pose[:3, 1], pose[:3, 2], pose[:3, 3] = x, y, z, eye
    return pose


def rotation_to_quaternion(rot: np.ndarray) -> np.ndarray:
    """3x3 rotation -> unit quaternion (w, x, y, z) with w >= 0."""
    m = np.asarray(rot, dtype=np.float64)
    t = np.trace(m)
    if t > 0:
        s = np.sqrt(t + 1.0) * 2
        q = [0.25 * s, (m[2, 1] - m[1, 2]) / s, (m[0, 2] - m[2, 0]) / s, (m[1, 0] - m[0, 1]) / s]
    else:
        i = int(np.argmax(np.diag(m)))
        j, k = (i + 1) % 3, (i + 2) % 3
        s = np.sqrt(1.0 + m[i, i] - m[j, j] - m[k, k]) * 2
        q = [0.0, 0.0, 0.0, 0.0]
        q[0] = (m[k, j] - m[j, k]) / s
        q[1 + i] = 0.25 * s
        q[1 + j] = (m[j, i] + m[i, j]) / s
        q[1 + k] = (m[k, i] + m[i, k]) / s
    q = np.array(q)
    q /= np.linalg.norm(q)
    return q if q[0] >= 0 else -q


def quaternion_to_rotation(q: np.ndarray) -> np.ndarray:
    """Unit quaternion (w, x, y, z) -> 3x3 rotation."""
    w, x, y, z = np.asarray(q, dtype=np.float64) / np.linalg.norm(q)
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
        [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
        [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
    ])


def rotation_angle(rot: np.ndarray) -> np.ndarray:
    """Angle in radians of (..., 3, 3) rotations."""
    cos = (np.trace(rot, axis1=-2, axis2=-1) - 1.0) / 2.0
    return np.arccos(np.clip(cos, -1.0, 1.0))


def umeyama(src: np.ndarray, dst: np.ndarray, with_scale: bool = True) -> tuple[float, np.ndarray, np.ndarray]:
    """Least-squares similarity (s, R, t) with dst ≈ s R src + t, for (K, 3) point sets (Umeyama 1991)."""
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    mu_s, mu_d = src.mean(0), dst.mean(0)
    xs, xd = src - mu_s, dst - mu_d
    cov = xd.T @ xs / len(src)
    u, d, vt = np.linalg.svd(cov)
    sign = np.eye(3)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        sign[2, 2] = -1.0
    rot = u @ sign @ vt
    var_s = (xs**2).sum() / len(src)
    scale = float(np.trace(np.diag(d) @ sign) / var_s) if with_scale and var_s > 0 else 1.0
    t = mu_d - scale * rot @ mu_s
    return scale, rot, t


def similarity_matrix(scale: float, rot: np.ndarray, t: np.ndarray) -> np.ndarray:
    m = np.eye(4)
    m[:3, :3] = scale * rot
    m[:3, 3] = t
    return m


def parse_intrinsics(text: str, flag: str = "--intrinsics") -> tuple[float, float, float, float]:
    """"fx,fy,cx,cy" (pixels) -> four floats; a UsageError naming ``flag`` otherwise."""
    fx, fy, cx, cy = parse_float_list(text, flag, 4, "fx,fy,cx,cy in pixels")
    if not (fx > 0 and fy > 0):
        raise UsageError(f"{flag} {text!r}: focal lengths must be positive")
    return fx, fy, cx, cy


def gravity_basis(world_up) -> np.ndarray:
    """Rows e1, e2, up: an orthonormal frame whose third axis is ``world_up`` (the frame box yaw is measured in)."""
    up = np.asarray(world_up, dtype=np.float64)
    up = up / np.linalg.norm(up)
    ref = np.array([1.0, 0.0, 0.0]) if abs(up[0]) < 0.9 else np.array([0.0, 1.0, 0.0])
    e1 = ref - up * (ref @ up)
    e1 /= np.linalg.norm(e1)
    return np.stack([e1, np.cross(up, e1), up])
