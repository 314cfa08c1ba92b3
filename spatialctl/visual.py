"""What the viewer export and the HTML report share: one scene read for display, object colours, box frames.

Nothing here draws; it gathers a store's arrays and the tracks' object list into one place so `view` (Rerun) and
`report` (HTML) show the same objects with the same names and colours.
"""

from __future__ import annotations

import colorsys
import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from spatialctl import store
from spatialctl.errors import SpatialctlError


def object_colour(index: int) -> tuple[int, int, int]:
    """A distinct, stable RGB colour per object index (golden-ratio hues)."""
    h = (0.13 + index * 0.618033988749895) % 1.0
    r, g, b = colorsys.hsv_to_rgb(h, 0.85, 0.95)
    return int(r * 255), int(g * 255), int(b * 255)


def hex_colour(index: int) -> str:
    return "#{:02x}{:02x}{:02x}".format(*object_colour(index))


def box_rotation(yaw: float, basis: np.ndarray) -> np.ndarray:
    """3x3 rotation whose columns are the box's x, y and up axes in world coordinates."""
    e1, e2, up = basis
    ax = np.cos(yaw) * e1 + np.sin(yaw) * e2
    return np.stack([ax, np.cross(up, ax), up], axis=1)


def scene_ids(urls: list[str]) -> list[str]:
    """The scene names make-qa writes in ``QARecord.scene``: the store's folder name (its parent's for the usual
    ``scene.zarr``); names that repeat get a short hash of the path, as make-qa gives them."""
    def name(url: str) -> str:
        p = Path(url.rstrip("/"))
        return p.parent.name if p.name == "scene.zarr" and p.parent.name else p.stem

    names = [name(u) for u in urls]
    return [n if names.count(n) == 1 else f"{n}-{hashlib.sha1(u.encode()).hexdigest()[:6]}"
            for n, u in zip(names, urls, strict=True)]


@dataclass
class SceneView:
    """One scene store read for display (small arrays in memory, per-frame ones read on demand)."""

    url: str
    store: store.SceneStore
    n_frames: int
    hw: tuple[int, int]
    timestamps: np.ndarray
    intrinsics: np.ndarray
    cam2world: np.ndarray
    attrs: dict
    provenance: dict
    labels: list[str] = field(default_factory=list)
    object_ids: list = field(default_factory=list)
    tracks: store.GroupView | None = None
    visible: np.ndarray | None = None  # (O, N)
    centroid: np.ndarray | None = None  # (O, N, 3)
    box: np.ndarray | None = None  # (O, N, 7)
    velocity: np.ndarray | None = None  # (O, N, 3)
    moving: np.ndarray | None = None  # (O,)

    @property
    def n_objects(self) -> int:
        return len(self.labels)

    @property
    def world_up(self) -> np.ndarray:
        up = np.asarray(self.attrs.get("world_up", [0.0, 0.0, 1.0]), dtype=np.float64)
        return up / np.linalg.norm(up)

    @property
    def is_synth(self) -> bool:
        return self.provenance.get("stage") == "synth"

    def object_name(self, o: int) -> str:
        return f"{self.labels[o]} #{self.object_ids[o]}"

    def frame(self, f: int) -> np.ndarray:
        return self.store.read("frames", frames=[f])[0]

    def depth(self, f: int) -> np.ndarray:
        return self.store.read("depth", frames=[f])[0]

    def conf(self, f: int) -> np.ndarray:
        return self.store.read("conf", frames=[f])[0]

    def pointmap(self, f: int) -> np.ndarray:
        return self.store.read("pointmaps", frames=[f])[0]

    def masks(self, f: int) -> np.ndarray:
        """(O, H, W) bool: every object's mask in frame f."""
        if self.tracks is None or self.n_objects == 0:
            return np.zeros((0, *self.hw), dtype=bool)
        return store.unpack_mask(self.tracks.group["masks"][:, f], self.hw)

    def index_of(self, object_id) -> int | None:
        """The object index of a tracks id (ids are compared as text: JSON may turn 3 into "3")."""
        for i, oid in enumerate(self.object_ids):
            if str(oid) == str(object_id):
                return i
        return None


def open_view(url: str) -> SceneView:
    """Open a scene store (and its tracks when complete) for display; a bad store is a one-line error."""
    try:
        s = store.open_scene(url)
    except SpatialctlError:
        raise
    except Exception as e:
        raise SpatialctlError(f"{url}: not a readable scene store ({type(e).__name__}: {e})") from e
    v = SceneView(url=url, store=s, n_frames=s.n_frames, hw=s.hw, timestamps=s.read("timestamps"),
                  intrinsics=s.read("intrinsics"), cam2world=s.read("cam2world"), attrs=s.attrs,
                  provenance=s.provenance)
    if s.has("tracks"):
        t = s.open_group("tracks")
        objects = list(t.attrs.get("objects", []))
        visible = t.read("visible").astype(bool)
        if len(objects) != visible.shape[0]:
            raise SpatialctlError(f"{t.url}: {len(objects)} objects in attrs but {visible.shape[0]} in arrays")
        v.tracks, v.visible = t, visible
        v.labels = [str(o.get("label", "object")) for o in objects]
        v.object_ids = [o.get("id", i) for i, o in enumerate(objects)]
        v.centroid = t.read("centroid").astype(np.float64)
        v.box = t.read("box").astype(np.float64)
        v.velocity = t.read("velocity").astype(np.float64)
        v.moving = t.read("moving").astype(bool)
    return v
