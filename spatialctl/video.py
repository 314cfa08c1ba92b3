"""Video in and out through PyAV, with frame timestamps kept."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from spatialctl import io
from spatialctl.errors import SpatialctlError

VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv", ".avi", ".webm", ".m4v")


def read_video(
    path: str,
    *,
    fps: float | None = None,
    stride: int = 1,
    max_frames: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Decode RGB frames (N, H, W, 3) uint8 and their timestamps (N,) in seconds.

    ``fps`` keeps the first frame at or after each 1/fps tick; ``stride`` then keeps every k-th of those;
    ``max_frames`` caps the count. Frames come in presentation order.
    """
    if not Path(path).is_file():
        raise SpatialctlError(f"{path}: no such video file")
    if stride < 1:
        raise SpatialctlError(f"{path}: stride must be >= 1, got {stride}")
    frames, times = [], []
    next_tick = 0.0
    kept = 0
    try:
        with av.open(path) as container:
            if not container.streams.video:
                raise SpatialctlError(f"{path}: no video stream")
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            t0 = None
            for frame in container.decode(stream):
                t = float(frame.time) if frame.time is not None else len(times) / float(stream.average_rate or 30)
                t0 = t if t0 is None else t0
                t -= t0
                if fps is not None:
                    if t + 1e-6 < next_tick:
                        continue
                    next_tick += 1.0 / fps
                    while next_tick <= t:
                        next_tick += 1.0 / fps
                kept += 1
                if (kept - 1) % stride:
                    continue
                frames.append(frame.to_ndarray(format="rgb24"))
                times.append(t)
                if max_frames is not None and len(frames) >= max_frames:
                    break
    except SpatialctlError:
        raise
    except (av.error.FFmpegError, ValueError, OSError) as e:
        raise SpatialctlError(f"{path}: cannot decode video ({type(e).__name__}: {e})") from e
    if not frames:
        raise SpatialctlError(f"{path}: no frames decoded")
    return np.stack(frames), np.asarray(times, dtype=np.float64)


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
