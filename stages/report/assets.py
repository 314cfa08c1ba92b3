"""Per-scene image files of the report, written once each, on first use, under ``scenes/<slug>/``."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from spatialctl.visual import SceneView, hex_colour, object_colour

from .images import frame_thumbnail, mask_anchor, mask_box, mask_overlay, resize_mask, save, thumb_size


def slugs(ids: list[str]) -> list[str]:
    """File-safe, distinct folder names for scene ids."""
    out: list[str] = []
    for sid in ids:
        base = re.sub(r"[^A-Za-z0-9._-]+", "_", sid).strip("._") or "scene"
        slug, k = base, 1
        while slug in out:
            k += 1
            slug = f"{base}-{k}"
        out.append(slug)
    return out


class SceneAssets:
    """Frame thumbnails and per-object mask overlays of one scene; paths are relative to the report root."""

    def __init__(self, view: SceneView, scene_id: str, slug: str, root: Path, longest: int):
        self.view, self.scene_id, self.slug, self.root = view, scene_id, slug, root
        self.size = thumb_size(view.hw, longest)
        self.rel = f"scenes/{slug}"
        self._masks: dict[int, np.ndarray] = {}
        self._marks: dict[tuple[int, int], dict | None] = {}  # (object, frame) -> mark, None when not visible

    def masks(self, f: int) -> np.ndarray:
        if f not in self._masks:
            if len(self._masks) > 64:  # questions of one scene come together; keep a bounded cache
                self._masks.pop(next(iter(self._masks)))
            self._masks[f] = self.view.masks(f)
        return self._masks[f]

    def frame(self, f: int) -> str:
        rel = f"{self.rel}/frames/{f:06d}.jpg"
        path = self.root / rel
        if not path.exists():
            save(frame_thumbnail(self.view.frame(f), self.size), path, quality=90, subsampling=0)
        return rel

    def overlay(self, o: int, f: int) -> str:
        rel = f"{self.rel}/masks/o{o:04d}-f{f:06d}.png"
        path = self.root / rel
        if not path.exists():
            save(mask_overlay(self.masks(f)[o], object_colour(o), self.size), path, optimize=True)
        return rel

    def mark(self, o: int, f: int) -> dict | None:
        """Object o's mark in frame f (thumbnail coordinates), or None when its mask is empty at thumbnail size."""
        if (o, f) not in self._marks:
            mask = self.masks(f)[o]
            anchor, box = mask_anchor(mask), mask_box(mask)
            if anchor is None or not resize_mask(mask, self.size).any():
                self._marks[(o, f)] = None
            else:
                sx, sy = self.size[0] / self.view.hw[1], self.size[1] / self.view.hw[0]
                self._marks[(o, f)] = {
                    "id": str(self.view.object_ids[o]), "x": round(anchor[0] * sx, 1), "y": round(anchor[1] * sy, 1),
                    "box": [round(box[0] * sx, 1), round(box[1] * sy, 1), round(box[2] * sx, 1), round(box[3] * sy, 1)],
                    "color": hex_colour(o)}
        return self._marks[(o, f)]

    def shown_frame(self, f: int, objects: list[int]) -> dict:
        """One frame of a question: its thumbnail and, per named object visible in it, an overlay and a mark
        (object id at the mask's anchor, pixel box) in thumbnail coordinates."""
        w, h = self.size
        marks, overlays, absent = [], [], []
        for o in objects:
            mark = self.mark(o, f)
            if mark is None:
                absent.append(str(self.view.object_ids[o]))
                continue
            overlays.append({"id": mark["id"], "src": self.overlay(o, f)})
            marks.append(mark)
        return {"frame": f, "time": round(float(self.view.timestamps[f]), 3), "src": self.frame(f), "w": w, "h": h,
                "overlays": overlays, "marks": marks, "absent": absent}
