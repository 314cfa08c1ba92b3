"""A vectorised numpy ray caster for the analytic scenes of ``scene.py``.

One ray per pixel centre (no anti-aliasing), so colour, depth, pointmap and instance id of a pixel all describe
the same surface point. Rays are built in the camera frame with z = 1, so the ray parameter of a hit *is* its
z-depth and ``pointmap = eye + depth * ray`` exactly. Geometry is float64; colours float32.

Each primitive is intersected only inside the screen rectangle of its bounding sphere, in its object's local frame
(one yaw rotation per object), which keeps the cost per frame close to one pass over the image. Shading is
Lambertian under one directional light plus ambient; objects cast exact shadows on the ground (shadow rays from
ground pixels), not on walls or on each other.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import textures
from .scene import BOX, SPHERE, Scene

# Surface codes below 0; objects are 0..K-1. GROUND is the plane z = 0 the objects stand on (a table top in a
# table scene, whose room then has its own FLOOR below, and the table its sides).
SKY, GROUND, WALL_X, WALL_Y, CEILING, FLOOR, TABLE_SIDE = -1, -2, -3, -4, -5, -6, -7
_EPS = 1e-9


@dataclass
class Frame:
    rgb: np.ndarray  # (H, W, 3) uint8
    depth: np.ndarray  # (H, W) float32, 0 = no surface
    pointmap: np.ndarray  # (H, W, 3) float32 world, 0 where no surface
    ids: np.ndarray  # (H, W) int16: object index, or a negative surface code
    shadow: np.ndarray  # (H, W) bool: ground pixels in an object's shadow


def camera_rays(intrinsics: np.ndarray, height: int, width: int) -> np.ndarray:
    """(H, W, 3) camera-frame ray directions with z = 1 through each pixel centre (integer coordinates)."""
    k_inv = np.linalg.inv(intrinsics)
    u, v = np.meshgrid(np.arange(width, dtype=np.float64), np.arange(height, dtype=np.float64))
    pix = np.stack([u, v, np.ones_like(u)], -1)
    rays = pix @ k_inv.T
    return rays / rays[..., 2:3]


def _rot_z(yaw: float) -> np.ndarray:
    c, s = np.cos(yaw), np.sin(yaw)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


# ---------------------------------------------------------------------------------------------------- intersections
# Rays come as separate x / y / z component arrays (any shape): elementwise maths on them is several times faster
# than reductions over a trailing axis of length 3.


def _hit_box(o, dx, dy, dz, centre, half) -> np.ndarray:
    """Ray parameter of the first hit with an axis-aligned box (inf: none). Origins and directions may each be
    scalars or arrays (camera rays share one origin; shadow rays share one direction)."""
    t_near = t_far = None
    for oi, d, c, h in zip(o, (dx, dy, dz), centre, half, strict=True):
        inv = np.divide(1.0, d)  # d == 0 gives +-inf, and the slab test below still holds
        t1, t2 = (c - h - oi) * inv, (c + h - oi) * inv
        lo, hi = np.minimum(t1, t2), np.maximum(t1, t2)
        t_near = lo if t_near is None else np.maximum(t_near, lo)
        t_far = hi if t_far is None else np.minimum(t_far, hi)
    return np.where((t_far >= t_near) & (t_near > _EPS), t_near, np.inf)


def _hit_sphere(o, dx, dy, dz, centre, radius: float) -> np.ndarray:
    ox, oy, oz = o[0] - centre[0], o[1] - centre[1], o[2] - centre[2]
    a = dx * dx + dy * dy + dz * dz
    b = dx * ox + dy * oy + dz * oz
    disc = b * b - a * (ox * ox + oy * oy + oz * oz - radius * radius)
    t = (-b - np.sqrt(np.maximum(disc, 0.0))) / a
    return np.where((disc >= 0) & (t > _EPS), t, np.inf)


def _hit_cylinder(o, dx, dy, dz, centre, radius: float, half_height: float) -> np.ndarray:
    ox, oy, oz = o[0] - centre[0], o[1] - centre[1], o[2] - centre[2]
    a = dx * dx + dy * dy
    b = dx * ox + dy * oy
    disc = b * b - a * (ox * ox + oy * oy - radius * radius)
    t_side = (-b - np.sqrt(np.maximum(disc, 0.0))) / a
    z = oz + t_side * dz
    t = np.where((disc >= 0) & (a > 0) & (t_side > _EPS) & (np.abs(z) <= half_height), t_side, np.inf)
    above = np.abs(oz) > half_height
    if np.any(above):  # origins above (or below) the cylinder can hit the near cap first
        t_cap = (np.copysign(half_height, oz) - oz) / dz
        x, y = ox + t_cap * dx, oy + t_cap * dy
        cap = above & (t_cap > _EPS) & (x * x + y * y <= radius * radius)
        t = np.minimum(t, np.where(cap, t_cap, np.inf))
    return t


def _hit(part, o, dx, dy, dz) -> np.ndarray:
    if part.shape == BOX:
        return _hit_box(o, dx, dy, dz, part.centre, part.half)
    if part.shape == SPHERE:
        return _hit_sphere(o, dx, dy, dz, part.centre, part.half[0])
    return _hit_cylinder(o, dx, dy, dz, part.centre, part.half[0], part.half[2])


def _part_radius(part) -> float:
    if part.shape == BOX:
        return float(np.linalg.norm(part.half))
    if part.shape == SPHERE:
        return float(part.half[0])
    return float(np.hypot(part.half[0], part.half[2]))


def _local_normal(shape: int, q: np.ndarray, centre, half) -> np.ndarray:
    """Outward normals (n, 3) at points q on a primitive's surface (local frame)."""
    r = (q - np.asarray(centre)) / np.asarray(half)
    if shape == SPHERE:
        return r / np.linalg.norm(r, axis=-1, keepdims=True)
    n = np.zeros_like(r)
    if shape == BOX:
        axis = np.abs(r).argmax(-1)
        rows = np.arange(len(r))
        n[rows, axis] = np.sign(r[rows, axis])
        return n
    radial = np.hypot(r[:, 0], r[:, 1])
    cap = np.abs(r[:, 2]) > radial
    n[:, 0] = np.where(cap, 0.0, r[:, 0] / np.maximum(radial, 1e-12))
    n[:, 1] = np.where(cap, 0.0, r[:, 1] / np.maximum(radial, 1e-12))
    n[:, 2] = np.where(cap, np.sign(r[:, 2]), 0.0)
    return n


