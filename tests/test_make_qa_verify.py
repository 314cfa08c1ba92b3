"""Every make-qa answer on synth scenes, recomputed by an independent check: 100% agreement, every task type.

The check below shares no code with stages/make_qa: it reads the raw Zarr arrays itself and recomputes each answer
its own way (angles by atan2 on yaw-rotated coordinates instead of projections on basis vectors, its own convex
hull, its own box-gap formula, pixel projection through the intrinsics). The thresholds are the spec's numbers,
written here again.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections import Counter

import numpy as np
import pytest
import zarr

from spatialctl.qa_format import read_qa, to_sharegpt

# Four scales, cameras that walk, orbit, pan and stay (a pan reveals objects one after another: appearance order).
PRESETS = [("indoor", 10, "walk"), ("tabletop", 11, "orbit"), ("tiny-tabletop", 12, "orbit"), ("outdoor", 13, "walk"),
           ("indoor", 16, "pan"), ("tabletop", 18, "static")]

EXPECTED = {
    "dsr": {"distance", "direction", "orientation", "speed", "speed_comparison", "direction_prediction"},
    "static": {"object_counting", "abs_distance", "object_size", "room_size", "rel_distance", "rel_direction_easy",
               "rel_direction_medium", "rel_direction_hard", "route_plan", "appearance_order"},
    "multiturn": {"hierarchical"},
    "scale": {"existence", "object_size", "height", "width", "object_distance", "depth", "size_comparison",
              "height_comparison", "width_comparison", "distance_comparison", "position_change", "camera_motion",
              "camera_rotation", "spatial_relation", "object_matching"},
}
# Asked only where the geometry holds them (a turning object with a visible heading): checked when present.
OPTIONAL = {("scale", "object_rotation")}


@pytest.fixture(scope="module")
def qa(tmp_path_factory):
    from spatialctl.stages.make_qa import MakeQAConfig, run
    from spatialctl.stages.synth import SynthConfig
    from spatialctl.stages.synth import run as synth_run

    root = tmp_path_factory.mktemp("mqa")
    stores = []
    for preset, seed, camera in PRESETS:
        out = root / f"{preset}-{seed}"
        cfg = SynthConfig(seed=seed, preset=preset, frames=16, width=64, height=48, moving=3, camera=camera,
                          objects=8, quiet=True)
        assert synth_run(dataclasses.replace(cfg, out=str(out))).exit_code == 0
        stores.append(str(out / "scene.zarr"))
    # Balanced (the default) and not: six scenes are too few for balancing to keep every type (a label needs
    # sizes over a 2x range before its size is asked), and both outputs must check out.
    records = []
    for balance in (True, False):
        out = root / f"qa-{balance}" / "qa.jsonl"
        result = run(MakeQAConfig(out=str(out), per_scene=30, seed=5, balance=balance, quiet=True), stores).details
        records += read_qa(result["files"]["all"])
    scenes = {s.split("/")[-2]: Raw(s) for s in stores}
    assert {r.scene for r in records} == set(scenes)
    return records, scenes


class Raw:
    """The raw arrays of one synth store, read straight from Zarr."""

    def __init__(self, path):
        g = zarr.open_group(path, mode="r")
        t = g["tracks"]
        self.ts = g["timestamps"][:]
        self.K = g["intrinsics"][:]
        self.c2w = g["cam2world"][:]
        self.depth = g["depth"][:]
        self.pm = g["pointmaps"][:]
        self.metric = g.attrs["scale"] == "metric"
        assert list(g.attrs["world_up"]) == [0.0, 0.0, 1.0]
        self.objects = t.attrs["objects"]
        self.labels = [o["label"] for o in self.objects]
        self.front = np.array([o.get("front_yaw", np.nan) for o in self.objects], dtype=float)
        self.vis = t["visible"][:]
        self.cen = t["centroid"][:].astype(float)
        self.box = t["box"][:].astype(float)
        self.aabb = t["aabb"][:].astype(float)
        self.vel = t["velocity"][:].astype(float)
        self.moving = t["moving"][:]
        self.masks = t["masks"][:]
        self.hw = self.depth.shape[1:]
        self.frames = g["frames"][:]
        self.enclosed = "room" in g.attrs["synth"]
        self.room_bounds = np.array(g.attrs["synth"]["room"]["bounds_m"], dtype=float) if self.enclosed else None
        self._colour = {}

    def med(self, arr, o):
        return np.nanmedian(arr[o][self.vis[o]], axis=0)

    def frame_at(self, t):
        (f,) = np.flatnonzero(np.abs(self.ts - t) < 0.005)
        return int(f)

    def mask_box(self, o, f):
        h, w = self.hw
        bits = np.unpackbits(self.masks[o, f])[: h * w].reshape(h, w)
        rows, cols = np.any(bits, 1), np.any(bits, 0)
        if not rows.any():
            return None
        y = np.flatnonzero(rows)
        x = np.flatnonzero(cols)
        return [x[0], y[0], x[-1], y[-1]]


# ------------------------------------------------------------------------------------------- geometry, our own way


def yaw_of(v):
    return math.atan2(v[1], v[0])


def to_view(d, yaw):
    """World offset -> (right, forward, up) for a viewer whose heading has this yaw (z up)."""
    c, s = math.cos(yaw), math.sin(yaw)
    fwd = d[0] * c + d[1] * s
    left = -d[0] * s + d[1] * c
    return np.array([-left, fwd, d[2]])


def ratio_word(a, b):
    r = b / a - 1
    assert abs(abs(r) - 0.2) > 0.04
    return "up" if r > 0.2 else "down" if r < -0.2 else "flat"


def cap(s):
    return s[0].upper() + s[1:]


def gap(a, b):
    sep = [max(a[i], b[i]) - min(a[i + 3], b[i + 3]) for i in range(3)]
    return math.sqrt(sum(max(0.0, x) ** 2 for x in sep))


def turn_right_deg(h, v):
    """Degrees to turn right from heading h to face v (2D)."""
    ccw = math.degrees(math.atan2(h[0] * v[1] - h[1] * v[0], h[0] * v[0] + h[1] * v[1]))
    return -ccw


def hull_area(pts):
    pts = sorted(set(map(tuple, np.round(pts, 6).tolist())))

    def half(seq):
        out = []
        for p in seq:
            while len(out) >= 2 and ((out[-1][0] - out[-2][0]) * (p[1] - out[-2][1])
                                     - (out[-1][1] - out[-2][1]) * (p[0] - out[-2][0])) <= 0:
                out.pop()
            out.append(p)
        return out

    hull = half(pts)[:-1] + half(pts[::-1])[:-1]
    return 0.5 * abs(sum(hull[i][0] * hull[i - 1][1] - hull[i - 1][0] * hull[i][1] for i in range(len(hull))))


# ------------------------------------------------------------------------------------------- naming, our own way

UNIT = {"mm": (1000, 0), "cm": (100, 1), "m": (1, 2), "km": (0.001, 3)}
NUM = {"two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8, "nine": 9, "ten": 10}


def scale_unit(raw):
    """The scene's scale and natural unit from its true extent (objects' median boxes and the camera path)."""
    pts = [raw.c2w[:, :3, 3]] + [raw.med(raw.aabb, o).reshape(2, 3) for o in range(len(raw.labels)) if raw.vis[o].any()]
    allp = np.concatenate(pts)
    extent = np.linalg.norm(allp.max(0) - allp.min(0))
    return (("tiny_tabletop", "mm") if extent < 0.5 else ("tabletop", "cm") if extent < 3 else
            ("indoor", "m") if extent < 20 else ("outdoor", "m"))


def in_unit(v, unit):
    f, d = UNIT[unit]
    return round(v * f, d)


def plural_of(label):
    return {"person": "people", "box": "boxes", "battery": "batteries", "die": "dice"}.get(label, label + "s")


def colour_share(raw, o):
    """Share of each colour name over all of o's mask pixels, with matplotlib's HSV and the spec's bins."""
    if o not in raw._colour:
        from matplotlib.colors import rgb_to_hsv

        h, w = raw.hw
        seen = [f for f in range(len(raw.ts)) if raw.vis[o, f]]
        k = min(4, len(seen))  # the spec: up to 4 frames, evenly spread over those where it is seen
        frames = sorted({seen[int(round(i * (len(seen) - 1) / (k - 1)))] if k > 1 else seen[0] for i in range(k)})
        bits = np.unpackbits(raw.masks[o, frames], axis=-1)[..., : h * w].reshape(-1, h, w).astype(bool)
        px = raw.frames[frames][bits].astype(float) / 255
        if not len(px):
            raw._colour[o] = {}
            return {}
        hsv = rgb_to_hsv(px)
        deg, sat, val = hsv[:, 0] * 360, hsv[:, 1], hsv[:, 2]
        names = np.select([deg < 15, deg < 45, deg < 70, deg < 165, deg < 260, deg < 300, deg < 345],
                          ["red", "orange", "yellow", "green", "blue", "purple", "pink"], "red").astype(object)
        names[sat < 0.2] = np.where(val[sat < 0.2] >= 0.75, "white", "gray")
        names[val < 0.25] = "black"
        raw._colour[o] = Counter(names.tolist())
        n = max(len(names), 1)
        raw._colour[o] = {k: v / n for k, v in raw._colour[o].items()}
    return raw._colour[o]


