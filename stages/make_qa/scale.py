"""All-scale questions in the manner of SpaceVista, every one tagged with the scene's scale.

Each metric scene gets one scale from its true extent (objects and camera path): tiny tabletop, tabletop, indoor
or outdoor, and lengths in that scale's natural unit: millimetres, centimetres, metres (outdoor too; kilometres only
for a length past 1 km). Relative-scale scenes have no true extent and get no questions from this family.

SpaceVista's task list and where each is asked (the static family's records carry the scale tag as well):
existence, height/width comparison, position across frames (``position_change``), camera moving
(``camera_motion``), spatial relation, object matching, depth, height, width, object distance, object rotation and
camera rotation here; counting, appearance order, room size and relative distance in the static family.
Definitions (each question says them in words):
- height: the box's vertical side; width: its longer horizontal side; size: its longest side.
- depth: the object centre's distance along the camera's viewing axis in one frame.
- size/height/width comparisons (which is the largest, and which the smallest: every set is asked both ways) are
  asked among objects that share a label: between categories ("the cup or the table?", even "the sphere or the
  box?") the label gives the answer away; distance comparisons too (a building stands farther than a book). Options
  that compare sizes or distances never name an object by its pixel box (a box's size in pixels hints at both).
  Comparisons name their options by colour or by left-to-right place in a frame, each arrangement equally often
  (``_alike``): never by size, landmark or anything else that depends on the sizes compared. Which sets a scene
  asks keeps each name the largest as often as the smallest (``_ask``), and over the run no colour leans either
  way beyond chance (``balance.cap_option_words``).
- position change: the pixel-box centre's shift between two frames, along its dominant image axis.
- camera moving: the camera's displacement between two frames in the first frame's (right, forward) axes.
- existence: "Is there a <label> ...?", yes or no; "no" labels are kinds of object usual at the scene's scale
  (``VOCABULARY``) that the scene lacks.
  Position change and camera moving offer three options; their wrong options, like those of spatial relation, are
  redrawn from other questions' true answers (``balance.py``), so no option is one that never is
  the answer. Where a type's answers can be enumerated, a scene draws the answer first, uniformly over the
  answers it allows, then a question with that answer (``ClassDraw``).
- camera/object rotation: the change of heading about the up axis, in degrees.
- spatial relation: A relative to B in the camera's gravity-aligned axes (right, forward, up) of one frame.
- object matching: which of four (three or two where the scene has too few) objects is seen in both of two frames,
  the others missing from at least one, or the other way round: which is missing from at least one, the others seen
  in both. Seen: at least one pixel of the object in the frame. A set of objects is asked once per object, each the
  answer once (``_matching_units``), so no option's text says anything about the answer.
Ambiguous questions (values near a threshold, below the noise floor) are not asked.
"""

from __future__ import annotations

import itertools
import math
import random
import zlib

import numpy as np

from .balance import ClassDraw
from .common import UNIT_NAMES, UNITS, Draft, last_resort, mc, natural_unit, round_unit, scene_scale, try_ref
from .refer import namer
from .scene import SceneData

TYPES = ("existence", "object_size", "height", "width", "object_distance", "depth", "size_comparison",
         "height_comparison", "width_comparison", "distance_comparison", "position_change", "camera_motion",
         "camera_rotation", "object_rotation", "spatial_relation", "object_matching")
# Labels an existence question may offer as absent, per scale: the kinds of object such scenes hold.
VOCABULARY = {
    "tiny_tabletop": ("box", "sphere", "cylinder", "bead", "die", "coin", "battery"),
    "tabletop": ("box", "sphere", "cylinder", "ball", "can", "cup", "bottle", "book"),
    "indoor": ("box", "sphere", "cylinder", "person", "chair", "ball", "table", "sofa", "cabinet"),
    "outdoor": ("box", "sphere", "cylinder", "person", "car", "tree", "building", "container", "pillar"),
}
COMPARE_MARGIN = 0.15
DOMINANT = 2.0  # a direction counts when its component is this many times every other
MIN_SHIFT = 0.1  # position change: of the image size
MIN_TURN_DEG = 10.0
RELATIONS = ("to the left of", "to the right of", "in front of", "behind", "above", "below")
CAMERA_MOVES = ("forward", "backward", "to the left", "to the right")  # codes 0..3
SHIFTS = ("left", "right", "up", "down")