def _screen_rect(centre_cam: np.ndarray, radius: float, k: np.ndarray, height: int, width: int):
    """Pixel rectangle (v0, v1, u0, u1) holding the projection of a sphere, None when it is behind the camera."""
    x, y, z = centre_cam
    if z + radius <= 0:
        return None
    if z - radius <= 1e-6 * radius:  # the sphere reaches behind the image plane: test every pixel
        return 0, height, 0, width
    zs = (z - radius, z + radius)
    xs = [(x + sx * radius) / zz for sx in (-1, 1) for zz in zs]
    ys = [(y + sy * radius) / zz for sy in (-1, 1) for zz in zs]
    u0 = int(np.floor(k[0, 2] + k[0, 0] * min(xs))) - 1
    u1 = int(np.ceil(k[0, 2] + k[0, 0] * max(xs))) + 2
    v0 = int(np.floor(k[1, 2] + k[1, 1] * min(ys))) - 1
    v1 = int(np.ceil(k[1, 2] + k[1, 1] * max(ys))) + 2
    u0, u1, v0, v1 = max(u0, 0), min(u1, width), max(v0, 0), min(v1, height)
    if u0 >= u1 or v0 >= v1:
        return None
    return v0, v1, u0, u1


# ---------------------------------------------------------------------------------------------------- frame


def render_frame(scene: Scene, index: int, rays_cam: np.ndarray | None = None) -> Frame:
    cam = scene.camera
    h, w = cam.height, cam.width
    k = cam.intrinsics
    if rays_cam is None:
        rays_cam = camera_rays(k, h, w)
    t_now = float(scene.times[index])
    pose = cam.cam2world(t_now)[0]
    rot, eye = pose[:3, :3], pose[:3, 3]
    # World ray directions, one (H, W) array per component; the parameter t along them is z-depth.
    rx, ry = rays_cam[..., 0], rays_cam[..., 1]
    dx, dy, dz = (rot[i, 0] * rx + rot[i, 1] * ry + rot[i, 2] for i in range(3))
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        depth = np.full((h, w), np.inf)
        ids = np.full((h, w), SKY, dtype=np.int16)
        prim = np.zeros((h, w), dtype=np.int16)
        _background(scene, eye, dx, dy, dz, depth, ids)
        for oid, obj in enumerate(scene.objects):
            _draw_object(obj, oid, t_now, eye, rot, k, (dx, dy, dz), depth, ids, prim)

    valid = np.isfinite(depth)
    depth = np.where(valid, depth, 0.0)
    points = [np.where(valid, eye[i] + depth * d, 0.0) for i, d in enumerate((dx, dy, dz))]
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        shadow = _ground_shadow(scene, t_now, eye, rot, k, points, ids)
    rgb = _shade(scene, t_now, (dx, dy, dz), points, ids, prim, shadow)
    return Frame(rgb, depth.astype(np.float32), np.stack(points, -1).astype(np.float32), ids, shadow)


