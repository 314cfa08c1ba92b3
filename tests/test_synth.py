"""synth: determinism, exact geometry, motion truth, video round trip, schema, CLI."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from spatialctl import camera, store
from spatialctl.stages.synth import SynthConfig, generate, make_scene, run
from spatialctl.stages.synth.render import render_frame
from spatialctl.stages.synth.scene import (
    CAMERAS,
    MOTIONS,
    PRESETS,
    TURNING,
    Motion,
    _make_object,
    _sample_motion,
)
from spatialctl.stages.synth.truth import scene_attrs
from spatialctl.video import read_video

SMALL = dict(frames=8, width=64, height=48)


@pytest.fixture(scope="module")
def scenes():
    """One small scene per preset, cycling camera paths, with per-pixel instance ids kept."""
    out = {}
    for i, (preset, cam) in enumerate(zip(PRESETS, ("orbit", "walk", "pan", "static"), strict=True)):
        cfg = SynthConfig(seed=11 + i, preset=preset, camera=cam, moving=2, **SMALL)
        out[preset] = generate(cfg, keep_ids=True)
    return out


def _equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(np.array_equal(a[k], b[k], equal_nan=a[k].dtype.kind == "f") for k in a)


def test_same_seed_is_bit_identical_and_seeds_differ():
    cfg = SynthConfig(seed=5, preset="indoor", camera="orbit", **SMALL)
    _, a = generate(cfg)
    _, b = generate(cfg)
    assert _equal(a.scene_arrays, b.scene_arrays) and _equal(a.tracks_arrays, b.tracks_arrays)
    assert a.objects == b.objects
    _, c = generate(dataclasses.replace(cfg, seed=6))
    assert not np.array_equal(a.scene_arrays["frames"], c.scene_arrays["frames"])
    assert not np.array_equal(a.scene_arrays["cam2world"], c.scene_arrays["cam2world"])


@pytest.mark.parametrize("preset", PRESETS)
def test_depth_unprojects_onto_pointmap(scenes, preset):
    _, truth = scenes[preset]
    s = truth.scene_arrays
    depth, points = s["depth"], s["pointmaps"]
    valid = depth > 0
    assert valid.mean() > 0.5
    assert np.array_equal(s["conf"], valid.astype(np.float32))
    assert np.all(points[~valid] == 0)
    for i in range(len(depth)):
        k = s["intrinsics"][i]
        assert k[0, 2] == (depth.shape[2] - 1) / 2 and k[1, 2] == (depth.shape[1] - 1) / 2 and k[0, 0] == k[1, 1]
        pose = s["cam2world"][i]
        assert np.allclose(pose[:3, :3] @ pose[:3, :3].T, np.eye(3), atol=1e-12) and np.linalg.det(pose[:3, :3]) > 0
        ref = camera.depth_to_pointmap(depth[i], k, pose)
        err = np.linalg.norm(ref - points[i], axis=-1)[valid[i]]
        dist = np.linalg.norm(ref - pose[:3, 3], axis=-1)[valid[i]]
        assert np.all(err <= 1e-4 * dist)


def test_sky_is_invalid_outdoors(scenes):
    _, truth = scenes["outdoor"]
    ids = truth.ids
    assert np.array_equal(truth.scene_arrays["depth"] == 0, ids == -1)


def _surface_residual(obj, t: float, points: np.ndarray) -> np.ndarray:
    """How far world points are from a single-primitive object's surface (0 on the surface)."""
    p = obj.motion.position(t)
    yaw = float(obj.yaw(t))
    c, s = np.cos(yaw), np.sin(yaw)
    rel = points - np.array([p[0], p[1], 0.0])
    local = np.stack([c * rel[:, 0] + s * rel[:, 1], -s * rel[:, 0] + c * rel[:, 1], rel[:, 2]], -1)
    part = obj.parts[0]
    q = (local - np.array(part.centre)) / np.array(part.half)
    if obj.kind == "sphere":
        return np.abs(np.linalg.norm(local - np.array(part.centre), axis=-1) - part.half[0])
    if obj.kind == "box":
        return np.abs(np.abs(q).max(-1) - 1) * max(part.half)
    radial, axial = np.hypot(q[:, 0], q[:, 1]), np.abs(q[:, 2])
    return np.abs(np.maximum(radial, axial) - 1) * max(part.half)


