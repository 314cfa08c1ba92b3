"""A scene's geometry in memory, in the form the question generators need.

Generators never touch the store: they take a :class:`SceneData`, which tests can also build by hand. Per-pixel
arrays (depth, pointmaps, masks) are read lazily, because a family that does not need them should not pay for them.
What many questions share (viewing the objects through every frame, pixel boxes, ways to name objects) is computed
once per scene with array maths and cached, so drawing one more question costs little more than formatting it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from spatialctl import store
from spatialctl.errors import SpatialctlError

WHOLE_ARRAY_BYTES = 256 << 20  # depth/masks up to this size are read once, whole


@dataclass
class SceneData:
    scene_id: str
    timestamps: np.ndarray  # (N,)
    intrinsics: np.ndarray  # (N, 3, 3)
    cam2world: np.ndarray  # (N, 4, 4)
    hw: tuple[int, int]
    scale: str  # "metric" | "relative"
    scale_source: str
    world_up: np.ndarray  # (3,)
    labels: list[str]  # per object
    object_ids: list  # per object, as the tracks group names them
    visible: np.ndarray  # (O, N) bool
    centroid: np.ndarray  # (O, N, 3), NaN when not visible
    box: np.ndarray  # (O, N, 7)
    aabb: np.ndarray  # (O, N, 6)
    velocity: np.ndarray  # (O, N, 3)
    moving: np.ndarray  # (O,) bool
    video: str | None = None
    front: np.ndarray | None = None  # (O,) where each object's front is, from its box x axis (rad); NaN: no facing
    path: str | None = None
    enclosed: bool = False  # an enclosed indoor space (a room): room size and "room" wording apply
    room_area: float | None = None  # the room's floor area (m^2) where the store declares it (a synth room)
    depth_reader: Callable[[int], np.ndarray] | None = None  # frame -> (H, W) z-depth
    points_reader: Callable[[], np.ndarray] | None = None  # -> (P, 3) valid world points of all frames
    mask_reader: Callable[[int, int], np.ndarray] | None = None  # (object, frame) -> (H, W) bool
    object_masks_reader: Callable[[int], np.ndarray] | None = None  # object -> (N, H, W) bool, all frames
    frame_reader: Callable[[int], np.ndarray] | None = None  # frame -> (H, W, 3) uint8 RGB
    frames_reader: Callable[[], np.ndarray] | None = None  # -> (N, H, W, 3) uint8 RGB, all frames
    _cache: dict = field(default_factory=dict, repr=False)

    @property
    def n_frames(self) -> int:
        return len(self.timestamps)

    @property
    def n_objects(self) -> int:
        return len(self.labels)

    @property
    def metric(self) -> bool:
        return self.scale == "metric"

    def label_count(self, label: str) -> int:
        counts = self._cache.get("label_counts")
        if counts is None:
            counts = self._cache["label_counts"] = {}
            for lab in self.labels:
                counts[lab] = counts.get(lab, 0) + 1
        return counts.get(label, 0)

    @property
    def seen(self) -> np.ndarray:
        """(O, N) bool: the object is visible and its centroid known."""
        if "seen" not in self._cache:
            self._cache["seen"] = self.visible & np.isfinite(self.centroid).all(-1)
        return self._cache["seen"]

    def facing(self) -> np.ndarray:
        """(O, N, 3) unit horizontal facing of every object in every frame: box yaw + front, in the floor plane;
        NaN for objects without a front and where the box is unknown (tracks without an orientation estimate)."""
        if "facing" not in self._cache:
            front = np.full(self.n_objects, np.nan) if self.front is None else np.asarray(self.front, np.float64)
            yaw = self.box[..., 6] + front[:, None]
            e1, e2, _ = self.horizontal_basis()
            self._cache["facing"] = np.cos(yaw)[..., None] * e1 + np.sin(yaw)[..., None] * e2
        return self._cache["facing"]

    def world2cam(self) -> np.ndarray:
        """(N, 4, 4) inverses of every camera pose, in one batched inversion."""
        if "world2cam" not in self._cache:
            self._cache["world2cam"] = np.linalg.inv(self.cam2world)
        return self._cache["world2cam"]

    def pixel_boxes(self) -> np.ndarray:
        """(O, N, 4) int64 pixel boxes [x1, y1, x2, y2] of every object in every frame; -1 rows where none.

        From the masks where the scene has them (one vectorised pass per object), else from the projected 3D box."""
        if "pixel_boxes" not in self._cache:
            out = np.full((self.n_objects, self.n_frames, 4), -1, dtype=np.int64)
            if self.object_masks_reader is not None or self.mask_reader is not None:
                for o in range(self.n_objects):
                    out[o] = _mask_boxes(self._object_masks(o))
            else:
                for o in range(self.n_objects):
                    for f in range(self.n_frames):
                        b = self._projected_box(o, f)
                        if b is not None:
                            out[o, f] = b
            self._cache["pixel_boxes"] = out
        return self._cache["pixel_boxes"]

    def _object_masks(self, o: int) -> np.ndarray:
        if self.object_masks_reader is not None:
            return self.object_masks_reader(o)
        return np.stack([self.mask_reader(o, f) for f in range(self.n_frames)])

    def horizontal_basis(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(e1, e2, up): a right-handed world frame whose first two axes span the floor plane."""
        if "basis" not in self._cache:
            up = self.world_up / np.linalg.norm(self.world_up)
            seed = np.array([1.0, 0.0, 0.0]) if abs(up[0]) < 0.9 else np.array([0.0, 1.0, 0.0])
            e1 = seed - up * (seed @ up)
            e1 /= np.linalg.norm(e1)
            self._cache["basis"] = (e1, np.cross(up, e1), up)
        return self._cache["basis"]

    def static_box(self, o: int) -> np.ndarray | None:
        """Median oriented box of an object over the frames where it is seen (None if never seen)."""
        key = ("box", o)
        if key not in self._cache:
            rows = self.box[o][self.visible[o] & np.isfinite(self.box[o]).all(-1)]
            self._cache[key] = np.median(rows, axis=0) if len(rows) else None
        return self._cache[key]

    def static_aabb(self, o: int) -> np.ndarray | None:
        key = ("aabb", o)
        if key not in self._cache:
            rows = self.aabb[o][self.visible[o] & np.isfinite(self.aabb[o]).all(-1)]
            self._cache[key] = np.median(rows, axis=0) if len(rows) else None
        return self._cache[key]

    def extent(self) -> float:
        """The scene's size: diagonal of the box around all objects and camera positions."""
        if "extent" not in self._cache:
            pts = [self.cam2world[:, :3, 3]]
            for o in range(self.n_objects):
                a = self.static_aabb(o)
                if a is not None:
                    pts.append(a.reshape(2, 3))
            allp = np.concatenate(pts)
            self._cache["extent"] = float(np.linalg.norm(allp.max(0) - allp.min(0)))
        return self._cache["extent"]

    def box_2d(self, o: int, f: int) -> list[int] | None:
        """The object's pixel box [x1, y1, x2, y2] in frame f: from its mask, else from its projected 3D box."""
        b = self.pixel_boxes()[o, f]
        return None if b[0] < 0 else [int(v) for v in b]

    def _projected_box(self, o: int, f: int) -> list[int] | None:
        b = self.box[o, f]
        if not np.isfinite(b).all():
            return None
        corners = box_corners(b, self.horizontal_basis())
        world2cam = np.linalg.inv(self.cam2world[f])
        cam = corners @ world2cam[:3, :3].T + world2cam[:3, 3]
        if (cam[:, 2] <= 1e-6).any():
            return None
        uv = cam @ self.intrinsics[f].T
        uv = uv[:, :2] / uv[:, 2:3]
        h, w = self.hw
        x1, y1 = np.clip(uv.min(0), 0, [w - 1, h - 1])
        x2, y2 = np.clip(uv.max(0), 0, [w - 1, h - 1])
        if x2 - x1 < 1 or y2 - y1 < 1:
            return None
        return [int(round(x1)), int(round(y1)), int(round(x2)), int(round(y2))]


