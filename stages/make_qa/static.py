"""Static spatial questions of the kinds VSI-Bench asks, answered from the scene's 3D boxes and points.

Counting, absolute distance (m), object size (cm, longest side), room size (m^2) are numeric; relative
distance, relative direction (easy/medium/hard), route plan and appearance order are multiple choice, as in
VSI-Bench, with 4 options where VSI-Bench has 4 (relative distance, route plan, appearance order). Room size and
the word "room" are only used for scenes that are an enclosed room (``SceneData.enclosed``). Distances are measured between the closest points of the objects' axis-aligned 3D boxes and, for a
category with several instances, between the closest pair (VSI-Bench's rule). Only objects that do not move
are measured, but for relative distance's options, which are measured at one moment where one moves. Metric
answers are only asked of metric scenes.
"""

from __future__ import annotations

import itertools
import random

import numpy as np
from scipy.spatial import ConvexHull, QhullError

from .balance import ClassDraw
from .common import Draft, ground_xy, last_resort, mc, try_ref
from .refer import namer, plural
from .scene import SceneData

TYPES = ("object_counting", "abs_distance", "object_size", "room_size", "rel_distance",
         "rel_direction_easy", "rel_direction_medium", "rel_direction_hard", "route_plan", "appearance_order")
METRIC_TYPES = ("abs_distance", "object_size", "room_size")
ANGLE_MARGIN = 10.0
MIN_TURN = 30.0  # a smaller turn is "go forward", which VSI's route plan does not offer
REL_MARGIN = 0.15  # the closest object must be this much closer than the next
CLEAR_SHARE = 1e-3  # appearance order: an object is clearly in view from this share of the image (clearly_seen)
ORDER_OBJECTS = 24  # appearance order: at most this many objects per scene (C(24, 4) sets)
ROOM_SEEN = 0.25  # room size is asked where the seen points cover at least this share of a declared floor area

TURNS = {"left": "turn left", "right": "turn right", "back": "turn back"}


def hull_area(xy: np.ndarray) -> float:
    try:
        hull = ConvexHull(xy)
    except (QhullError, ValueError):
        return 0.0
    return float(hull.volume)  # a 2D hull's "volume" is its area


_DIRECTIONS = np.stack([np.cos(np.linspace(0, 2 * np.pi, 16, endpoint=False)),
                        np.sin(np.linspace(0, 2 * np.pi, 16, endpoint=False))], axis=1)  # (16, 2), CCW


def footprint_area(xy: np.ndarray) -> float:
    """Area of the convex hull of (2, P) floor-plane points, exactly as :func:`hull_area` gives it, but fast.

    Most points cannot be hull vertices: the points extreme along 16 directions (found on every 8th point)
    form a convex polygon inside the hull, and every point inside it or on its edges (the walls of a room
    project onto its edges) is dropped before Qhull sees the rest (Akl-Toussaint)."""
    if xy.shape[1] < 64:
        return hull_area(xy.T)
    idx = (_DIRECTIONS @ xy[:, ::8]).argmax(1) * 8
    idx = idx[np.r_[idx[1:] != idx[:-1], idx[-1] != idx[0]]]  # consecutive repeats: one vertex
    poly = xy[:, idx]
    edge = np.roll(poly, -1, axis=1) - poly
    normal = np.stack([-edge[1], edge[0]], axis=1)  # (V, 2), pointing inside a CCW polygon
    turn = (normal * np.roll(edge, -1, axis=1).T).sum(1)  # >= 0 at every vertex of a convex CCW polygon
    area2 = (poly[0] * np.roll(poly[1], -1) - np.roll(poly[0], -1) * poly[1]).sum()
    if len(idx) < 3 or (turn < 0).any() or not (np.abs(edge).sum(0) > 0).all() or not area2 > 0:
        return hull_area(xy.T)  # degenerate inner polygon (a sliver of points): no shortcut
    offset = (normal * poly.T).sum(1)
    scale = float(np.abs(xy).max()) ** 2
    outside = ((normal @ xy) < (offset - 1e-12 * scale)[:, None]).any(0)
    return hull_area(np.concatenate([xy[:, outside], poly], axis=1).T)


