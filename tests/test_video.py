"""PyAV read/write: exact lossless round trip, timestamps, sampling, corrupt files."""

from __future__ import annotations

import numpy as np
import pytest

from spatialctl.errors import SpatialctlError
from spatialctl.video import read_video, write_video


@pytest.fixture
def frames():
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (10, 32, 48, 3), dtype=np.uint8)


def test_lossless_roundtrip_and_timestamps(tmp_path, frames):
    path = str(tmp_path / "v.mp4")
    write_video(path, frames, fps=10, lossless=True)
    decoded, times = read_video(path)
    assert np.array_equal(decoded, frames)
    assert np.allclose(times, np.arange(10) / 10)


def test_sampling_options(tmp_path, frames):
    path = str(tmp_path / "v.mp4")
    write_video(path, frames, fps=10, lossless=True)
    _, times = read_video(path, fps=5)
    assert np.allclose(times, [0, 0.2, 0.4, 0.6, 0.8])
    decoded, times = read_video(path, stride=3, max_frames=3)  # of frames 0, 3, 6, 9: three spread over them
    assert np.allclose(times, [0, 0.6, 0.9]) and np.array_equal(decoded, frames[[0, 6, 9]])


def test_lossy_is_close_on_smooth_frames(tmp_path):
    yy, xx = np.mgrid[0:32, 0:48]
    smooth = np.stack([np.stack([xx * 5, yy * 7, (xx + yy) * 2], -1) + i for i in range(4)]).astype(np.uint8)
    path = str(tmp_path / "v.mp4")
    write_video(path, smooth, fps=24)
    decoded, _ = read_video(path)
    assert np.abs(decoded.astype(int) - smooth).mean() < 3


def test_corrupt_and_missing_video(tmp_path):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"\x00not a video" * 64)
    with pytest.raises(SpatialctlError, match="bad.mp4: cannot decode video"):
        read_video(str(bad))
    with pytest.raises(SpatialctlError, match="no such video file"):
        read_video(str(tmp_path / "missing.mp4"))
    assert not list(tmp_path.glob("*.partial*"))
