"""Hierarchical multi-turn questions about one image, in the manner of SpatialBoost.

Up to 12 turns climb from pixels to the scene: pixel depth (absolute and relative), object 3D boxes and relative
positions, scene-level distances between objects whose boxes earlier turns gave, then a short description.
Camera coordinates are OpenCV's (x right, y down, z forward). Every length of a sample is in one unit, the scene
scale's natural unit (mm, cm or m), which each question names; a box whose sides would round to almost nothing in
that unit is not asked about. Metric values are only asked of metric scenes; relative scenes get the comparison
turns. The sample is about one image, so objects are named "in this image".
"""

from __future__ import annotations

import math
import random

import numpy as np

from .common import UNIT_NAMES, UNITS, Draft, last_resort, ref_ok, sample, scene_scale, try_ref
from .refer import namer
from .scene import SceneData

TYPES = ("hierarchical",)
MAX_TURNS = 12
MIN_DIGITS = 10  # a box side must be at least this many of its last written digit (rounding loses <= 5%)
DEPTH_MARGIN = 0.05  # relative depth difference below which "which is closer" is not asked
SIDE_DEG = 10.0  # caption: "ahead" within this angle of the optical axis
SIDE_MARGIN = 2.0


def side_of(cam_xyz) -> str | None:
    ang = math.degrees(math.atan2(cam_xyz[0], cam_xyz[2]))
    if abs(abs(ang) - SIDE_DEG) < SIDE_MARGIN:
        return None
    return "ahead" if abs(ang) < SIDE_DEG else ("to the right" if ang > 0 else "to the left")