def signed_angle(heading: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Degrees to turn from ``heading`` to face ``v`` in the floor plane (..., 2): positive to the right."""
    right = np.stack([heading[..., 1], -heading[..., 0]], axis=-1)
    return np.degrees(np.arctan2((v * right).sum(-1), (v * heading).sum(-1)))


# Labels of angles, all at once: (labels (...) int codes into the vocabulary, valid (...)).
SIDE = ("left", "right")
TURN_VOCAB = ("left", "right", "back")
HARD_VOCAB = ("front-left", "front-right", "back-left", "back-right")


def turn_codes(angle: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Route plan turns: below MIN_TURN is 'go forward' (not offered); 'back' from 135 degrees."""
    a = np.abs(angle)
    return np.where(a >= 135.0, 2, (angle > 0).astype(int)), (a >= MIN_TURN) & (np.abs(a - 135.0) >= ANGLE_MARGIN)


def easy_codes(angle: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    a = np.abs(angle)
    return (angle > 0).astype(int), (a >= ANGLE_MARGIN) & (a <= 180 - ANGLE_MARGIN)


def medium_codes(angle: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    a = np.abs(angle)
    return np.where(a >= 135.0, 2, (angle > 0).astype(int)), (a >= ANGLE_MARGIN) & (np.abs(a - 135.0) >= ANGLE_MARGIN)


def hard_codes(angle: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    a = np.abs(angle)
    valid = np.minimum(np.minimum(a, np.abs(a - 90.0)), 180.0 - a) >= ANGLE_MARGIN
    return 2 * (a >= 90).astype(int) + (angle > 0).astype(int), valid


LEVELS = {"easy": (easy_codes, SIDE), "medium": (medium_codes, TURN_VOCAB), "hard": (hard_codes, HARD_VOCAB)}


def _permutations(n: int, k: int) -> np.ndarray:
    return np.asarray(list(itertools.permutations(range(n), k)), dtype=np.int64).reshape(-1, k)


class StaticGenerator:
    family = "static"
    types = TYPES

    def __init__(self, scene: SceneData):
        self.scene = scene
        self.noise = 0.01 * max(scene.extent(), 1e-6)
        self.static = [o for o in range(scene.n_objects) if not scene.moving[o] and scene.static_aabb(o) is not None]
        # Categories all of whose instances stay still: distances to them are well defined.
        cats: dict[str, list[int]] = {}
        seen = scene.visible.any(1)
        for o in range(scene.n_objects):
            if seen[o]:  # never seen in the video: not part of what a viewer can count
                cats.setdefault(scene.labels[o], []).append(o)
        static = set(self.static)
        self.categories = {c: os for c, os in cats.items() if all(o in static for o in os)}
        self.all_categories = cats
        self._count_labels = sorted(cats)
        self._lazy: dict = {}

    def generate(self, qtype: str, rng: random.Random) -> Draft | None:
        if qtype in METRIC_TYPES and not self.scene.metric:
            return None
        if qtype.startswith("rel_direction_"):
            return last_resort(self._rel_direction(rng, qtype.rsplit("_", 1)[1]), rng)
        return last_resort(getattr(self, "_" + qtype)(rng), rng)

    def _cached(self, name, make):
        if name not in self._lazy:
            self._lazy[name] = make()
        return self._lazy[name]

    def _named(self, size=True, near=True):
        """Static objects that can be named without a frame hint: (objects, phrases, ref frames, floor xy (S, 2))."""
        def make():
            s = self.scene
            objs, refs = [], []
            for o in self.static:
                r = try_ref(s, o, size=size, near=near)
                if r is not None and s.static_box(o) is not None:
                    objs.append(o)
                    refs.append(r)
            xy = ground_xy(s, np.array([s.static_box(o)[:3] for o in objs]).reshape(-1, 3))
            return objs, refs, xy
        return self._cached(("named", size, near), make)

    def _category_gaps(self) -> dict:
        """(c1, c2) -> closest-point gap between the categories' boxes, closest pair of instances."""
        def make():
            s = self.scene
            cats = sorted(self.categories)
            members = [o for c in cats for o in self.categories[c]]
            if not members:
                return {}
            boxes = np.array([s.static_aabb(o) for o in members])
            a, b = boxes[:, None], boxes[None, :]
            gap = np.linalg.norm(np.maximum(0.0, np.maximum(a[..., :3] - b[..., 3:], b[..., :3] - a[..., 3:])), axis=-1)
            row = {o: i for i, o in enumerate(members)}
            out = {}
            for c1 in cats:
                for c2 in cats:
                    if c1 != c2:
                        out[(c1, c2)] = float(gap[np.ix_([row[o] for o in self.categories[c1]],
                                                         [row[o] for o in self.categories[c2]])].min())
            return out
        return self._cached("gaps", make)

    def _category_gap(self, c1: str, c2: str) -> float:
        return self._category_gaps()[(c1, c2)]

    def _object_counting(self, rng):
        if not self._count_labels:
            return None
        draw = self._cached("count_draw", lambda: ClassDraw(
            [len(self.all_categories[c]) for c in self._count_labels], np.ones(len(self._count_labels))))
        label = self._count_labels[draw.draw(rng)]  # the count first: a scene's rarer counts as often as its 1s
        n = len(self.all_categories[label])
        where = "are in this room" if self.scene.enclosed else "appear in this video"
        return Draft("object_counting", f"How many {plural(label)} {where}?", float(n), "number",
                     metadata={"label": label})

    def _abs_distance(self, rng):
        def make():
            cats = sorted(self.categories)
            return [(c1, c2) for c1, c2 in itertools.combinations(cats, 2)
                    # touching objects: the answer would be within measurement noise of 0
                    if self._category_gap(c1, c2) >= max(0.1, 3 * self.noise)]
        pairs = self._cached("abs_distance", make)
        if not pairs:
            return None
        c1, c2 = rng.choice(pairs)
        d = self._category_gap(c1, c2)
        q = (f"Measuring from the closest point of each object, what is the direct distance between the {c1} and the "
             f"{c2} (in meters)? If there are multiple instances of an object category, use the pair of instances "
             "with the shortest distance.")
        return Draft("abs_distance", q, round(d, 2), "number", unit="m",
                     metadata={"categories": [c1, c2], "measure": "closest points of axis-aligned 3D boxes"})

    def _object_size(self, rng):
        def make():
            objs, refs, _ = self._named(size=False)
            out = []
            for o, r in zip(objs, refs, strict=True):
                size_cm = round(float(np.max(self.scene.static_box(o)[3:6])) * 100.0)
                if size_cm >= 1:
                    out.append((o, r, size_cm))
            return out
        cands = self._cached("object_size", make)
        plain = [c for c in cands if "pixel box" not in c[1][0]]
        cands = plain or cands
        if not cands:
            return None
        o, r, size_cm = rng.choice(cands)
        q = f"What is the length of the longest dimension (length, width, or height) of {r[0]}, measured in centimeters?"
        return Draft("object_size", q, float(size_cm), "number", unit="cm", ref_frames=_cited([r]),
                     metadata={"object": o, "object_id": self.scene.object_ids[o], "labels": [self.scene.labels[o]],
                               "balance_group": self.scene.labels[o]})

    def _room_size(self, rng):
        """VSI-Bench's room size: the room's floor area in m^2, as its scans give it (the whole room, not only what
        the sampled frames show). A store that declares its room's floor (a synth room) has it exactly; it is asked
        where the video shows at least ``ROOM_SEEN`` of it (the floor-plane hull of the seen points). Other enclosed
        stores get the hull of their valid points."""
        s = self.scene
        if s.points_reader is None or not s.enclosed:
            return None
        if "room_area" not in s._cache:
            pts = s.points_reader()
            e1, e2, _ = s.horizontal_basis()
            xy = np.stack([e1, e2]) @ pts.T.astype(np.float64)  # (2, P) floor-plane coordinates
            s._cache["room_area"] = footprint_area(xy) if xy.shape[1] >= 3 else 0.0
        seen = s._cache["room_area"]
        area = s.room_area if s.room_area is not None else seen
        if area <= 0 or seen < ROOM_SEEN * area:
            return None
        q = "What is the size of this room (in square meters)? If multiple rooms are shown, estimate the size of the combined space."
        measure = ("floor area of the room" if s.room_area is not None
                   else "convex hull of all valid points projected on the floor plane")
        return Draft("room_size", q, round(area, 1), "number", unit="m²",
                     metadata={"measure": measure, "seen_share": round(seen / area, 3)})

    def _rel_distance(self, rng):
        """Which of four named objects is closest (box to box) to a fifth, a still one: objects, not categories, so
        a scene with few categories still gets VSI-Bench's four options. Where a moving object takes part, the
        question asks about one moment (a frame where every moving one is seen), and each object counts by its box
        then: asked over the whole video instead, a mover would be the answer only where its gap stayed below every
        other's at every moment, which its range of gaps rarely allows, so naming a mover (a car, a person) would
        rule it out. The moment is drawn before the answer is known (an unclear moment is not asked), so a mover is
        the answer as often as a still object in its place would be."""
        def make():
            s = self.scene
            still, refs, _ = self._named(near=False)  # "the chair nearest to the sofa" would answer it
            movers = [o for o in range(s.n_objects) if s.moving[o] and s.visible[o].any()]
            mrefs = [try_ref(s, o, near=False) for o in movers]
            objs = still + [o for o, r in zip(movers, mrefs, strict=True) if r is not None]
            names = [*refs, *(r for r in mrefs if r is not None)]
            plain = [i for i, r in enumerate(names) if "pixel box" not in r[0]]
            pool = plain if any(i < len(still) for i in plain) and len(plain) >= 5 else range(len(objs))
            if len(objs) < 5 or not still:
                return objs, names, len(still), list(pool), None
            # gap[a, i, f]: closest-point gap between still anchor a's box and object i's in frame f (a still one:
            # its median box in every frame; a mover: its box where it is seen, else NaN)
            boxes = np.repeat(np.array([s.static_aabb(o) for o in objs])[:, None], s.n_frames, axis=1)
            for i in range(len(still), len(objs)):
                o = objs[i]
                ok = s.visible[o] & np.isfinite(s.aabb[o]).all(-1)
                boxes[i] = np.where(ok[:, None], s.aabb[o], np.nan)
            a = boxes[: len(still), 0][:, None, None]  # (S, 1, 1, 6)
            b = boxes[None]  # (1, P, N, 6)
            gap = np.linalg.norm(np.maximum(0.0, np.maximum(a[..., :3] - b[..., 3:], b[..., :3] - a[..., 3:])), axis=-1)
            return objs, names, len(still), list(pool), gap
        objs, names, n_still, pool, gap = self._cached("rel_distance", make)
        anchors = [i for i in pool if i < n_still]
        if len(pool) < 5 or not anchors:
            return None
        anchor = rng.choice(anchors)
        choices = rng.sample([i for i in pool if i != anchor], 4)
        if len({names[i][0] for i in [anchor, *choices]}) < 5:
            return None
        g = gap[anchor, choices]  # (4, N)
        moment = None
        if any(i >= n_still for i in choices):
            seen = np.flatnonzero(np.isfinite(g).all(0))
            if not len(seen):
                return None
            moment = int(seen[rng.randrange(len(seen))])
        gaps = sorted((float(g[k, moment or 0]), i) for k, i in enumerate(choices))
        best, second = gaps[0][0], gaps[1][0]
        if second - best < max(REL_MARGIN * best, 3 * self.noise):
            return None
        text = {i: names[i][0] for i in choices}
        opts = mc(text[gaps[0][1]], [text[i] for _, i in gaps[1:]], rng)
        listed = ", ".join(sorted(text.values()))
        when = "" if moment is None else f"At {self.scene.timestamps[moment]:.2f} s, m"
        q = (f"{when or 'M'}easuring from the closest point of each object, which of these objects ({listed}) is the "
             f"closest to {names[anchor][0]}?")
        meta = {"anchor": objs[anchor], "objects": [objs[i] for i in choices], "gaps_m": [round(d, 4) for d, _ in gaps]}
        if moment is not None:
            meta["frame"] = moment
        return Draft("rel_distance", q, opts[1], "mc", opts[0], ref_frames=_cited([names[i] for i in [anchor, *choices]]),
                     metadata=meta)

    def _prefer_boxless(self, rows, ok):
        """Pixel boxes are the last resort: keep only tuples named without one when there are any."""
        _, refs, _ = self._named()
        boxed = np.array(["pixel box" in r[0] for r in refs], dtype=bool)
        plain = ok & ~boxed[rows].any(1) if len(rows) else ok
        return plain if plain.any() else ok

    def _tuples(self, k):
        """Every ordered k-tuple of distinct, distinctly named static objects: (index rows (T, k), xy (T, k, 2))."""
        def make():
            objs, refs, xy = self._named()
            rows = _permutations(len(objs), k)
            if len(rows):
                phrases = np.array([r[0] for r in refs], dtype=object)[rows]
                distinct = np.ones(len(rows), dtype=bool)
                for i, j in itertools.combinations(range(k), 2):
                    distinct &= phrases[:, i] != phrases[:, j]
                rows = rows[distinct]
            return rows, xy[rows]
        return self._cached(("tuples", k), make)

    def _rel_direction(self, rng, level):
        def make():
            rows, xy = self._tuples(3)
            heading, v = xy[:, 1] - xy[:, 0], xy[:, 2] - xy[:, 0]
            angle = signed_angle(heading, v)
            codes, ok = LEVELS[level][0](angle)
            ok &= np.minimum(np.linalg.norm(heading, axis=-1), np.linalg.norm(v, axis=-1)) >= 3 * self.noise
            ok = self._prefer_boxless(rows, ok)
            rows, codes = rows[ok], codes[ok]
            draw = ClassDraw(codes, np.ones(len(codes))) if len(codes) else None
            return rows.tolist(), codes.tolist(), angle[ok].tolist(), draw
        rows, codes, angles, draw = self._cached(("rel_direction", level), make)
        if not rows:
            return None
        i = draw.draw(rng)
        objs, refs, _ = self._named()
        (a, b, c), (ra, rb, rc) = [objs[j] for j in rows[i]], [refs[j] for j in rows[i]]
        vocab = LEVELS[level][1]
        label, angle = vocab[codes[i]], angles[i]
        base = f"If I am standing by {ra[0]} and facing {rb[0]}, "
        if level == "easy":
            q = base + f"is {rc[0]} to the left or the right of {rb[0]}?"
        elif level == "medium":
            q = base + (f"is {rc[0]} to my left, right, or back? An object is to my back if I would have to turn at "
                        "least 135 degrees in order to face it.")
        else:
            q = base + (f"is {rc[0]} to my front-left, front-right, back-left, or back-right? The directions refer "
                        "to the quadrants of a Cartesian plane (if I am standing at the origin and facing along the "
                        "positive y-axis).")
        opts = mc(label, [x for x in vocab if x != label], rng, n=len(vocab))
        return Draft(f"rel_direction_{level}", q, opts[1], "mc", opts[0], ref_frames=_cited([ra, rb, rc]),
                     metadata={"objects": [a, b, c], "object_ids": [self.scene.object_ids[o] for o in (a, b, c)],
                               "angle_deg": round(angle, 2), "label": label})

    def _route_plan(self, rng):
        def make():
            rows, xy = self._tuples(4)  # start, facing, waypoint, goal
            legs = np.stack([xy[:, 1] - xy[:, 0], xy[:, 2] - xy[:, 0], xy[:, 3] - xy[:, 2]], axis=1)
            t1, ok1 = turn_codes(signed_angle(legs[:, 0], legs[:, 1]))
            t2, ok2 = turn_codes(signed_angle(legs[:, 1], legs[:, 2]))
            ok = ok1 & ok2 & (np.linalg.norm(legs, axis=-1).min(1) >= 3 * self.noise)
            ok = self._prefer_boxless(rows, ok)
            codes = np.stack([t1, t2], axis=1)[ok]
            draw = ClassDraw(codes[:, 0] * 3 + codes[:, 1], np.ones(len(codes))) if len(codes) else None
            return rows[ok].tolist(), codes.tolist(), draw
        rows, codes, draw = self._cached("route_plan", make)
        if not rows:
            return None
        i = draw.draw(rng)
        objs, refs, _ = self._named()
        (a, b, d, c), (ra, rb, rd, rc) = [objs[j] for j in rows[i]], [refs[j] for j in rows[i]]
        turns = tuple(TURN_VOCAB[t] for t in codes[i])
        q = (f"You are a robot beginning at {ra[0]} and facing {rb[0]}. You want to navigate to {rc[0]}. You will "
             "perform the following actions (Note: for each [please fill in], choose either 'turn back,' 'turn "
             f"left,' or 'turn right.'): 1. [please fill in] 2. Go forward until {rd[0]}. 3. [please fill in] "
             f"4. Go forward until {rc[0]}. You have reached the final destination.")

        def text(seq):
            return ", ".join(f"{i + 1}. {TURNS[t].capitalize()}" for i, t in enumerate(seq))

        cands = [s for s in itertools.product(TURNS, repeat=2) if s != turns]
        rng.shuffle(cands)
        opts = mc(text(turns), [text(s) for s in cands], rng)
        return Draft("route_plan", q, opts[1], "mc", opts[0], ref_frames=_cited([ra, rb, rd, rc]),
                     metadata={"objects": [a, b, d, c], "object_ids": [self.scene.object_ids[o] for o in (a, b, d, c)],
                               "turns": list(turns), "roles": ["start", "facing", "waypoint", "goal"],
                               "option_pool": "static/route_plan"})

    def _appearance_order(self, rng):
        """VSI-Bench's appearance order: the order in which three or four objects first appear in the video.

        Unambiguous by construction: in the order asked, each object is clearly in view (:func:`clearly_seen`) in
        a frame before the next one's first visible pixel. Whatever a viewer or a detector takes as "appears",
        between one pixel and clearly seen, the order is the same, and a one-frame glimpse (a flicker at the edge
        of the image) cannot flip it. Objects are named without a frame
        where they can be; otherwise by their left-to-right place among their label in one frame at or after the
        last of them first appears, a frame where every one of them has appeared, so the cited time says nothing
        about the order (never by pixel box: a comma list of coordinates). Every such set of three or four objects
        is a question, drawn without replacement: a scene whose camera or movers reveal objects one after another
        gives several.

        Blind-safe: the options are permutations of the same names (same words, same length), so answer priors,
        option length and the medoid tie; the question lists the names alphabetically, which says nothing about
        when they appear; the wrong options are random other permutations."""
        def make():
            s = self.scene
            nm = namer(s)
            big = clearly_seen(s)
            cand = np.flatnonzero(big.any(1))  # an object never clearly in view has no clear first appearance
            if len(cand) > ORDER_OBJECTS:
                cand = np.sort(np.asarray(rng.sample(cand.tolist(), ORDER_OBJECTS)))
            first = s.visible.argmax(1)
            clear = big.argmax(1)
            free = {}
            for o in cand.tolist():
                r = try_ref(s, o)
                if r is not None and r[1] is None:
                    free[o] = r[0]
            # frames where an object is named by its place among its label (no pixel box): (O, N)
            placed = nm.position > 0
            for o in free:
                placed[o] = True
            cand = [int(o) for o in cand if placed[o].any()]
            cand.sort(key=lambda o: (int(first[o]), o))
            sets = []
            for k in (3, 4):
                for c in itertools.combinations(cand, k):
                    if all(clear[a] < first[b] for a, b in zip(c, c[1:], strict=False)):
                        frames = np.flatnonzero(placed[list(c)].all(0))
                        frames = frames[frames >= first[c[-1]]]
                        if len(frames):
                            sets.append((c, frames.tolist()))
            return free, sets
        free, sets = self._cached("appearance_order", make)
        if not sets:
            return None
        i = rng.randrange(len(sets))
        sets[i], sets[-1] = sets[-1], sets[i]
        chosen, frames = sets.pop()  # without replacement: the next draw is another set
        f = None if all(o in free for o in chosen) else rng.choice(frames)
        names = [free[o] if o in free else try_ref(self.scene, o, frame=f)[0] for o in chosen]
        if len(set(names)) < len(names):
            return None
        perms = [p for p in itertools.permutations(names) if list(p) != names]
        rng.shuffle(perms)
        opts = mc(", ".join(names), [", ".join(p) for p in perms], rng)
        q = ("What will be the first-time appearance order of the following objects in the video: "
             f"{', '.join(sorted(names))}?")
        first = self.scene.visible.argmax(1)
        return Draft("appearance_order", q, opts[1], "mc", opts[0], ref_frames=None if f is None else [f],
                     metadata={"objects": list(chosen), "first_frames": [int(first[o]) for o in chosen]})


def clearly_seen(scene: SceneData) -> np.ndarray:
    """(O, N) bool: the object is clearly in view, its pixel box at least 2 x 2 pixels and ``CLEAR_SHARE`` of the
    image (4 pixels of a 64 x 48 synth frame, 18 x 18 of a 640 x 480 one), not a sliver at the edge."""
    boxes = scene.pixel_boxes()
    h, w = scene.hw
    bw, bh = boxes[..., 2] - boxes[..., 0] + 1, boxes[..., 3] - boxes[..., 1] + 1
    return scene.visible & (boxes[..., 0] >= 0) & (bw >= 2) & (bh >= 2) & (bw * bh >= CLEAR_SHARE * h * w)


def _cited(refs) -> list[int]:
    return sorted({r[1] for r in refs if r[1] is not None})