def test_masks_cover_their_object_and_centroid_projects_inside(scenes):
    checked = 0
    for preset, (scene, truth) in scenes.items():
        s, tr = truth.scene_arrays, truth.tracks_arrays
        h, w = s["depth"].shape[1:]
        masks = store.unpack_mask(tr["masks"], (h, w))
        assert np.array_equal(masks.any((2, 3)), tr["visible"])
        assert masks.sum(0).max() <= 1  # every pixel shows at most one object
        for o, obj in enumerate(scene.objects):
            for i in np.flatnonzero(tr["visible"][o]):
                m = masks[o, i]
                assert np.array_equal(m, truth.ids[i] == o)
                size = float(obj.true_size.max())
                pts = s["pointmaps"][i][m].astype(np.float64)
                box = tr["aabb"][o, i]
                assert np.all(pts >= box[:3] - 1e-4 * size) and np.all(pts <= box[3:] + 1e-4 * size)
                if obj.kind == "composite":
                    continue
                # Visible pixels lie on this object's surface: the nearest surface is the one rendered.
                dist = np.linalg.norm(pts - s["cam2world"][i][:3, 3], axis=-1)
                assert np.all(_surface_residual(obj, scene.times[i], pts) <= 2e-5 * dist + 1e-6 * size)
                if m.sum() < 9:
                    continue
                uv, z = camera.project(tr["centroid"][o, i].astype(np.float64), s["intrinsics"][i], s["cam2world"][i])
                u, v = int(round(uv[0])), int(round(uv[1]))
                assert z > 0
                if not (0 <= u < w and 0 <= v < h):  # cut by the image border
                    continue
                # The centroid is inside a convex object: its pixel shows the object, or something nearer.
                assert m[v, u] or s["depth"][i, v, u] < z, (preset, o, i)
                checked += 1
    assert checked >= 20


def test_occlusion_nearer_object_wins():
    cfg = SynthConfig(seed=2, preset="tabletop", camera="static", frames=1, width=64, height=48, objects=2, moving=0)
    scene, _ = generate(cfg)
    pose = scene.camera.cam2world(0.0)[0]
    eye, forward = pose[:3, 3], pose[:3, 2]
    # Two balls on the optical axis: a small near one in front of a big far one.
    ground_hit = eye + forward * (-eye[2] / forward[2])
    near_xy = eye[:2] + 0.55 * (ground_hit[:2] - eye[:2])
    rng = np.random.Generator(np.random.PCG64(0))
    balls = [_make_object(rng, scene.preset, "sphere", Motion("static", p0=ground_hit[:2])),
             _make_object(rng, scene.preset, "sphere", Motion("static", p0=near_xy))]
    scene.objects = balls
    f = render_frame(scene, 0)
    h, w = f.ids.shape
    far, near = f.ids == 0, f.ids == 1
    assert far.any() and near.any() and not (far & near).any()
    # Where the near ball's silhouette covers the far ball, the pixels show the near ball and its depth.
    c = balls[1].centroid(0.0)
    cv_ = camera.project(c, scene.camera.intrinsics, pose)[0]
    u, v = int(round(cv_[0])), int(round(cv_[1]))
    assert near[v, u]
    d = camera.transform(np.array([[u, v, 1.0]]) @ np.linalg.inv(scene.camera.intrinsics).T, pose)[0] - eye
    oc = eye - c
    b, r = d @ oc, balls[1].half[0]
    t = (-b - np.sqrt(b * b - (d @ d) * (oc @ oc - r * r))) / (d @ d)
    assert abs(f.depth[v, u] - t) <= 1e-5 * t


def test_moving_objects_move_and_velocity_is_the_derivative(scenes):
    for scene, truth in scenes.values():
        tr = truth.tracks_arrays
        moving = tr["moving"]
        assert moving.sum() == 2 and len(moving) == len(scene.objects)
        times = scene.times
        for o, obj in enumerate(scene.objects):
            path = obj.centroid(times)
            travelled = np.linalg.norm(path[-1] - path[0])
            if moving[o]:
                assert np.linalg.norm(path - path[0], axis=-1).max() > 0.05 * obj.true_size.max()
            else:
                assert travelled == 0 and np.all(tr["velocity"][o] == 0)
            assert np.allclose(tr["velocity"][o], obj.velocity(times), rtol=1e-6, atol=1e-7 * obj.true_size.max())
            vis = tr["visible"][o]
            assert np.allclose(tr["centroid"][o][vis], path[vis], rtol=1e-6)
            assert np.isnan(tr["centroid"][o][~vis]).all() and np.isnan(tr["box"][o][~vis]).all()