def _draw_object(obj, oid: int, t_now: float, eye, rot, k, dirs, depth, ids, prim) -> None:
    """Depth-test every part of one object into the frame buffers, each only inside its screen rectangle."""
    h, w = depth.shape
    pos = obj.motion.position(t_now)
    yaw = float(obj.yaw(t_now))
    c, s = np.cos(yaw), np.sin(yaw)
    rel = eye - np.array([pos[0], pos[1], 0.0])
    o_local = (c * rel[0] + s * rel[1], -s * rel[0] + c * rel[1], rel[2])
    for pi, part in enumerate(obj.parts):
        px, py, pz = part.centre
        centre_world = np.array([pos[0] + c * px - s * py, pos[1] + s * px + c * py, pz])
        rect = _screen_rect(rot.T @ (centre_world - eye), _part_radius(part), k, h, w)
        if rect is None:
            continue
        v0, v1, u0, u1 = rect
        bx, by, bz = (d[v0:v1, u0:u1] for d in dirs)
        lx, ly = c * bx + s * by, -s * bx + c * by  # into the object's frame: rotate by -yaw about z
        t = _hit(part, o_local, lx, ly, bz)
        block = depth[v0:v1, u0:u1]
        closer = t < block
        block[closer] = t[closer]
        ids[v0:v1, u0:u1][closer] = oid
        prim[v0:v1, u0:u1][closer] = pi


def _ground_shadow(scene: Scene, t_now: float, eye, rot, k, points, ids) -> np.ndarray:
    """(H, W) bool: ground pixels whose ray to the (directional) light is blocked by an object.

    Each part is tested only inside the screen rectangle of its shadow on the ground: the part's bounding sphere
    pushed along the light onto z = 0 lies within a disc of radius r / sin(light elevation).
    """
    h, w = ids.shape
    shadow = np.zeros((h, w), dtype=bool)
    light = scene.light
    if light[2] <= 0.05:
        return shadow
    ground = ids == GROUND
    for obj in scene.objects:
        pos = obj.motion.position(t_now)
        yaw = float(obj.yaw(t_now))
        c, s = np.cos(yaw), np.sin(yaw)
        l_local = (c * light[0] + s * light[1], -s * light[0] + c * light[1], light[2])
        for part in obj.parts:
            px, py, pz = part.centre
            centre = np.array([pos[0] + c * px - s * py, pos[1] + s * px + c * py, pz])
            foot = centre - centre[2] / light[2] * light
            rect = _screen_rect(rot.T @ (foot - eye), _part_radius(part) / light[2], k, h, w)
            if rect is None:
                continue
            v0, v1, u0, u1 = rect
            todo = ground[v0:v1, u0:u1] & ~shadow[v0:v1, u0:u1]
            if not todo.any():
                continue
            gx, gy, gz = (p[v0:v1, u0:u1][todo] for p in points)
            rx, ry = gx - pos[0], gy - pos[1]
            origin = (c * rx + s * ry, -s * rx + c * ry, gz)
            blocked = np.isfinite(_hit(part, origin, *l_local))
            block = shadow[v0:v1, u0:u1]
            block[todo] = blocked
    return shadow


def _background(scene: Scene, eye: np.ndarray, dx, dy, dz, depth: np.ndarray, ids: np.ndarray) -> None:
    if scene.room is not None:
        lx, ly, top = scene.room
        floor = -scene.table[2] if scene.table is not None else 0.0
        tx = (np.copysign(lx, dx) - eye[0]) / dx
        ty = (np.copysign(ly, dy) - eye[1]) / dy
        tz = np.where(dz > 0, (top - eye[2]) / dz, (floor - eye[2]) / dz)
        tx, ty, tz = (np.where(np.isfinite(t) & (t > 0), t, np.inf) for t in (tx, ty, tz))
        t = np.minimum(np.minimum(tx, ty), tz)
        depth[...] = t
        below = GROUND if scene.table is None else FLOOR
        ids[...] = np.where(t == tx, WALL_X, np.where(t == ty, WALL_Y, np.where(dz > 0, CEILING, below)))
        if scene.table is not None:  # a solid table from the floor up to its top, z = 0
            hx, hy, th = scene.table
            tt = _hit_box(eye, dx, dy, dz, (0.0, 0.0, -th / 2), (hx, hy, th / 2))
            hit = tt < t
            on_top = hit & (dz < 0) & (np.abs(eye[2] + tt * dz) <= 1e-9 * max(1.0, abs(eye[2])))
            depth[hit] = tt[hit]
            ids[hit] = np.where(on_top, GROUND, TABLE_SIDE)[hit]
        return
    t = np.where(dz < 0, -eye[2] / dz, np.inf)
    hit = np.isfinite(t) & (t > 0)
    radius = scene.preset.ground_radius
    if np.isfinite(radius):
        hit &= np.hypot(eye[0] + t * dx, eye[1] + t * dy) <= radius
    depth[hit] = t[hit]
    ids[hit] = GROUND


