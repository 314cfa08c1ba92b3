"""`spatialctl reconstruct --backend pi3|pi3x` end to end with tiny checkpoints, window stitching on exactly
consistent geometry, the store round trip, and bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import scene_arrays
from pi3_tiny import save_tiny

from spatialctl import camera, store
from spatialctl.stages.reconstruct import feedforward

pytestmark = pytest.mark.usefixtures("one_thread")
FAST = ["--size", "56", "--device", "cpu", "--quiet"]


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    from typer.testing import CliRunner

    from spatialctl.cli import app

    root = tmp_path_factory.mktemp("pi3")
    res = CliRunner().invoke(app, ["synth", str(root / "syn"), "--frames", "5", "--size", "56x42", "--preset",
                                   "indoor", "--moving", "0", "--quiet"])
    assert res.exit_code == 0, res.output
    return {"root": root, "video": root / "syn" / "video.mp4", "pi3x": save_tiny(root / "pi3x", "pi3x"),
            "pi3": save_tiny(root / "pi3", "pi3")}


def check_scene(url, n, hw=(42, 56)):
    scene = store.open_scene(str(url))
    assert scene.n_frames == n and scene.hw == hw
    depth, k, c2w, pm = (scene.read(x) for x in ("depth", "intrinsics", "cam2world", "pointmaps"))
    assert (depth > 0).all() and (scene.read("conf") >= 1).all() and (k[:, 0, 0] > 0).all()
    for f in range(n):
        np.testing.assert_allclose(pm[f], camera.depth_to_pointmap(depth[f], k[f], c2w[f]), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(c2w[:, :3, :3] @ np.swapaxes(c2w[:, :3, :3], 1, 2), np.tile(np.eye(3), (n, 1, 1)),
                               atol=1e-5)
    return scene


def test_pi3x_video_to_store_with_features_and_metric_scale(assets, cli, tmp_path):
    res = cli("reconstruct", assets["video"], "--backend", "pi3x", "--model", assets["pi3x"], "--out",
              tmp_path / "a.zarr", "--store-features", *FAST)
    assert res.exit_code == 0, res.output
    scene = check_scene(tmp_path / "a.zarr", 5)
    assert scene.attrs["scale"] == "relative" and scene.provenance["windows"]["spans"] == [[0, 5]]
    assert scene.read("encoder_features").shape == (5, 3, 4, 128)  # 42x56 / 14, 2 x decoder width
    # The tiny head's rays are those of a pinhole with the principal point at the centre: K comes back.
    k = scene.read("intrinsics")[0]
    assert k[0, 2] == pytest.approx(27.5) and k[1, 2] == pytest.approx(20.5)

    res = cli("reconstruct", assets["video"], "--backend", "pi3x", "--model", assets["pi3x"], "--out",
              tmp_path / "m.zarr", "--metric-scale", "pi3x", *FAST)
    assert res.exit_code == 0, res.output
    metric = check_scene(tmp_path / "m.zarr", 5)
    assert (metric.attrs["scale"], metric.attrs["scale_source"]) == ("metric", "pi3x")
    factor = metric.provenance["windows"]["metric_scales"][0]
    np.testing.assert_allclose(metric.read("depth"), scene.read("depth") * factor, rtol=1e-4)


def test_known_intrinsics_condition_pi3x(assets, cli, tmp_path):
    args = ("reconstruct", assets["video"], "--backend", "pi3x", "--model", assets["pi3x"], *FAST)
    res = cli(*args, "--out", tmp_path / "k.zarr", "--intrinsics", "40,41,27.5,20.5")
    assert res.exit_code == 0, res.output
    known = check_scene(tmp_path / "k.zarr", 5)
    np.testing.assert_allclose(known.read("intrinsics")[0], [[40, 0, 27.5], [0, 41, 20.5], [0, 0, 1]])
    res = cli(*args, "--out", tmp_path / "u.zarr")
    assert res.exit_code == 0, res.output
    # the intrinsics reached the network: its depth changed (two identical CPU runs agree bit for bit)
    assert np.abs(known.read("depth") - store.open_scene(str(tmp_path / "u.zarr")).read("depth")).max() > 1e-6


def test_known_poses_condition_pi3x_and_are_kept(assets, cli, tmp_path):
    truth = store.open_scene(str(assets["root"] / "syn" / "scene.zarr")).read("cam2world")
    np.save(tmp_path / "poses.npy", truth)
    args = ("reconstruct", assets["video"], "--backend", "pi3x", "--model", assets["pi3x"], *FAST)
    res = cli(*args, "--out", tmp_path / "k.zarr", "--poses", tmp_path / "poses.npy", "--window", "3",
              "--overlap", "1")
    assert res.exit_code == 0, res.output
    scene = check_scene(tmp_path / "k.zarr", 5)
    np.testing.assert_allclose(scene.read("cam2world"), truth, atol=1e-9)
    assert scene.provenance["scale_to_known_poses"] > 0
    np.save(tmp_path / "three.npy", truth[:3])
    res = cli(*args, "--out", tmp_path / "x.zarr", "--poses", tmp_path / "three.npy")
    assert res.exit_code == 1 and "3 poses for 5 sampled frames" in res.output and not (tmp_path / "x.zarr").exists()
    bent = truth.copy()
    bent[0, :3, :3] *= 2
    np.save(tmp_path / "bent.npy", bent)
    res = cli(*args, "--out", tmp_path / "x.zarr", "--poses", tmp_path / "bent.npy")
    assert res.exit_code == 2 and "not rotations" in res.output


def test_pi3_backend_and_windows(assets, cli, tmp_path):
    res = cli("reconstruct", assets["video"], "--backend", "pi3", "--model", assets["pi3"], "--out",
              tmp_path / "p.zarr", "--window", "3", "--overlap", "1", *FAST)
    assert res.exit_code == 0, res.output
    scene = check_scene(tmp_path / "p.zarr", 5)
    assert scene.provenance["windows"]["spans"] == [[0, 3], [2, 5]]
    assert scene.provenance["config"]["backend"] == "pi3"


def test_errors_before_work(assets, cli, tmp_path):
    out = tmp_path / "e.zarr"
    video, x, p = assets["video"], assets["pi3x"], assets["pi3"]
    cases = [
        (("--backend", "pi3x", "--model", p), 1, "a pi3 checkpoint, but --backend pi3x"),
        (("--backend", "pi3x", "--model", "yyfz233/Pi3X"), 2, "huggingface-cli download yyfz233/Pi3X"),
        (("--backend", "pi3x", "--model", x, "--window", "1"), 2, "--window 1"),
        (("--backend", "pi3x", "--model", x, "--window", "4", "--overlap", "4"), 2, "--overlap 4"),
        (("--backend", "pi3", "--model", p, "--intrinsics", "40,40,27,20"), 2, "use --backend pi3x"),
        (("--metric-scale", "pi3x"), 2, "needs --backend pi3x"),
        (("--backend", "pi3x", "--model", x, "--max-frames", "1"), 2, "at least 2 frames"),
        (("--backend", "nerf"), 2, "--backend 'nerf'"),
        (("--backend", "pi3x", "--model", x, "--niter", "5"), 2, "--niter applies to --backend dust3r only"),
        (("--window", "4"), 2, "--window applies to --backend pi3/pi3x only"),
    ]
    for args, code, message in cases:
        res = cli("reconstruct", video, "--out", out, *args, *FAST)
        assert res.exit_code == code and message in res.output, (args, res.output)
        assert "\n" not in res.output.strip() and not out.exists()


def test_window_larger_than_memory_is_refused(assets, monkeypatch):
    from pi3_tiny import tiny_model

    monkeypatch.setattr(feedforward, "free_bytes", lambda device: 1 << 20)
    config = type("C", (), {"size": 56, "window": 8, "overlap": 2, "metric_scale": "none", "store_features": False})
    frames = np.zeros((4, 42, 56, 3), np.uint8)
    with pytest.raises(Exception, match=r"--window 8: about .* GiB for 4 frames of 42x56 .* smaller --window"):
        feedforward.reconstruct(frames, np.arange(4.0), config, tiny_model("pi3", small=True), torch.device("cpu"),
                                None)


# ---------------------------------------------------------------------------------------------------- geometry


def test_store_round_trip_of_consistent_geometry(tmp_path):
    """Local pointmaps made from a known depth + K, with known poses, come back out of the store exactly."""
    truth = scene_arrays(n=4, h=12, w=16)
    local = np.stack([camera.unproject_depth(d, k) for d, k in zip(truth["depth"], truth["intrinsics"],
                                                                     strict=True)]).astype(np.float32)
    arrays = feedforward.to_store(local, truth["cam2world"], np.full(truth["depth"].shape, 2.0, np.float32))
    url = str(tmp_path / "rt.zarr")
    store.write_scene(url, {"frames": truth["frames"], "timestamps": truth["timestamps"], **arrays},
                      {"scale": "relative", "scale_source": "none", "world_up": [0, 0, 1.0]}, {"stage": "test"})
    scene = store.open_scene(url)
    np.testing.assert_allclose(scene.read("intrinsics"), truth["intrinsics"], rtol=1e-5)
    np.testing.assert_allclose(scene.read("cam2world"), truth["cam2world"], atol=1e-12)
    np.testing.assert_allclose(scene.read("depth"), truth["depth"], rtol=1e-6)
    np.testing.assert_allclose(scene.read("pointmaps"), truth["pointmaps"], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(scene.read("conf"), 1 + np.exp(2.0), rtol=1e-6)


class ConsistentModel(torch.nn.Module):
    """Stands in for π³: returns the true local pointmaps and poses of the frames it is shown (frame index in
    pixel (0, 0)), each call in its own world (a random similarity), as a feed-forward model's windows are."""

    architecture = "pi3"

    def __init__(self, local, cam2world):
        super().__init__()
        self.local, self.cam2world = torch.as_tensor(local), torch.as_tensor(cam2world)
        self.config = type("C", (), {"dec_dim": 8})
        self.gen = np.random.default_rng(0)
        self.gauges = []

    def forward(self, images):
        idx = (images[0, :, 0, 0, 0] * 255).round().long()
        rot = np.linalg.qr(self.gen.normal(size=(3, 3)))[0]
        rot *= np.sign(np.linalg.det(rot))
        scale = float(self.gen.uniform(0.5, 2.0))
        gauge = camera.similarity_matrix(1.0, rot, self.gen.normal(size=3))
        self.gauges.append((gauge, scale))
        poses = torch.as_tensor(gauge) @ self.cam2world[idx]
        poses[:, :3, 3] *= scale
        n, h, w = len(idx), *self.local.shape[1:3]
        return {"local_points": (self.local[idx] * scale)[None], "camera_poses": poses[None].float(),
                "conf": torch.full((1, n, h, w, 1), 3.0), "features": torch.zeros(n, 1, 8)}


