"""`spatialctl view`: the .rrd file read back with Rerun's own reader holds every entity, every frame, and the
synth truth (camera poses, boxes against the exact object bounds, masks, points); `--gt` places an estimate by the
inverse of a known similarity; without the Rerun SDK the command names the pip extra."""

from __future__ import annotations

import sys
from collections import defaultdict

import numpy as np
import pytest
import rerun
import rerun.chunk  # a hard dependency of these tests: the dev extra installs the view extra
from scipy.spatial import cKDTree

from spatialctl import camera, store


@pytest.fixture(scope="module")
def synth_scene(tmp_path_factory):
    from spatialctl.stages.synth import SynthConfig
    from spatialctl.stages.synth import run as synth_run

    root = tmp_path_factory.mktemp("view")
    assert synth_run(SynthConfig(seed=5, frames=8, width=96, height=72, quiet=True, out=str(root / "s5"))).exit_code == 0
    return str(root / "s5" / "scene.zarr")


def read_rrd(path) -> dict[str, dict[int, dict]]:
    """entity -> frame -> {component: list of instances} (static rows under frame -1), via rerun.chunk.RrdReader."""
    rows: dict[str, dict[int, dict]] = defaultdict(lambda: defaultdict(dict))
    for chunk in rerun.chunk.RrdReader(path).stream():
        batch = chunk.to_record_batch().to_pydict()
        n = chunk.num_rows
        frames = batch.get("frame", [-1] * n)
        for i in range(n):
            for k, v in batch.items():
                if not k.startswith("rerun.") and k not in ("frame", "time", "log_time"):
                    rows[chunk.entity_path][frames[i]][k] = v[i]
    return rows


def test_view_logs_scene_as_time_series(synth_scene, cli, tmp_path):
    out = tmp_path / "scene.rrd"
    r = cli("view", synth_scene, "--out", out, "--max-points", 500, "--quiet")
    assert r.exit_code == 0, r.output
    rec = read_rrd(out)
    s = store.open_scene(synth_scene)
    n = s.n_frames
    t = s.open_group("tracks")
    objects = t.attrs["objects"]
    expected = {"/world", "/world/camera", "/world/camera/image", "/world/camera/image/depth",
                "/world/camera/image/conf", "/world/camera/image/masks", "/world/points", "/world/camera_path",
                "/world/objects/boxes", "/world/objects/trajectories", "/world/objects/velocity"}
    assert expected <= set(rec)
    for e in expected - {"/world", "/world/camera_path"}:
        assert sorted(rec[e]) == list(range(n)), e  # one row per frame on the frame timeline

    c2w, K = s.read("cam2world"), s.read("intrinsics")
    box, aabb, visible = t.read("box"), t.read("aabb"), t.read("visible")
    masks = store.unpack_mask(t.read("masks"), s.hw)
    pm = s.read("pointmaps")
    names = [f"{o['label']} #{o['id']}" for o in objects]
    assert all(name in str(rec["/world"][-1]["AnnotationContext:context"]) for name in names)
    for f in range(n):
        cam = rec["/world/camera"][f]
        rot = np.asarray(cam["Transform3D:mat3x3"]).reshape(3, 3).T  # Rerun stores 3x3 column-major
        assert np.allclose(cam["Transform3D:translation"], c2w[f, :3, 3], atol=1e-5)
        assert np.allclose(rot, c2w[f, :3, :3], atol=1e-5)
        pin = rec["/world/camera/image"][f]
        assert np.allclose(np.asarray(pin["Pinhole:image_from_camera"]).reshape(3, 3).T, K[f], atol=1e-4)
        assert list(pin["Pinhole:resolution"][0]) == [s.hw[1], s.hw[0]]

        b = rec["/world/objects/boxes"][f]
        vis = [o for o in range(len(objects)) if visible[o, f]]
        assert b["Boxes3D:labels"] == [names[o] for o in vis]
        for j, o in enumerate(vis):
            # corners of the logged box (centre, half sizes, quaternion) bound the object's exact world extent,
            # and match it for box-shaped objects: checks the yaw convention against the truth
            centre, half = np.asarray(b["Boxes3D:centers"][j]), np.asarray(b["Boxes3D:half_sizes"][j])
            x, y, z, w = b["Boxes3D:quaternions"][j]
            rotm = camera.quaternion_to_rotation(np.array([w, x, y, z]))
            signs = np.array([[i, k, m] for i in (-1, 1) for k in (-1, 1) for m in (-1, 1)])
            corners = centre + (signs * half) @ rotm.T
            lo, hi = corners.min(0), corners.max(0)
            assert (lo <= aabb[o, f, :3] + 1e-4).all() and (hi >= aabb[o, f, 3:] - 1e-4).all()
            if objects[o]["kind"] == "box":
                assert np.allclose(lo, aabb[o, f, :3], atol=1e-3) and np.allclose(hi, aabb[o, f, 3:], atol=1e-3)
            assert np.allclose(centre, box[o, f, :3], atol=1e-5)

        seg = np.frombuffer(bytes(rec["/world/camera/image/masks"][f]["SegmentationImage:buffer"][0]),
                            np.uint16).reshape(s.hw)
        alone = masks[:, f].sum(0) == 1
        assert (seg[alone] == masks[:, f, alone].argmax(0) + 1).all() and (seg[masks[:, f].sum(0) == 0] == 0).all()

        pts = np.asarray(rec["/world/points"][f]["Points3D:positions"])
        assert 0 < len(pts) <= 500
        gap, _ = cKDTree(pm[f].reshape(-1, 3)).query(pts)
        assert gap.max() < 1e-6  # every point is a pixel of this frame's pointmap
    assert len(rerun.chunk.RrdReader(out).blueprints()) == 1
    props = rec["/__properties/spatialctl"][-1]  # provenance travels with the recording
    assert props["stage"] == ["view"] and props["scene"] == [synth_scene]


