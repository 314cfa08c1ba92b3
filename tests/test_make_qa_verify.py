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

from spatialctl.qa_format import read_qa

# Four scales, cameras that walk, orbit and pan (a pan reveals objects one after another: appearance order).
PRESETS = [("indoor", 0, "walk"), ("tabletop", 1, "orbit"), ("tiny-tabletop", 2, "orbit"), ("outdoor", 3, "walk"),
           ("indoor", 5, "pan")]

EXPECTED = {
    "dsr": {"distance", "direction", "orientation", "speed", "speed_comparison", "direction_prediction"},
    "static": {"object_counting", "abs_distance", "object_size", "room_size", "rel_distance", "rel_direction_easy",
               "rel_direction_medium", "rel_direction_hard", "route_plan", "appearance_order"},
    "multiturn": {"hierarchical"},
    "scale": {"object_size", "object_distance", "camera_distance", "size_comparison", "distance_comparison"},
}


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
                          objects=7, quiet=True)
        assert synth_run(dataclasses.replace(cfg, out=str(out))).exit_code == 0
        stores.append(str(out / "scene.zarr"))
    result = run(MakeQAConfig(out=str(root / "qa.jsonl"), per_scene=30, seed=5, quiet=True), stores).details
    records = read_qa(result["files"]["all"])
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
        self.vis = t["visible"][:]
        self.cen = t["centroid"][:].astype(float)
        self.box = t["box"][:].astype(float)
        self.aabb = t["aabb"][:].astype(float)
        self.vel = t["velocity"][:].astype(float)
        self.moving = t["moving"][:]
        self.masks = t["masks"][:]
        self.hw = self.depth.shape[1:]

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


def viewer(raw, kind, agent, f):
    if kind == "camera":
        return raw.c2w[f, :3, 3], yaw_of(raw.c2w[f, :3, 2])
    return raw.cen[agent, f], yaw_of(raw.vel[agent, f])


def rel_positions(raw, m, o):
    fr = m["key_frames"]
    out = []
    for f in fr:
        pos, yaw = viewer(raw, m["viewpoint"], m.get("agent"), fr[0] if m["mode"] == "absolute" else f)
        out.append(to_view(raw.cen[o, f] - pos, yaw))
    return np.array(out)


def ratio_word(a, b):
    r = b / a - 1
    assert abs(abs(r) - 0.2) > 0.04
    return "up" if r > 0.2 else "down" if r < -0.2 else "flat"


def move_words(d):
    u = d / np.linalg.norm(d)
    words = []
    h = ("forward" if u[1] > 0.3 else "backward" if u[1] < -0.3 else "")
    lr = ("right" if u[0] > 0.3 else "left" if u[0] < -0.3 else "")
    horiz = h + ("-" if h and lr else "") + lr
    vert = "upward" if u[2] > 0.3 else "downward" if u[2] < -0.3 else ""
    words = [w for w in (horiz, vert) if w]
    return "move " + " and ".join(words)


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


def length(v):
    return (round(v * 100, 1), "cm") if v < 0.5 else (round(v, 3), "m")


# ------------------------------------------------------------------------------------------- per family checks

REF = re.compile(r"the ([a-z]+(?: [a-z]+)?) at pixel box \[(\d+), (\d+), (\d+), (\d+)\] in the frame at ([\d.]+) s")


def check_refs(raw, text, allowed):
    """Every 'label at pixel box ... in the frame at T s' names exactly one object, and one the record uses."""
    for label, x1, y1, x2, y2, t in REF.findall(text):
        f = raw.frame_at(float(t))
        hits = [o for o in range(len(raw.labels)) if raw.labels[o] == label and raw.vis[o, f]
                and raw.mask_box(o, f) == [int(x1), int(y1), int(x2), int(y2)]]
        assert len(hits) == 1 and hits[0] in allowed, (text, hits, allowed)
    for label in re.findall(r"the ([a-z]+)\b(?! at pixel)", text):
        if label in raw.labels and raw.labels.count(label) == 1 and allowed is not None:
            pass  # unique labels name themselves