class ScaleGenerator:
    family = "scale"
    types = TYPES
    # A comparison asks a set both ways, in two tries: with one try a round (40 questions over 16 types, about
    # three rounds a scene) these types asked about one set a scene, however many their scenes hold.
    tries = dict.fromkeys(("size_comparison", "height_comparison", "width_comparison", "distance_comparison"), 3)
    # Object matching asks units of 2-4 questions in the few scenes where objects leave the view: two tries a round
    # finish more of them before the scene's budget runs out.
    tries["object_matching"] = 2

    def __init__(self, scene: SceneData):
        self.scene = scene
        self.noise = 0.01 * max(scene.extent(), 1e-9)
        self.static = [o for o in range(scene.n_objects) if not scene.moving[o] and scene.static_box(o) is not None]
        self._lazy: dict | None = None

    def _prepare(self):
        s = self.scene
        self.scale, self.unit = scene_scale(s)
        self.extent_m = round(s.extent(), 6)
        named = [o for o in self.static if try_ref(s, o, size=False) is not None]
        # Pixel boxes are the last resort: objects named without one are asked about when there are any.
        plain = [o for o in named if "pixel box" not in try_ref(s, o, size=False)[0]]
        self.named = plain or named
        self.boxless = namer(s).boxless  # (O, N)
        self.centre = {o: s.static_box(o)[:3] for o in self.static}
        # Sizes hold for moving objects too (median box over the frames where each is seen).
        self.sides = {o: s.static_box(o)[3:6] for o in range(s.n_objects) if s.static_box(o) is not None}
        self.cam_pos = s.cam2world[:, :3, 3]
        boxes = s.pixel_boxes()
        self.centre_px = np.stack([(boxes[..., 0] + boxes[..., 2]) / 2.0, (boxes[..., 1] + boxes[..., 3]) / 2.0], -1)
        from .common import ref_table

        self.big = ref_table(s).big  # (O, N): clearly seen
        self._lazy = {}

    def _seen(self, f, mask=None):
        """Objects clearly seen in frame f (and in ``mask``), those named there without a pixel box first."""
        ok = self.big[:, f] if mask is None else self.big[:, f] & mask
        plain = np.flatnonzero(ok & self.boxless[:, f]).tolist()
        return plain if len(plain) >= 2 else np.flatnonzero(ok).tolist()

    def generate(self, qtype: str, rng: random.Random) -> Draft | None:
        if not self.scene.metric or self.scene.n_frames < 2:
            return None
        if self._lazy is None:
            self._prepare()
        d = last_resort(getattr(self, "_" + qtype)(rng), rng)
        if d is not None:
            d.scale = self.scale
            d.metadata = {**(d.metadata or {}), "scale": self.scale, "extent_m": self.extent_m}
        return d

    # ------------------------------------------------------------------------------------------------- helpers

    def _length(self, value_m: float) -> tuple[float, str] | None:
        """(value, unit) in the scale's natural unit, or None when rounding would lose more than 5% of it."""
        unit = natural_unit(self.unit, value_m)
        v = round_unit(value_m, unit)
        exact = value_m * UNITS[unit][0]
        return (v, unit) if v > 0 and abs(v - exact) <= 0.05 * exact else None

    def _refs(self, objs, frame=None, size=True, near=True):
        refs = [try_ref(self.scene, o, frame, size=size, near=near) for o in objs]
        if any(r is None for r in refs) or len({r[0] for r in refs}) < len(refs):
            return None
        return refs

    def _two_frames(self, rng):
        n = self.scene.n_frames
        f1 = rng.randrange(n - 1)
        f2 = rng.randrange(f1 + 1, n)
        return f1, f2

    def _meta(self, objs, **kw):
        return {"objects": [int(o) for o in objs], "object_ids": [self.scene.object_ids[o] for o in objs],
                "labels": [self.scene.labels[o] for o in objs], **kw}

    @staticmethod
    def _cited(refs):
        return sorted({r[1] for r in refs if r[1] is not None})

    def _t(self, f):
        if "times" not in self._lazy:  # Python floats: numpy scalars format several times slower
            self._lazy["times"] = self.scene.timestamps.tolist()
        return f"{self._lazy['times'][f]:.2f} s"

    # ------------------------------------------------------------------------------------------------- numeric

    def _measure(self, rng, qtype, value_of, wording):
        if not self.named:
            return None
        o = rng.choice(self.named)
        got = self._length(value_of(o))
        if got is None:
            return None
        (r,) = self._refs([o], size=False)
        v, unit = got
        q = wording.format(r=r[0], unit=UNIT_NAMES[unit])
        return Draft(qtype, q, v, "number", unit=unit, ref_frames=self._cited([r]),
                     metadata=self._meta([o], balance_group=f"{unit}:{self.scene.labels[o]}"))

    def _object_size(self, rng):
        return self._measure(rng, "object_size", lambda o: float(np.max(self.sides[o])),
                             "How long is the longest side of {r}, in {unit}?")

    def _height(self, rng):
        return self._measure(rng, "height", lambda o: float(self.sides[o][2]), "How tall is {r}, in {unit}?")

    def _width(self, rng):
        return self._measure(rng, "width", lambda o: float(max(self.sides[o][0], self.sides[o][1])),
                             "How wide is {r} (its longer horizontal side), in {unit}?")

    def _object_distance(self, rng):
        if len(self.named) < 2:
            return None
        a, b = rng.sample(self.named, 2)
        refs = self._refs([a, b], near=False)
        d = float(np.linalg.norm(self.centre[a] - self.centre[b]))
        got = self._length(d) if d > 3 * self.noise else None
        if refs is None or got is None:
            return None
        v, unit = got
        q = f"What is the distance between the centres of {refs[0][0]} and {refs[1][0]}, in {UNIT_NAMES[unit]}?"
        return Draft("object_distance", q, v, "number", unit=unit, ref_frames=self._cited(refs),
                     metadata=self._meta([a, b]))

    def _depth(self, rng):
        s = self.scene
        f = rng.randrange(s.n_frames)
        objs = self._seen(f)
        if not objs:
            return None
        o = rng.choice(objs)
        w2c = s.world2cam()[f]
        z = float(w2c[2, :3] @ s.box[o, f, :3] + w2c[2, 3])
        got = self._length(z) if z > 3 * self.noise else None
        r = try_ref(s, o, f)
        if got is None or r is None:
            return None
        v, unit = got
        q = (f"In the frame at {self._t(f)}, how far in front of the camera is the centre of {r[0]}, measured along "
             f"the camera's viewing direction, in {UNIT_NAMES[unit]}?")
        return Draft("depth", q, v, "number", unit=unit, frames=[f],
                     metadata=self._meta([o], frame=f, balance_group=f"{unit}:{s.labels[o]}"))

    def _turn(self, rng, qtype):
        s = self.scene
        f1, f2 = self._two_frames(rng)
        if qtype == "camera_rotation":
            fwd = s.cam2world[[f1, f2], :3, 2]
            yaw1, yaw2 = (self._yaw(v) for v in fwd)
            subject, meta = "the camera", {"frames_compared": [f1, f2]}
            refs = []
        else:
            cands = [o for o in range(s.n_objects) if self.big[o, f1] and self.big[o, f2] and self._elongated(o)]
            if not cands:
                return None
            o = rng.choice(cands)
            r = try_ref(s, o, f1)
            if r is None:
                return None
            yaw1, yaw2 = float(s.box[o, f1, 6]), float(s.box[o, f2, 6])
            subject, meta, refs = r[0], self._meta([o], frames_compared=[f1, f2]), [r]
        turn = abs(math.degrees((yaw2 - yaw1 + math.pi) % (2 * math.pi) - math.pi))
        v = round(turn)
        if turn < MIN_TURN_DEG or abs(v - turn) > 0.05 * turn:
            return None
        q = (f"By how many degrees did {subject} turn (about the vertical axis, left or right) between the frame at "
             f"{self._t(f1)} and the frame at {self._t(f2)}?")
        return Draft(qtype, q, float(v), "number", unit="degrees", frames=list(range(f1, f2 + 1)),
                     ref_frames=self._cited(refs), metadata=meta)

    def _yaw(self, v):
        e1, e2, _ = self.scene.horizontal_basis()
        return math.atan2(float(v @ e2), float(v @ e1))

    def _elongated(self, o):
        """A heading is visible only on an object whose footprint is clearly longer one way."""
        sx, sy = self.scene.box[o][self.scene.visible[o]][0, 3:5] if self.scene.visible[o].any() else (0, 0)
        return min(sx, sy) > 0 and max(sx, sy) >= 1.25 * min(sx, sy)

    def _camera_rotation(self, rng):
        return self._turn(rng, "camera_rotation")

    def _object_rotation(self, rng):
        return self._turn(rng, "object_rotation")

    # ------------------------------------------------------------------------------------------------- choices

    def _existence(self, rng):
        """Is there a <label> in the video? Yes for a label the scene shows, no for one of its scale's usual kinds
        that it lacks; balanced yes/no per label (``balance_group``), so the label says nothing."""
        s = self.scene
        if "existence" not in self._lazy:  # the scene's labels, seen and absent: the same for every question
            self._lazy["existence"] = (sorted({s.labels[o] for o in range(s.n_objects) if s.visible[o].any()}),
                                       [x for x in VOCABULARY[self.scale] if x not in set(s.labels)])
        present, absent = self._lazy["existence"]
        answer = rng.choice(["yes", "no"]) if present and absent else ("yes" if present else "no")
        label = rng.choice(present if answer == "yes" else absent) if (present or absent) else None
        if label is None:
            return None
        opts = mc(answer, ["no" if answer == "yes" else "yes"], rng, n=2)
        q = f"Is there {_article(label)} {label} anywhere in the video?"
        return Draft("existence", q, opts[1], "mc", opts[0], metadata={"label": label, "balance_group": label})

    def _comparable(self):
        """Groups of objects (still or moving) whose sizes a label does not give away: the objects of one label."""
        if "comparable" not in self._lazy:
            groups: dict[str, list[int]] = {}
            for o in self.sides:
                groups.setdefault(self.scene.labels[o], []).append(o)
            self._lazy["comparable"] = [g for _, g in sorted(groups.items()) if len(g) >= 2]
        return self._lazy["comparable"]

    def _alike(self, objs):
        """Names of ``objs`` that are blind to their geometry (``Namer.alike``): by colour, else by left-to-right
        place in one frame. Only two objects have a place (leftmost, rightmost), and only where the video shows them
        both ways round: a hash of the scene and the objects (a fair coin, the same every time) picks which
        arrangement, then which frame of it, so "rightmost" is the larger one half of the time whatever the scenes'
        layout, and a set of objects always gets the same names (in every question and frame it is asked in)."""
        key = tuple(sorted(int(o) for o in objs))
        nm = namer(self.scene)
        pick = zlib.crc32(f"{self.scene.scene_id}:{key}".encode())
        frame = None
        if not all(nm.colour[o] is not None for o in key):
            frames = nm.alike_frames(list(key))
            ways = [frames[nm.position[key[0], frames] == side] for side in (1, 2)]
            if all(len(w) for w in ways):
                way = ways[pick & 1]
                frame = int(way[(pick >> 1) % len(way)])
        names = nm.alike(list(key), frame)
        if names is None:
            return None
        got = dict(zip(key, names, strict=True))
        return [got[int(o)] for o in objs]

    @staticmethod
    def _clear(values, largest, floor=0.0):
        """Index of the largest (``largest``) or the smallest of ``values``, or None where the top two differ by less
        than the margin (relative, and at least ``floor``)."""
        order = np.argsort(-values if largest else values, kind="stable")
        best, second = values[order[0]], values[order[1]]
        if abs(best - second) < max(COMPARE_MARGIN * max(abs(best), abs(second)), floor):
            return None
        return int(order[0])

    def _ask(self, rng, qtype, candidates, ends, build):
        """The next comparison of ``qtype`` in this scene. ``candidates``: (set, frame or None) pairs, every set of
        2-4 same-label objects that ``_alike`` names; ``ends(set, frame)``: the objects that are the largest and the
        smallest by the margin (None where not clear); ``build(set, frame, largest, rng)``: one draft.

        A candidate is asked where both its largest and its smallest are clear, both ways, the second right after
        the first: a name is then the answer for the largest as often as for the smallest wherever the set has two
        objects, and every set's options are offered as often for one as for the other. Candidates are drawn without
        replacement: a set size uniformly among the sizes left, then among candidates of that size the ones that
        least unbalance the scene's names (per object, times the largest minus times the smallest: an object that
        was the largest is next asked with larger ones), then those of sets asked least so far (a distance
        comparison asks a set again in another frame), then at random. Without it a group's largest object is the
        largest of nearly every set drawn, and its colour is the answer for "largest" several times in a scene;
        repeated over scenes, a colour that happens to be larger here would be learnt. None when none is left."""
        plan = self._lazy.get(qtype)
        if plan is None:
            left = [(c, f, *e) for c, f in candidates() if None not in (e := ends(c, f))]
            plan = self._lazy[qtype] = {"left": left, "asked": {}, "net": {}, "pending": []}
        if plan["pending"]:
            return plan["pending"].pop()
        left, asked, net = plan["left"], plan["asked"], plan["net"]
        if not left:
            return None
        size = rng.choice(sorted({len(c[0]) for c in left}))

        def cost(c):
            top, bottom = c[2], c[3]
            grow = abs(net.get(top, 0) + 1) - abs(net.get(top, 0)) + abs(net.get(bottom, 0) - 1) - abs(net.get(bottom, 0))
            return grow, asked.get(c[0], 0)
        costs = [(cost(c), i) for i, c in enumerate(left) if len(c[0]) == size]
        least = min(k for k, _ in costs)
        objs, frame, top, bottom = left.pop(rng.choice([i for k, i in costs if k == least]))
        asked[objs] = asked.get(objs, 0) + 1
        net[top] = net.get(top, 0) + 1
        net[bottom] = net.get(bottom, 0) - 1
        first = rng.random() < 0.5
        plan["pending"] = [build(objs, frame, not first, rng)]
        return build(objs, frame, first, rng)

    def _sets(self, groups):
        """Every set of 2-4 objects of one group that ``_alike`` names, as sorted tuples."""
        out = []
        for group in groups:
            for k in range(2, min(len(group), 4) + 1):
                out.extend(c for c in itertools.combinations(sorted(group), k) if self._alike(c) is not None)
        return out

    def _compare(self, rng, qtype, value_of, wordings):
        """Which of 2-4 same-label objects is the largest or the smallest (``wordings``: those two questions)."""
        def candidates():
            return [(c, None) for c in self._sets(self._comparable())]

        def ends(objs, _frame):
            v = np.array([value_of(o) for o in objs])
            return tuple(None if (i := self._clear(v, way)) is None else objs[i] for way in (True, False))

        def build(objs, _frame, largest, rng):
            refs = self._alike(objs)
            names = [r[0] for r in refs]
            answer = self._clear(np.array([value_of(o) for o in objs]), largest)
            opts = mc(names[answer], names[:answer] + names[answer + 1:], rng, n=len(names))
            q = wordings[0 if largest else 1].format(names=", ".join(sorted(names)))
            return Draft(qtype, q, opts[1], "mc", opts[0], ref_frames=self._cited(refs),
                         metadata=self._meta(objs, largest=largest, word_balance=1 if largest else -1))
        return self._ask(rng, qtype, candidates, ends, build)

    def _size_comparison(self, rng):
        return self._compare(rng, "size_comparison", lambda o: float(np.max(self.sides[o])),
                             ("Which of these objects is the largest, by its longest side: {names}?",
                              "Which of these objects is the smallest, by its longest side: {names}?"))

    def _height_comparison(self, rng):
        return self._compare(rng, "height_comparison", lambda o: float(self.sides[o][2]),
                             ("Which of these objects is the tallest: {names}?",
                              "Which of these objects is the shortest (least tall): {names}?"))

    def _width_comparison(self, rng):
        return self._compare(rng, "width_comparison", lambda o: float(max(self.sides[o][0], self.sides[o][1])),
                             ("Which of these objects is the widest (longer horizontal side): {names}?",
                              "Which of these objects is the narrowest (longer horizontal side): {names}?"))

    def _distance_comparison(self, rng):
        """Which of 2-4 same-label objects is closest to (or farthest from) the camera in one frame: objects of one
        label only, as across labels the kind says how far it usually stands (a building, a book). Named as the size
        comparisons are (colour, else a fair coin's left-to-right place): a name chosen in the asked frame (its
        place, its length) would say how far the object stands there. A set is asked in the frames where all of it
        is clearly seen, one frame at a time."""
        s = self.scene

        def candidates():
            groups: dict[str, list[int]] = {}
            for o in range(s.n_objects):
                if self.big[o].any():
                    groups.setdefault(s.labels[o], []).append(o)
            sets = self._sets([g for _, g in sorted(groups.items()) if len(g) >= 2])
            return [(c, int(f)) for c in sets for f in np.flatnonzero(self.big[list(c)].all(0))]

        def nearness(objs, f):  # nearest = the largest negated distance
            return -np.linalg.norm(s.box[list(objs), f, :3] - self.cam_pos[f], axis=-1)

        def ends(objs, f):
            v = nearness(objs, f)
            return tuple(None if (i := self._clear(v, way, 3 * self.noise)) is None else objs[i] for way in (True, False))

        def build(objs, f, nearest, rng):
            refs = self._alike(objs)
            names = [r[0] for r in refs]
            answer = self._clear(nearness(objs, f), nearest, 3 * self.noise)
            opts = mc(names[answer], names[:answer] + names[answer + 1:], rng, n=len(names))
            q = (f"In the frame at {self._t(f)}, which of these objects is "
                 f"{'closest to' if nearest else 'farthest from'} the camera (centre to camera): "
                 f"{', '.join(sorted(names))}?")
            cited = self._cited(refs)
            return Draft("distance_comparison", q, opts[1], "mc", opts[0], frames=sorted({f, *cited}),
                         ref_frames=cited, metadata=self._meta(objs, frame=f, nearest=nearest,
                                                               word_balance=1 if nearest else -1))
        return self._ask(rng, "distance_comparison", candidates, ends, build)

    def _table(self, name, make):
        """A candidate table built once per scene: (ClassDraw over answer codes, rows) or None when empty."""
        if name not in self._lazy:
            codes, rows = make()
            self._lazy[name] = (ClassDraw(codes, np.ones(len(codes))), rows) if len(codes) else None
        return self._lazy[name]

    def _pairs(self):
        """Every frame pair (f1 < f2): two (P,) index arrays."""
        return np.triu_indices(self.scene.n_frames, 1)

    def _prefer(self, valid, plain):
        """Pixel boxes last: candidates whose objects are named without one, when there are any."""
        p = valid & plain
        return p if p.any() else valid

    def _position_change(self, rng):
        def make():
            s = self.scene
            f1, f2 = self._pairs()
            h, w = s.hw
            d = self.centre_px[:, f2] - self.centre_px[:, f1]  # (O, P, 2)
            dx, dy = d[..., 0], d[..., 1]
            horiz = (np.abs(dx) >= DOMINANT * np.abs(dy)) & (np.abs(dx) >= MIN_SHIFT * w)
            vert = (np.abs(dy) >= DOMINANT * np.abs(dx)) & (np.abs(dy) >= MIN_SHIFT * h)
            code = np.where(horiz, (dx > 0).astype(int), np.where(vert, 2 + (dy > 0).astype(int), -1))  # SHIFTS
            ok = namer(s).ok_in_frame
            valid = self._prefer(self.big[:, f1] & self.big[:, f2] & ok[:, f1] & (code >= 0), self.boxless[:, f1])
            o, p = np.nonzero(valid)
            return code[o, p], np.stack([o, f1[p], f2[p]], 1).tolist()
        table = self._table("position_change", make)
        if table is None:
            return None
        draw, rows = table
        o, f1, f2 = rows[draw.draw(rng)]
        dx, dy = (self.centre_px[o, f2] - self.centre_px[o, f1]).tolist()
        answer = SHIFTS[_shift_code(dx, dy)]
        r = try_ref(self.scene, o, f1)
        opts = mc(f"It moved {answer}", [f"It moved {x}" for x in SHIFTS if x != answer], rng, n=3)
        q = (f"From the frame at {self._t(f1)} to the frame at {self._t(f2)}, which way did {r[0]} move in the "
             "image?")
        return Draft("position_change", q, opts[1], "mc", opts[0], frames=[f1, f2], ref_frames=self._cited([r]),
                     metadata=self._meta([o], frames_compared=[f1, f2], shift_px=[round(dx, 1), round(dy, 1)],
                                         option_pool="scale/position_change"))

    def _axes(self):
        """(N, 3) gravity-aligned right and forward unit vectors of every camera, and up; None rows where the
        camera looks straight up or down."""
        if "axes" not in self._lazy:
            _, _, up = self.scene.horizontal_basis()
            fwd = self.scene.cam2world[:, :3, 2]
            fwd = fwd - (fwd @ up)[:, None] * up
            n = np.linalg.norm(fwd, axis=1, keepdims=True)
            good = n[:, 0] > 1e-6
            fwd = fwd / np.where(n > 1e-6, n, 1.0)
            self._lazy["axes"] = (np.cross(fwd, up), fwd, up, good)
        return self._lazy["axes"]

    def _camera_motion(self, rng):
        def make():
            right, fwd, up, good = self._axes()
            f1, f2 = self._pairs()
            d = self.cam_pos[f2] - self.cam_pos[f1]  # (P, 3)
            x, y, z = (d * right[f1]).sum(1), (d * fwd[f1]).sum(1), d @ up
            mags = np.stack([np.abs(x), np.abs(y), np.abs(z)], 1)
            top = np.sort(mags, 1)
            code = np.where(np.abs(y) >= np.abs(x), (y < 0).astype(int), 2 + (x > 0).astype(int))  # CAMERA_MOVES
            valid = good[f1] & (top[:, 2] >= 3 * self.noise) & (top[:, 2] >= DOMINANT * top[:, 1]) & (np.abs(z) < top[:, 2])
            p = np.flatnonzero(valid)
            return code[p], np.stack([f1[p], f2[p], code[p]], 1).tolist()
        table = self._table("camera_motion", make)
        if table is None:
            return None
        draw, rows = table
        f1, f2, code = rows[draw.draw(rng)]
        best = CAMERA_MOVES[code]
        d = self.cam_pos[f2] - self.cam_pos[f1]
        right, fwd, up, _ = self._axes()
        x, y, z = float(d @ right[f1]), float(d @ fwd[f1]), float(d @ up)
        opts = mc(f"It moved {best}", [f"It moved {m}" for m in CAMERA_MOVES if m != best], rng, n=3)
        q = f"How did the camera move between the frame at {self._t(f1)} and the frame at {self._t(f2)}?"
        return Draft("camera_motion", q, opts[1], "mc", opts[0], frames=list(range(f1, f2 + 1)),
                     metadata={"frames_compared": [f1, f2], "move": [round(x, 6), round(y, 6), round(z, 6)],
                               "option_pool": "scale/camera_motion"})

    def _spatial_relation(self, rng):
        def make():
            s = self.scene
            right, fwd, up, good = self._axes()
            c = np.nan_to_num(s.box[..., :3])  # (O, N, 3)
            d = c[:, None] - c[None, :]  # (A, B, N, 3): A relative to B
            comps = np.stack([(d * right[None, None]).sum(-1), (d * fwd[None, None]).sum(-1), d @ up], -1)
            mags = np.sort(np.abs(comps), -1)
            axis = np.abs(comps).argmax(-1)
            sign = np.take_along_axis(comps, axis[..., None], -1)[..., 0] > 0
            # RELATIONS: left/right of (x), in front of/behind (forward), above/below (up)
            code = np.array([[0, 1], [2, 3], [5, 4]])[axis, sign.astype(int)]
            seen = self.big & namer(s).ok_in_frame  # (O, N)
            n = s.n_objects
            valid = (seen[:, None] & seen[None, :] & ~np.eye(n, dtype=bool)[..., None] & good[None, None]
                     & (mags[..., 2] >= 3 * self.noise) & (mags[..., 2] >= DOMINANT * mags[..., 1]))
            plain = self.boxless[:, None] & self.boxless[None, :]
            valid = self._prefer(valid, plain)
            a, b, f = np.nonzero(valid)
            return code[a, b, f], np.stack([a, b, f, code[a, b, f]], 1).tolist()
        table = self._table("spatial_relation", make)
        if table is None:
            return None
        draw, rows = table
        a, b, f, code = rows[draw.draw(rng)]
        refs = self._refs([a, b], f)
        if refs is None:
            return None
        best = RELATIONS[code]
        opts = mc(best, [x for x in rng.sample(RELATIONS, len(RELATIONS)) if x != best], rng)
        q = (f"In the frame at {self._t(f)}, where is {refs[0][0]} relative to {refs[1][0]}, as seen from the camera "
             "(in front of means closer to the camera)?")
        return Draft("spatial_relation", q, opts[1], "mc", opts[0], frames=[f],
                     metadata=self._meta([a, b], frame=f, option_pool="scale/spatial_relation"))

    def _object_matching(self, rng):
        """Asked both ways: which object is seen in both frames (the others are missing from at least one), or
        which is missing from at least one (the others are seen in both). Which objects go out of view is not
        random (movers, objects near the path's edge), and a scene with one such object would ask about it again
        and again, so questions come in units (``_matching_units``): a set of n objects, asked n times one way (n
        frame pairs), each object the answer exactly once. Within a unit every option text is the answer 1/n of the
        times it is offered, so no name, word, length or label says anything about the answer, asked either way.
        A scene asks its units in turn, each with frame pairs not asked yet; a unit the scene's budget of questions
        cuts short is dropped whole when balancing (``balance.complete_units``)."""
        if "matching" not in self._lazy:
            self._lazy["matching"] = self._matching_units()
            self._lazy["matching_queue"], self._lazy["matching_asked"] = [], set()
            self._lazy["matching_uses"] = [0] * len(self._lazy["matching"])
        units, queue, asked = self._lazy["matching"], self._lazy["matching_queue"], self._lazy["matching_asked"]
        if not units:
            return None
        if not queue:  # a new unit, among the least asked that can still ask a new frame pair of each object
            uses = self._lazy["matching_uses"]
            fresh = [{o: [p for p in pairs[o] if (way, p) not in asked] for o in objs} for objs, way, pairs, _ in units]
            open_ = [i for i, f in enumerate(fresh) if all(f.values())]
            if not open_:
                return None
            least = min(uses[i] for i in open_)
            u = rng.choice([i for i in open_ if uses[i] == least])
            uses[u] += 1
            self._lazy["matching_serial"] = serial = self._lazy.get("matching_serial", -1) + 1
            objs, way, _, names = units[u]
            for o in rng.sample(objs, len(objs)):  # each object the answer once, in a random order
                queue.append((objs, names, way, o, rng.choice(fresh[u][o]), serial))
        objs, names, way, answer, p, serial = queue.pop()
        asked.add((way, p))
        f1, f2 = (int(f[p]) for f in self._pairs())
        order = [answer, *(o for o in objs if o != answer)]
        opts = mc(names[objs.index(answer)], [names[objs.index(o)] for o in order[1:]], rng, n=len(objs))
        if way == "both":
            q = (f"Which of these objects is seen, even partly, both in the frame at {self._t(f1)} and in the frame "
                 f"at {self._t(f2)}?")
        else:
            q = (f"Which of these objects is missing (not seen at all) from the frame at {self._t(f1)} or from the "
                 f"frame at {self._t(f2)} (or from both)?")
        return Draft("object_matching", q, opts[1], "mc", opts[0], frames=[f1, f2],
                     metadata=self._meta(order, frames_compared=[f1, f2], asked=way, unit=serial,
                                         unit_size=len(objs)))

    def _matching_units(self):
        """[(objects, way, {object: [frame pair, ...]}, names)]: the sets of four objects (three or two where the
        scene has no such four) in which each object can be the answer asked one way: "missing", a frame pair where
        it is missing from a frame and the others are seen in both; or "both", one where it is seen in both and the
        others are each missing from one. A unit keeps to one way: were the way drawn per question, an object that
        is often out of view (a mover) would be the answer of the "missing" questions, the other of the "both"
        ones. Every object of a unit leaves the view at some time (one that never does could never be the answer).
        Objects are named without a frame (a frame-citing phrase says the object is seen there) and without a size
        word (larger objects are seen more often)."""
        s = self.scene
        f1, f2 = self._pairs()
        refs = [try_ref(s, o, size=False) for o in range(s.n_objects)]
        nameable = np.array([r is not None and r[1] is None for r in refs])
        both = s.visible[:, f1] & s.visible[:, f2] & nameable[:, None]
        # Seen somewhere in the video: an object never shown would be named for nothing.
        one = s.visible.any(1)[:, None] & ~both & nameable[:, None]
        leave = np.flatnonzero(one.any(1)).tolist()
        for n in (4, 3, 2):
            units = []
            for objs in itertools.combinations(leave, n):
                names = [refs[o][0] for o in objs]
                if len(set(names)) < n:
                    continue
                for way, answer_ok, wrong_ok in (("missing", one, both), ("both", both, one)):
                    pairs = {}
                    for o in objs:
                        pairs[o] = np.flatnonzero(answer_ok[o] & wrong_ok[[x for x in objs if x != o]].all(0)).tolist()
                        if not pairs[o]:
                            break
                    else:
                        units.append((list(objs), way, pairs, names))
            if units:
                return units
        return []


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def _shift_code(dx: float, dy: float) -> int:
    """Index into SHIFTS of a shift already known to be clear along one image axis."""
    return int(dx > 0) if abs(dx) >= abs(dy) else 2 + int(dy > 0)
