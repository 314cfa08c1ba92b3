"""Reading a folder of images as a sequence of frames: one rule, shared by every stage that reads one.

- Which files: by default every image (``IMAGE_SUFFIXES``) that is a colour image: its PIL mode is a colour mode
  (16-bit depth PNGs, 8-bit masks and other single-channel images are left out) and no part of its name marks it
  as another modality (``depth``, ``mask``, ``normal``, ...), so a 7-Scenes sequence keeps
  ``frame-000123.color.png`` and leaves ``frame-000123.depth.png``. ``pattern`` (a glob such as
  ``*.color.png``) chooses the files instead; each must then be a colour image.
- Order: natural sort of the names (``frame-2`` before ``frame-10``).
- Orientation: the EXIF orientation tag is applied (phone photos are stored sideways).
- Timestamps: when every chosen name (without its suffix) is a decimal number of seconds, ``seconds.fraction`` as
  TUM RGB-D writes them (``rgb/1305031102.175304.png``), that number is the timestamp, on the clock the dataset's
  ``groundtruth.txt`` uses, and files are ordered by it; ``fps`` then does not apply and is refused. Otherwise
  each file's frame number is the last run of digits in its name (its position in the sorted list
  when names do not all carry distinct numbers); with ``fps`` (the rate the frames were taken at) the timestamp is
  number / fps seconds on the sequence's own clock (7-Scenes ``frame-000123`` at 30 fps: 4.1 s, as its ground
  truth counts), so a folder holding part of a sequence keeps its times; without ``fps`` frames are taken as 1 s
  apart, and a warning says so.
- Sizes: all chosen images must have one size (after orientation); otherwise the two sizes are named and nothing
  runs. The network's resize/crop then applies to all of them alike.
"""

from __future__ import annotations

import fnmatch
import logging
import re
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from spatialctl.errors import SpatialctlError, UsageError

log = logging.getLogger("spatialctl")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")
COLOUR_MODES = ("RGB", "RGBA", "RGBX", "P", "CMYK", "YCbCr", "LAB", "HSV")
OTHER_MODALITIES = {"depth", "disp", "disparity", "mask", "masks", "seg", "label", "labels", "normal", "normals",
                    "conf", "confidence", "flow", "ir", "semantic", "instance"}


def natural_key(name: str) -> list:
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", name)]


def _is_other_modality(name: str) -> bool:
    return any(t.lower() in OTHER_MODALITIES for t in re.split(r"[._\-\s]+", Path(name).stem))


def list_images(folder: Path, pattern: str | None = None) -> list[Path]:
    """The folder's colour frames, naturally sorted (see the module's rule)."""
    files = [f for f in folder.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES]
    if pattern is not None:
        files = [f for f in files if fnmatch.fnmatch(f.name, pattern)]
        if not files:
            raise SpatialctlError(f"{folder}: no images match --pattern {pattern!r}")
    else:
        left = [f for f in files if _is_other_modality(f.name)]
        files = [f for f in files if f not in left]
        if left:
            log.info("%s: left out %d images named as another modality (e.g. %s); --pattern chooses files",
                     folder, len(left), sorted(left)[0].name)
    if not files:
        raise SpatialctlError(f"{folder}: no images ({', '.join(IMAGE_SUFFIXES)})")
    files.sort(key=lambda f: natural_key(f.name))
    modes = {}
    for f in files:
        try:
            with Image.open(f) as im:
                modes[f] = im.mode
        except (UnidentifiedImageError, OSError) as e:
            raise SpatialctlError(f"{f}: cannot read image ({type(e).__name__})") from e
    grey = [f for f in files if modes[f] not in COLOUR_MODES]
    if grey and pattern is not None:
        raise SpatialctlError(f"{grey[0]}: not a colour image (mode {modes[grey[0]]}); --pattern must choose RGB frames")
    if grey:
        log.info("%s: left out %d non-colour images (e.g. %s, mode %s)", folder, len(grey), grey[0].name,
                 modes[grey[0]])
        files = [f for f in files if f not in grey]
    if not files:
        raise SpatialctlError(f"{folder}: no colour images (found only single-channel ones, e.g. depth maps)")
    if seconds(files) is not None:  # TUM-style names: in time order (a natural sort misorders .9 and .175304)
        files.sort(key=lambda f: float(f.stem))
    return files


def frame_numbers(files: list[Path]) -> np.ndarray:
    """The last run of digits of each name, or the positions when those are missing or repeat."""
    numbers = []
    for f in files:
        runs = re.findall(r"\d+", f.stem)
        numbers.append(int(runs[-1]) if runs else None)
    if None in numbers or len(set(numbers)) != len(numbers):
        return np.arange(len(files), dtype=np.float64)
    return np.asarray(numbers, dtype=np.float64)


_SECONDS = re.compile(r"\d+\.\d+")


def seconds(files: list[Path]) -> np.ndarray | None:
    """The names as seconds when every name is ``seconds.fraction`` (TUM style), else None."""
    if not files or not all(_SECONDS.fullmatch(f.stem) for f in files):
        return None
    return np.asarray([float(f.stem) for f in files], dtype=np.float64)


def timestamps(files: list[Path], fps: float | None) -> np.ndarray:
    """Seconds per file: the names themselves when they are TUM-style seconds, else its frame number / ``fps``
    (1 s apart without ``fps``, with a warning)."""
    stamps = seconds(files)
    if stamps is not None:
        if fps is not None:  # two clocks for one folder: which one the user meant is not ours to guess
            raise UsageError(f"{files[0].parent}: the file names are timestamps in seconds (e.g. {files[0].name}); "
                             f"--fps {fps} does not apply to them, leave it out")
        return stamps
    if fps is None:
        log.warning("%s: no --fps for an image folder: frames are taken as 1 s apart", files[0].parent)
    return frame_numbers(files) / (fps or 1.0)


def read_image(path: Path) -> np.ndarray:
    """(H, W, 3) uint8 RGB, upright (EXIF orientation applied)."""
    try:
        with Image.open(path) as im:
            return np.asarray(ImageOps.exif_transpose(im).convert("RGB"))
    except (UnidentifiedImageError, OSError) as e:
        raise SpatialctlError(f"{path}: cannot read image ({type(e).__name__})") from e