def expect_dsr(raw, r):
    m = r.metadata
    t = r.type
    if m["viewpoint"] == "agent":
        assert m["agent_orientation_source"] == "direction of motion"
    if t == "distance":
        d = np.linalg.norm(rel_positions(raw, m, m["targets"][0]), axis=1)
        words = {"up": "become larger", "down": "become smaller", "flat": "keep nearly constant"}
        return cap(" and then ".join(words[ratio_word(d[i], d[i + 1])] for i in range(2)))
    if t in ("direction", "direction_prediction"):
        p = rel_positions(raw, m, m["targets"][0])
        if t == "direction_prediction":
            assert max(r.frames) == m["key_frames"][0]  # nothing after the observed frame is shown
        return cap(", then ".join(move_words(p[i + 1] - p[i]) for i in range(2)))
    if t == "orientation":
        o = m["targets"][0]
        fr = m["key_frames"]
        out = []
        for f in fr:
            _, yaw = viewer(raw, m["viewpoint"], m.get("agent"), fr[0] if m["mode"] == "absolute" else f)
            rel = math.degrees(yaw_of(raw.vel[o, f]) - yaw)
            rel = (rel + 180) % 360 - 180  # positive: turned left of the viewer's heading
            out.append("face the same direction as the viewpoint" if abs(rel) < 45 else
                       "face toward the viewpoint" if abs(rel) > 135 else "face left" if rel > 0 else "face right")
        return cap(", then ".join(out))
    dt = np.diff(raw.ts[m["key_frames"]])
    if t == "speed":
        p = rel_positions(raw, m, m["targets"][0])
        sp = np.linalg.norm(np.diff(p, axis=0), axis=1) / dt
        words = {"up": "become faster", "down": "become slower", "flat": "keep nearly constant"}
        return cap(" and then ".join(words[ratio_word(sp[i], sp[i + 1])] for i in range(2)))
    if t == "speed_comparison":
        sa, sb = (np.linalg.norm(np.diff(rel_positions(raw, m, o), axis=0), axis=1) / dt for o in m["targets"])
        out = []
        for i in range(2):
            q = sa[i] / sb[i] if sb[i] > 0 else math.inf
            out.append("object 1 is faster" if q > 1.2 else "object 2 is faster" if q < 1 / 1.2
                       else "they move at about the same speed")
        return cap(" at first, and then ".join(out))
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

    if t == "object_counting":
        return float(len(cats[m["label"]]))
    if t == "abs_distance":
        assert raw.metric
        return round(cat_gap(*m["categories"]), 2)
    if t == "object_size":
        return float(round(max(raw.med(raw.box, m["object"])[3:6]) * 100))
    if t == "room_size":
        if not hasattr(raw, "area"):
            raw.area = hull_area(raw.pm[raw.depth > 0][:, :2].astype(float))
        return round(raw.area, 1)
    if t == "rel_distance":
        return min(m["choices"], key=lambda c: cat_gap(m["anchor"], c))
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
        first = {c: min(int(np.argmax(raw.vis[o])) for o in cats[c]) for c in m["categories"]}
        return ", ".join(sorted(m["categories"], key=first.get))
    raise AssertionError(t)


def expect_scale(raw, r):
    m, t = r.metadata, r.type
    pts = [raw.c2w[:, :3, 3]] + [raw.med(raw.aabb, o).reshape(2, 3) for o in range(len(raw.labels)) if raw.vis[o].any()]
    allp = np.concatenate(pts)
    extent = np.linalg.norm(allp.max(0) - allp.min(0))
    scale, unit = (("tiny_tabletop", "mm") if extent < 0.5 else ("tabletop", "cm") if extent < 3 else
                   ("indoor", "m") if extent < 20 else ("outdoor", "km"))
    assert (r.scale, r.metadata["unit"]) == (scale, unit)
    to_unit = {"mm": (1000, 0), "cm": (100, 1), "m": (1, 2), "km": (0.001, 3)}[unit]
    objs = m["objects"]
    centre = [raw.med(raw.box, o)[:3] for o in objs]
    if t in ("object_size", "object_distance", "camera_distance"):
        assert r.unit == unit
        if t == "object_size":
            v = max(raw.med(raw.box, objs[0])[3:6])
        elif t == "object_distance":
            v = np.linalg.norm(centre[0] - centre[1])
        else:
            v = np.linalg.norm(centre[0] - raw.c2w[m["frame"], :3, 3])
        return round(v * to_unit[0], to_unit[1])
    names = [raw.labels[o] for o in objs]
    if t == "size_comparison":
        i = int(np.argmax([max(raw.med(raw.box, o)[3:6]) for o in objs]))
    else:
        i = int(np.argmin([np.linalg.norm(c - raw.c2w[m["frame"], :3, 3]) for c in centre]))
    return names[i]


