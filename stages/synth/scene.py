"""Scene layout: presets, object categories built from primitives, object motion and camera paths.

Everything here is analytic: an object's pose, velocity and bounding volume at any time come from closed-form
expressions, so the ground truth written by the renderer is exact rather than estimated.

World frame: right-handed, z up, the ground is the plane z = 0. An object's local frame has its origin at the
centre of its footprint on the ground, z up; its primitives are recentred so that the local bounding box is
centred on the z axis. The object's reference point (its *centroid* in the ground truth) is therefore the centre
of its gravity-aligned bounding box, ``position + (0, 0, height / 2)``, which does not depend on its yaw.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

BOX, SPHERE, CYLINDER = 0, 1, 2
PRIMITIVE_NAMES = {BOX: "box", SPHERE: "sphere", CYLINDER: "cylinder"}
PRESETS = ("tiny-tabletop", "tabletop", "indoor", "outdoor")
CAMERAS = ("orbit", "walk", "pan", "static")
MOTIONS = ("straight", "curved", "accelerating", "stopping", "starting", "back-and-forth")
TURNING = "turning"  # a person standing still and turning: not moving, but its facing changes
# Where an object's front is, as an angle from its local +x towards +y: categories with a facing. Agents (people,
# cars, toy cars) may face away from where they go; chairs and sofas face where their seat opens.
FRONT = {"person": 0.0, "car": 0.0, "toy car": 0.0, "chair": math.pi / 2, "sofa": math.pi / 2}
FREE_FACING = ("person",)  # may walk sideways or backwards and turn while walking or standing


@dataclass(frozen=True)
class Primitive:
    """One solid in an object's local frame. ``half`` is (hx, hy, hz) for a box, (r, r, r) for a sphere and
    (r, r, half height) for an upright cylinder. ``tint`` overrides the object's colour (e.g. wheels, a head)."""

    shape: int
    centre: tuple[float, float, float]
    half: tuple[float, float, float]
    tint: tuple[float, float, float] | None = None


def _box(cx, cy, z0, sx, sy, sz, tint=None) -> Primitive:
    return Primitive(BOX, (cx, cy, z0 + sz / 2), (sx / 2, sy / 2, sz / 2), tint)


def _cyl(cx, cy, z0, r, h, tint=None) -> Primitive:
    return Primitive(CYLINDER, (cx, cy, z0 + h / 2), (r, r, h / 2), tint)


def _sph(cx, cy, cz, r, tint=None) -> Primitive:
    return Primitive(SPHERE, (cx, cy, cz), (r, r, r), tint)


DARK = (0.12, 0.12, 0.13)
SKIN = (0.85, 0.66, 0.52)
BARK = (0.42, 0.29, 0.17)
LEAF = (0.22, 0.5, 0.18)
GLASS = (0.55, 0.7, 0.8)


def _category_parts(name: str, rng: np.random.Generator) -> list[Primitive]:
    """Nominal geometry of a category in metres (scaled later to the sampled true size)."""
    u = rng.uniform
    if name in ("box", "die", "book", "cabinet", "container"):
        dims = {
            "box": (u(0.5, 1.0), u(0.5, 1.0), u(0.4, 1.0)),
            "die": (1.0, 1.0, 1.0),
            "book": (0.15, 0.22, u(0.02, 0.05)),
            "cabinet": (u(0.6, 1.0), u(0.4, 0.6), u(0.8, 1.9)),
            "container": (6.0, 2.4, 2.6),
        }[name]
        return [_box(0, 0, 0, *dims)]
    if name in ("sphere", "bead", "ball"):
        return [_sph(0, 0, 0.5, 0.5)]
    if name in ("cylinder", "can", "coin", "battery", "pillar"):
        r, h = {
            "cylinder": (u(0.25, 0.5), u(0.5, 1.2)),
            "can": (0.033, 0.12),
            "coin": (0.5, u(0.08, 0.15)),
            "battery": (0.007, 0.05),
            "pillar": (0.4, 4.0),
        }[name]
        return [_cyl(0, 0, 0, r, h)]
    if name == "cup":
        return [_cyl(0, 0, 0, 0.04, 0.1), _box(0.047, 0, 0.025, 0.016, 0.01, 0.05)]
    if name == "bottle":
        return [_cyl(0, 0, 0, 0.035, 0.16), _cyl(0, 0, 0.16, 0.014, 0.05), _cyl(0, 0, 0.21, 0.016, 0.02, DARK)]
    if name == "chair":
        parts = [_box(0, 0, 0.43, 0.46, 0.46, 0.05), _box(0, -0.21, 0.48, 0.46, 0.04, 0.45)]
        parts += [_box(sx * 0.2, sy * 0.2, 0, 0.04, 0.04, 0.43) for sx in (-1, 1) for sy in (-1, 1)]
        return parts
    if name == "table":
        sx, sy = u(0.9, 1.6), u(0.6, 0.9)
        parts = [_box(0, 0, 0.71, sx, sy, 0.04)]
        parts += [_box(a * (sx / 2 - 0.06), b * (sy / 2 - 0.06), 0, 0.05, 0.05, 0.71) for a in (-1, 1) for b in (-1, 1)]
        return parts
    if name == "sofa":
        return [_box(0, 0, 0, 1.9, 0.85, 0.42), _box(0, -0.34, 0.42, 1.9, 0.17, 0.4),
                _box(-0.87, 0.08, 0.42, 0.16, 0.69, 0.2), _box(0.87, 0.08, 0.42, 0.16, 0.69, 0.2)]
    if name == "person":  # faces +x: feet and a dark visor show the front
        return [_cyl(0, 0.1, 0, 0.07, 0.86, DARK), _cyl(0, -0.1, 0, 0.07, 0.86, DARK),
                _box(0.06, 0.1, 0, 0.24, 0.1, 0.06, DARK), _box(0.06, -0.1, 0, 0.24, 0.1, 0.06, DARK),
                _box(0, 0, 0.86, 0.22, 0.38, 0.58), _sph(0, 0, 1.58, 0.11, SKIN), _box(0.08, 0, 1.58, 0.06, 0.16, 0.05, DARK)]
    if name in ("car", "toy car"):  # faces +x: the cabin sits towards the back
        parts = [_box(0, 0, 0.3, 4.3, 1.8, 0.7), _box(-0.25, 0, 1.0, 2.3, 1.6, 0.5, GLASS)]
        parts += [_box(a * 1.35, b * 0.8, 0, 0.64, 0.26, 0.64, DARK) for a in (-1, 1) for b in (-1, 1)]
        return parts
    if name == "tree":
        trunk = u(2.0, 3.5)
        crown = u(1.2, 2.2)
        return [_cyl(0, 0, 0, 0.18 + 0.04 * trunk, trunk + crown * 0.5, BARK), _sph(0, 0, trunk + crown, crown, LEAF)]
    if name == "building":
        return [_box(0, 0, 0, u(8, 25), u(8, 25), u(6, 30))]
    raise ValueError(f"unknown category {name!r}")