@pytest.mark.parametrize("kind", [*MOTIONS, TURNING])
def test_velocity_matches_finite_differences(kind):
    rng = np.random.Generator(np.random.PCG64(7))
    for _ in range(200):  # a person, so that every kind (turning included) can come up
        m = _sample_motion(rng, kind != TURNING, rng.uniform(-1, 1, 2), duration=3.0, span=2.0, category="person")
        if m.kind == kind:
            break
    assert m.kind == kind
    t = np.linspace(0.05, 2.95, 40)
    t = t[np.abs(t - m.t_stop) > 1e-3] if kind == "stopping" else t
    dt = 1e-6
    fd = (m.position(t + dt) - m.position(t - dt)) / (2 * dt)
    v = m.velocity(t)
    assert np.allclose(v, fd, atol=1e-6 * np.abs(v).max())
    # Facing: the direction of travel (forwards, for back-and-forth the outward one), turned by the offset and
    # the turn rate; yaw's finite difference is the turn rate (plus the arc's own turning).
    going = np.linalg.norm(v, axis=-1) > 1e-9
    yaw = m.yaw(t)[going] - m.facing_offset - m.turn_rate * t[going]
    heading = v[going] / np.linalg.norm(v[going], axis=-1, keepdims=True)
    if kind == "back-and-forth":
        heading = heading * np.sign(np.cos(m.omega * t[going]))[:, None]
    assert np.allclose(np.stack([np.cos(yaw), np.sin(yaw)], -1), heading, atol=1e-9)
    arc = m.omega if kind == "curved" else 0.0
    assert np.allclose((m.yaw(t + dt) - m.yaw(t - dt)) / (2 * dt), m.turn_rate + arc, atol=1e-5)
    if kind == TURNING:
        assert not m.is_moving() and not going.any() and abs(m.turn_rate) * 3.0 >= np.radians(90) - 1e-9
    elif kind == "back-and-forth":  # out and back: the way travelled along its direction grows, then shrinks
        d = (m.position(t) - m.position(0.0)) @ m.direction
        assert d.max() > 0.5 and d[-1] < d.max() - 0.1
    else:
        assert np.linalg.norm(m.position(3.0) - m.position(0.0)) > 0.5
    if kind == "stopping":
        late = t[t > m.t_stop]
        assert len(late) and np.all(m.velocity(late) == 0)
    if kind in ("accelerating", "starting"):
        speed = np.linalg.norm(v, axis=-1)
        assert np.all(np.diff(speed) >= 0) and speed[-1] > speed[0]
    if kind == "starting":
        early = t[t < m.t_stop]
        assert len(early) and np.all(m.velocity(early) == 0)


def test_writes_valid_store_and_video_roundtrip(tmp_path):
    cfg = SynthConfig(seed=3, preset="tabletop", frames=6, width=64, height=48, lossless=True)
    summary = run(dataclasses.replace(cfg, out=str(tmp_path / "a")))
    assert summary.done and not summary.failed
    s = store.open_scene(str(tmp_path / "a" / "scene.zarr"))
    assert s.n_frames == 6 and s.hw == (48, 64) and s.is_metric
    assert s.attrs["scale_source"] == "synth" and s.attrs["world_up"] == [0.0, 0.0, 1.0]
    tracks = s.open_group("tracks")
    objects = tracks.attrs["objects"]
    assert [o["id"] for o in objects] == list(range(6)) and all(o["score"] == 1.0 for o in objects)
    assert all(len(o["true_size"]) == 3 and o["label"] and o["kind"] for o in objects)
    _, truth = generate(cfg)
    assert np.array_equal(s.read("frames"), truth.scene_arrays["frames"])
    assert np.array_equal(tracks.read("masks"), truth.tracks_arrays["masks"])
    frames, times = read_video(str(tmp_path / "a" / "video.mp4"))
    assert np.array_equal(frames, truth.scene_arrays["frames"])
    assert np.allclose(times, np.arange(6) / 10.0, atol=1e-3)

    lossy = dataclasses.replace(cfg, lossless=False)
    run(dataclasses.replace(lossy, out=str(tmp_path / "b")))
    frames, _ = read_video(str(tmp_path / "b" / "video.mp4"))
    err = np.abs(frames.astype(np.int16) - truth.scene_arrays["frames"]).astype(np.float64)
    assert frames.shape == truth.scene_arrays["frames"].shape
    mse = (err**2).mean()
    # Codec error only (yuv420 halves chroma, which costs most on dense texture at 64x48: a table scene also shows
    # the striped walls and tiled floor of its room); a wrong frame order, size or colour conversion would give well
    # under 15 dB.
    assert 10 * np.log10(255**2 / mse) > 25 and err.mean() < 10