def check_multiturn(raw, r):
    m = r.metadata
    f = m["frame"]
    assert r.frames == [f] and len(r.turns()) <= 12
    R, tvec = raw.c2w[f, :3, :3], raw.c2w[f, :3, 3]

    def cam(o):
        return R.T @ (raw.box[o, f, :3] - tvec)

    for turn, tm in zip(r.turns(), m["turns"], strict=True):
        kind, ans = tm["type"], turn["answer"]
        if kind == "pixel_depth":
            x, y = tm["pixel"]
            assert (ans, turn["unit"]) == length(float(raw.depth[f, y, x])), (turn, raw.depth[f, y, x])
        elif kind == "pixel_depth_relative":
            (x1, y1), (x2, y2) = tm["pixels"]
            near = (x1, y1) if raw.depth[f, y1, x1] < raw.depth[f, y2, x2] else (x2, y2)
            assert ans == f"({near[0]}, {near[1]})"
        elif kind == "object_box":
            c, s = cam(tm["object"]), raw.box[tm["object"], f, 3:6]
            assert ans == "centre ({:.2f}, {:.2f}, {:.2f}), size ({:.2f}, {:.2f}, {:.2f})".format(*c, *s)
        elif kind == "object_left_right":
            a, b = (raw.K[f] @ cam(o) for o in tm["objects"])
            assert ans == ("left" if a[0] / a[2] < b[0] / b[2] else "right")
        elif kind == "object_closer":
            a, b = tm["objects"]
            assert ans == ("yes" if cam(a)[2] < cam(b)[2] else "no")
        elif kind == "object_distance":
            a, b = tm["objects"]
            assert (ans, turn["unit"]) == length(float(np.linalg.norm(raw.box[a, f, :3] - raw.box[b, f, :3])))
        elif kind == "caption":
            items = re.findall(r"a ([a-z ]+?) ([\d.]+) (cm|m) away (ahead|to the left|to the right)", ans)
            assert len(items) == len(tm["objects"]) > 0
            for (label, val, unit, side), o in zip(items, tm["objects"], strict=True):
                c = cam(o)
                ang = math.degrees(math.atan2(c[0], c[2]))
                assert label == raw.labels[o]
                assert (float(val), unit) == length(float(np.linalg.norm(c)))
                assert side == ("ahead" if abs(ang) < 10 else "to the right" if ang > 0 else "to the left")
        else:
            raise AssertionError(kind)
        check_refs(raw, turn["question"], m["objects"])


def test_every_task_type_of_every_family_is_generated(qa):
    records, _ = qa
    got = {}
    for r in records:
        got.setdefault(r.family, set()).add(r.type)
    for family, types in EXPECTED.items():
        assert got.get(family, set()) == types, (family, types - got.get(family, set()))


def test_every_answer_agrees_with_the_independent_check(qa):
    records, scenes = qa
    checked = Counter()
    for r in records:
        raw = scenes[r.scene]
        if r.family == "multiturn":
            check_multiturn(raw, r)
        else:
            m = r.metadata
            expect = {"dsr": expect_dsr, "static": expect_static, "scale": expect_scale}[r.family](raw, r)
            if r.answer_type == "mc":
                got = r.answer_option
                assert r.options.count(got) == 1  # no distractor equals the answer
                if r.family == "scale":
                    got = re.sub(r" at pixel box.*", "", got)
                assert got == expect, (r.question, r.options, r.answer, expect)
            else:
                assert r.answer == expect, (r.question, r.answer, expect)
            allowed = m.get("objects", m.get("targets", []) + ([m["agent"]] if "agent" in m else []))
            if "object" in m:
                allowed = [m["object"]]
            check_refs(raw, r.question + " " + " ".join(r.options or []), allowed)
            if r.unit in ("m", "cm", "m²") or r.family == "scale":
                assert raw.metric
        checked[(r.family, r.type)] += 1
    assert sum(checked.values()) == len(records) > 0
    assert {r.scale for r in records if r.family == "scale"} == {"tiny_tabletop", "tabletop", "indoor", "outdoor"}
    dsr = [r.metadata for r in records if r.family == "dsr"]
    assert {(m["mode"], m["viewpoint"]) for m in dsr} == {(a, b) for a in ("relative", "absolute") for b in ("camera", "agent")}
    assert {k for k in checked} == {(f, t) for f, ts in EXPECTED.items() for t in ts}