# Per preset: the scene's half extent (m), categories that may move or stay, default size range of the generic
# categories (longest side, m), and natural sizes of named categories (longest side, m).
@dataclass(frozen=True)
class Preset:
    name: str
    half_extent: tuple[float, float]
    movable: tuple[str, ...]
    fixed: tuple[str, ...]
    generic_size: tuple[float, float]
    room: bool = False
    on_table: bool = False  # the objects stand on a table in a room (the table top is the plane z = 0)
    sky: bool = False
    ground_radius: float = math.inf
    fov_deg: tuple[float, float] = (50.0, 65.0)
    elevation_deg: tuple[float, float] = (25.0, 45.0)
    eye_height: float | None = None  # indoor: a person's eye height (outside a room the elevation sets it)
    distance: tuple[float, float] = (2.0, 2.6)  # camera distance from the centre, in scene half extents


GENERIC = ("box", "sphere", "cylinder")
# Longest side (m) of each kind as real ones come: espresso cup to large mug, child's chair to high-backed chair,
# child to tall adult, city car to van, so that two objects of one kind often differ clearly in size.
NATURAL_SIZE = {
    "die": (0.006, 0.016), "bead": (0.004, 0.012), "coin": (0.016, 0.03), "battery": (0.03, 0.05),
    "cup": (0.07, 0.15), "bottle": (0.15, 0.35), "book": (0.15, 0.3), "can": (0.08, 0.17), "ball": (0.06, 0.22),
    "chair": (0.65, 1.1), "table": (0.9, 1.6), "sofa": (1.5, 2.4), "cabinet": (0.8, 1.9), "person": (1.2, 1.95),
    "car": (3.5, 5.5), "toy car": (0.06, 0.2), "tree": (4.0, 9.0), "building": (10.0, 30.0), "container": (6.0, 12.2), "pillar": (3.0, 6.0),
}
# Real scenes hold several objects of a kind (chairs round a table, boxes, cups, parked cars): each object after the
# first of its role (moving or still) is, with this probability, a second one of a kind drawn once so far for that
# role. Pairs rather than crowds: two of a kind can be told apart by their place in a frame, more rarely three.
REPEAT = 0.6
# Besides pairs, each scene holds one group of a kind (chairs round a table, cups on a tray, people in a street) of
# GROUP_SIZES members, equally likely (at most objects - 1, so another kind stays), its members moving or still where
# the kind may be either: so that a scene's counts of a kind run over 1-6, not only the 1-3 that pairs give.
GROUP_SIZES = (1, 2, 3, 4, 5, 6)

