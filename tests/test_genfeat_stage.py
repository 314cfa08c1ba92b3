"""extract-gen-features end to end: scene stores and videos in, genfeat groups out, cached reruns."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from spatialctl import jobs, store
from spatialctl.models import wan_features as wf
from spatialctl.models.wan_random import RandomWanSpec, save_random_wan
from spatialctl.stages import extract_gen_features as stage
from spatialctl.stages.extract_gen_features import GenFeatConfig
from spatialctl.video import write_video


@pytest.fixture(scope="module")
def wan_dir(tmp_path_factory):
    return str(save_random_wan(tmp_path_factory.mktemp("wan") / "tiny-wan", RandomWanSpec(num_layers=3)))


@pytest.fixture
def config(wan_dir, tmp_path):
    return GenFeatConfig(model=wan_dir, layer=1, grid="2x2", resolution="48x32", seed=5, batch_size=2, quiet=True,
                         prompt_cache=str(tmp_path / "ctx.safetensors"))


def test_scene_store_gets_genfeat_equal_to_the_extractor_and_a_rerun_loads_nothing(make_scene, config, wan_dir,
                                                                                   monkeypatch):
    scene = make_scene(n=3, h=24, w=40)
    summary = stage.run(config, scene)
    assert summary.done == [scene] and not summary.failed
    group = store.open_scene(scene).open_group("genfeat")
    feats = group.read("features")
    assert feats.dtype == np.float16 and feats.shape == (3, 2, 2, 24)
    attrs = group.attrs
    assert attrs["model"] == wan_dir and attrs["layer"] == 1 and attrs["seed"] == 5 and attrs["resolution"] == [48, 32]
    assert abs(attrs["timestep"] - 300) < 0.5 and attrs["shift"] == 5.0 and attrs["dtype"] == "float32"
    assert attrs["num_layers"] == 3 and attrs["grid"] == [2, 2] and attrs["dit_grid"] == [2, 3]
    assert attrs["provenance"]["stage"] == "extract-gen-features" and attrs["provenance"]["config"]["layer"] == 1

    # the stored features are the extractor's block-1 output, area-pooled to 2x2, in float16
    ex = wf.WanFeatureExtractor(wf.load_vae(wan_dir), wf.load_transformer(wan_dir),
                                wf.load_prompt_embedding(config.prompt_cache), layer=1, seed=5)
    frames = torch.from_numpy(store.open_scene(scene).read("frames"))[:, None]
    direct = wf.pool_to_grid(ex(frames, (32, 48), keys=[0, 1, 2])[:, 0], (2, 2)).half().numpy()
    np.testing.assert_array_equal(feats, direct)

    # cache hit: a rerun with the same parameters (other runtime knobs) loads no model at all
    def boom(*a, **k):
        raise AssertionError("model loaded on a cache hit")

    for name in ("load_vae", "load_transformer", "empty_prompt_context", "load_prompt_embedding"):
        monkeypatch.setattr(wf, name, boom)
    again = stage.run(dataclasses.replace(config, batch_size=1, device="cpu"), scene)
    assert again.skipped == [scene] and not again.done and not again.failed
    np.testing.assert_array_equal(store.open_scene(scene).open_group("genfeat").read("features"), feats)

    # other parameters on the same store: refused unless --overwrite
    other = stage.run(dataclasses.replace(config, seed=6), scene)
    assert other.failed and "different config" in other.failed[scene]


def test_same_seed_reproduces_and_batching_does_not_matter(make_scene, config):
    a, b = make_scene("a.zarr", n=3, h=16, w=16), make_scene("b.zarr", n=3, h=16, w=16)
    stage.run(config, a)
    stage.run(dataclasses.replace(config, batch_size=3), b)
    fa = store.open_scene(a).open_group("genfeat").read("features")
    fb = store.open_scene(b).open_group("genfeat").read("features")
    np.testing.assert_allclose(fa.astype(np.float32), fb.astype(np.float32), rtol=2e-3, atol=2e-3)
    stage.run(dataclasses.replace(config, overwrite=True), b)
    np.testing.assert_array_equal(store.open_scene(b).open_group("genfeat").read("features"), fa)


def test_clip_mode_and_native_and_qwen_grids(make_scene, config):
    scene = make_scene(n=7, h=32, w=48)
    stage.run(dataclasses.replace(config, clip=5, grid="native", resolution="native"), scene)
    g = store.open_scene(scene).open_group("genfeat")
    f = g.read("features")
    assert f.shape == (7, 2, 3, 24) and g.attrs["clip"] == 5
    # clip [0..4]: frame 0 alone in latent 0, frames 1-4 share latent 1; clip [5, 6 (+pad)]: 5 → 0, 6 → 1
    np.testing.assert_array_equal(f[1], f[4])
    assert not np.array_equal(f[0], f[1]) and not np.array_equal(f[5], f[6])
    stage.run(dataclasses.replace(config, grid="qwen", overwrite=True), scene)
    g = store.open_scene(scene).open_group("genfeat")
    assert g.read("features").shape[1:3] == tuple(wf.qwen_merged_grid(32, 48)) and g.attrs["grid_mode"] == "qwen"


def test_video_input_writes_a_standalone_genfeat_store(tmp_path, config):
    rng = np.random.default_rng(0)
    video = str(tmp_path / "clip.mp4")
    write_video(video, rng.integers(0, 255, (4, 32, 48, 3), dtype=np.uint8), fps=10, lossless=True)
    out = tmp_path / "feats"
    summary = stage.run(dataclasses.replace(config, out=str(out), max_frames=3), video)
    assert summary.done == [video]
    url = str(out / "clip.genfeat.zarr")
    assert stage.output_for(video, str(out)) == url and store.is_complete(url)
    store.validate(url, "genfeat")
    import zarr

    g = zarr.open_group(url, mode="r")
    assert g["features"].shape == (3, 2, 2, 24) and g["features"].dtype == np.float16
    np.testing.assert_allclose(g["timestamps"][:], [0.0, 0.2, 0.3], atol=1e-6)  # 3 of 4 frames, spread
    # a standalone genfeat store is ours to replace
    again = stage.run(dataclasses.replace(config, out=str(out), max_frames=3, overwrite=True), video)
    assert again.done == [video] and store.is_complete(url)


def test_cli_bad_inputs_and_usage_errors(cli, tmp_path, config, make_scene):
    missing = str(tmp_path / "nope.zarr")
    r = cli("extract-gen-features", missing, "--model", config.model, "--quiet")
    assert r.exit_code == 1 and "nope.zarr" in r.output
    assert store.exists(jobs.failure_record(stage.output_for(missing, None)))
    r = cli("extract-gen-features", missing, "--clip", "3")
    assert r.exit_code == 2 and "1 + 4k" in r.output
    r = cli("extract-gen-features", missing, "--grid", "big")
    assert r.exit_code == 2
    scene = make_scene(n=2, h=16, w=16)
    r = cli("extract-gen-features", scene, "--model", str(tmp_path / "no-wan"), "--quiet",
            "--prompt-cache", str(tmp_path / "c.safetensors"))
    assert r.exit_code == 2 and "huggingface-cli download" in r.output and "--model" in r.output
    r = cli("extract-gen-features", scene, "--model", config.model, "--layer", "1", "--grid", "2x2",
            "--resolution", "32x32", "--prompt-cache", str(tmp_path / "c.safetensors"), "--quiet")
    assert r.exit_code == 0, r.output
    assert store.open_scene(scene).open_group("genfeat").read("features").shape == (2, 2, 2, 24)
    r = cli("extract-gen-features", "--help")
    assert "1280x720" in r.output and "14x14" in r.output
