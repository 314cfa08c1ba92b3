"""`spatialctl reconstruct` end to end with tiny random DUSt3R checkpoints (both published forms)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from spatialctl import camera, export, store
from spatialctl.cli import app

FAST = ["--niter", "12", "--quiet"]


def invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    from dust3r_tiny import save_tiny_dust3r

    root = tmp_path_factory.mktemp("reconstruct")
    ckpt = save_tiny_dust3r(root)
    res = invoke("synth", root / "syn", "--frames", 5, "--size", "64x48", "--preset", "indoor", "--moving", 0,
                 "--quiet")
    assert res.exit_code == 0, res.output
    return root, ckpt, root / "syn" / "video.mp4", store.open_scene(str(root / "syn" / "scene.zarr"))


def check_scene(url, n, hw=(48, 64)):
    scene = store.open_scene(str(url))  # validates schema, dtypes, shapes, NaNs on read
    assert scene.n_frames == n and scene.hw == hw
    depth, k, c2w = scene.read("depth"), scene.read("intrinsics"), scene.read("cam2world")
    assert (depth > 0).all() and (scene.read("conf") >= 1).all()
    pm = scene.read("pointmaps")
    for f in range(n):
        expect = camera.depth_to_pointmap(depth[f], k[f], c2w[f])
        np.testing.assert_allclose(pm[f], expect, rtol=1e-3, atol=1e-3 * np.abs(expect).max())
    np.testing.assert_allclose(c2w[:, :3, :3] @ np.swapaxes(c2w[:, :3, :3], 1, 2), np.tile(np.eye(3), (n, 1, 1)),
                               atol=1e-5)
    return scene


@pytest.mark.parametrize("form", ["folder", "pth"])
def test_video_to_scene_store_with_exports(assets, form, tmp_path):
    root, ckpt, video, truth = assets
    model = ckpt.folder if form == "folder" else ckpt.pth
    out = tmp_path / "scene.zarr"
    res = invoke("reconstruct", video, "--out", out, "--model", model, "--export", "ply,colmap,nerfstudio",
                 "--export-min-conf", 1.0, *FAST)
    assert res.exit_code == 0, res.output
    scene = check_scene(out, 5)
    np.testing.assert_allclose(scene.read("timestamps"), truth.read("timestamps"), atol=1e-6)
    np.testing.assert_array_equal(scene.read("frames").shape, truth.read("frames").shape)
    assert scene.attrs["scale"] == "relative" and scene.attrs["scale_source"] == "none"
    assert abs(np.linalg.norm(scene.attrs["world_up"]) - 1) < 1e-6
    prov = scene.provenance
    assert prov["stage"] == "reconstruct" and prov["alignment"]["pairs"] == 20
    assert len(prov["alignment"]["loss_curve"]) == 12 and prov["network_size"] == [48, 64]

    ex = tmp_path / "scene_export"
    pts, _ = export.read_ply(ex / "points.ply")
    assert len(pts) == (scene.read("conf") >= 1.0).sum() == 5 * 48 * 64
    poses = export.read_colmap_images(ex / "colmap" / "images.txt")
    np.testing.assert_allclose(poses["frame_00003.png"], camera.invert(scene.read("cam2world")[3]), atol=1e-6)
    doc = json.loads((ex / "transforms.json").read_text())
    assert len(doc["frames"]) == 5 and (ex / doc["frames"][4]["file_path"]).is_file()


def test_both_checkpoint_forms_give_the_same_scene(assets, tmp_path):
    root, ckpt, video, _ = assets
    depths = []
    for name, model in (("a.zarr", ckpt.folder), ("b.zarr", ckpt.pth)):
        res = invoke("reconstruct", video, "--out", tmp_path / name, "--model", model, "--max-frames", 3, *FAST)
        assert res.exit_code == 0, res.output
        depths.append(store.open_scene(str(tmp_path / name)).read("depth"))
    np.testing.assert_allclose(depths[0], depths[1], rtol=1e-5)


def test_image_folder_and_manifest_inputs_and_rerun_skips(assets, tmp_path):
    root, ckpt, video, truth = assets
    folder = tmp_path / "shots"
    folder.mkdir()
    for i, frame in enumerate(truth.read("frames")[:4]):
        Image.fromarray(frame).save(folder / f"img_{i:03d}.png")
    (folder / "notes.txt").write_text("not an image")
    manifest = tmp_path / "list.txt"
    manifest.write_text(f"# two inputs\nshots\n{video}\n")
    out = tmp_path / "out"
    args = ("reconstruct", manifest, "--out", out, "--model", ckpt.folder, "--scene-graph", "swin-1",
            "--niter", 5)
    res = invoke(*args)
    assert res.exit_code == 0, res.output
    shots = check_scene(out / "shots.zarr", 4)
    np.testing.assert_array_equal(shots.read("frames"), truth.read("frames")[:4])  # no resize at 64x48
    np.testing.assert_array_equal(shots.read("timestamps"), [0, 1, 2, 3])
    assert shots.provenance["alignment"]["pairs"] == 8  # swin-1 on 4 frames, cyclic, both directions
    check_scene(out / "video.zarr", 5)
    again = invoke(*args)
    assert again.exit_code == 0 and "skipped 2" in again.output


def test_store_features_and_known_intrinsics(assets, tmp_path):
    root, ckpt, video, truth = assets
    k = truth.read("intrinsics")[0]
    res = invoke("reconstruct", video, "--out", tmp_path / "s.zarr", "--model", ckpt.pth, "--store-features",
                 "--intrinsics", f"{k[0, 0]},{k[1, 1]},{k[0, 2]},{k[1, 2]}", "--max-frames", 3, "--stride", 2,
                 *FAST)
    assert res.exit_code == 0, res.output
    scene = check_scene(tmp_path / "s.zarr", 3)
    feats = scene.read("encoder_features")
    assert feats.dtype == np.float16 and feats.shape == (3, 3, 4, 32)  # 48x64 / 16-pixel patches, 32 channels
    np.testing.assert_allclose(scene.read("intrinsics"), np.tile(k, (3, 1, 1)), atol=1e-6)
    np.testing.assert_allclose(scene.read("timestamps"), truth.read("timestamps")[[0, 2, 4]], atol=1e-6)


def test_errors(assets, tmp_path):
    root, ckpt, video, _ = assets
    res = invoke("reconstruct", tmp_path / "missing.mp4", "--out", tmp_path / "m.zarr", "--model", ckpt.pth, *FAST)
    assert res.exit_code == 1 and "no such file" in res.output
    assert not (tmp_path / "m.zarr").exists()
    res = invoke("reconstruct", video, "--out", tmp_path / "m.zarr", "--model", "naver/not-cached-anywhere", *FAST)
    assert res.exit_code == 2 and "huggingface-cli download naver/not-cached-anywhere" in res.output
    assert "--model" in res.output and not (tmp_path / "m.zarr").exists()
    res = invoke("reconstruct", video, "--out", tmp_path / "m.zarr", "--scene-graph", "ring-3", *FAST)
    assert res.exit_code == 2 and "scene graph" in res.output
    res = invoke("reconstruct", video, video, "--out", tmp_path / "m.zarr", *FAST)
    assert res.exit_code == 2
    res = invoke("reconstruct", video, "--out", tmp_path / "m.zarr", "--export", "obj", *FAST)
    assert res.exit_code == 2 and "obj" in res.output
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"not a video")
    res = invoke("reconstruct", bad, "--out", tmp_path / "m.zarr", "--model", ckpt.pth, *FAST)
    assert res.exit_code == 1 and "bad.mp4" in res.output


def save_tiny_depth_pro(folder: Path) -> Path:
    from transformers import DepthProConfig, DepthProForDepthEstimation

    def sub():
        return dict(model_type="dinov2", hidden_size=32, num_hidden_layers=2, num_attention_heads=2, patch_size=8,
                    image_size=32, mlp_ratio=2)

    cfg = DepthProConfig(patch_size=32, fusion_hidden_size=16, intermediate_hook_ids=[1, 0],
                         intermediate_feature_dims=[16, 16], scaled_images_ratios=[0.25, 0.5, 1],
                         scaled_images_overlap_ratios=[0.0, 0.5, 0.25], scaled_images_feature_dims=[32, 32, 16],
                         use_fov_model=False, image_model_config=sub(), patch_model_config=sub(),
                         fov_model_config=sub())
    torch.manual_seed(0)
    model = DepthProForDepthEstimation(cfg).eval()
    with torch.no_grad():  # the head ends in a ReLU: a positive bias keeps a random model's depth off zero
        model.head.layers[-2].bias.fill_(0.5)
    model.save_pretrained(folder)
    (folder / "preprocessor_config.json").write_text(json.dumps({"size": {"height": 128, "width": 128}}))
    return folder


def test_metric_scale_depthpro_rescales_consistently(assets, tmp_path):
    from spatialctl.models.depth_pro import DepthPro, scale_factor

    root, ckpt, video, _ = assets
    dp = save_tiny_depth_pro(tmp_path / "depthpro")
    common = ("--model", ckpt.folder, "--max-frames", 3, *FAST)
    assert invoke("reconstruct", video, "--out", tmp_path / "rel.zarr", *common).exit_code == 0
    res = invoke("reconstruct", video, "--out", tmp_path / "met.zarr", "--metric-scale", "depthpro",
                 "--depthpro-model", dp, *common)
    assert res.exit_code == 0, res.output
    rel, met = store.open_scene(str(tmp_path / "rel.zarr")), check_scene(tmp_path / "met.zarr", 3)
    assert met.attrs["scale"] == "metric" and met.attrs["scale_source"] == "depthpro"
    # The factor, computed independently from the relative store and the same Depth Pro.
    metric = DepthPro(str(dp)).metric_depth(rel.read("frames"), rel.read("intrinsics")[:, 0, 0])
    factor = scale_factor(metric, rel.read("depth"), rel.read("conf"))
    assert factor != pytest.approx(1.0, rel=1e-3)
    assert met.provenance["metric_scale_factor"] == pytest.approx(factor, rel=1e-5)
    np.testing.assert_allclose(met.read("depth"), rel.read("depth") * factor, rtol=1e-5)
    np.testing.assert_allclose(met.read("pointmaps"), rel.read("pointmaps") * factor, rtol=1e-4,
                               atol=1e-5 * np.abs(met.read("pointmaps")).max())
    np.testing.assert_allclose(met.read("cam2world")[:, :3, 3], rel.read("cam2world")[:, :3, 3] * factor, rtol=1e-6)
    np.testing.assert_allclose(met.read("cam2world")[:, :3, :3], rel.read("cam2world")[:, :3, :3])
    missing = invoke("reconstruct", video, "--out", tmp_path / "x.zarr", "--metric-scale", "depthpro",
                     "--depthpro-model", tmp_path / "nope", *common)
    assert missing.exit_code == 2 and "Depth Pro" in missing.output and "--depthpro-model" in missing.output


def test_image_folder_sampling_and_errors(tmp_path):
    from spatialctl.errors import SpatialctlError
    from spatialctl.stages.reconstruct.frames import load_frames

    for i in range(6):
        Image.fromarray(np.full((8, 10, 3), i, np.uint8)).save(tmp_path / f"{i}.png")
    s = load_frames(str(tmp_path), stride=2, max_frames=2)  # frames 0, 2, 4; two spread over them: 0 and 4
    np.testing.assert_array_equal(s.times, [0, 4])
    assert s.frames.shape == (2, 8, 10, 3) and s.frames[1, 0, 0, 0] == 4 and s.total == 6
    s = load_frames(str(tmp_path), fps=30.0)  # a folder's --fps is its frame rate: timestamps are number / fps
    np.testing.assert_allclose(s.times, np.arange(6) / 30.0)
    Image.fromarray(np.zeros((9, 10, 3), np.uint8)).save(tmp_path / "7.png")
    with pytest.raises(SpatialctlError, match="7.png: size 10x9 differs"):
        load_frames(str(tmp_path))
    (tmp_path / "empty").mkdir()
    with pytest.raises(SpatialctlError, match="no images"):
        load_frames(str(tmp_path / "empty"))


def test_seven_scenes_folder_keeps_colour_frames_in_natural_order(tmp_path):
    """7-Scenes layout: frame-NNNNNN.color.png beside 16-bit frame-NNNNNN.depth.png; numbers give the times."""
    from spatialctl.stages.reconstruct.frames import load_frames

    for n in (0, 2, 10):  # natural order puts frame-10 last; a plain sort would not (000010 sorts fine, "10" not)
        Image.fromarray(np.full((8, 10, 3), n, np.uint8)).save(tmp_path / f"frame-{n}.color.png")
        Image.fromarray(np.full((8, 10), 1000 + n, np.uint16)).save(tmp_path / f"frame-{n}.depth.png")
    s = load_frames(str(tmp_path), fps=30.0, max_frames=0)
    assert len(s.frames) == 3 and list(s.frames[:, 0, 0, 0]) == [0, 2, 10]
    np.testing.assert_allclose(s.times, np.array([0, 2, 10]) / 30.0)
    s = load_frames(str(tmp_path), fps=30.0, pattern="*.color.png")
    assert len(s.frames) == 3
    part = tmp_path / "part"  # part of a sequence keeps the sequence's clock
    part.mkdir()
    for n in (100, 101):
        Image.fromarray(np.zeros((8, 10, 3), np.uint8)).save(part / f"frame-{n:06d}.color.png")
    np.testing.assert_allclose(load_frames(str(part), fps=30.0).times, [100 / 30, 101 / 30])


def test_exif_orientation_is_applied(tmp_path):
    from spatialctl.stages.reconstruct.frames import load_frames

    pixels = np.zeros((8, 10, 3), np.uint8)
    pixels[0, :, 0] = 255  # a red top row
    for i in range(2):
        im = Image.fromarray(pixels)
        exif = im.getexif()
        exif[0x0112] = 6  # "rotate 90 CW to display", as phones write portrait shots
        im.save(tmp_path / f"IMG_{i}.jpg", exif=exif, quality=100)
    s = load_frames(str(tmp_path))
    assert s.frames.shape == (2, 10, 8, 3)  # displayed upright: portrait
    assert s.frames[0, :, -1, 0].mean() > 120 > 40 > s.frames[0, :, 0, 0].mean()  # top row -> right column