PRESET = {
    p.name: p
    for p in (
        Preset("tiny-tabletop", (0.05, 0.12), GENERIC + ("bead", "die"), GENERIC + ("coin", "battery", "die"),
               (0.004, 0.03), on_table=True),
        Preset("tabletop", (0.3, 0.6), GENERIC + ("ball", "can", "cup", "toy car", "toy car"),
               GENERIC + ("cup", "bottle", "book", "can"),
               (0.04, 0.3), on_table=True),
        Preset("indoor", (2.5, 4.5), GENERIC + ("person", "person", "chair", "ball"),
               GENERIC + ("chair", "table", "sofa", "cabinet"),
               (0.3, 1.2), room=True, fov_deg=(60.0, 75.0), eye_height=1.6),
        Preset("outdoor", (15.0, 60.0), ("person", "car", "car", "sphere", "box"),
               GENERIC + ("tree", "building", "car", "person", "container", "pillar"), (2.0, 10.0), sky=True,
               ground_radius=600.0, elevation_deg=(12.0, 30.0), distance=(1.6, 2.1)),
    )
}


@dataclass
class Motion:
    """Ground-plane trajectory of an object: ``position(t)`` and its exact derivative ``velocity(t)``.

    straight: p0 + v t;  accelerating: p0 + dir (v0 t + a t^2 / 2);  stopping: decelerates uniformly to rest at
    ``t_stop`` and stays;  starting: at rest until ``t_stop``, then accelerates uniformly;  back-and-forth:
    p0 + dir A sin(w t) (out and back: approaching then receding);  curved: a circular arc around ``centre``;
    turning: stays at p0 and turns;  static: p0.

    Facing (``yaw``): the direction of travel (curved: the tangent; others: ``yaw0``, the direction of ``dir``),
    plus ``facing_offset`` (walking sideways or backwards) and ``turn_rate`` t (turning while moving or standing).
    """

    kind: str
    p0: np.ndarray
    direction: np.ndarray = field(default_factory=lambda: np.array([1.0, 0.0]))
    speed: float = 0.0  # v0 (m/s); for curved: angular speed times radius
    accel: float = 0.0
    t_stop: float = 0.0
    centre: np.ndarray = field(default_factory=lambda: np.zeros(2))
    radius: float = 0.0
    angle0: float = 0.0
    omega: float = 0.0
    yaw0: float = 0.0
    amplitude: float = 0.0  # back-and-forth: A (m)
    facing_offset: float = 0.0
    turn_rate: float = 0.0  # rad/s

    def _s(self, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Distance travelled along ``direction`` and its derivative."""
        if self.kind == "straight":
            return self.speed * t, np.full_like(t, self.speed)
        if self.kind == "accelerating":
            return self.speed * t + 0.5 * self.accel * t**2, self.speed + self.accel * t
        if self.kind == "stopping":
            tc = np.minimum(t, self.t_stop)
            return self.speed * tc - 0.5 * self.accel * tc**2, np.where(t < self.t_stop, self.speed - self.accel * t, 0.0)
        if self.kind == "starting":
            tc = np.maximum(t - self.t_stop, 0.0)
            return 0.5 * self.accel * tc**2, self.accel * tc
        if self.kind == "back-and-forth":
            return self.amplitude * np.sin(self.omega * t), self.amplitude * self.omega * np.cos(self.omega * t)
        return np.zeros_like(t), np.zeros_like(t)

    def position(self, t) -> np.ndarray:
        t = np.asarray(t, dtype=np.float64)
        if self.kind == "curved":
            a = self.angle0 + self.omega * t
            return self.centre + self.radius * np.stack([np.cos(a), np.sin(a)], -1)
        s, _ = self._s(t)
        return self.p0 + s[..., None] * self.direction

    def velocity(self, t) -> np.ndarray:
        t = np.asarray(t, dtype=np.float64)
        if self.kind == "curved":
            a = self.angle0 + self.omega * t
            return self.radius * self.omega * np.stack([-np.sin(a), np.cos(a)], -1)
        _, ds = self._s(t)
        return ds[..., None] * self.direction

    def yaw(self, t) -> np.ndarray:
        """Heading of the local +x: the direction of travel (static ones keep ``yaw0``), turned by
        ``facing_offset + turn_rate t``."""
        t = np.asarray(t, dtype=np.float64)
        extra = self.facing_offset + self.turn_rate * t
        if self.kind == "curved":
            return self.angle0 + self.omega * t + math.copysign(math.pi / 2, self.omega) + extra
        return self.yaw0 + extra

    def is_moving(self) -> bool:
        """Whether its position changes (a person turning on the spot is not moving)."""
        return self.kind not in ("static", TURNING)


@dataclass
class SceneObject:
    label: str
    kind: str  # "box" | "sphere" | "cylinder" for one primitive, "composite" for a union
    parts: list[Primitive]
    half: np.ndarray  # half extents of the local bounding box (x, y, z); z half = height / 2
    motion: Motion
    colour: np.ndarray  # (2, 3) base and secondary albedo
    pattern: str  # "noise" | "checker" | "stripes"
    texture_scale: float  # metres per texture cell
    texture_offset: np.ndarray  # (3,) decorrelates the solid textures of different objects

    @property
    def true_size(self) -> np.ndarray:
        return 2.0 * self.half

    @property
    def moving(self) -> bool:
        return self.motion.is_moving()

    @property
    def radius(self) -> float:
        """Radius of the bounding sphere around the centroid (for culling and spacing)."""
        return float(np.linalg.norm(self.half))

    def centroid(self, t) -> np.ndarray:
        p = self.motion.position(t)
        z = np.full(p.shape[:-1] + (1,), self.half[2])
        return np.concatenate([p, z], -1)

    def velocity(self, t) -> np.ndarray:
        v = self.motion.velocity(t)
        return np.concatenate([v, np.zeros(v.shape[:-1] + (1,))], -1)

    def yaw(self, t) -> np.ndarray:
        return self.motion.yaw(t)

    def aabb(self, t) -> np.ndarray:
        """(…, 6) world axis-aligned bounding box of the true geometry at time(s) t."""
        t = np.asarray(t, dtype=np.float64)
        p = self.motion.position(t)
        yaw = self.yaw(t)
        c, s = np.cos(yaw)[..., None], np.sin(yaw)[..., None]
        lo = np.full(t.shape + (3,), np.inf)
        hi = np.full(t.shape + (3,), -np.inf)
        for prim in self.parts:
            cx, cy, cz = prim.centre
            hx, hy, hz = prim.half
            centre_xy = p + np.concatenate([c * cx - s * cy, s * cx + c * cy], -1)
            if prim.shape == BOX:
                ex = np.abs(c) * hx + np.abs(s) * hy
                ey = np.abs(s) * hx + np.abs(c) * hy
            else:  # spheres and upright cylinders are round in xy
                ex = ey = np.full_like(c, hx)
            ext = np.concatenate([ex, ey, np.full_like(ex, hz)], -1)
            centre = np.concatenate([centre_xy, np.full_like(ex, cz)], -1)
            lo = np.minimum(lo, centre - ext)
            hi = np.maximum(hi, centre + ext)
        return np.concatenate([lo, hi], -1)


def _normalised_parts(parts: list[Primitive], scale: float) -> tuple[list[Primitive], np.ndarray]:
    """Scale the parts and recentre them so the local bounding box is centred on the z axis, on the ground."""
    lo = np.min([np.subtract(p.centre, p.half) for p in parts], axis=0)
    hi = np.max([np.add(p.centre, p.half) for p in parts], axis=0)
    shift = np.array([-(lo[0] + hi[0]) / 2, -(lo[1] + hi[1]) / 2, -lo[2]])
    out = [
        Primitive(p.shape, tuple(float(v) for v in (np.add(p.centre, shift) * scale)),
                  tuple(float(v) for v in np.multiply(p.half, scale)), p.tint)
        for p in parts
    ]
    return out, (hi - lo) / 2 * scale


@dataclass
class Camera:
    """Camera path: eye and look-at target as functions of time; constant pinhole intrinsics."""

    kind: str
    fx: float
    width: int
    height: int
    eye_fn: Callable[[np.ndarray], np.ndarray]  # times (...,) -> eye positions (..., 3)
    target_fn: Callable[[np.ndarray], np.ndarray]  # times (...,) -> look-at points (..., 3)

    @property
    def intrinsics(self) -> np.ndarray:
        # Principal point at the image centre with pixel centres at integer coordinates (the schema's convention).
        return np.array([[self.fx, 0.0, (self.width - 1) / 2], [0.0, self.fx, (self.height - 1) / 2], [0.0, 0.0, 1.0]])

    def cam2world(self, t) -> np.ndarray:
        t = np.atleast_1d(np.asarray(t, dtype=np.float64))
        return look_at(self.eye_fn(t), self.target_fn(t))


def look_at(eye: np.ndarray, target: np.ndarray, up=(0.0, 0.0, 1.0)) -> np.ndarray:
    """(…, 4, 4) OpenCV cam2world (x right, y down, z forward) looking from eye to target, world z up."""
    forward = target - eye
    forward = forward / np.linalg.norm(forward, axis=-1, keepdims=True)
    right = np.cross(forward, np.asarray(up))
    right = right / np.linalg.norm(right, axis=-1, keepdims=True)
    down = np.cross(forward, right)
    pose = np.zeros(eye.shape[:-1] + (4, 4))
    pose[..., :3, 0], pose[..., :3, 1], pose[..., :3, 2], pose[..., :3, 3] = right, down, forward, eye
    pose[..., 3, 3] = 1.0
    return pose


@dataclass
class Scene:
    preset: Preset
    half_extent: float  # radius of the object area (indoor: the room's half sizes are in ``room``)
    room: np.ndarray | None  # (Lx, Ly, ceiling) half sizes x, y and the ceiling's height (indoor: the full height)
    objects: list[SceneObject]
    camera: Camera
    times: np.ndarray  # (N,) seconds
    light: np.ndarray  # (3,) unit vector towards the light
    ground_colour: np.ndarray  # (2, 3)
    wall_colour: np.ndarray  # (2, 3)
    texture_offset: np.ndarray  # (3,)
    table: np.ndarray | None = None  # (Tx, Ty, height): a table's top half sizes and height; the floor is z = -height


# ---------------------------------------------------------------------------------------------------- sampling


def _colours(rng: np.random.Generator) -> np.ndarray:
    """A saturated base colour and a darker shade of nearly the same hue for the pattern (HSV sampled, converted to
    RGB): most objects are of one colour, so a person can say "the red cup" of one, and the contrast in brightness
    keeps the pattern for matchers."""
    h = rng.uniform(0, 1)
    base = _hsv(h, rng.uniform(0.55, 0.9), rng.uniform(0.65, 0.95))
    second = _hsv((h + rng.uniform(-0.02, 0.02)) % 1.0, rng.uniform(0.5, 0.9), rng.uniform(0.3, 0.55))
    return np.stack([base, second])


def _hsv(h: float, s: float, v: float) -> np.ndarray:
    i = int(h * 6) % 6
    f = h * 6 - int(h * 6)
    p, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
    return np.array([(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)][i])


def _size_range(preset: Preset, category: str) -> tuple[float, float]:
    return NATURAL_SIZE.get(category, preset.generic_size) if category not in GENERIC else preset.generic_size


def _categories(rng: np.random.Generator, kinds: tuple[str, ...], n: int) -> list[str]:
    """n categories from ``kinds``; each after the first is, with probability ``REPEAT``, a second one of a kind
    drawn once so far."""
    out: list[str] = []
    for _ in range(n):
        single = [k for k in out if out.count(k) == 1]
        pool = single if single and rng.random() < REPEAT else kinds
        out.append(str(pool[int(rng.integers(len(pool)))]))
    return out


def _group(rng: np.random.Generator, p: Preset, n_objects: int, n_moving: int) -> tuple[str, int, int]:
    """The scene's group of one kind: (kind, members moving, members still). Its size is drawn from
    ``GROUP_SIZES`` (at most objects - 1), its kind among the preset's kinds with room for that many (a kind that
    may move or stand takes moving and still places alike)."""
    n_still = n_objects - n_moving
    sizes = [g for g in GROUP_SIZES if g <= max(n_objects - 1, 1)]
    if len(sizes) < 2:  # one or two objects: only a group of one, which any single object is (nothing drawn)
        return "", 0, 0
    size = int(sizes[int(rng.integers(len(sizes)))])

    def room(kind):
        return (n_moving if kind in p.movable else 0) + (n_still if kind in p.fixed else 0)

    kinds = [k for k in p.movable + p.fixed if room(k) >= size]
    if not kinds:
        return "", 0, 0
    kind = str(kinds[int(rng.integers(len(kinds)))])
    hi = min(size, n_moving) if kind in p.movable else 0
    lo = max(0, size - (n_still if kind in p.fixed else 0))
    moving = int(rng.integers(lo, hi + 1))
    return kind, moving, size - moving


def _make_object(rng: np.random.Generator, preset: Preset, category: str, motion: Motion) -> SceneObject:
    nominal = _category_parts(category, rng)
    parts, half = _normalised_parts(nominal, 1.0)
    lo, hi = _size_range(preset, category)
    scale = rng.uniform(lo, hi) / float(2 * half.max())
    parts, half = _normalised_parts(nominal, scale)
    kind = PRIMITIVE_NAMES[parts[0].shape] if len(parts) == 1 else "composite"
    return SceneObject(
        label=category, kind=kind, parts=parts, half=half, motion=motion, colour=_colours(rng),
        pattern=str(rng.choice(["noise", "checker", "stripes"])),
        texture_scale=float(2 * half.max() / rng.uniform(3.0, 6.0)),
        texture_offset=rng.uniform(0, 1000, 3),
    )


def _sample_motion(rng: np.random.Generator, moving: bool, centre: np.ndarray, duration: float, span: float,
                   category: str = "") -> Motion:
    """A trajectory around ``centre`` covering about ``span`` metres over the clip.

    Half of the straight-line kinds head for the scene centre or away from it (objects cluster there, so they
    approach or recede from others); people may face away from where they go and turn."""
    yaw = rng.uniform(-math.pi, math.pi)
    free = category in FREE_FACING
    if not moving:
        if free and rng.random() < 0.7:  # a person standing and turning
            return Motion(TURNING, p0=centre, yaw0=yaw, turn_rate=_turn_rate(rng, duration))
        return Motion("static", p0=centre, yaw0=yaw)
    kind = MOTIONS[int(rng.integers(len(MOTIONS)))]
    aim = rng.random()
    if aim < 0.5 and np.linalg.norm(centre) > 1e-9 and kind != "curved":
        yaw = math.atan2(-centre[1], -centre[0]) + (math.pi if aim < 0.15 else 0.0) + rng.normal(0, 0.3)
    direction = np.array([math.cos(yaw), math.sin(yaw)])
    dist = span * rng.uniform(0.5, 1.0)
    start = centre - direction * dist / 2
    facing, turn = 0.0, 0.0
    if free:
        u = rng.random()
        if u < 0.3:
            facing = float(rng.choice([math.pi / 2, -math.pi / 2, math.pi]))
        elif u < 0.8:
            turn = _turn_rate(rng, duration)
    if kind == "straight":
        return Motion(kind, p0=start, direction=direction, speed=dist / duration, yaw0=yaw, facing_offset=facing,
                      turn_rate=turn)
    if kind == "accelerating":
        v0 = dist / duration * rng.uniform(0.1, 0.5)
        accel = 2 * (dist - v0 * duration) / duration**2
        return Motion(kind, p0=start, direction=direction, speed=v0, accel=accel, yaw0=yaw, facing_offset=facing,
                      turn_rate=turn)
    if kind == "stopping":
        t_stop = duration * rng.uniform(0.4, 0.8)
        v0 = 2 * dist / t_stop  # uniform deceleration covers v0 * t_stop / 2
        return Motion(kind, p0=start, direction=direction, speed=v0, accel=v0 / t_stop, t_stop=t_stop, yaw0=yaw,
                      facing_offset=facing, turn_rate=turn)
    if kind == "starting":
        t_start = duration * rng.uniform(0.2, 0.6)
        accel = 2 * dist / (duration - t_start) ** 2
        return Motion(kind, p0=start, direction=direction, accel=accel, t_stop=t_start, yaw0=yaw,
                      facing_offset=facing, turn_rate=turn)
    if kind == "back-and-forth":
        omega = math.pi * rng.uniform(0.8, 1.6) / duration  # out and (partly or wholly) back
        return Motion(kind, p0=start, direction=direction, amplitude=dist, omega=omega, yaw0=yaw,
                      facing_offset=facing, turn_rate=turn)
    radius = span * rng.uniform(0.4, 0.8)
    sweep = dist / radius * rng.choice([-1.0, 1.0])
    angle0 = rng.uniform(-math.pi, math.pi)
    arc_centre = centre - radius * np.array([math.cos(angle0 + sweep / 2), math.sin(angle0 + sweep / 2)])
    return Motion(kind, p0=centre, centre=arc_centre, radius=radius, angle0=angle0, omega=sweep / duration, yaw0=yaw,
                  facing_offset=facing, turn_rate=turn)


def _turn_rate(rng: np.random.Generator, duration: float) -> float:
    """A turn of 90-270 degrees over the clip, either way (enough to face another way within a few key times)."""
    return math.radians(rng.uniform(90, 270)) / duration * float(rng.choice([-1.0, 1.0]))


def _camera(rng: np.random.Generator, preset: Preset, kind: str, width: int, height: int, extent: float,
            room: np.ndarray | None, duration: float, look_height: float) -> Camera:
    fov = math.radians(rng.uniform(*preset.fov_deg))
    fx = (width / 2) / math.tan(fov / 2)
    target = np.array([0.0, 0.0, look_height])
    az0 = rng.uniform(-math.pi, math.pi)
    axes = np.ones(2)
    if room is not None:
        # Inside the room: a person's eye height, on an ellipse with the room's proportions kept clear of the walls
        # (in a long room the camera also goes along it, and sees its far end).
        radius = 0.72 * min(room[0], room[1])
        axes = np.asarray(room[:2]) / min(room[0], room[1])
        cam_z = preset.eye_height + rng.uniform(-0.15, 0.15)
    else:
        elev = math.radians(rng.uniform(*preset.elevation_deg))
        dist = extent * rng.uniform(*preset.distance)
        radius, cam_z = dist * math.cos(elev), dist * math.sin(elev) + look_height

    def ring(az):
        az = np.asarray(az, dtype=np.float64)
        return np.stack([radius * axes[0] * np.cos(az), radius * axes[1] * np.sin(az), np.full_like(az, cam_z)], -1)

    def fixed(point):
        return lambda t: np.broadcast_to(point, t.shape + (3,)).copy()

    eye_fn, target_fn = fixed(ring(az0)), fixed(target)
    if kind == "orbit":
        sweep = math.radians(rng.uniform(40, 100)) * rng.choice([-1.0, 1.0])
        eye_fn = lambda t: ring(az0 + sweep * t / duration)  # noqa: E731
    elif kind == "walk":
        # Walk towards the scene centre, swaying a little sideways with a small bob, looking at the centre.
        start = ring(az0)
        stop = start * np.array([0.5, 0.5, 1.0])
        side = np.array([-math.sin(az0), math.cos(az0), 0.0])
        sway = radius * rng.uniform(0.05, 0.12)

        def eye_fn(t):
            f = (t / duration)[..., None]
            bob = np.zeros(t.shape + (3,))
            bob[..., 2] = 0.01 * radius * np.sin(2 * math.pi * 1.7 * t)
            return start + (stop - start) * f + side * sway * np.sin(math.pi * f) + bob
    elif kind == "pan":
        # Stand still and turn: the look-at point sweeps sideways around the scene centre.
        eye = ring(az0)
        look = target - eye
        base_az, dist_xy = math.atan2(look[1], look[0]), math.hypot(look[0], look[1])
        sweep = math.radians(rng.uniform(25, 45)) * rng.choice([-1.0, 1.0])

        def target_fn(t):
            az = base_az + sweep * (t / duration - 0.5)
            return np.stack([eye[0] + dist_xy * np.cos(az), eye[1] + dist_xy * np.sin(az),
                             np.full_like(az, target[2])], -1)
    return Camera(kind, fx, width, height, eye_fn, target_fn)


# Indoor rooms (VSI-Bench's scenes run from bathrooms to classrooms and halls): floor area log-uniform in ROOM_AREA
# (m^2), the long side up to ROOM_ASPECT times the short one but the short side at least ROOM_MIN_SIDE (a person,
# a chair and a table still fit across), ceilings from a low 2.4 m in small rooms up to about 4 m in large halls.
ROOM_AREA = (6.0, 150.0)
ROOM_ASPECT = 2.2
ROOM_MIN_SIDE = 2.2
FURNISHED_HALF = 3.0  # half size (m) of the furnished middle of a room: objects stay within it
ROOM_GROW = 1.1  # a room too small for its contents grows by this factor along both sides, until they fit
ROOM_GROW_TRIES = 25  # at most (x10.8 per side)


def sample_room(rng: np.random.Generator) -> np.ndarray:
    """(Lx, Ly, height): a rectangular room's half sizes along x and y and its ceiling height."""
    area = math.exp(rng.uniform(math.log(ROOM_AREA[0]), math.log(ROOM_AREA[1])))
    aspect = math.exp(rng.uniform(0.0, math.log(ROOM_ASPECT)))
    short = max(math.sqrt(area / aspect), ROOM_MIN_SIDE)
    sides = (area / short, short) if rng.random() < 0.5 else (short, area / short)
    large = (math.log(area) - math.log(20.0)) / (math.log(ROOM_AREA[1]) - math.log(20.0))
    height = rng.uniform(2.4, 2.9) + 1.2 * min(max(large, 0.0), 1.0) * rng.uniform(0.4, 1.0)
    return np.array([sides[0] / 2, sides[1] / 2, height])