# ---------------------------------------------------------------------------------------------------- shading


def _shade(scene: Scene, t_now: float, dirs, points, ids, prim, shadow) -> np.ndarray:
    """Lambertian shading of each surface's procedural albedo; sky (no surface) gets a plain gradient."""
    h, w = ids.shape
    flat_ids, flat_prim = ids.ravel(), prim.ravel()
    px, py, pz = (c.ravel() for c in points)
    rgb = np.zeros((h * w, 3), dtype=np.float32)
    light = scene.light
    ambient = 0.5 if scene.room is not None and scene.table is None else 0.38  # a table scene: lit as before

    def lit(lambert):
        return (ambient + (1.0 - ambient) * np.clip(lambert, 0.0, 1.0)).astype(np.float32)

    style = "outdoor" if scene.preset.sky else ("indoor" if scene.room is not None and scene.table is None else "table")
    sel = np.flatnonzero(flat_ids == GROUND)
    alb = textures.ground_albedo(px[sel] + scene.texture_offset[0], py[sel] + scene.texture_offset[1], style,
                                 2.0 * scene.half_extent, scene.ground_colour)
    rgb[sel] = alb * lit(np.where(shadow.ravel()[sel], 0.0, light[2]))[:, None]
    if scene.room is not None:
        for code, along, axis in ((WALL_X, py, 0), (WALL_Y, px, 1)):
            sel = np.flatnonzero(flat_ids == code)
            across = (px, py)[axis][sel]
            alb = textures.wall_albedo(along[sel] + 100.0 * axis, pz[sel], scene.wall_colour)
            rgb[sel] = alb * lit(-np.sign(across) * light[axis])[:, None]  # walls face into the room
        if scene.table is not None:
            sel = np.flatnonzero(flat_ids == FLOOR)  # tiles in the walls' colours, darker
            alb = textures.ground_albedo(px[sel], py[sel], "indoor", 1.0, scene.wall_colour[::-1] * 0.7)
            rgb[sel] = alb * lit(np.full(len(sel), light[2]))[:, None]
            sel = np.flatnonzero(flat_ids == TABLE_SIDE)  # the table top's colours, facing out of the table
            side = np.abs(px[sel]) * scene.table[1] > np.abs(py[sel]) * scene.table[0]
            alb = textures.ground_albedo(np.where(side, py[sel], px[sel]), pz[sel], "table", 2.0 * scene.half_extent,
                                         scene.ground_colour)
            normal = np.where(side, np.sign(px[sel]) * light[0], np.sign(py[sel]) * light[1])
            rgb[sel] = alb * 0.8 * lit(normal)[:, None]
        sel = np.flatnonzero(flat_ids == CEILING)
        grain = 0.9 + 0.15 * textures.fbm2(px[sel] * 2.0, py[sel] * 2.0)
        rgb[sel] = scene.wall_colour[0].astype(np.float32) * (grain * lit(-light[2]))[:, None]

    for oid, obj in enumerate(scene.objects):
        sel = np.flatnonzero(flat_ids == oid)
        if not len(sel):
            continue
        yaw = float(obj.yaw(t_now))
        pos = obj.motion.position(t_now)
        world = np.stack([px[sel] - pos[0], py[sel] - pos[1], pz[sel]], -1)
        local = world @ _rot_z(yaw)  # row vectors times R is R^T applied: world -> local
        nrm = np.zeros((len(sel), 3))
        part_of = flat_prim[sel]
        for pi, part in enumerate(obj.parts):
            m = part_of == pi
            if m.any():
                nrm[m] = _local_normal(part.shape, local[m], part.centre, part.half)
        alb = textures.object_albedo(local, nrm, obj.pattern, obj.texture_scale, obj.texture_offset, obj.colour)
        for pi, part in enumerate(obj.parts):
            m = part_of == pi
            if part.tint is not None and m.any():
                alb[m] = np.asarray(part.tint, dtype=np.float32) * (0.55 + 0.45 * alb[m].mean(-1, keepdims=True) / 0.6)
        rgb[sel] = alb * lit(nrm @ (_rot_z(yaw).T @ light))[:, None]  # light into the local frame

    if scene.room is None:
        sel = np.flatnonzero(flat_ids == SKY)
        dx, dy, dz = (c.ravel()[sel] for c in dirs)
        sky = textures.sky_colour(dz / np.sqrt(dx * dx + dy * dy + dz * dz))
        rgb[sel] = sky if scene.preset.sky else sky * 0.6
    rgb *= 255.0
    rgb += 0.5
    np.clip(rgb, 0.0, 255.0, out=rgb)
    return rgb.astype(np.uint8).reshape(h, w, 3)