def test_windows_stitch_exactly_consistent_geometry():
    truth = scene_arrays(n=9, h=12, w=16)
    # a camera that turns and moves in depth too, so rotation and scale errors would show
    for i in range(9):
        truth["cam2world"][i, :3, :3] = camera.look_at(np.zeros(3), np.array([0.1 * i, 1.0, 2.0]))[:3, :3]
        truth["cam2world"][i, :3, 3] = [0.1 * i, 0.05 * i, 0.2 * np.sin(i)]
    local = np.stack([camera.unproject_depth(d, k) for d, k in zip(truth["depth"], truth["intrinsics"],
                                                                     strict=True)]).astype(np.float32)
    frames = np.zeros((9, 12, 16, 3), np.uint8)
    frames[:, 0, 0, 0] = np.arange(9)
    model = ConsistentModel(local, truth["cam2world"])
    spans = feedforward.windows(9, 4, 2)
    assert spans == [(0, 4), (2, 6), (4, 8), (5, 9)]
    out_local, poses, _, _, sims, _ = feedforward.run_windows(model, frames, spans, torch.device("cpu"), None)
    # The whole result is the truth in the first window's world: one similarity maps truth onto it.
    gauge, scale = model.gauges[0]
    expect = gauge @ truth["cam2world"]
    expect[:, :3, 3] *= scale
    np.testing.assert_allclose(poses, expect, atol=1e-5)
    np.testing.assert_allclose(out_local, local * scale, rtol=1e-4, atol=1e-5)
    assert len(sims) == 4 and np.allclose(sims[0], np.eye(4))