def test_cli_count_shard_and_resume(cli, tmp_path):
    out = tmp_path / "many"
    args = ["synth", str(out), "--seed", "4", "--count", "3", "--shard", "1/2", "--frames", "2", "--size", "32x24",
            "--preset", "tiny-tabletop", "--objects", "3", "--moving", "1", "--quiet"]
    r = cli(*args)
    assert r.exit_code == 0, r.output
    assert sorted(p.name for p in out.iterdir()) == ["seed-000005"]
    tracks = store.open_scene(str(out / "seed-000005" / "scene.zarr")).open_group("tracks")
    assert len(tracks.attrs["objects"]) == 3 and tracks.read("moving").sum() == 1
    # An item of --count is the same scene as a single run with that seed.
    _, single = generate(SynthConfig(seed=5, preset="tiny-tabletop", frames=2, width=32, height=24, objects=3, moving=1))
    stored = store.open_scene(str(out / "seed-000005" / "scene.zarr"))
    assert np.array_equal(stored.read("depth"), single.scene_arrays["depth"])
    prov = json.loads((out / "seed-000005" / "scene.zarr" / "zarr.json").read_text())["attributes"]["provenance"]
    assert prov["stage"] == "synth" and prov["config"]["seed"] == 5
    stamp = (out / "seed-000005" / "scene.zarr" / "zarr.json").stat().st_mtime_ns
    r = cli(*args[:-1])
    assert r.exit_code == 0 and "skipped 1" in r.output
    assert (out / "seed-000005" / "scene.zarr" / "zarr.json").stat().st_mtime_ns == stamp
    r = cli("synth", str(tmp_path / "odd"), "--size", "33x24", "--frames", "1")
    assert r.exit_code == 2 and "even" in r.output
    r = cli("synth", str(tmp_path / "bad"), "--preset", "moon", "--frames", "1")
    assert r.exit_code == 2 and "preset" in r.output


@pytest.mark.parametrize("path", ["orbit", "walk", "pan", "static"])
def test_camera_paths(path):
    cfg = SynthConfig(seed=1, preset="tabletop", camera=path, frames=6, width=32, height=24, objects=1, moving=0)
    scene = make_scene(cfg)
    poses = scene.camera.cam2world(scene.times)
    eyes, forward = poses[:, :3, 3], poses[:, :3, 2]
    assert np.allclose(np.einsum("nij,nkj->nik", poses[:, :3, :3], poses[:, :3, :3]), np.eye(3), atol=1e-12)
    assert np.allclose(np.linalg.det(poses[:, :3, :3]), 1.0)
    assert np.allclose(poses[:, :3, 0] @ np.array([0, 0, 1.0]), 0, atol=1e-12)  # no roll: image x stays level
    moved = np.linalg.norm(eyes - eyes[0], axis=-1).max()
    turned = np.degrees(np.arccos(np.clip(forward @ forward[0], -1, 1))).max()
    if path == "static":
        assert moved == 0 and turned < 1e-6
    elif path == "pan":
        assert moved == 0 and turned > 10
    else:
        assert moved > 0.2 * scene.half_extent
    if path == "walk":
        assert np.linalg.norm(eyes[-1, :2]) < np.linalg.norm(eyes[0, :2])  # walks towards the scene


