"""Video in and out through PyAV, with frame timestamps kept."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from spatialctl import io
from spatialctl.errors import SpatialctlError

log = logging.getLogger("spatialctl")
VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv", ".avi", ".webm", ".m4v")


@dataclass
class Sampled:
    """Frames chosen from an input, with what a reader needs to trust them."""

    frames: np.ndarray  # (N, H, W, 3) uint8 RGB
    times: np.ndarray  # (N,) float64 seconds from the first frame
    total: int  # frames the input holds (before sampling)
    declared: int | None = None  # frames the container says it holds (videos)
    truncated: bool = False  # fewer frames decoded than declared, accepted with allow_truncated


def select(times: np.ndarray, fps: float | None = None, stride: int = 1, max_frames: int | None = None) -> np.ndarray:
    """Indices of the frames to keep: ``fps`` keeps the first frame at or after each 1/fps tick, ``stride`` then
    every k-th of those, and ``max_frames`` then keeps that many spread evenly from the first to the last."""
    idx = np.arange(len(times))
    if fps is not None:
        keep, tick = [], 0.0
        for i, t in enumerate(times):
            if t + 1e-6 < tick:
                continue
            keep.append(i)
            tick += 1.0 / fps
            while tick <= t:
                tick += 1.0 / fps
        idx = np.asarray(keep, dtype=np.int64)
    idx = idx[::stride]
    if max_frames and len(idx) > max_frames:
        idx = idx[np.unique(np.round(np.linspace(0, len(idx) - 1, max_frames)).astype(np.int64))]
    return idx


def _packet_times(container, stream) -> list[int]:
    """Presentation timestamps of every frame's packet, sorted: the frame count without decoding a frame."""
    return sorted(p.pts for p in container.demux(stream) if p.size and p.pts is not None)


def sample_video(path: str, *, fps: float | None = None, stride: int = 1, max_frames: int | None = None,
                 allow_truncated: bool = False) -> Sampled:
    """Decode the frames ``select`` chooses, checking the decoded count against what the container declares.

    A video that decodes to fewer frames than its header declares (a cut download, a copy stopped half way) is an
    error, or with ``allow_truncated`` a warning and ``Sampled.truncated``: the frames that decode are used."""
    if not Path(path).is_file():
        raise SpatialctlError(f"{path}: no such video file")
    if stride < 1:
        raise SpatialctlError(f"{path}: stride must be >= 1, got {stride}")
    try:
        with av.open(path) as container:
            if not container.streams.video:
                raise SpatialctlError(f"{path}: no video stream")
            stream = container.streams.video[0]
            declared = int(stream.frames) or None  # 0 when the container does not say (some mkv/webm)
            pts = _packet_times(container, stream)
        if not pts:
            raise SpatialctlError(f"{path}: no frames decoded")
        base = stream.time_base
        times = np.asarray([float((p - pts[0]) * base) for p in pts])
        chosen = select(times, fps, stride, max_frames)
        wanted = {pts[i]: k for k, i in enumerate(chosen)}
        frames: list = [None] * len(chosen)
        decoded, error = 0, None
        with av.open(path) as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            try:
                for frame in container.decode(stream):
                    decoded += 1
                    k = wanted.get(frame.pts)
                    if k is not None:
                        frames[k] = frame.to_ndarray(format="rgb24")
            except av.error.InvalidDataError as e:  # a cut file ends in a partial packet
                error = e
    except SpatialctlError:
        raise
    except (av.error.FFmpegError, ValueError, OSError) as e:
        raise SpatialctlError(f"{path}: cannot decode video ({type(e).__name__}: {e})") from e
    expected = max(declared or 0, len(pts))
    if decoded < expected or error is not None:
        what = f"decoded {decoded} of the {expected} frames its container declares"
        if not allow_truncated:
            raise SpatialctlError(f"{path}: truncated or corrupt video: {what}; pass --allow-truncated to use the "
                                  "frames that decode")
        log.warning("%s: truncated or corrupt video: %s; using those (--allow-truncated)", path, what)
    keep = [k for k, f in enumerate(frames) if f is not None]
    if not keep:
        raise SpatialctlError(f"{path}: no frames decoded")
    return Sampled(np.stack([frames[k] for k in keep]), times[chosen[keep]], len(pts), declared,
                   truncated=decoded < expected or error is not None)


def read_video(path: str, *, fps: float | None = None, stride: int = 1, max_frames: int | None = None,
               allow_truncated: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """RGB frames (N, H, W, 3) uint8 and their timestamps (N,) in seconds, sampled as ``select`` says."""
    s = sample_video(path, fps=fps, stride=stride, max_frames=max_frames, allow_truncated=allow_truncated)
    return s.frames, s.times


def write_video(path: str, frames: np.ndarray, fps: float, *, lossless: bool = False) -> None:
    """Encode (N, H, W, 3) uint8 RGB frames.

    Lossy: H.264 yuv420p (widely playable; H and W must be even). Lossless: H.264 in RGB (libx264rgb, qp 0), which
    decodes back to the exact frames.
    """
    frames = np.asarray(frames)
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise SpatialctlError(f"{path}: frames must be (N, H, W, 3) uint8, got {frames.dtype} {frames.shape}")
    n, h, w, _ = frames.shape
    if not lossless and (h % 2 or w % 2):
        raise SpatialctlError(f"{path}: H.264 yuv420p needs even width and height, got {w}x{h}")
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    rate = Fraction(fps).limit_denominator(1001)
    with io.aside(path) as tmp, av.open(tmp, mode="w") as container:
        if lossless:
            stream = container.add_stream("libx264rgb", rate=rate)
            stream.pix_fmt = "rgb24"
            stream.options = {"qp": "0", "preset": "veryfast"}
        else:
            stream = container.add_stream("libx264", rate=rate)
            stream.pix_fmt = "yuv420p"
            stream.options = {"crf": "18", "preset": "veryfast"}
        stream.width, stream.height = w, h
        for i in range(n):
            frame = av.VideoFrame.from_ndarray(frames[i], format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