def _mask_boxes(masks: np.ndarray) -> np.ndarray:
    """(N, H, W) bool -> (N, 4) int64 [x1, y1, x2, y2] of each mask's pixels, -1 where a mask is empty."""
    rows, cols = masks.any(2), masks.any(1)  # (N, H), (N, W)
    h, w = rows.shape[1], cols.shape[1]
    any_px = rows.any(1)
    x1, y1 = cols.argmax(1), rows.argmax(1)
    x2, y2 = w - 1 - cols[:, ::-1].argmax(1), h - 1 - rows[:, ::-1].argmax(1)
    out = np.stack([x1, y1, x2, y2], axis=1).astype(np.int64)
    out[~any_px] = -1
    return out


def box_corners(b: np.ndarray, basis) -> np.ndarray:
    """The 8 corners of a gravity-aligned box (centre, sizes along box x / box y / up, yaw about up)."""
    e1, e2, up = basis
    c, s, yaw = b[:3], b[3:6], b[6]
    ax = np.cos(yaw) * e1 + np.sin(yaw) * e2
    ay = np.cross(up, ax)
    signs = np.array([[i, j, k] for i in (-0.5, 0.5) for j in (-0.5, 0.5) for k in (-0.5, 0.5)])
    return c + (signs[:, :1] * s[0]) * ax + (signs[:, 1:2] * s[1]) * ay + (signs[:, 2:3] * s[2]) * up


