"""Exports of a scene store to formats other tools read: PLY point cloud, COLMAP text model, nerfstudio.

Conventions converted here:
- Our intrinsics put pixel centres at integer coordinates; COLMAP and nerfstudio put them at +0.5, so their
  principal point (and COLMAP's 2D points) are ours + 0.5.
- COLMAP stores world-to-camera (qw qx qy qz, t) in the OpenCV camera convention, as we do.
- nerfstudio's ``transform_matrix`` is camera-to-world in the OpenGL camera convention (x right, y up, z back):
  ours with the camera's y and z axes negated. The world frame is left as is.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from spatialctl import camera, store
from spatialctl.errors import SpatialctlError, UsageError

FORMATS = ("ply", "colmap", "nerfstudio")
OPENCV_TO_OPENGL = np.diag([1.0, -1.0, -1.0, 1.0])


def parse_formats(text: str | None) -> list[str]:
    """``"ply,colmap"`` -> ["ply", "colmap"]; UsageError for an unknown name."""
    names = [t.strip().lower() for t in (text or "").split(",") if t.strip()]
    unknown = sorted(set(names) - set(FORMATS))
    if unknown:
        raise UsageError(f"--export {text!r}: unknown format(s) {', '.join(unknown)}; expected {', '.join(FORMATS)}")
    return list(dict.fromkeys(names))


def export_dir_for(scene_url: str) -> str:
    """Where a store's exports go: beside it, ``scene.zarr`` -> ``scene_export/``."""
    base = scene_url.rstrip("/")
    return (base[:-5] if base.endswith(".zarr") else base) + "_export"


EXPORT_NAMES = {"points.ply", "images", "colmap", "transforms.json"}  # everything export_scene writes


def check_export_dir(out_dir: str) -> None:
    """Refuse (UsageError, exit 2) an export folder holding anything export_scene does not write."""
    out = Path(out_dir)
    if not out.exists():
        return
    foreign = sorted(set(p.name for p in out.iterdir()) - EXPORT_NAMES) if out.is_dir() else [out.name]
    if foreign:
        raise UsageError(f"{out}: holds {foreign[0]}, which spatialctl's export did not write; refusing to write "
                         "exports there (move it away)")


# ---------------------------------------------------------------------------------------------------- points


def select_points(pointmaps, frames, conf, depth, min_conf: float = 3.0, max_points: int = 2_000_000):
    """Confident valid pixels -> (points (M,3) float32, colours (M,3) uint8, frame (M,), pixel (M,2) u v).

    An even subsample (every k-th kept pixel) caps the count at ``max_points``."""
    keep = (conf >= min_conf) & (depth > 0)
    f, v, u = np.nonzero(keep)
    if len(f) > max_points:
        sel = np.linspace(0, len(f) - 1, max_points).astype(np.int64)
        f, v, u = f[sel], v[sel], u[sel]
    return (pointmaps[f, v, u].astype(np.float32), frames[f, v, u].astype(np.uint8), f,
            np.stack([u, v], -1))


def write_ply(path: str | Path, points: np.ndarray, colours: np.ndarray) -> None:
    """Binary little-endian PLY with float xyz and uchar rgb."""
    points = np.asarray(points, dtype="<f4").reshape(-1, 3)
    colours = np.asarray(colours, dtype=np.uint8).reshape(-1, 3)
    rec = np.empty(len(points), dtype=[("x", "<f4"), ("y", "<f4"), ("z", "<f4"),
                                       ("red", "u1"), ("green", "u1"), ("blue", "u1")])
    rec["x"], rec["y"], rec["z"] = points.T
    rec["red"], rec["green"], rec["blue"] = colours.T
    header = ("ply\nformat binary_little_endian 1.0\ncomment written by spatialctl\n"
              f"element vertex {len(points)}\n"
              "property float x\nproperty float y\nproperty float z\n"
              "property uchar red\nproperty uchar green\nproperty uchar blue\nend_header\n")
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        f.write(header.encode("ascii"))
        f.write(rec.tobytes())


