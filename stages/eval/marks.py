"""SpaceVista-Bench's visual prompts (points, boxes, masks), drawn on the frames as its released harness draws them.

Source: PeiwenSun2000/SpaceVista @ 920a9b7, eval/evaluate_api_video.py (``build_annotation_list``,
``render_annotations``, ``draw_annotations_on_pil``, ``select_mask_from_array``, ``resize_image``). What the
harness does, kept here because it decides what the model sees:

- only the kinds the entry's ``input_type`` names are drawn (``point``, ``bbox``, ``mask``; ``dual_bbox`` with
  ``bbox``); colours are the annotation's own, else red, blue, green, yellow in turn (unknown names are red);
- points are ``[y, x]`` (the harness reads ``coords[0]`` as y), a filled disc of radius max(8, 1.4% of the short
  side), skipped when outside the frame; boxes ``[x1, y1, x2, y2]`` (or ``{x1..y2}`` / ``{x, y, w, h}``), sorted,
  clipped, outlined max(2, 0.4% of the short side) wide;
- masks are drawn last and come out solid: the harness composites an RGBA colour of alpha 0.35 and converts the
  result to RGB, which drops the alpha, so masked pixels take the plain colour;
- an annotation on a frame that was not sampled moves to the nearest sampled frame (the first on a tie);
- all of it on the full-size frames, which are then resized so the longest side is at most 448 (LANCZOS).

Where the harness skips silently (a mask file it cannot load), spatialctl stops with an error: a missing visual
prompt changes the question. Mask files are read with ``numpy.load`` without unpickling.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import numpy as np

from spatialctl.errors import SpatialctlError

ORDER = ("red", "blue", "green", "yellow")
RGB = {"red": (255, 0, 0), "green": (0, 255, 0), "blue": (0, 128, 255), "yellow": (255, 215, 0)}


def _rgb(name) -> tuple[int, int, int]:
    return RGB.get(name, RGB["red"])


def frame_index(image_path, frame_paths: list[str], resolve: Callable[[str], str]) -> int:
    """The harness's ``_find_frame_index``: exact path, same absolute path, images_8 <-> images, same file name,
    else 0."""
    if not image_path or not frame_paths:
        return 0
    if image_path in frame_paths:
        return frame_paths.index(image_path)
    absolute = [os.path.abspath(resolve(p)) for p in frame_paths]
    candidates = [image_path] + [image_path.replace(a, b) for a, b in (("/images_8/", "/images/"),
                                                                        ("/images/", "/images_8/")) if a in image_path]
    for k, cand in enumerate(candidates):
        if k and cand in frame_paths:
            return frame_paths.index(cand)
        target = os.path.abspath(resolve(cand))
        if target in absolute:
            return absolute.index(target)
    base = os.path.basename(image_path)
    names = [os.path.basename(p) for p in frame_paths]
    return names.index(base) if base in names else 0


def select_mask(arr: np.ndarray, object_ids, where: str) -> np.ndarray:
    """The harness's ``select_mask_from_array``: the (H, W) bool mask of `object_ids` in a label map, a bool mask
    or a stack of per-object masks."""
    while arr.ndim > 2 and arr.shape[0] == 1:
        arr = arr[0]
    ids_list = object_ids if isinstance(object_ids, list) else [object_ids]
    if arr.ndim == 2:
        if arr.dtype == bool:
            if object_ids is None or (isinstance(object_ids, list) and any(bool(x) for x in object_ids)):
                return arr
            return np.zeros_like(arr, dtype=bool)
        ids = [int(x) for x in ids_list if _is_int(x)] if object_ids is not None else []
        return np.isin(arr, ids) if ids else arr != 0
    if arr.ndim == 3:
        if arr.shape[0] != arr.shape[1] and arr.shape[0] < 16:  # (K, H, W) -> (H, W, K)
            arr = np.moveaxis(arr, 0, 2)
        arr = arr if arr.dtype == bool else arr != 0
        k = arr.shape[2]
        if object_ids is None:
            return arr.any(axis=2)
        if isinstance(object_ids, list) and len(object_ids) == k and all(isinstance(x, (bool, np.bool_))
                                                                          for x in object_ids):
            sel = [i for i, v in enumerate(object_ids) if v]
        else:
            sel = []
            for x in ids_list:
                if isinstance(x, (bool, np.bool_)):
                    if x:
                        return arr.any(axis=2)
                elif _is_int(x):
                    sel.append(int(x))
        sel = [i for i in sel if 0 <= i < k]
        return arr[:, :, sel].any(axis=2) if sel else arr.any(axis=2)
    raise SpatialctlError(f"{where}: mask of shape {arr.shape} is neither 2-D nor 3-D")


def _is_int(x) -> bool:
    try:
        int(x)
    except (TypeError, ValueError):
        return False
    return True


def _load_mask(path: str, where: str) -> np.ndarray:
    if not os.path.isfile(path):
        raise SpatialctlError(f"{where}: mask file {path} does not exist")
    try:
        return np.asarray(np.load(path, allow_pickle=False))
    except ValueError as e:  # a pickle: the harness unpickles it, spatialctl does not run code from data files
        raise SpatialctlError(f"{where}: mask file {path} is not a plain .npy array ({e}); save it with numpy.save") \
            from None
    except OSError as e:
        raise SpatialctlError(f"{where}: cannot read mask file {path} ({type(e).__name__})") from None


def from_entry(entry: dict, frame_paths: list[str], sampled: list[int], resolve: Callable[[str], str],
               where: str) -> list[dict]:
    """The entry's visual prompts as drawing instructions on sampled positions: ``{kind, pos, rgb, data}``."""
    ann = entry.get("annotations") or {}
    kind = (entry.get("input_type") or "").lower()
    out = []  # (kind, original frame index, colour, data)
    try:
        if "point" in kind:
            for i, pt in enumerate(ann.get("points") or []):
                out.append(("point", int(pt.get("image_index", 0)), pt.get("color") or ORDER[i % 4], pt["coords"]))
        if "bbox" in kind:
            for i, bb in enumerate(ann.get("bboxes") or []):
                out.append(("bbox", int(bb.get("image_index", 0)), bb.get("color") or ORDER[i % 4], bb["coords"]))
        if "mask" in kind:
            for i, m in enumerate(ann.get("masks") or []):
                if m.get("mask_path"):
                    arr = _load_mask(resolve(str(m["mask_path"])), where)
                    out.append(("mask", frame_index(m.get("image_path"), frame_paths, resolve), ORDER[i % 4],
                                select_mask(arr, m.get("object_ids"), where)))
        dual = ann.get("dual_bbox")
        if dual and "bbox" in kind:
            src = frame_index(dual.get("source_image"), frame_paths, resolve)
            tgt = frame_index(dual.get("target_image"), frame_paths, resolve)
            if dual.get("source_bbox"):
                out.append(("bbox", src, "red", dual["source_bbox"]))
            for j, tb in enumerate(dual.get("target_bboxes") or []):
                out.append(("bbox", tgt, ORDER[(j + 1) % 4], tb))
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise SpatialctlError(f"{where}: unreadable annotations ({type(e).__name__}: {e})") from None
    position = {orig: k for k, orig in enumerate(sampled)}
    marks = []
    for what, orig, color, data in out:
        nearest = orig if orig in position else min(sampled, key=lambda s: abs(s - orig))
        marks.append({"kind": what, "pos": position[nearest], "rgb": _rgb(color), "data": data})
    return marks