def test_presets_span_scales():
    sizes, extents = {}, {}
    for preset in PRESETS:
        scenes = [make_scene(SynthConfig(seed=s, preset=preset, frames=2, width=32, height=24)) for s in range(4)]
        sizes[preset] = max(float(o.true_size.max()) for sc in scenes for o in sc.objects)
        extents[preset] = max(sc.half_extent for sc in scenes)
        for sc in scenes:
            assert all(o.centroid(0.0)[2] == o.half[2] for o in sc.objects)  # resting on the ground
    assert sizes["tiny-tabletop"] < 0.05 and extents["tiny-tabletop"] <= 0.15  # millimetres to centimetres
    assert sizes["tabletop"] < 0.5 and extents["tabletop"] <= 0.6
    assert 1.0 < sizes["indoor"] < 3.0 and 2.0 <= extents["indoor"] <= 4.5
    assert sizes["outdoor"] > 4.0 and extents["outdoor"] >= 15.0


@pytest.mark.parametrize("preset", ["tabletop", "indoor", "outdoor"])
def test_texture_supports_matching_at_true_correspondences(preset):
    """Patches of frame 0, searched by NCC in frame 1, are found where the true geometry says they went."""
    cfg = SynthConfig(seed=4, preset=preset, camera="orbit", frames=40, width=128, height=96, moving=0)
    scene = make_scene(cfg)
    f0, f1 = render_frame(scene, 0), render_frame(scene, 1)
    k = scene.camera.intrinsics
    pose1 = scene.camera.cam2world(scene.times[1])[0]
    g0, g1 = (f.rgb.astype(np.float64).mean(-1) for f in (f0, f1))
    rng = np.random.Generator(np.random.PCG64(0))
    r, search = 3, 4
    hits = tries = 0
    for _ in range(400):
        v, u = rng.integers(r + search + 1, 96 - r - search - 1), rng.integers(r + search + 1, 128 - r - search - 1)
        if f0.depth[v, u] <= 0:
            continue
        uv, z = camera.project(f0.pointmap[v, u].astype(np.float64), k, pose1)
        qu, qv = int(round(uv[0])), int(round(uv[1]))
        if not (r + search <= qu < 128 - r - search and r + search <= qv < 96 - r - search):
            continue
        if abs(f1.depth[qv, qu] - z) > 0.01 * z:  # occluded in frame 1
            continue
        patch = g0[v - r:v + r + 1, u - r:u + r + 1]
        patch = (patch - patch.mean()) / (patch.std() + 1e-6)
        area = g1[qv - search - r:qv + search + r + 1, qu - search - r:qu + search + r + 1]
        cands = np.lib.stride_tricks.sliding_window_view(area, (2 * r + 1, 2 * r + 1))  # (9, 9, 7, 7)
        centred = cands - cands.mean((2, 3), keepdims=True)
        ncc = (centred * patch).sum((2, 3)) / (cands.std((2, 3)) + 1e-6)
        dv, du = np.unravel_index(np.argmax(ncc), ncc.shape)
        where = (qu + du - search, qv + dv - search)
        tries += 1
        hits += np.hypot(where[0] - uv[0], where[1] - uv[1]) <= 1.5
    assert tries >= 100
    assert hits / tries > 0.7, (hits, tries)


def test_ground_shadow_falls_where_the_light_is_blocked():
    cfg = SynthConfig(seed=8, preset="tabletop", camera="static", frames=1, width=96, height=72, objects=1, moving=0)
    scene = make_scene(cfg)
    pose = scene.camera.cam2world(0.0)[0]
    eye, forward = pose[:3, 3], pose[:3, 2]
    rng = np.random.Generator(np.random.PCG64(1))
    ball = _make_object(rng, scene.preset, "sphere", Motion("static", p0=(eye + forward * (-eye[2] / forward[2]))[:2]))
    scene.objects = [ball]
    away = forward[:2] / np.linalg.norm(forward[:2])  # light behind the ball: its shadow falls towards the camera
    scene.light = np.array([0.6 * away[0], 0.6 * away[1], 0.8])
    f = render_frame(scene, 0)
    c, r = ball.centroid(0.0), float(ball.half[0])
    # Pixels on the ground: shadowed exactly when the ray from the point towards the light passes the ball.
    ground = f.ids == -2
    pts = f.pointmap[ground].astype(np.float64)
    w = c - pts
    along = w @ scene.light
    miss = np.linalg.norm(w - along[:, None] * scene.light, axis=-1)
    blocked = (along > 0) & (miss < r)
    margin = np.abs(miss - r) > 1e-3 * r  # skip pixels grazing the silhouette
    assert blocked.sum() > 20
    assert np.array_equal(f.shadow[ground][margin], blocked[margin])
    assert not f.shadow[~ground].any()
    lit, dark = f.rgb[ground][~blocked & margin].mean(), f.rgb[ground][blocked & margin].mean()
    assert dark < 0.8 * lit


