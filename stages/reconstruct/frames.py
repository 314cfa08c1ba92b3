"""Frames of one input: a video (PyAV, with timestamps) or a folder of images (the rule in
``spatialctl.image_folder``: colour images, natural order, EXIF orientation, timestamps = frame number / --fps)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from spatialctl.errors import SpatialctlError
from spatialctl.image_folder import list_images, read_image, timestamps
from spatialctl.video import VIDEO_SUFFIXES, Sampled, sample_video, select


def input_stem(path: str) -> str:
    p = Path(path.rstrip("/"))
    return p.name if p.is_dir() else p.stem


def load_frames(path: str, fps: float | None = None, stride: int = 1, max_frames: int | None = None, *,
                pattern: str | None = None, allow_truncated: bool = False) -> Sampled:
    """Sampled frames of a video (``fps`` samples it) or an image folder (``fps`` is its frame rate)."""
    p = Path(path)
    if p.is_dir():
        return _load_folder(p, fps, stride, max_frames, pattern)
    if not p.exists():
        raise SpatialctlError(f"{path}: no such file or folder")
    if p.suffix.lower() not in VIDEO_SUFFIXES:
        raise SpatialctlError(f"{path}: not a video ({', '.join(VIDEO_SUFFIXES)}), a folder of images or a manifest")
    return sample_video(str(p), fps=fps, stride=stride, max_frames=max_frames, allow_truncated=allow_truncated)


def _load_folder(folder: Path, fps, stride, max_frames, pattern) -> Sampled:
    """Every chosen image must have the first one's size (after orientation); the first that differs is named."""
    if stride < 1:
        raise SpatialctlError(f"{folder}: stride must be >= 1, got {stride}")
    files = list_images(folder, pattern)
    times = timestamps(files, fps)
    idx = select(times, None, stride, max_frames)
    frames = []
    for i in idx:
        frames.append(read_image(files[i]))
        if frames[-1].shape != frames[0].shape:
            raise SpatialctlError(f"{files[i]}: size {frames[-1].shape[1]}x{frames[-1].shape[0]} differs from "
                                  f"{files[idx[0]].name} ({frames[0].shape[1]}x{frames[0].shape[0]}); "
                                  "resize the images to one size")
    return Sampled(np.stack(frames), times[idx], len(files))