def _point(data, width: int, height: int):
    if isinstance(data, (list, tuple)) and len(data) == 1 and isinstance(data[0], (list, tuple, np.ndarray)):
        data = data[0]
    if not (isinstance(data, (list, tuple, np.ndarray)) and len(data) == 2):
        return None
    y, x = float(data[0]), float(data[1])
    return (x, y) if 0 <= x < width and 0 <= y < height else None


def _box(data, width: int, height: int):
    if isinstance(data, dict):
        if all(k in data for k in ("x1", "y1", "x2", "y2")):
            x1, y1, x2, y2 = (float(data[k]) for k in ("x1", "y1", "x2", "y2"))
        elif all(k in data for k in ("x", "y", "w", "h")):
            x, y, w, h = (float(data[k]) for k in ("x", "y", "w", "h"))
            x1, y1, x2, y2 = x, y, x + w, y + h
        else:
            return None
    elif isinstance(data, (list, tuple, np.ndarray)):
        flat = np.asarray(data, dtype=float).ravel()
        if flat.size != 4:
            return None
        x1, y1, x2, y2 = flat.tolist()
        x1, x2 = min(x1, x2), max(x1, x2)
        y1, y2 = min(y1, y2), max(y1, y2)
    else:
        return None
    clip = lambda v, hi: max(0.0, min(v, hi - 1))  # noqa: E731
    return clip(x1, width), clip(y1, height), clip(x2, width), clip(y2, height)


def draw(images: list, marks: list[dict]) -> list:
    """PIL images with the marks drawn: points and boxes in order, then masks."""
    from PIL import Image, ImageDraw

    out = []
    for k, img in enumerate(images):
        mine = [m for m in marks if m["pos"] == k]
        if not mine:
            out.append(img)
            continue
        img = img.copy()
        pen = ImageDraw.Draw(img)
        w, h = img.size
        for m in mine:
            if m["kind"] == "point" and (xy := _point(m["data"], w, h)) is not None:
                r = max(8, int(0.014 * min(w, h)))
                pen.ellipse((xy[0] - r, xy[1] - r, xy[0] + r, xy[1] + r), fill=m["rgb"], outline=m["rgb"], width=2)
            elif m["kind"] == "bbox" and (box := _box(m["data"], w, h)) is not None:
                x1, y1, x2, y2 = box
                if x1 < w and y1 < h and x2 > 0 and y2 > 0:
                    pen.rectangle(box, outline=m["rgb"], width=max(2, int(0.004 * min(w, h))))
        for m in mine:
            if m["kind"] == "mask" and m["data"].any():
                mask = m["data"]
                if mask.shape[:2] != (h, w):
                    mask = np.asarray(Image.fromarray(mask.astype(np.uint8) * 255).resize((w, h), Image.NEAREST)) > 0
                pixels = np.array(img)
                pixels[mask] = m["rgb"]
                img = Image.fromarray(pixels)
        out.append(img)
    return out


def fit_longest(img, max_size: int):
    """``resize_image``: the longest side to `max_size` (LANCZOS, the other side truncated) when larger."""
    from PIL import Image

    w, h = img.size
    if max(w, h) <= max_size:
        return img
    size = (int(w * (max_size / h)), max_size) if h > w else (max_size, int(h * (max_size / w)))
    return img.resize(size, Image.Resampling.LANCZOS)