def _footprint_corners(obj, times) -> np.ndarray:
    """(T, 4, 2) floor-plane corners of an object's oriented box over time."""
    p, yaw = obj.motion.position(times), obj.yaw(times)
    c, s = np.cos(yaw)[:, None], np.sin(yaw)[:, None]
    hx, hy = obj.half[:2]
    local = np.array([[hx, hy], [-hx, hy], [-hx, -hy], [hx, -hy]])
    return p[:, None] + np.stack([c * local[:, 0] - s * local[:, 1], s * local[:, 0] + c * local[:, 1]], -1)


def test_indoor_rooms_vary_like_real_rooms_and_hold_their_contents():
    """Floor areas from a small room to a hall over a wide log range, rooms of several shapes and ceiling heights;
    whatever the room, every object stays inside its walls, apart from the others, and the camera inside the room."""
    rooms = []
    for seed in range(24):
        sc = make_scene(SynthConfig(seed=seed, preset="indoor", camera=CAMERAS[seed % 4], frames=8, width=32,
                                    height=24, objects=7, moving=3))
        lx, ly, top = sc.room
        rooms.append((4 * lx * ly, max(lx, ly) / min(lx, ly), top))
        corners = [_footprint_corners(o, sc.times) for o in sc.objects]
        assert all(np.all(np.abs(c) <= sc.room[:2]) for c in corners)  # no object in a wall
        for i, a in enumerate(sc.objects):  # bounding circles of their footprints never meet
            for b in sc.objects[:i]:
                gap = np.linalg.norm(a.motion.position(sc.times) - b.motion.position(sc.times), axis=-1)
                assert gap.min() >= np.hypot(*a.half[:2]) + np.hypot(*b.half[:2])
        eyes = sc.camera.eye_fn(sc.times)
        assert np.all(np.abs(eyes[:, :2]) < sc.room[:2] - 0.2) and np.all(eyes[:, 2] < top)
    area, aspect, height = np.array(rooms).T
    assert area.min() < 15 and area.max() > 70 and np.log(area).std() > 0.6  # bedroom to classroom, log-spread
    assert aspect.max() > 1.5 and (aspect > 1.2).mean() > 0.3  # not all square
    assert height.max() - height.min() > 0.6 and height.min() >= 2.4


@pytest.mark.parametrize("preset", ["tabletop", "tiny-tabletop"])
def test_table_scenes_stand_on_a_table_in_a_room(preset):
    """The objects' plane is a table top: every object path stays on it, and the table and the camera path stay
    inside the room; the store declares both."""
    for seed in range(6):
        sc = make_scene(SynthConfig(seed=seed, preset=preset, camera=CAMERAS[seed % 4], frames=8, width=32,
                                    height=24))
        tx, ty, th = sc.table
        assert 0.7 <= th <= 0.8 and sc.room[2] + th >= 2.4
        assert all(np.all(np.abs(_footprint_corners(o, sc.times)) <= [tx, ty]) for o in sc.objects)
        eyes = sc.camera.eye_fn(sc.times)
        assert np.all(np.abs(eyes[:, :2]) < sc.room[:2] - 0.3) and max(tx, ty) < min(sc.room[:2]) - 0.5
    attrs = scene_attrs(sc, seed)["synth"]
    lo, hi = np.array(attrs["room"]["bounds_m"])
    assert lo[2] == -th and np.isclose((hi[0] - lo[0]) * (hi[1] - lo[1]), attrs["room"]["floor_area_m2"])
    assert attrs["table"]["bounds_m"][1][2] == 0.0
