"""The report's pictures: frame thumbnails, mask overlays, annotated strips, depth colour maps, top-down maps."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from spatialctl.camera import gravity_basis
from spatialctl.visual import SceneView, object_colour

MASK_ALPHA = 0.45


def thumb_size(hw: tuple[int, int], longest: int) -> tuple[int, int]:
    """(width, height) with the longest side at most ``longest`` pixels (never enlarged)."""
    h, w = hw
    s = min(1.0, longest / max(h, w))
    return max(1, round(w * s)), max(1, round(h * s))


def save(image: Image.Image, path: Path, **kw) -> None:
    """Plain writes: the whole site is built aside and moved into place at the end (``report.run``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, **kw)


def resize_mask(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    return np.asarray(Image.fromarray(mask.astype(np.uint8) * 255).resize(size, Image.NEAREST)) > 127


def frame_thumbnail(rgb: np.ndarray, size: tuple[int, int]) -> Image.Image:
    return Image.fromarray(rgb).resize(size, Image.BILINEAR)


def mask_overlay(mask: np.ndarray, colour: tuple[int, int, int], size: tuple[int, int]) -> Image.Image:
    """RGBA: the object's colour, translucent inside its mask and opaque on its outline, clear elsewhere."""
    m = resize_mask(mask, size)
    edge = m & ~_erode(m)
    rgba = np.zeros((*m.shape, 4), np.uint8)
    rgba[..., :3] = colour
    rgba[..., 3] = np.where(edge, 255, np.where(m, int(255 * MASK_ALPHA), 0))
    return Image.fromarray(rgba, "RGBA")


def _erode(m: np.ndarray) -> np.ndarray:
    p = np.pad(m, 1, constant_values=False)
    return p[1:-1, 1:-1] & p[:-2, 1:-1] & p[2:, 1:-1] & p[1:-1, :-2] & p[1:-1, 2:]


def mask_anchor(mask: np.ndarray) -> tuple[float, float] | None:
    """Where a mark sits: the mask pixel nearest the mask's centroid (inside even for a ring), in (x, y)."""
    v, u = np.nonzero(mask)
    if not len(v):
        return None
    cy, cx = v.mean(), u.mean()
    i = int(np.argmin((v - cy) ** 2 + (u - cx) ** 2))
    return float(u[i]), float(v[i])


def mask_box(mask: np.ndarray) -> list[int] | None:
    v, u = np.nonzero(mask)
    return None if not len(v) else [int(u.min()), int(v.min()), int(u.max()) + 1, int(v.max()) + 1]


def annotated_frame(view: SceneView, f: int, size: tuple[int, int]) -> Image.Image:
    """A frame thumbnail with every tracked object's mask tinted in its colour and its id written on it."""
    base = frame_thumbnail(view.frame(f), size).convert("RGBA")
    masks = view.masks(f)
    for o in range(view.n_objects):
        if masks[o].any():
            base.alpha_composite(mask_overlay(masks[o], object_colour(o), size))
    draw = ImageDraw.Draw(base)
    font = ImageFont.load_default()
    sx, sy = size[0] / view.hw[1], size[1] / view.hw[0]
    for o in range(view.n_objects):
        a = mask_anchor(masks[o])
        if a is None:
            continue
        text = str(view.object_ids[o])
        x, y = a[0] * sx, a[1] * sy
        x0, y0, x1, y1 = draw.textbbox((x, y), text, font=font, anchor="mm")
        draw.rectangle((x0 - 2, y0 - 1, x1 + 2, y1 + 1), fill=(0, 0, 0, 200), outline=object_colour(o))
        draw.text((x, y), text, fill=(255, 255, 255, 255), font=font, anchor="mm")
    return base.convert("RGB")


def depth_range(view: SceneView, frames: list[int]) -> tuple[float, float]:
    vals = np.concatenate([d[d > 0] for d in (view.depth(f) for f in frames)] or [np.zeros(0)])
    if not len(vals):
        return 0.0, 1.0
    lo, hi = np.percentile(vals, [2, 98])
    return float(lo), float(max(hi, lo + 1e-9))


def depth_image(depth: np.ndarray, rng: tuple[float, float], size: tuple[int, int]) -> Image.Image:
    """Depth coloured with matplotlib's turbo over the scene's 2-98 percentile range; no surface is black."""
    from matplotlib import colormaps

    lo, hi = rng
    rgb = (colormaps["turbo"](np.clip((depth - lo) / (hi - lo), 0, 1))[..., :3] * 255).astype(np.uint8)
    rgb[depth <= 0] = 0
    return Image.fromarray(rgb).resize(size, Image.NEAREST)


def top_down_map(view: SceneView, path: Path) -> None:
    """Camera path and object trajectories seen from above (the floor plane of the store's world_up)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    e1, e2, _ = gravity_basis(view.world_up)
    plane = np.stack([e1, e2], axis=1)
    cams = view.cam2world[:, :3, 3] @ plane
    fig, ax = plt.subplots(figsize=(5, 5), dpi=80)
    ax.plot(cams[:, 0], cams[:, 1], "-", color="black", lw=1.5, label="camera")
    ax.plot(*cams[0], "o", color="black", ms=5)
    ax.plot(*cams[-1], "^", color="black", ms=6)
    for o in range(view.n_objects):
        c = view.centroid[o]
        c = c[np.isfinite(c).all(1)] @ plane
        if not len(c):
            continue
        colour = np.array(object_colour(o)) / 255
        ax.plot(c[:, 0], c[:, 1], "-" if len(c) > 1 else "s", color=colour, lw=2, ms=5)
        ax.plot(*c[-1], "o", color=colour, ms=4)
        ax.annotate(view.object_name(o), c[-1], fontsize=7, color=colour * 0.7, xytext=(3, 3),
                    textcoords="offset points")
    ax.set_aspect("equal", adjustable="datalim")
    ax.set_xlabel("e1 (world units)")
    ax.set_ylabel("e2 (world units)")
    ax.set_title("top-down: camera (black, o start, ^ end) and objects", fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")
    plt.close(fig)