class MultiTurnGenerator:
    family = "multiturn"
    types = TYPES

    def __init__(self, scene: SceneData, max_turns: int = MAX_TURNS):
        self.scene = scene
        self.max_turns = max(2, min(MAX_TURNS, max_turns))
        self.noise = 0.01 * max(scene.extent(), 1e-6)
        self.unit = scene_scale(scene)[1] if scene.metric else None
        factor, decimals = UNITS[self.unit] if self.unit else (1.0, 0)
        self._factor, self._decimals, self._spec = factor, decimals, f".{decimals}f"

    def _len(self, value_m: float) -> float:
        return round(value_m * self._factor, self._decimals)

    def _frame(self, f: int):
        """What every sample about frame f needs, computed once: the objects that can be asked about (seen, boxed,
        in front of the camera, nameable), their box centres in camera coordinates and their references."""
        s = self.scene
        table = s._cache.get("multiturn_frames")
        if table is None:
            w2c = s.world2cam()
            centre = np.nan_to_num(s.box[..., :3])  # (O, N, 3)
            cam = np.einsum("nij,onj->oni", w2c[:, :3, :3], centre) + w2c[None, :, :3, 3]
            usable = s.visible & np.isfinite(s.box).all(-1) & (cam[..., 2] > 0) & ref_ok(s)
            table = s._cache["multiturn_frames"] = {"cam": cam.tolist(), "usable": usable, "frames": {},
                                                    "box": s.box.tolist()}
        self.box = table["box"]  # (O, N, 7) as lists: sizes and centres are read one number at a time
        frames = table["frames"]
        if f not in frames:
            objs = np.flatnonzero(table["usable"][:, f]).tolist()
            frames[f] = (objs, {o: table["cam"][o][f] for o in objs},
                         {o: try_ref(s, o, f, image=True) for o in objs})
        return frames[f]

    def _plain(self, f: int, usable: list[int]) -> list[int]:
        key = ("multiturn_plain", f)
        if key not in self.scene._cache:
            boxless = namer(self.scene).boxless[:, f]
            self.scene._cache[key] = [o for o in usable if boxless[o]]
        return self.scene._cache[key]

    def _pixels(self, f: int):
        """(xs, ys, depths) of frame f's valid pixels, found once per frame."""
        key = ("multiturn_pixels", f)
        if key not in self.scene._cache:
            depth = self.scene.depth_reader(f)
            ys, xs = np.nonzero(depth > 0)
            self.scene._cache[key] = (xs, ys, depth[ys, xs])
        return self.scene._cache[key]

    def generate(self, qtype: str, rng: random.Random) -> Draft | None:
        s = self.scene
        if s.depth_reader is None or s.n_objects == 0:
            return None
        f = rng.randrange(s.n_frames)
        usable, cam, refs = self._frame(f)
        if len(usable) < 2:
            return None
        # Objects a person can name without a pixel box come first; boxes only when fewer than two such objects.
        plain = self._plain(f, usable)
        pool = plain if len(plain) >= 2 else usable
        objs = sample(rng, pool, min(3, len(pool)))
        turns: list[tuple[dict, dict]] = []  # (turn, metadata)
        self._pixel_turns(self._pixels(f), rng, turns)
        boxed = self._object_turns(f, objs, cam, refs, turns)
        self._relation_turns(objs, cam, refs, turns)
        self._distance_turns(f, boxed, refs, turns)
        self._caption_turn(objs, cam, turns)
        if len(turns) > self.max_turns:  # the description (last) always closes the sample
            turns = turns[: self.max_turns - 1] + [turns[-1]]
        if len(turns) < 2:
            return None
        history = [t for t, _ in turns[:-1]]
        last = turns[-1][0]
        meta = {"frame": f, "turns": [m for _, m in turns], "objects": objs,
                "object_ids": [s.object_ids[o] for o in objs]}
        return last_resort(Draft("hierarchical", last["question"], last["answer"], last["answer_type"],
                                 unit=last["unit"], frames=[f], metadata=meta, history=history), rng)

    @staticmethod
    def _turn(question, answer, answer_type, unit=None):
        return {"question": question, "answer": answer, "answer_type": answer_type, "unit": unit, "options": None}

    def _pixel_turns(self, pixels, rng, turns):
        if len(pixels[0]) < 3:
            return
        pick = [rng.randrange(len(pixels[0])) for _ in range(4)]
        xs, ys, depths = (a[pick].tolist() for a in pixels)
        pick = range(4)
        if self.scene.metric:
            for i in pick[:2]:
                val = self._len(depths[i])
                if val <= 0:
                    continue
                q = (f"What is the depth (distance along the camera's viewing axis) at pixel ({xs[i]}, {ys[i]}) of "
                     f"this image, in {UNIT_NAMES[self.unit]}?")
                turns.append((self._turn(q, val, "number", self.unit),
                              {"type": "pixel_depth", "pixel": [xs[i], ys[i]]}))
        i, j = pick[2], pick[3]
        (x1, y1, d1), (x2, y2, d2) = (xs[i], ys[i], depths[i]), (xs[j], ys[j], depths[j])
        if abs(d1 - d2) >= DEPTH_MARGIN * max(d1, d2) and (x1, y1) != (x2, y2):
            q = f"Which pixel is closer to the camera: ({x1}, {y1}) or ({x2}, {y2})?"
            ans = f"({x1}, {y1})" if d1 < d2 else f"({x2}, {y2})"
            turns.append((self._turn(q, ans, "text"), {"type": "pixel_depth_relative", "pixels": [[x1, y1], [x2, y2]]}))

    def _object_turns(self, f, objs, cam, refs, turns):
        if not self.scene.metric:
            return []
        boxed = []
        unit = self.unit
        step = 10.0 ** -UNITS[unit][1]
        for o in objs:
            size = [self._len(v) for v in self.box[o][f][3:6]]
            if min(size) < MIN_DIGITS * step:
                continue  # "size (0.00, 0.01, 0.00) m" says nothing
            c = [v * self._factor for v in cam[o]]  # only formatted: "%.{d}f" of x is that of round(x, d)
            q = (f"What is the 3D bounding box of {refs[o][0]} in this camera's coordinates (x right, y down, z "
                 f"forward), in {UNIT_NAMES[unit]}? Give its centre and its size along its own length, width and "
                 "height.")
            spec = self._spec
            ans = (f"centre ({format(c[0], spec)}, {format(c[1], spec)}, {format(c[2], spec)}) {unit}, "
                   f"size ({format(size[0], spec)}, {format(size[1], spec)}, {format(size[2], spec)}) {unit}")
            turns.append((self._turn(q, ans, "text", unit), {"type": "object_box", "object": o}))
            boxed.append(o)
        return boxed

    def _relation_turns(self, objs, cam, refs, turns):
        for a, b in list(zip(objs, objs[1:], strict=False))[:2]:
            ca, cb = cam[a], cam[b]
            # Image left/right of the centres' projections, asked only when clearly apart.
            ua, ub = ca[0] / ca[2], cb[0] / cb[2]
            if abs(ua - ub) > 0.05:
                q = f"In this image, is {refs[a][0]} to the left or to the right of {refs[b][0]}?"
                turns.append((self._turn(q, "left" if ua < ub else "right", "text"),
                              {"type": "object_left_right", "objects": [a, b]}))
            if abs(ca[2] - cb[2]) > max(DEPTH_MARGIN * max(ca[2], cb[2]), 3 * self.noise):
                q = f"Is {refs[a][0]} closer to the camera than {refs[b][0]}?"
                turns.append((self._turn(q, "yes" if ca[2] < cb[2] else "no", "text"),
                              {"type": "object_closer", "objects": [a, b]}))

    def _distance_turns(self, f, boxed, refs, turns):
        for a, b in list(zip(boxed, boxed[1:], strict=False))[:2]:
            d = math.dist(self.box[a][f][:3], self.box[b][f][:3])
            if d < 3 * self.noise:
                continue
            val = self._len(d)
            q = (f"Using the boxes above, what is the distance between the centres of {refs[a][0]} and "
                 f"{refs[b][0]}, in {UNIT_NAMES[self.unit]}?")
            turns.append((self._turn(q, val, "number", self.unit), {"type": "object_distance", "objects": [a, b]}))

    def _caption_turn(self, objs, cam, turns):
        parts, described, depths = [], [], []
        dist = {o: math.hypot(*cam[o]) for o in objs}
        for o in sorted(objs, key=dist.__getitem__):
            side = side_of(cam[o])
            if side is None:
                continue
            label = self.scene.labels[o]
            if self.scene.metric:
                parts.append(f"a {label} {format(dist[o] * self._factor, self._spec)} {self.unit} away {side}")
            else:
                parts.append(f"a {label} {side}")
            described.append(o)
            depths.append(dist[o])
        if not parts:
            return
        # Relative scenes state the order instead of distances, only where it is clear.
        clear = not self.scene.metric and all(b - a > max(DEPTH_MARGIN * b, 3 * self.noise)
                                              for a, b in zip(depths, depths[1:], strict=False))
        order = " (nearest first)" if clear and len(parts) > 1 else ""
        text = f"The image shows{order} " + "; ".join(parts) + "."
        turns.append((self._turn("Describe the layout of this image briefly.", text, "text"),
                      {"type": "caption", "objects": described, "ordered": bool(order)}))