def source_video(url: str, provenance: dict | None = None) -> str | None:
    """The video a store was made from: the source reconstruct recorded (its path, or a file of that name beside
    the store when the folder moved), else ``video.mp4`` / ``<stem>.mp4`` beside the store (synth's layout)."""
    p = Path(url)
    source = (provenance or {}).get("source") or {}
    candidates = []
    if source.get("kind") == "video" and source.get("path"):
        candidates += [Path(source["path"]), p.parent / Path(source["path"]).name]
    candidates += [p.parent / "video.mp4", p.parent / (p.stem + ".mp4")]
    return next((str(c) for c in candidates if c.is_file()), None)


def load_scene(url: str, scene_id: str | None = None) -> SceneData:
    """Read what make-qa needs from a scene store with tracks; raise SpatialctlError for unusable input."""
    s, tracks = _open_checked(url)
    attrs, objects = s.attrs, list(tracks.attrs.get("objects", []))
    up = np.asarray(attrs.get("world_up", [0, 0, 1]), dtype=np.float64)
    readers = _Readers(s, tracks)
    return SceneData(
        scene_id=scene_id or _scene_name(url),
        timestamps=s.read("timestamps").astype(np.float64),
        intrinsics=s.read("intrinsics"),
        cam2world=s.read("cam2world"),
        hw=s.hw,
        scale=str(attrs.get("scale", "relative")),
        scale_source=str(attrs.get("scale_source", "none")),
        world_up=up / np.linalg.norm(up),
        labels=[str(o.get("label", "object")) for o in objects],
        object_ids=[o.get("id", i) for i, o in enumerate(objects)],
        visible=tracks.read("visible").astype(bool),
        centroid=tracks.read("centroid").astype(np.float64),
        box=tracks.read("box").astype(np.float64),
        aabb=tracks.read("aabb").astype(np.float64),
        velocity=tracks.read("velocity").astype(np.float64),
        moving=tracks.read("moving").astype(bool),
        video=source_video(url, s.provenance),
        front=np.array([float(o.get("front_yaw", np.nan)) for o in objects], dtype=np.float64),
        path=url,
        enclosed=_enclosed(attrs),
        room_area=_room_area(attrs),
        depth_reader=readers.depth,
        points_reader=readers.points,
        mask_reader=readers.mask,
        object_masks_reader=readers.object_masks,
        frame_reader=readers.frame,
        frames_reader=readers.frames,
    )