def test_robust_sim3_ignores_outliers():
    rng = np.random.default_rng(1)
    src = rng.normal(size=(2000, 3))
    sim = camera.similarity_matrix(1.7, np.linalg.qr(rng.normal(size=(3, 3)))[0] * -1, rng.normal(size=3))
    if np.linalg.det(sim[:3, :3]) < 0:
        sim[:3, 0] *= -1
    dst = camera.transform(src, sim)
    dst[:300] += rng.normal(scale=5.0, size=(300, 3))  # 15% gross outliers
    found = feedforward.robust_sim3(src, dst, np.ones(2000), iters=10)
    np.testing.assert_allclose(found, sim, atol=1e-3)


def test_pipeline_chain_on_a_pi3x_store(assets, tmp_path):
    """examples/pipeline.sh as users run it, reconstructing with Pi3X: track, make-qa and eval geometry
    (against the synth truth) all run on its store."""
    import json
    import os
    import subprocess
    from pathlib import Path

    from track_models import build_grounding_dino, build_sam2_video

    env = {**os.environ, "DUST3R_MODEL": str(assets["pi3x"]),
           "DETECTOR_MODEL": build_grounding_dino(tmp_path / "gdino"),
           "SAM2_MODEL": build_sam2_video(tmp_path / "sam2"),
           "SYNTH_ARGS": "--preset indoor --frames 4 --size 56x42 --objects 2",
           "EXTRA_RECONSTRUCT": "--backend pi3x --size 56 --device cpu",
           "EXTRA_TRACK": "--box-threshold 0.05 --text-threshold 0.05 --device cpu"}
    work = tmp_path / "work"
    script = Path(__file__).parents[1] / "examples" / "pipeline.sh"
    result = subprocess.run(["bash", str(script), "", str(work)], env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    scene = store.open_scene(str(work / "scene.zarr"))
    assert scene.provenance["config"]["backend"] == "pi3x" and scene.has("tracks")
    assert (work / "qa.jsonl").exists()
    report = json.loads((work / "geometry" / "report.json").read_text())
    assert report["n_frames"] == 4 and np.isfinite(report["trajectory"]["ate"]["rmse"])
    assert 0 <= report["depth"]["delta1"] <= 1
