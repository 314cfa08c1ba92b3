"""`spatialctl track` end to end on a synth scene, with tiny random Grounding DINO and SAM 2 video models saved to
disk and loaded by path, as a user would pass a downloaded checkpoint."""

from __future__ import annotations

import numpy as np
import pytest
from track_models import build_grounding_dino, build_sam2_video

from spatialctl import store

LABELS = "cup,ball,book,bottle,box"


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("track_models")
    return build_grounding_dino(root / "gdino"), build_sam2_video(root / "sam2")


def test_track_cli_end_to_end(models, synth_scene, cli):
    gdino, sam2 = models
    # Random weights score near chance: low thresholds so boxes come out and the whole path runs.
    args = ["track", synth_scene, "--labels", LABELS, "--detector-model", gdino, "--sam2-model", sam2,
            "--box-threshold", "0.05", "--text-threshold", "0.05", "--keyframe-every", "3", "--device", "cpu", "--quiet"]
    result = cli(*args)
    # The synth store already holds the true tracks (another config): refused without --overwrite.
    assert result.exit_code == 1 and "--overwrite" in result.output
    result = cli(*args, "--overwrite")
    assert result.exit_code == 0, result.output

    scene = store.open_scene(synth_scene)
    tracks = scene.open_group("tracks")  # validates against the schema
    objects = tracks.attrs["objects"]
    assert tracks.attrs["provenance"]["stage"] == "track"
    assert tracks.attrs["sam2_model"] == sam2
    assert len(objects) >= 1
    assert {o["label"] for o in objects} <= set(LABELS.split(","))
    n, hw = scene.n_frames, scene.hw
    visible = tracks.read("visible")
    centroid, box, aabb = tracks.read("centroid"), tracks.read("box"), tracks.read("aabb")
    assert visible.shape == (len(objects), n)
    assert visible.any()
    for o in range(len(objects)):
        for f in range(n):
            mask = store.read_mask(tracks, o, f, hw)  # one chunk per object-frame
            assert mask.shape == hw
            assert mask.any() == visible[o, f]
    assert np.isfinite(centroid[visible]).all() and np.isnan(centroid[~visible]).all()
    assert np.isfinite(box[visible]).all() and np.isfinite(aabb[visible]).all()
    assert (aabb[visible][:, 3:] >= aabb[visible][:, :3]).all()
    # Centroids lie on the scene's geometry, not at the origin or infinity.
    points = scene.read("pointmaps")
    lo, hi = points.reshape(-1, 3).min(0), points.reshape(-1, 3).max(0)
    assert ((centroid[visible] >= lo - 1e-3) & (centroid[visible] <= hi + 1e-3)).all()

    # A rerun with the same config is a cache hit.
    result = cli(*args)
    assert result.exit_code == 0, result.output


def test_track_missing_model_says_how_to_fetch(synth_scene, cli, tmp_path):
    missing = str(tmp_path / "no-such-model")
    result = cli("track", synth_scene, "--labels", "cup", "--detector-model", missing, "--overwrite", "--quiet")
    assert result.exit_code == 2  # refused before any work
    assert "huggingface-cli download" in result.output and "--detector-model" in result.output


def test_track_bad_options_are_usage_errors(synth_scene, cli, tmp_path):
    result = cli("track", synth_scene, "--detector", "yolo", "--quiet")
    assert result.exit_code == 2
    labels = tmp_path / "labels.txt"
    labels.write_text("cup\n")
    result = cli("track", synth_scene, "--labels", "cup", "--labels-file", str(labels), "--quiet")
    assert result.exit_code == 2
