"""Render a scene and assemble its exact ground truth in the schema's arrays (scene root and ``tracks``).

Object truth is analytic (``scene.py``); only masks and visibility come from the rendered instance ids.
- ``centroid``: the centre of the object's gravity-aligned bounding box (its bounding volume), which for convex
  shapes (box, sphere, cylinder) lies inside the object, so it projects inside the silhouette.
- ``box``: that box: centre, size along the object's own x / y / up, yaw of its x axis about world z.
- ``aabb``: world axis-aligned bounds of the true geometry (exact per primitive, not of the box).
- ``velocity``: the analytic derivative of the centroid, given in every frame (the truth is known even while the
  object is hidden). ``centroid``/``box``/``aabb`` are NaN where the object has no visible pixel, as the schema says.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np

from spatialctl import store

from .render import camera_rays, render_frame
from .scene import FRONT, Scene


@dataclass
class Truth:
    scene_arrays: dict[str, np.ndarray]
    tracks_arrays: dict[str, np.ndarray]
    objects: list[dict]
    ids: np.ndarray | None = None  # (N, H, W) int16 instance/surface ids, kept only on request


def wrap_angle(a: np.ndarray) -> np.ndarray:
    """Angles into (-pi, pi]."""
    return np.pi - np.mod(np.pi - a, 2 * np.pi)


def render_truth(scene: Scene, progress: Callable[[Iterable], Iterable] | None = None, keep_ids: bool = False) -> Truth:
    cam = scene.camera
    n, h, w = len(scene.times), cam.height, cam.width
    k = cam.intrinsics
    n_obj = len(scene.objects)
    rays = camera_rays(k, h, w)
    frames = np.empty((n, h, w, 3), np.uint8)
    depth = np.empty((n, h, w), np.float32)
    points = np.empty((n, h, w, 3), np.float32)
    masks = np.zeros((n_obj, n, store.schema.packed_mask_bytes(h, w)), np.uint8)
    visible = np.zeros((n_obj, n), bool)
    ids_all = np.empty((n, h, w), np.int16) if keep_ids else None
    indices: Iterable[int] = range(n)
    for i in progress(indices) if progress else indices:
        f = render_frame(scene, i, rays)
        frames[i], depth[i], points[i] = f.rgb, f.depth, f.pointmap
        if keep_ids:
            ids_all[i] = f.ids
        flat = f.ids.ravel()
        for o in range(n_obj):
            m = flat == o
            visible[o, i] = m.any()
            if visible[o, i]:
                masks[o, i] = np.packbits(m)

    times = scene.times
    centroid = np.stack([o.centroid(times) for o in scene.objects]) if n_obj else np.zeros((0, n, 3))
    velocity = np.stack([o.velocity(times) for o in scene.objects]) if n_obj else np.zeros((0, n, 3))
    aabb = np.stack([o.aabb(times) for o in scene.objects]) if n_obj else np.zeros((0, n, 6))
    box = np.zeros((n_obj, n, 7))
    for j, o in enumerate(scene.objects):
        box[j, :, :3] = centroid[j]
        box[j, :, 3:6] = o.true_size
        box[j, :, 6] = wrap_angle(o.yaw(times))
    hidden = ~visible
    centroid[hidden], box[hidden], aabb[hidden] = np.nan, np.nan, np.nan

    scene_arrays = {
        "frames": frames,
        "timestamps": times.astype(np.float64),
        "intrinsics": np.tile(k, (n, 1, 1)),
        "cam2world": cam.cam2world(times),
        "depth": depth,
        "conf": (depth > 0).astype(np.float32),
        "pointmaps": points,
    }
    tracks_arrays = {
        "masks": masks,
        "visible": visible,
        "centroid": centroid.astype(np.float32),
        "box": box.astype(np.float32),
        "aabb": aabb.astype(np.float32),
        "velocity": velocity.astype(np.float32),
        "moving": np.array([o.moving for o in scene.objects], dtype=bool),
        "score": np.ones(n_obj, np.float32),
    }
    objects = [
        {
            "id": j,
            "label": o.label,
            "score": 1.0,
            "kind": o.kind,
            "true_size": [round(float(s), 6) for s in o.true_size],
            "motion": o.motion.kind,
            "parts": len(o.parts),
            # where the object's front is, from the box x axis towards its y axis (radians): it has a facing
            **({"front_yaw": FRONT[o.label]} if o.label in FRONT else {}),
        }
        for j, o in enumerate(scene.objects)
    ]
    return Truth(scene_arrays, tracks_arrays, objects, ids_all)


def scene_attrs(scene: Scene, seed: int) -> dict:
    """Root attributes: the schema's required ones plus a description of how the scene was made."""
    attrs = {
        "scale": "metric",
        "scale_source": "synth",
        "world_up": [0.0, 0.0, 1.0],
        "synth": {
            "seed": seed,
            "preset": scene.preset.name,
            "camera": scene.camera.kind,
            "scene_half_extent_m": round(scene.half_extent, 6),
            "light_direction": [round(float(v), 6) for v in scene.light],
        },
    }
    if scene.room is not None:
        lx, ly, top = (float(v) for v in scene.room)
        floor = -float(scene.table[2]) if scene.table is not None else 0.0
        attrs["synth"]["room"] = {"size_m": [2 * lx, 2 * ly, top - floor], "floor_area_m2": round(4 * lx * ly, 6),
                                  "bounds_m": [[-lx, -ly, floor], [lx, ly, top]]}
    if scene.table is not None:
        tx, ty, th = (float(v) for v in scene.table)
        attrs["synth"]["table"] = {"size_m": [2 * tx, 2 * ty, th], "bounds_m": [[-tx, -ty, -th], [tx, ty, 0.0]]}
    return attrs


TRACKS_DOC = ("synth ground truth: centroid = centre of the object's gravity-aligned bounding box (its bounding "
              "volume); box = that box (size along the object's x, y, up; yaw of its x axis about world z); aabb = "
              "exact world bounds of the geometry; velocity = analytic derivative of the centroid in every frame; "
              "objects with a front (people, cars, chairs, sofas) carry front_yaw: their facing is box yaw + front_yaw.")