def test_view_gt_aligns_estimate(synth_scene, cli, tmp_path):
    """An 'estimate' that is the truth moved by a known similarity comes back placed by its inverse."""
    s = store.open_scene(synth_scene)
    arrays = {k: s.read(k) for k in ("frames", "timestamps", "intrinsics", "cam2world", "depth", "conf", "pointmaps")}
    scale, rot = 0.5, camera.look_at(np.zeros(3), np.array([0.3, 1.0, 0.2]))[:3, :3]
    sim = camera.similarity_matrix(scale, rot, np.array([1.0, -2.0, 0.5]))
    est = dict(arrays)
    est["cam2world"] = np.stack([np.block([[rot @ p[:3, :3], (sim @ np.append(p[:3, 3], 1))[:3, None]],
                                           [np.zeros((1, 3)), np.ones((1, 1))]]) for p in arrays["cam2world"]])
    est["depth"] = arrays["depth"] * scale
    est["pointmaps"] = (arrays["pointmaps"] @ (scale * rot).T + sim[:3, 3]).astype(np.float32)
    est_url = str(tmp_path / "est.zarr")
    store.write_scene(est_url, est, {"scale": "relative", "scale_source": "none", "world_up": [0, 0, 1]},
                      {"stage": "test", "config_hash": "x"})
    out = tmp_path / "both.rrd"
    assert cli("view", est_url, "--gt", synth_scene, "--out", out, "-q").exit_code == 0
    rec = read_rrd(out)
    placed = rec["/world/estimate"][-1]
    m = np.eye(4)
    m[:3, :3] = np.asarray(placed["Transform3D:mat3x3"]).reshape(3, 3).T
    m[:3, 3] = placed["Transform3D:translation"][0]
    assert np.allclose(m @ sim, np.eye(4), atol=1e-4)
    for root in ("/world/truth", "/world/estimate"):
        assert sorted(rec[f"{root}/camera/image"]) == list(range(s.n_frames))
    assert "/world/estimate/objects/boxes" not in rec  # the estimate has no tracks; the truth does
    assert "/world/truth/objects/boxes" in rec


def test_view_errors_and_spawn(synth_scene, cli, tmp_path, monkeypatch):
    out = tmp_path / "a.rrd"
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    r = cli("view", synth_scene, "--out", out, "--spawn", "-q")
    assert r.exit_code == 0 and f"rerun {out}" in r.output  # no display: the file and the command to open it
    before = out.read_bytes()
    r = cli("view", synth_scene, "--out", out)
    assert r.exit_code == 2 and "--overwrite" in r.output and out.read_bytes() == before
    r = cli("view", str(tmp_path / "missing.zarr"), "--out", tmp_path / "b.rrd")
    assert r.exit_code == 1 and "missing.zarr" in r.output and not (tmp_path / "b.rrd").exists()
    monkeypatch.setitem(sys.modules, "rerun", None)  # as if the extra were not installed
    r = cli("view", synth_scene, "--out", tmp_path / "c.rrd")
    assert r.exit_code == 1 and 'pip install "spatialctl[view]"' in r.output
    assert len(r.output.strip().splitlines()) == 1