def big_box(raw, o, f):
    b = raw.mask_box(o, f)
    h, w = raw.hw
    return b if b is not None and b[2] - b[0] >= max(4, w // 32) and b[3] - b[1] >= max(4, h // 32) else None


def group(raw, label):
    return [o for o in range(len(raw.labels)) if raw.labels[o] == label]


LABEL = r"(?:toy )?[a-z]+"  # "toy car": the one two-word label
PHRASES = [
    ("box", re.compile(rf"the ({LABEL}) at pixel box \[(\d+), (\d+), (\d+), (\d+)\](?: in the frame at ([\d.]+) s)?")),
    ("position", re.compile(rf"the (leftmost|rightmost) of the ([a-z]+) ({LABEL})(?: in the frame at ([\d.]+) s)?")),
    ("size", re.compile(rf"the (larger|smaller|largest|smallest) of the ([a-z]+) ({LABEL})")),
    ("colour", re.compile(rf"the (red|orange|yellow|green|blue|purple|pink|white|gray|black) ({LABEL})")),
    ("near", re.compile(rf"the ({LABEL}) nearest to the ({LABEL})")),
]


def resolve(raw, phrase, frame=None):
    """The one object a phrase names (AssertionError if none or several); ``frame``: the image of a 1-frame question."""
    phrase = phrase.strip()
    for kind, rx in PHRASES:
        m = rx.fullmatch(phrase)
        if not m:
            continue
        if kind == "box":
            label, *box, t = m.groups()
            f = raw.frame_at(float(t)) if t else frame
            hits = [o for o in group(raw, label) if raw.vis[o, f] and raw.mask_box(o, f) == [int(v) for v in box]]
        elif kind == "position":
            side, n, plural, t = m.groups()
            f = raw.frame_at(float(t)) if t else frame
            label = next(lab for lab in set(raw.labels) if plural_of(lab) == plural)
            members = group(raw, label)
            assert len(members) == NUM[n]
            boxes = [big_box(raw, o, f) for o in members]
            assert all(b is not None for b in boxes), phrase
            cx = [(b[0] + b[2]) / 2 for b in boxes]
            i = int(np.argmin(cx) if side == "leftmost" else np.argmax(cx))
            rest = [x for j, x in enumerate(cx) if j != i]
            assert abs(cx[i] - (min(rest) if side == "leftmost" else max(rest))) >= 0.1 * raw.hw[1]
            hits = [members[i]]
        elif kind == "size":
            word, n, plural = m.groups()
            label = next(lab for lab in set(raw.labels) if plural_of(lab) == plural)
            members = group(raw, label)
            assert len(members) == NUM[n] and (len(members) == 2) == (word in ("larger", "smaller"))
            size = [max(raw.med(raw.box, o)[3:6]) for o in members]
            i = int(np.argmax(size) if word.startswith("larg") else np.argmin(size))
            rest = [x for j, x in enumerate(size) if j != i]
            assert size[i] >= 1.5 * max(rest) if word.startswith("larg") else size[i] * 1.5 <= min(rest)
            hits = [members[i]]
        elif kind == "near":
            label, mark = m.groups()
            members = group(raw, label)
            assert raw.labels.count(mark) == 1 and not raw.moving[raw.labels.index(mark)]
            assert not raw.moving[members].any()
            centre = raw.med(raw.box, raw.labels.index(mark))[:3]
            d = [np.linalg.norm(raw.med(raw.box, o)[:3] - centre) for o in members]
            i = int(np.argmin(d))
            assert all(d[i] * 1.5 <= x for j, x in enumerate(d) if j != i)
            hits = [members[i]]
        else:
            colour, label = m.groups()
            assert label != "person"
            members = group(raw, label)
            hits = [o for o in members if colour_share(raw, o).get(colour, 0) >= 0.5]
            assert all(colour_share(raw, o).get(colour, 0) <= 0.2 for o in members if o not in hits), phrase
        assert len(hits) == 1, (phrase, hits)
        return hits[0]
    m = re.fullmatch(r"the ([a-z]+)", phrase)
    assert m and raw.labels.count(m.group(1)) == 1, phrase
    return raw.labels.index(m.group(1))


ANY_PHRASE = re.compile(
    rf"the (?:{LABEL} at pixel box \[[\d, ]+\](?: in the frame at [\d.]+ s)?|(?:leftmost|rightmost) of the [a-z]+ {LABEL}"
    rf"(?: in the frame at [\d.]+ s)?|(?:larger|smaller|largest|smallest) of the [a-z]+ {LABEL}|"
    rf"(?:red|orange|yellow|green|blue|purple|pink|white|gray|black) {LABEL}|{LABEL} nearest to the {LABEL})")


def check_refs(raw, r, text, allowed, frame=None):
    """Every object phrase in the text names exactly one object, one the record is about, citing shown frames only."""
    for phrase in ANY_PHRASE.findall(text):
        assert resolve(raw, phrase, frame) in allowed, (text, phrase, allowed)
    for t in re.findall(r"the frame at ([\d.]+) s", text):
        assert raw.frame_at(float(t)) in r.frames, (text, r.frames)


def phases(words):
    """'(1) a (2) b' from per-step words, repeated words merged into one phase."""
    runs = [w for i, w in enumerate(words) if i == 0 or w != words[i - 1]]
    return " ".join(f"({i}) {w}" for i, w in enumerate(runs, 1))


def facing_yaw(raw, o, f):
    return raw.box[o, f, 6] + raw.front[o]


def dsr_viewer(raw, m, f):
    """(position, yaw of the forward axis) of the record's viewer at frame f (frozen at the first key frame in
    absolute mode); an agent looks where it faces (box yaw + front_yaw)."""
    f = m["key_frames"][0] if m["mode"] == "absolute" else f
    if m["viewpoint"] == "camera":
        return raw.c2w[f, :3, 3], yaw_of(raw.c2w[f, :3, 2])
    return raw.cen[m["agent"], f], facing_yaw(raw, m["agent"], f)


def position_word(v):
    u = v / np.linalg.norm(v)
    fb = "front" if u[1] > 0.3 else "back" if u[1] < -0.3 else ""
    lr = "right" if u[0] > 0.3 else "left" if u[0] < -0.3 else ""
    ud = "above" if u[2] > 0.3 else "below" if u[2] < -0.3 else ""
    horiz = fb + ("-" if fb and lr else "") + lr
    return " and ".join(w for w in (horiz, ud) if w)


def expect_dsr(raw, r):
    m = r.metadata
    t = r.type
    fr = m["key_frames"]
    if m["viewpoint"] == "agent":
        assert np.isfinite(raw.front[m["agent"]])  # only objects with a facing are viewpoints
    objs = m["targets"]

    def other(f):  # where B is: the second object, or the viewpoint itself (frozen at the first key frame if absolute)
        if m.get("relative_to") == "viewpoint":
            assert len(objs) == 1
            return dsr_viewer(raw, m, f)[0]
        return raw.cen[objs[1], f]

    if t == "distance":
        a = objs[0]
        d = [np.linalg.norm(raw.cen[a, f] - other(f)) for f in fr]
        words = {"up": "getting farther apart", "down": "getting closer", "flat": "staying about the same distance apart"}
        return phases([words[ratio_word(d[i], d[i + 1])] for i in range(len(d) - 1)])
    if t in ("direction", "direction_prediction"):
        a = objs[0]
        if t == "direction_prediction":
            assert max(r.frames) == fr[0]  # nothing after the last frame shown
            fr = fr[1:]
        return phases([position_word(to_view(raw.cen[a, f] - other(f), dsr_viewer(raw, m, f)[1])) for f in fr])
    if t == "orientation":
        (o,) = objs
        assert np.isfinite(raw.front[o])
        out = []
        for f in fr:
            rel = math.degrees(facing_yaw(raw, o, f) - dsr_viewer(raw, m, f)[1])
            rel = (rel + 180) % 360 - 180  # positive: turned left of the viewer's forward
            out.append("facing the same way as the viewpoint" if abs(rel) < 45 else
                       "facing toward the viewpoint" if abs(rel) > 135 else "facing left" if rel > 0 else "facing right")
        return phases(out)

    def speeds(o):
        p = []
        for f in fr:
            pos, yaw = dsr_viewer(raw, m, f)
            p.append(to_view(raw.cen[o, f] - pos, yaw))
        return np.linalg.norm(np.diff(np.array(p), axis=0), axis=1) / np.diff(raw.ts[fr])

    if t == "speed":
        sp = speeds(objs[0])
        words = {"up": "speeding up", "down": "slowing down", "flat": "keeping about the same speed"}
        return phases([words[ratio_word(sp[i], sp[i + 1])] for i in range(len(sp) - 1)])
    if t == "speed_comparison":
        sa, sb = (speeds(o) for o in objs)
        out = []
        for i in range(len(sa)):
            q = sa[i] / sb[i] if sb[i] > 0 else math.inf
            out.append("object 1 is faster" if q > 1.2 else "object 2 is faster" if q < 1 / 1.2
                       else "they move at about the same speed")
        return phases(out)
    raise AssertionError(t)


def expect_static(raw, r):
    m, t = r.metadata, r.type
    cats = {}
    for o, lab in enumerate(raw.labels):
        if raw.vis[o].any():
            cats.setdefault(lab, []).append(o)

    def cat_gap(a, b):
        return min(gap(raw.med(raw.aabb, i), raw.med(raw.aabb, j)) for i in cats[a] for j in cats[b])

    def xy(o):
        return raw.med(raw.box, o)[:2]

    assert ("room" in r.question) <= raw.enclosed
    if t == "object_counting":
        assert plural_of(m["label"]) in r.question
        return float(len(cats[m["label"]]))
    if t == "abs_distance":
        assert raw.metric
        return round(cat_gap(*m["categories"]), 2)
    if t == "object_size":
        return float(round(max(raw.med(raw.box, m["object"])[3:6]) * 100))
    if t == "room_size":
        assert raw.enclosed
        if not hasattr(raw, "area"):
            raw.area = hull_area(raw.pm[raw.depth > 0][:, :2].astype(float))
        lo, hi = raw.room_bounds
        floor = (hi[0] - lo[0]) * (hi[1] - lo[1])  # the room's floor, from its walls
        assert raw.area >= 0.25 * floor  # asked only where the video shows a good part of the room
        return round(floor, 1)
    if t == "rel_distance":
        assert len(r.options) == 4
        anchor = raw.med(raw.aabb, m["anchor"])
        assert not raw.moving[m["anchor"]]
        f = m.get("frame")
        # with a moving option, the question is about one moment, where every moving option is seen
        assert (f is not None) == bool(raw.moving[m["objects"]].any())
        if f is not None:
            assert r.question.startswith(f"At {raw.ts[f]:.2f} s, measuring") and all(
                raw.vis[o, f] for o in m["objects"] if raw.moving[o])

        def box(o):
            return raw.aabb[o, f] if raw.moving[o] else raw.med(raw.aabb, o)

        d = {o: gap(anchor, box(o)) for o in m["objects"]}
        best = min(d, key=d.get)
        assert all(d[o] > 1.1 * d[best] for o in d if o != best)
        return ("object", best)
    if t.startswith("rel_direction"):
        a, b, c = m["objects"]
        ang = turn_right_deg(xy(b) - xy(a), xy(c) - xy(a))
        if t.endswith("easy"):
            return "right" if ang > 0 else "left"
        if t.endswith("medium"):
            return "back" if abs(ang) >= 135 else "right" if ang > 0 else "left"
        return ("front-" if abs(ang) < 90 else "back-") + ("right" if ang > 0 else "left")
    if t == "route_plan":
        a, b, d, c = (xy(o) for o in m["objects"])
        turns = []
        for h, v in ((b - a, d - a), (d - a, c - d)):
            ang = turn_right_deg(h, v)
            turns.append("Turn back" if abs(ang) >= 135 else "Turn right" if ang > 0 else "Turn left")
        return f"1. {turns[0]}, 2. {turns[1]}"
    if t == "appearance_order":
        first = {o: int(np.argmax(raw.vis[o])) for o in m["objects"]}
        assert len(set(first.values())) == len(first) >= 3
        order = sorted(m["objects"], key=first.get)
        # each clearly in view (a 2 x 2 box, 0.1% of the image) before the next one's first visible pixel
        for a, b in zip(order, order[1:], strict=False):
            assert any(clear_box(raw, a, f) for f in range(first[b])), (a, b, first)
        return ("order", order)
    raise AssertionError(t)


def clear_box(raw, o, f):
    b = raw.mask_box(o, f)
    if b is None:
        return False
    w, h = b[2] - b[0] + 1, b[3] - b[1] + 1
    return w >= 2 and h >= 2 and w * h >= 1e-3 * raw.hw[0] * raw.hw[1]


def cam_axes(raw, f):
    """Gravity-aligned camera axes of frame f: (right, forward, up), z up."""
    fwd = raw.c2w[f, :3, 2].copy()
    fwd[2] = 0
    fwd /= np.linalg.norm(fwd)
    return np.array([fwd[1], -fwd[0], 0.0]), fwd, np.array([0.0, 0.0, 1.0])


def expect_scale(raw, r):
    m, t = r.metadata, r.type
    scale, unit = scale_unit(raw)
    assert r.scale == scale
    objs = m.get("objects", [])
    centre = [raw.med(raw.box, o)[:3] for o in objs]
    sides = [raw.med(raw.box, o)[3:6] for o in objs]

    def length(v):
        u = "km" if unit == "m" and v >= 1000 else unit
        assert r.unit == u
        return in_unit(v, u)

    if t == "object_size":
        return length(max(sides[0]))
    if t == "height":
        return length(sides[0][2])
    if t == "width":
        return length(max(sides[0][:2]))
    if t == "object_distance":
        return length(np.linalg.norm(centre[0] - centre[1]))
    if t == "depth":
        f = m["frame"]
        assert r.frames == [f]
        return length((raw.c2w[f, :3, :3].T @ (raw.box[objs[0], f, :3] - raw.c2w[f, :3, 3]))[2])
    if t in ("camera_rotation", "object_rotation"):
        f1, f2 = m["frames_compared"]
        assert r.unit == "degrees" and r.frames == list(range(f1, f2 + 1))
        if t == "camera_rotation":
            y1, y2 = (yaw_of(raw.c2w[f, :3, 2]) for f in (f1, f2))
        else:
            y1, y2 = raw.box[objs[0], f1, 6], raw.box[objs[0], f2, 6]
        d = abs(math.degrees(math.atan2(math.sin(y2 - y1), math.cos(y2 - y1))))
        assert d >= 10
        return float(round(d))
    if t == "existence":
        present = {raw.labels[o] for o in range(len(raw.labels)) if raw.vis[o].any()}
        label = re.fullmatch(r"Is there an? ([a-z ]+) anywhere in the video\?", r.question).group(1)
        assert sorted(r.options) == ["no", "yes"] and (label in present or label not in raw.labels)
        return "yes" if label in present else "no"
    if t in ("size_comparison", "height_comparison", "width_comparison"):
        labels = {raw.labels[o] for o in objs}
        assert len(labels) == 1 or labels <= {"box", "sphere", "cylinder"}
        key = {"size_comparison": max, "height_comparison": lambda s: s[2], "width_comparison": lambda s: max(s[:2])}[t]
        vals = [key(s) for s in sides]
        least = re.search(r"is the (smallest|shortest|narrowest)\b", r.question) is not None
        if least:  # the smallest: the same check on the negated values
            vals = [-v for v in vals]
        top, second = sorted(vals)[-1], sorted(vals)[-2]
        assert top - second >= 0.15 * max(abs(top), abs(second))
        assert not re.search(r"larger|smaller|largest|smallest|nearest to|pixel box", " ".join(r.options))
        return ("object", objs[int(np.argmax(vals))])
    if t == "distance_comparison":
        f = m["frame"]
        assert len({raw.labels[o] for o in objs}) == 1  # across labels the kind hints at the distance
        d = [np.linalg.norm(raw.box[o, f, :3] - raw.c2w[f, :3, 3]) for o in objs]
        nearest = re.search(r"is closest to the camera", r.question) is not None
        assert nearest or re.search(r"is farthest from the camera", r.question)
        assert not re.search(r"larger|smaller|largest|smallest|nearest to|pixel box", " ".join(r.options))
        return ("object", objs[int(np.argmin(d) if nearest else np.argmax(d))])
    if t == "position_change":
        f1, f2 = m["frames_compared"]
        assert r.frames == [f1, f2]
        b1, b2 = raw.mask_box(objs[0], f1), raw.mask_box(objs[0], f2)
        dx, dy = (b2[0] + b2[2] - b1[0] - b1[2]) / 2, (b2[1] + b2[3] - b1[1] - b1[3]) / 2
        h, w = raw.hw
        if abs(dx) >= 2 * abs(dy) and abs(dx) >= 0.1 * w:
            return "It moved " + ("left" if dx < 0 else "right")
        assert abs(dy) >= 2 * abs(dx) and abs(dy) >= 0.1 * h
        return "It moved " + ("up" if dy < 0 else "down")
    if t == "camera_motion":
        f1, f2 = m["frames_compared"]
        right, fwd, up = cam_axes(raw, f1)
        d = raw.c2w[f2, :3, 3] - raw.c2w[f1, :3, 3]
        x, y, z = d @ right, d @ fwd, d @ up
        mags = sorted([abs(x), abs(y), abs(z)])
        assert mags[2] >= 2 * mags[1]
        assert max(abs(x), abs(y)) == mags[2]
        if abs(x) > abs(y):
            return "It moved to the " + ("right" if x > 0 else "left")
        return "It moved " + ("forward" if y > 0 else "backward")
    if t == "spatial_relation":
        f = m["frame"]
        right, fwd, up = cam_axes(raw, f)
        d = raw.box[objs[0], f, :3] - raw.box[objs[1], f, :3]
        comps = np.array([d @ right, d @ fwd, d @ up])
        i = int(np.argmax(np.abs(comps)))
        assert abs(comps[i]) >= 2 * sorted(np.abs(comps))[1]
        return [("to the left of", "to the right of"), ("in front of", "behind"), ("below", "above")][i][int(comps[i] > 0)]
    if t == "object_matching":
        f1, f2 = m["frames_compared"]
        assert r.frames == [f1, f2] and len(objs) == len(r.options) and raw.vis[objs].any(1).all()
        both = [o for o in objs if raw.vis[o, f1] and raw.vis[o, f2]]
        if re.search(r"is seen, even partly, both in the frame at", r.question):
            assert both == [objs[0]]
        else:  # the other way round: the one missing from a frame, the others seen in both
            assert re.search(r"is missing \(not seen at all\) from the frame at", r.question)
            assert [o for o in objs if o not in both] == [objs[0]]
        return ("object", objs[0])
    raise AssertionError(t)


def check_multiturn(raw, r):
    m = r.metadata
    f = m["frame"]
    assert r.frames == [f] and len(r.turns()) <= 12
    R, tvec = raw.c2w[f, :3, :3], raw.c2w[f, :3, 3]
    _, unit = scale_unit(raw)
    decimals = UNIT[unit][1]

    def cam(o):
        return R.T @ (raw.box[o, f, :3] - tvec)

    for turn, tm in zip(r.turns(), m["turns"], strict=True):
        kind, ans = tm["type"], turn["answer"]
        if turn["answer_type"] == "number":
            assert turn["unit"] == unit  # one unit in the whole sample, named in the question
        if kind == "pixel_depth":
            x, y = tm["pixel"]
            assert ans == in_unit(float(raw.depth[f, y, x]), unit), (turn, raw.depth[f, y, x])
        elif kind == "pixel_depth_relative":
            (x1, y1), (x2, y2) = tm["pixels"]
            near = (x1, y1) if raw.depth[f, y1, x1] < raw.depth[f, y2, x2] else (x2, y2)
            assert ans == f"({near[0]}, {near[1]})"
        elif kind == "object_box":
            c = [in_unit(v, unit) for v in cam(tm["object"])]
            s = [in_unit(v, unit) for v in raw.box[tm["object"], f, 3:6]]
            assert min(s) >= 10 * 10.0 ** -decimals  # no degenerate boxes
            fmt = ", ".join([f"{{:.{decimals}f}}"] * 3)
            assert ans == f"centre ({fmt.format(*c)}) {unit}, size ({fmt.format(*s)}) {unit}"
        elif kind == "object_left_right":
            a, b = (raw.K[f] @ cam(o) for o in tm["objects"])
            assert ans == ("left" if a[0] / a[2] < b[0] / b[2] else "right")
        elif kind == "object_closer":
            a, b = tm["objects"]
            assert ans == ("yes" if cam(a)[2] < cam(b)[2] else "no")
        elif kind == "object_distance":
            a, b = tm["objects"]
            assert ans == in_unit(float(np.linalg.norm(raw.box[a, f, :3] - raw.box[b, f, :3])), unit)
        elif kind == "caption":
            items = re.findall(r"a ([a-z ]+?) ([\d.]+) (mm|cm|m) away (ahead|to the left|to the right)", ans)
            assert len(items) == len(tm["objects"]) > 0
            for (label, val, u, side), o in zip(items, tm["objects"], strict=True):
                c = cam(o)
                ang = math.degrees(math.atan2(c[0], c[2]))
                assert label == raw.labels[o] and u == unit
                assert float(val) == in_unit(float(np.linalg.norm(c)), unit)
                assert side == ("ahead" if abs(ang) < 10 else "to the right" if ang > 0 else "to the left")
        else:
            raise AssertionError(kind)
        check_refs(raw, r, turn["question"], m["objects"], frame=f)
        assert "in the frame at" not in turn["question"]  # one image: no other frame to cite


def test_every_task_type_of_every_family_is_generated(qa):
    records, _ = qa
    got = {}
    for r in records:
        got.setdefault(r.family, set()).add(r.type)
    for family, types in EXPECTED.items():
        assert got.get(family, set()) - {t for f, t in OPTIONAL if f == family} == types, (family, types ^ got.get(family, set()))


def test_every_answer_agrees_with_the_independent_check(qa):
    records, scenes = qa
    checked = Counter()
    for r in records:
        raw = scenes[r.scene]
        if raw.metric:
            assert r.scale == scale_unit(raw)[0]  # every family's records carry the scale
        if len(r.frames) == 1:
            assert r.images and len(r.images) == 1 and "<video>" not in to_sharegpt(r)["conversations"][0]["value"]
        if r.family == "multiturn":
            check_multiturn(raw, r)
        else:
            m = r.metadata
            expect = {"dsr": expect_dsr, "static": expect_static, "scale": expect_scale}[r.family](raw, r)
            if r.answer_type == "mc":
                got = r.answer_option
                assert r.options.count(got) == 1  # no distractor equals the answer
                frame = m.get("frame")
                if isinstance(expect, tuple) and expect[0] == "object":
                    assert resolve(raw, got, frame) == expect[1], (r.question, r.options, r.answer)
                elif isinstance(expect, tuple) and expect[0] == "order":
                    assert [resolve(raw, p, frame) for p in got.split(", ")] == expect[1], (r.question, got)
                else:
                    assert got == expect, (r.question, r.options, r.answer, expect)
            else:
                assert r.answer == expect, (r.question, r.answer, expect)
                if r.family in ("static", "scale") and r.type != "object_counting":
                    assert r.unit
            allowed = m.get("objects", m.get("targets", []) + ([m["agent"]] if "agent" in m else []))
            if "object" in m:
                allowed = [m["object"]]
            if "anchor" in m and isinstance(m["anchor"], int):
                allowed = [*allowed, m["anchor"]]
            if r.family != "dsr":
                check_refs(raw, r, r.question + "\n" + "\n".join(r.options or []), allowed, m.get("frame"))
            if r.unit in ("m", "cm", "m²", "mm", "km") or r.family == "scale":
                assert raw.metric
        checked[(r.family, r.type)] += 1
    assert sum(checked.values()) == len(records) > 0
    assert {r.scale for r in records if r.family == "scale"} == {"tiny_tabletop", "tabletop", "indoor", "outdoor"}
    dsr = [r.metadata for r in records if r.family == "dsr"]
    assert {(m["mode"], m["viewpoint"]) for m in dsr} == {(a, b) for a in ("relative", "absolute") for b in ("camera", "agent")}
    # Facing is not motion: some agent viewpoint or oriented target faces more than 45 degrees away from where it
    # moves (or turns on the spot), so an answer taken from the motion direction would fail the check above.
    apart = []
    for r in records:
        m = r.metadata
        if r.family != "dsr" or (m["viewpoint"] != "agent" and r.type != "orientation"):
            continue
        raw = scenes[r.scene]
        o = m["agent"] if m["viewpoint"] == "agent" else m["targets"][0]
        fr = m["key_frames"]
        if np.linalg.norm(raw.vel[o, fr, :2], axis=-1).max() < 1e-9:  # standing: does it turn?
            spin = abs((math.degrees(facing_yaw(raw, o, fr[-1]) - facing_yaw(raw, o, fr[0])) + 180) % 360 - 180)
            apart.append(spin > 10)
        else:
            turn = [abs((math.degrees(facing_yaw(raw, o, f) - yaw_of(raw.vel[o, f])) + 180) % 360 - 180) for f in fr
                    if np.linalg.norm(raw.vel[o, f, :2]) > 1e-9]
            apart.append(max(turn) > 45)
    assert any(apart)
    # B is sometimes the viewpoint itself, sometimes another object
    assert {m.get("relative_to", "object") for m in dsr if "steps" in m} == {"viewpoint", "object"}
    assert {k for k in checked} - OPTIONAL == {(f, t) for f, ts in EXPECTED.items() for t in ts}
    dsr_rows = [r for r in records if r.family == "dsr"]  # DSR names by referring expressions, never by a box
    assert dsr_rows and not any("pixel box" in r.question + " ".join(r.options or []) for r in dsr_rows)
    for family in ("static", "scale", "multiturn"):  # pixel boxes only as a last resort
        rows = [r for r in records if r.family == family]
        boxed = sum("pixel box" in " ".join(t["question"] for t in r.turns()) + " ".join(r.options or []) for r in rows)
        assert boxed <= 0.15 * len(rows), (family, boxed / len(rows))