def sample_table_room(rng: np.random.Generator, bounds: np.ndarray, eyes_xy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(table, room) for a table scene: a table top holding the object area (``bounds``), a kitchen or desk table
    at least, 0.7-0.8 m high, in the middle of a room (as ``sample_room``, grown until the table and the camera
    path keep clear of its walls). The room's ceiling is given above the table top."""
    top = np.maximum(bounds * rng.uniform(1.3, 1.8, 2), rng.uniform(0.35, 0.8, 2))
    table = np.array([top[0], top[1], rng.uniform(0.7, 0.8)])
    room = sample_room(rng)
    need = max(float(top.max()) + 0.6, float(np.abs(eyes_xy).max()) + 0.4)
    while min(room[0], room[1]) < need:
        room = room * np.array([ROOM_GROW, ROOM_GROW, 1.0])
    room[2] -= table[2]
    return table, room


def _trajectory_ok(obj: SceneObject, times: np.ndarray, placed: list[tuple[SceneObject, np.ndarray]],
                   bounds: np.ndarray, eyes_xy: np.ndarray, camera_clearance: float) -> tuple[bool, np.ndarray]:
    path = obj.motion.position(times)
    foot = float(np.hypot(obj.half[0], obj.half[1]))
    if np.any(np.abs(path) + foot > bounds):
        return False, path
    if np.any(np.linalg.norm(path - eyes_xy, axis=-1) < foot + camera_clearance):
        return False, path
    for other, other_path in placed:
        gap = foot + float(np.hypot(other.half[0], other.half[1]))
        if np.any(np.linalg.norm(path - other_path, axis=-1) < gap * 1.02):
            return False, path
    return True, path


def _room_layout(room: np.ndarray) -> tuple[np.ndarray, float, float]:
    """(placement bounds, radius of the furnished middle, camera clearance) of a room: furniture and people gather
    within a few metres of the middle however large the hall; in a small room the camera keeps less clearance."""
    bounds = room[:2] - 0.05
    return bounds, float(min(FURNISHED_HALF, 0.6 * float(min(bounds)))), float(min(0.6, 0.25 * float(min(room[:2]))))


def _place(rng: np.random.Generator, p: Preset, categories: list[str], order: np.ndarray, n_moving: int,
           times: np.ndarray, duration: float, bounds: np.ndarray, eyes_xy: np.ndarray, clearance: float,
           stop_early: bool = False) -> tuple[list[SceneObject], bool]:
    """Objects of the given categories placed clear of each other, of the walls and of the camera path, and
    whether every one found such a place (else the last try is kept, possibly overlapping; ``stop_early``: stop
    at the first object without a place, the caller tries a larger room)."""
    span = 0.6 * float(min(bounds))
    area = bounds * 0.8
    if p.room:  # a small room is furnished up to its walls, a hall in its middle, crossed by its people
        area = np.minimum(np.maximum(bounds - 0.4, 0.6 * bounds), FURNISHED_HALF)
        span = min(span, 0.9 * FURNISHED_HALF)
    objects: list[SceneObject | None] = [None] * len(categories)
    placed: list[tuple[SceneObject, np.ndarray]] = []
    fits = True
    for slot, category in enumerate(categories):
        moving = slot < n_moving
        obj, ok = None, False
        for attempt in range(200):
            # Shrink a little after repeated failures so a crowded scene still fits.
            shrink = 0.97 ** max(0, attempt - 50)
            centre = rng.uniform(-area, area)
            obj = _make_object(rng, p, category, _sample_motion(rng, moving, centre, duration, span * shrink, category))
            ok, path = _trajectory_ok(obj, times, placed, bounds, eyes_xy, clearance)
            if ok:
                break
        if not ok and stop_early:
            return objects, False
        fits &= ok
        placed.append((obj, obj.motion.position(times)))
        objects[int(order[slot])] = obj
    return objects, fits


def build_scene(seed: int, preset: str, n_frames: int, width: int, height: int, n_objects: int, n_moving: int,
                camera: str, fps: float) -> Scene:
    """Sample a scene from ``seed``: everything random comes from one PCG64 stream, so it is reproducible."""
    p = PRESET[preset]
    rng = np.random.Generator(np.random.PCG64(seed))
    times = np.arange(n_frames, dtype=np.float64) / fps
    duration = max(n_frames / fps, 1e-6)
    extent = float(rng.uniform(*p.half_extent))
    room = None
    if p.room:
        room = sample_room(rng)
        bounds, extent, clearance = _room_layout(room)
        look_height = 0.8
    else:
        bounds = np.array([1.15 * extent, 1.15 * extent])
        look_height, clearance = 0.25 * float(np.mean(p.generic_size)), 0.12 * extent
    cam = _camera(rng, p, camera, width, height, extent, room, duration, look_height)
    eyes_xy = cam.eye_fn(times)[..., :2]
    table = None
    if p.on_table:  # from a stream of its own: the objects on the table stay those the seed gave before
        table, room = sample_table_room(np.random.Generator(np.random.PCG64([seed, 1])), bounds, eyes_xy)

    kind, g_moving, g_still = _group(rng, p, n_objects, n_moving)
    others = (tuple(k for k in p.movable if k != kind) or p.movable, tuple(k for k in p.fixed if k != kind) or p.fixed)
    categories = ([kind] * g_moving + _categories(rng, others[0], n_moving - g_moving)
                  + [kind] * g_still + _categories(rng, others[1], n_objects - n_moving - g_still))
    order = rng.permutation(n_objects)  # which object id gets which category (moving ones are not always first)
    grows = 0
    objects, fits = _place(rng, p, categories, order, n_moving, times, duration, bounds, eyes_xy, clearance, p.room)
    while p.room and not fits and grows < ROOM_GROW_TRIES:
        # The room's contents do not fit (a sofa and a table in a bathroom): a larger room, its camera path and
        # the same kinds of objects again, so that nothing stands in a wall or in another object. (Only far more
        # objects than a room holds, from --objects, use up the tries; the last one keeps every object.)
        grows += 1
        room = room * np.array([ROOM_GROW, ROOM_GROW, 1.0])
        bounds, extent, clearance = _room_layout(room)
        cam = _camera(rng, p, camera, width, height, extent, room, duration, look_height)
        eyes_xy = cam.eye_fn(times)[..., :2]
        objects, fits = _place(rng, p, categories, order, n_moving, times, duration, bounds, eyes_xy, clearance,
                               grows < ROOM_GROW_TRIES)

    az, el = rng.uniform(-math.pi, math.pi), math.radians(rng.uniform(40, 70))
    light = np.array([math.cos(az) * math.cos(el), math.sin(az) * math.cos(el), math.sin(el)])
    ground = np.stack([_hsv(rng.uniform(0.05, 0.15), rng.uniform(0.2, 0.5), rng.uniform(0.5, 0.8)),
                       _hsv(rng.uniform(0, 1), rng.uniform(0.1, 0.4), rng.uniform(0.3, 0.6))])
    if p.sky:  # grass and dirt
        ground = np.stack([_hsv(rng.uniform(0.22, 0.32), rng.uniform(0.4, 0.6), rng.uniform(0.4, 0.6)),
                           _hsv(rng.uniform(0.07, 0.11), rng.uniform(0.3, 0.5), rng.uniform(0.4, 0.6))])
    wall = np.stack([_hsv(rng.uniform(0, 1), rng.uniform(0.05, 0.25), rng.uniform(0.75, 0.9)),
                     _hsv(rng.uniform(0, 1), rng.uniform(0.1, 0.4), rng.uniform(0.45, 0.7))])
    return Scene(p, extent, room, objects, cam, times, light, ground, wall, rng.uniform(0, 1000, 3), table)
