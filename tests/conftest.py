"""Shared fixtures: hand-built scene stores (no stage needed) and a CLI runner."""

from __future__ import annotations

import os
import sys

import numpy as np
import pytest
from typer.testing import CliRunner

# Tiny models on 2 cores: more threads than cores only adds contention.
os.environ.setdefault("OMP_NUM_THREADS", "2")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
sys.path.insert(0, os.path.dirname(__file__))  # test helpers (dust3r_tiny, tiny_qwen, ...) import by name

from spatialctl import camera, store  # noqa: E402


def scene_arrays(n: int = 4, h: int = 12, w: int = 16, seed: int = 0) -> dict[str, np.ndarray]:
    """A small, geometrically consistent scene: a camera sliding past a plane 2 m away."""
    rng = np.random.default_rng(seed)
    K = camera.intrinsics_matrix(20.0, 20.0, (w - 1) / 2, (h - 1) / 2)
    poses, depths, points = [], [], []
    for i in range(n):
        pose = np.eye(4)
        pose[:3, 3] = [0.1 * i, 0.0, 0.0]
        depth = np.full((h, w), 2.0, np.float32) + rng.random((h, w)).astype(np.float32) * 0.1
        poses.append(pose)
        depths.append(depth)
        points.append(camera.depth_to_pointmap(depth, K, pose))
    return {
        "frames": rng.integers(0, 255, (n, h, w, 3), dtype=np.uint8),
        "timestamps": np.arange(n) / 10.0,
        "intrinsics": np.tile(K, (n, 1, 1)),
        "cam2world": np.stack(poses),
        "depth": np.stack(depths),
        "conf": np.ones((n, h, w), np.float32),
        "pointmaps": np.stack(points).astype(np.float32),
    }


SCENE_ATTRS = {"scale": "metric", "scale_source": "synth", "world_up": [0.0, 0.0, 1.0]}


@pytest.fixture
def make_scene(tmp_path):
    def make(name: str = "scene.zarr", **kw) -> str:
        url = str(tmp_path / name)
        store.write_scene(url, scene_arrays(**kw), SCENE_ATTRS, {"stage": "test", "config_hash": "x"})
        return url

    return make


@pytest.fixture
def one_thread():
    """Tiny models do many small ops: a second thread only adds contention on the 2-core CI box."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def cli():
    from spatialctl.cli import app

    runner = CliRunner()

    def invoke(*args: str, env: dict | None = None):
        return runner.invoke(app, [str(a) for a in args], env=env)

    return invoke


@pytest.fixture
def synth_scene(tmp_path, cli):
    """A small synth scene (3 objects, 6 frames, 96x64) made through the CLI; its scene.zarr path."""
    result = cli("synth", tmp_path / "synth", "--seed", "3", "--frames", "6", "--size", "96x64", "--objects", "3",
                 "--quiet")
    assert result.exit_code == 0, result.output
    return str(tmp_path / "synth" / "scene.zarr")