def _open_checked(url: str):
    """The store and its tracks group, refused (one line naming the path) when make-qa cannot use them."""
    s = store.open_scene(url)
    if not s.has("tracks"):
        raise SpatialctlError(f"{url}: no complete 'tracks' group; run `spatialctl track` (or synth) first")
    tracks = s.open_group("tracks")
    n_objects, n_visible = len(tracks.attrs.get("objects", [])), tracks.group["visible"].shape[0]
    if n_objects != n_visible:
        raise SpatialctlError(f"{url}/tracks: {n_objects} objects in attrs but {n_visible} in arrays")
    timestamps = s.read("timestamps")
    if len(timestamps) > 1 and not (np.diff(timestamps) > 0).all():
        raise SpatialctlError(f"{url}/timestamps: not strictly increasing")
    up = np.asarray(s.attrs.get("world_up", [0, 0, 1]), dtype=np.float64)
    if up.shape != (3,) or not np.isfinite(up).all() or np.linalg.norm(up) < 1e-6:
        raise SpatialctlError(f"{url}: world_up {s.attrs.get('world_up')!r} is not a 3-vector")
    return s, tracks


class _Readers:
    """Lazy per-frame reads of depth, points, masks and frames. An array small enough is read whole once: one
    read beats many per-frame reads (each a chunk round trip)."""

    def __init__(self, s, tracks):
        self.s, self.tracks, self.hw = s, tracks, s.hw
        self.whole: dict[str, np.ndarray] = {}
        self.small = {"depth": s.group["depth"].nbytes <= WHOLE_ARRAY_BYTES,
                      "masks": tracks.group["masks"].nbytes <= WHOLE_ARRAY_BYTES,
                      "frames": s.group["frames"].nbytes <= WHOLE_ARRAY_BYTES}

    def _array(self, name: str) -> np.ndarray:
        if name not in self.whole:
            owner = self.tracks if name == "masks" else self.s
            value = np.asarray(owner.group[name][:])
            self.whole[name] = store.check_finite(owner.url, name, value, "tracks" if owner is self.tracks else "scene")
        return self.whole[name]

    def depth(self, f: int) -> np.ndarray:
        return self._array("depth")[f] if self.small["depth"] else self.s.read("depth", frames=[f])[0]

    def points(self) -> np.ndarray:
        # Read once and kept: room size asks for the points again whenever its cache is cleared.
        if "points" not in self.whole:
            depth = self._array("depth") if self.small["depth"] else self.s.read("depth")
            self.whole["points"] = self.s.read("pointmaps")[depth > 0]
        return self.whole["points"]

    def mask(self, o: int, f: int) -> np.ndarray:
        if self.small["masks"]:
            return store.unpack_mask(self._array("masks")[o, f], self.hw)
        return store.read_mask(self.tracks, o, f, self.hw)

    def object_masks(self, o: int) -> np.ndarray:
        if self.small["masks"]:
            return store.unpack_mask(self._array("masks")[o], self.hw)
        return store.unpack_mask(self.tracks.read("masks", (o,)), self.hw)

    def frame(self, f: int) -> np.ndarray:
        return self._array("frames")[f] if self.small["frames"] else self.s.read("frames", frames=[f])[0]

    def frames(self) -> np.ndarray:
        return self._array("frames") if self.small["frames"] else self.s.read("frames")


def _enclosed(attrs) -> bool:
    """Whether the store says it shows one enclosed room: ``attrs["enclosed"]``, or a synth room. Geometry alone
    cannot tell a room from a courtyard, so an undeclared scene is not a room (no room size is asked)."""
    if "enclosed" in attrs:
        return bool(attrs["enclosed"])
    synth = attrs.get("synth")
    return isinstance(synth, dict) and "room" in synth


def _room_area(attrs) -> float | None:
    """The floor area of a synth room (its walls are known exactly); None for any other store."""
    room = attrs.get("synth", {}).get("room") if isinstance(attrs.get("synth"), dict) else None
    area = room.get("floor_area_m2") if isinstance(room, dict) else None
    return float(area) if isinstance(area, int | float) and area > 0 else None


def _scene_name(url: str) -> str:
    """A scene's name: the store's folder name, or its parent's when the store is the usual scene.zarr."""
    p = Path(url.rstrip("/"))
    return p.parent.name if p.name == "scene.zarr" and p.parent.name else p.stem
