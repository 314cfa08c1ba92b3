"""The frozen-feature linear depth probe: targets, split, fit, and a run on a scene store."""

from __future__ import annotations

import numpy as np
import pytest
from boost_tiny import make_tiny_encoder

from spatialctl.errors import SpatialctlError
from spatialctl.stages import probe


def test_patch_depth_means_valid_pixels_per_footprint():
    depth = np.zeros((4, 6), np.float32)
    depth[:2, :3] = [[1, 2, 3], [4, 5, 6]]  # patch (0, 0): all valid, mean 3.5
    depth[:2, 3:] = [[2, 0, 0], [0, 0, 0]]  # patch (0, 1): 1 of 6 valid -> left out
    depth[2:, :3] = [[2, 2, 0], [2, 2, 2]]  # patch (1, 0): 5 of 6 valid, mean 2
    depth[2:, 3:] = [[8, 8, 8], [0, 0, 0]]  # patch (1, 1): half valid, mean 8
    np.testing.assert_allclose(probe.patch_depth(depth, (2, 2)), [[3.5, 0.0], [2.0, 8.0]])


def test_split_by_scene_or_by_frames():
    two = probe.split(["a", "b"], {"a": 3, "b": 4}, 0.5)
    assert two == {"a": ([0, 1, 2], []), "b": ([], [0, 1, 2, 3])}
    one = probe.split(["a"], {"a": 5}, 0.5)
    assert one == {"a": ([0, 1], [2, 3, 4])} or one == {"a": ([0, 1, 2], [3, 4])}
    train, test = one["a"]
    assert not set(train) & set(test) and len(train) + len(test) == 5


def test_ridge_recovers_a_linear_log_depth():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 5))
    y = x @ np.array([0.3, -0.2, 0.1, 0.0, 0.05]) + 1.0
    mean, std, w = probe.fit_ridge(x, y, 0.0)
    np.testing.assert_allclose(probe.predict(x, mean, std, w), y, atol=1e-8)
    # A strong penalty shrinks the slopes, not the intercept.
    mean, std, w = probe.fit_ridge(x, y, 1e6)
    assert np.abs(w[:-1]).max() < 1e-3 and w[-1] == pytest.approx(y.mean())


def test_probe_runs_on_scene_stores(tmp_path, make_scene):
    enc = make_tiny_encoder(tmp_path / "enc", "dinov2")
    urls = [make_scene("a.zarr", n=3, h=24, w=32, seed=0), make_scene("b.zarr", n=3, h=24, w=32, seed=1)]
    manifest = tmp_path / "scenes.txt"
    manifest.write_text("\n".join(urls) + "\n")
    config = probe.ProbeConfig(encoder=enc, image_size=32, max_frames=3)
    report = probe.run(config, [str(manifest)]).details
    assert report["family"] == "dinov2" and report["frames"] == {"train": 3, "test": 3}
    base = report["base"]
    assert base["n_train_patches"] > 0 and base["n_test_patches"] > 0
    # Depths of the conftest scenes lie in [2.0, 2.1]: any sane fit is within a few percent.
    assert 0 <= base["abs_rel"] < 0.1 and base["delta1"] == 1.0
    assert "boosted" not in report
    assert probe.find_scenes([str(tmp_path)]) == sorted(urls)
    with pytest.raises(SpatialctlError, match="no scene store"):
        probe.find_scenes([str(tmp_path / "enc")])


def _depth_coded_scene(tmp_path, name: str, seed: int) -> str:
    """32x32 frames whose 8x8 patches each show one grey level g, with depth 1 + 4 g / 255 m on that patch: the
    features carry the depth, and depth spans 1-5 m, so a mean-depth guess is far off (AbsRel ~0.4)."""
    from conftest import SCENE_ATTRS, scene_arrays

    from spatialctl import store

    arrays = scene_arrays(n=6, h=32, w=32, seed=seed)
    grey = np.random.default_rng(seed).integers(0, 256, (6, 4, 4)).repeat(8, 1).repeat(8, 2)
    arrays["frames"] = np.repeat(grey[..., None], 3, -1).astype(np.uint8)
    arrays["depth"] = (1.0 + 4.0 * grey / 255.0).astype(np.float32)
    url = str(tmp_path / name)
    store.write_scene(url, arrays, SCENE_ATTRS, {"stage": "test", "config_hash": "x"})
    return url


def test_probe_beats_a_mean_depth_predictor_and_a_constant_does_not(tmp_path, monkeypatch):
    """The probe's AbsRel is judged against predicting the mean training depth everywhere: on scenes whose depth
    varies and shows in the pixels, a working probe is far below that floor; a probe that ignores its features
    (a constant prediction) sits on it and is reported as not beating it."""
    enc = make_tiny_encoder(tmp_path / "enc", "dinov2")
    urls = [_depth_coded_scene(tmp_path, "a.zarr", 0), _depth_coded_scene(tmp_path, "b.zarr", 1)]
    config = probe.ProbeConfig(encoder=enc, image_size=32, max_frames=6, ridge=1e-3)
    base = probe.run(config, urls).details["base"]
    assert base["mean_depth_abs_rel"] > 0.25  # the floor is not trivially small on these scenes
    assert base["beats_mean_depth"] and base["abs_rel"] < 0.5 * base["mean_depth_abs_rel"], base

    fit = probe.fit_ridge
    monkeypatch.setattr(probe, "fit_ridge", lambda x, y, ridge: (lambda m, s, w: (m, s, np.r_[0 * w[:-1], w[-1]]))(
        *fit(x, y, ridge)))  # the same intercept, every feature weight zero: a constant
    constant = probe.run(config, urls).details["base"]
    assert not constant["beats_mean_depth"]
    assert constant["abs_rel"] == pytest.approx(constant["mean_depth_abs_rel"], rel=0.05)