def read_ply(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Read back what ``write_ply`` writes (binary little-endian xyz float + rgb uchar)."""
    data = Path(path).read_bytes()
    end = data.find(b"end_header\n")
    if not data.startswith(b"ply\n") or end < 0:
        raise SpatialctlError(f"{path}: not a PLY file")
    header = data[:end].decode("ascii").splitlines()
    if "format binary_little_endian 1.0" not in header:
        raise SpatialctlError(f"{path}: only binary little-endian PLY is read")
    n = int(next(line.split()[2] for line in header if line.startswith("element vertex")))
    rec = np.frombuffer(data[end + len(b"end_header\n"):], count=n,
                        dtype=[("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("r", "u1"), ("g", "u1"), ("b", "u1")])
    return np.stack([rec["x"], rec["y"], rec["z"]], -1), np.stack([rec["r"], rec["g"], rec["b"]], -1)


# ---------------------------------------------------------------------------------------------------- cameras


def image_names(n: int) -> list[str]:
    return [f"frame_{i:05d}.png" for i in range(n)]


def write_images(folder: str | Path, frames: np.ndarray) -> list[str]:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    names = image_names(len(frames))
    for name, frame in zip(names, frames, strict=True):
        Image.fromarray(frame).save(folder / name)
    return names


def write_colmap(folder: str | Path, intrinsics, cam2world, hw, names, points, colours, frame_of, pixel_of) -> None:
    """COLMAP text model: cameras.txt (PINHOLE; one camera per distinct K), images.txt, points3D.txt.

    Every exported point is observed once, at the pixel it came from, so tracks and 2D points are consistent."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    h, w = hw
    cam_ids: dict[tuple, int] = {}
    cam_lines = []
    image_cam = []
    for k in intrinsics:
        params = (float(k[0, 0]), float(k[1, 1]), float(k[0, 2]) + 0.5, float(k[1, 2]) + 0.5)
        if params not in cam_ids:
            cam_ids[params] = len(cam_ids) + 1
            cam_lines.append(f"{cam_ids[params]} PINHOLE {w} {h} " + " ".join(f"{p:.10g}" for p in params))
        image_cam.append(cam_ids[params])
    (folder / "cameras.txt").write_text(
        "# Camera list with one line of data per camera:\n#   CAMERA_ID, MODEL, WIDTH, HEIGHT, PARAMS[]\n"
        f"# Number of cameras: {len(cam_lines)}\n" + "\n".join(cam_lines) + "\n")

    point_ids = np.arange(1, len(points) + 1)
    img_lines = []
    for i, (c2w, name) in enumerate(zip(cam2world, names, strict=True)):
        w2c = camera.invert(np.asarray(c2w, dtype=np.float64))
        q = camera.rotation_to_quaternion(w2c[:3, :3])
        t = w2c[:3, 3]
        img_lines.append(f"{i + 1} " + " ".join(f"{x:.12g}" for x in (*q, *t)) + f" {image_cam[i]} {name}")
        mine = np.nonzero(frame_of == i)[0]
        img_lines.append(" ".join(f"{pixel_of[m, 0] + 0.5:g} {pixel_of[m, 1] + 0.5:g} {point_ids[m]}" for m in mine))
    (folder / "images.txt").write_text(
        "# Image list with two lines of data per image:\n"
        "#   IMAGE_ID, QW, QX, QY, QZ, TX, TY, TZ, CAMERA_ID, NAME\n#   POINTS2D[] as (X, Y, POINT3D_ID)\n"
        f"# Number of images: {len(names)}\n" + "\n".join(img_lines) + "\n")

    # The 2D point index of each 3D point within its image's POINTS2D list.
    idx_in_image = np.zeros(len(points), dtype=np.int64)
    for i in range(len(names)):
        mine = np.nonzero(frame_of == i)[0]
        idx_in_image[mine] = np.arange(len(mine))
    with open(folder / "points3D.txt", "w") as f:
        f.write("# 3D point list with one line of data per point:\n"
                "#   POINT3D_ID, X, Y, Z, R, G, B, ERROR, TRACK[] as (IMAGE_ID, POINT2D_IDX)\n"
                f"# Number of points: {len(points)}\n")
        for m in range(len(points)):
            x, y, z = points[m]
            r, g, b = colours[m]
            f.write(f"{point_ids[m]} {x:.7g} {y:.7g} {z:.7g} {r} {g} {b} 0 {frame_of[m] + 1} {idx_in_image[m]}\n")


def read_colmap_images(path: str | Path) -> dict[str, np.ndarray]:
    """images.txt -> {name: world2cam 4x4}; enough to check a written model."""
    lines = [ln for ln in Path(path).read_text().splitlines() if not ln.startswith("#")]
    out = {}
    for line in lines[0::2]:
        parts = line.split()
        q = np.array([float(x) for x in parts[1:5]])
        t = np.array([float(x) for x in parts[5:8]])
        m = np.eye(4)
        m[:3, :3] = camera.quaternion_to_rotation(q)
        m[:3, 3] = t
        out[parts[9]] = m
    return out


def nerfstudio_transforms(intrinsics, cam2world, hw, file_paths, ply_file: str | None = None) -> dict:
    h, w = hw
    frames = []
    for k, c2w, path in zip(intrinsics, cam2world, file_paths, strict=True):
        frames.append({
            "file_path": path,
            "fl_x": float(k[0, 0]), "fl_y": float(k[1, 1]),
            "cx": float(k[0, 2]) + 0.5, "cy": float(k[1, 2]) + 0.5,
            "w": int(w), "h": int(h),
            "transform_matrix": (np.asarray(c2w, dtype=np.float64) @ OPENCV_TO_OPENGL).tolist(),
        })
    out = {"camera_model": "OPENCV", "frames": frames}
    if ply_file:
        out["ply_file_path"] = ply_file
    return out


# ---------------------------------------------------------------------------------------------------- driver


def export_scene(scene_url: str, formats: list[str], out_dir: str | None = None, min_conf: float = 3.0,
                 max_points: int = 2_000_000) -> dict[str, str]:
    """Write the requested exports of a scene store; returns {format: path}."""
    unknown = sorted(set(formats) - set(FORMATS))
    if unknown:
        raise UsageError(f"export formats {', '.join(unknown)}: expected {', '.join(FORMATS)}")
    formats = list(dict.fromkeys(formats))
    if not formats:
        return {}
    scene = store.open_scene(scene_url)
    out = Path(out_dir or export_dir_for(scene_url))
    out.mkdir(parents=True, exist_ok=True)
    frames = scene.read("frames")
    k, c2w = scene.read("intrinsics"), scene.read("cam2world")
    hw = scene.hw
    written: dict[str, str] = {}
    points = colours = frame_of = pixel_of = None
    if {"ply", "colmap"} & set(formats):
        points, colours, frame_of, pixel_of = select_points(scene.read("pointmaps"), frames, scene.read("conf"),
                                                            scene.read("depth"), min_conf, max_points)
    if "ply" in formats:
        write_ply(out / "points.ply", points, colours)
        written["ply"] = str(out / "points.ply")
    names = None
    if {"colmap", "nerfstudio"} & set(formats):
        names = write_images(out / "images", frames)
    if "colmap" in formats:
        write_colmap(out / "colmap", k, c2w, hw, names, points, colours, frame_of, pixel_of)
        written["colmap"] = str(out / "colmap")
    if "nerfstudio" in formats:
        doc = nerfstudio_transforms(k, c2w, hw, [f"images/{n}" for n in names],
                                    "points.ply" if "ply" in formats else None)
        (out / "transforms.json").write_text(json.dumps(doc, indent=2) + "\n")
        written["nerfstudio"] = str(out / "transforms.json")
    return written
