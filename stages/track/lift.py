"""3D lifting: per object and frame, world centroid, boxes and velocity from the pointmap under the mask.

What the centroid estimates. The pointmap only sees the visible surface, so the median of the points under a mask
sits on the surface, biased toward the camera by up to half the object's depth. We estimate the centre of the
object's gravity-aligned bounding box instead (the synth truth's centroid, and what QA means by "where it is"):

- Points: inside the mask (optionally eroded), valid depth, confidence at or above a per-object quantile, away from depth edges
  (a 4-neighbour depth jump larger than ``edge_rel`` of the depth), then per-axis percentile fences.
- Support: an object's hidden underside reaches the surface it stands on (the floor or table seen just below its
  mask), when the gap is small next to its height; from above, a sphere never shows its lowest point.
- Static objects: the surface points of every visible frame are pooled in world coordinates; as the camera moves,
  the pool covers the sides the object shows, and the box from the pool's extents is its bounding volume. One box,
  and its centre as the centroid, are reported for all visible frames.
- Moving objects: per frame, the extent along each world axis on the camera's side is exact (the nearest surface
  is visible) while the far side is hidden. The object's size along each axis is a high percentile of its visible
  extents over frames (a rigid object shows its full extent in some frames); each frame's box is the visible extent
  completed to that size on the side away from the camera, and the centroid is the centre of that axis-aligned box
  (one frame's footprint fixes the yaw too loosely for the oriented box's centre).

Sides never seen in any frame cannot be measured; they are completed only by the rules above.

Boxes: ``aabb`` in world axes; ``box`` gravity-aligned (yaw about ``world_up``), yaw from the minimum-area rectangle
of the horizontal footprint (rotating calipers on its convex hull; PCA would tilt on the L-shaped footprint two
visible faces make). Velocity: central differences of centroids smoothed over a few frames, against timestamps.
Moving: the completed centroids wander (95th percentile distance from their median) further than a fraction of
both the scene's depth and the object's size.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from spatialctl.camera import gravity_basis


@dataclass
class LiftConfig:
    conf_quantile: float = 0.1  # drop the least confident 10% of an object's pixels
    min_conf: float = 0.0  # and anything below this absolute confidence
    # Mask erosion in pixels. Off by default: a mask that bleeds past an object onto what lies behind it is caught
    # by the depth-edge test, and a pixel of erosion shrinks a 30-pixel object's extents by several percent.
    erode: int = 0
    edge_rel: float = 0.1  # a depth jump to a 4-neighbour above 10% of the depth marks an edge pixel
    outlier_k: float = 1.0  # per-axis fences at k times the 5-95% range beyond it
    extent_pct: float = 0.2  # robust extents: percentiles [p, 100 - p]
    support_gap: float = 0.35  # snap the bottom to the support below when the gap is under 35% of the height
    min_points: int = 8
    max_pool_points: int = 4000  # per frame: subsample for extents and a static object's pool
    size_pct: float = 95.0  # moving objects: size = this percentile of visible extents over frames
    smooth_window: int = 5  # frames, centred moving average of centroids before differencing
    moving_rel_scene: float = 0.02  # moving when the centroid wanders more than 2% of the scene depth ...
    moving_rel_size: float = 0.25  # ... and more than a quarter of the object's size
    # Amodal completion: a sphere or upright cylinder fitted to the visible surface replaces the visible extents
    # when its points lie within this RMS distance of the surface (fraction of the radius) ...
    primitive_rms: float = 0.03
    # ... and its diameter matches the widest horizontal span of the points within this fraction.
    primitive_span: float = 0.1


def erode(mask: np.ndarray, radius: int) -> np.ndarray:
    """4-neighbour binary erosion, ``radius`` times (image borders count as outside)."""
    out = mask.copy()
    for _ in range(radius):
        m = out
        out = m.copy()
        out[1:, :] &= m[:-1, :]
        out[:-1, :] &= m[1:, :]
        out[:, 1:] &= m[:, :-1]
        out[:, :-1] &= m[:, 1:]
        out[0, :] = out[-1, :] = False
        out[:, 0] = out[:, -1] = False
    return out


def depth_edges(depth: np.ndarray, edge_rel: float) -> np.ndarray:
    """Pixels whose depth differs from a 4-neighbour by more than ``edge_rel`` of their depth."""
    jump = np.zeros(depth.shape, dtype=np.float32)
    dy = np.abs(np.diff(depth, axis=0))
    dx = np.abs(np.diff(depth, axis=1))
    jump[1:, :] = np.maximum(jump[1:, :], dy)
    jump[:-1, :] = np.maximum(jump[:-1, :], dy)
    jump[:, 1:] = np.maximum(jump[:, 1:], dx)
    jump[:, :-1] = np.maximum(jump[:, :-1], dx)
    return jump > edge_rel * np.maximum(depth, 1e-12)


SUPPORT_BAND = 3  # rows below a mask that show what the object stands on


def support_height(mask, pointmap, good, up, lowest, band: int = SUPPORT_BAND) -> float:
    """Up-coordinate of the surface just below the mask in the image (the floor or table an object stands on):
    the median over pixels 1..band rows below the mask that lie below the object's lowest point. NaN if none."""
    below = np.zeros_like(mask)
    for k in range(1, band + 1):
        below[k:] |= mask[:-k]
    below &= ~mask & good
    if not below.any():
        return float("nan")
    heights = pointmap[below].astype(np.float64) @ up
    heights = heights[heights <= lowest + 1e-6 + 0.02 * abs(lowest)]
    return float(np.median(heights)) if len(heights) else float("nan")


def snap_to_support(lo_up: float, hi_up: float, support: float, max_gap: float, width: float = 0.0) -> float:
    """The hidden underside of an object resting on a surface reaches that surface: lower ``lo_up`` to the support
    when the gap is small next to the object's visible height or width (a sphere's lowest visible point from
    above, an eroded edge)."""
    if np.isfinite(support) and support <= lo_up and lo_up - support <= max_gap * max(hi_up - lo_up, width, 1e-12):
        return support
    return lo_up


def object_points(mask, pointmap, depth, conf, good, cfg: LiftConfig) -> np.ndarray:
    """World points under one mask that pass the confidence, edge and outlier tests, (P, 3) float64."""
    sel = erode(mask, cfg.erode) & good if cfg.erode > 0 else mask & good
    if sel.sum() < cfg.min_points:  # thin or tiny objects: no erosion, but still no invalid depth
        sel = mask & (depth > 0)
    if not sel.any():
        return np.zeros((0, 3))
    c = conf[sel]
    keep = c >= max(cfg.min_conf, float(np.quantile(c, cfg.conf_quantile)))
    pts = pointmap[sel][keep].astype(np.float64)
    return robust_inliers(pts, cfg.outlier_k)


def robust_inliers(pts: np.ndarray, k: float) -> np.ndarray:
    """Drop stray points (mask leaks, flying pixels) outside [q5 - k*r, q95 + k*r] per axis, r = q95 - q5.

    Percentile fences rather than a median/MAD gate: an object seen from above is mostly its top face, so the
    MAD of its heights is tiny and a MAD gate would cut away its sides."""
    if len(pts) < 8:
        return pts
    lo, hi = np.percentile(pts, [5.0, 95.0], axis=0)
    r = np.maximum(hi - lo, 1e-9)
    return pts[((pts >= lo - k * r) & (pts <= hi + k * r)).all(axis=1)]


def extents(values: np.ndarray, pct: float) -> tuple[np.ndarray, np.ndarray]:
    lo, hi = np.percentile(values, [pct, 100.0 - pct], axis=0)
    return lo, hi


def footprint_yaw(h: np.ndarray) -> float:
    """Yaw (rad, about up, from e1) of the minimum-area rectangle of 2D points, within [-pi/2, pi/2).

    The minimum-area rectangle has a side along an edge of the convex hull (rotating calipers), so only the hull's
    edge directions are candidates. PCA is the fallback for degenerate (collinear) footprints; PCA alone would tilt
    on the L-shaped footprint that two visible faces make."""
    from scipy.spatial import ConvexHull, QhullError  # here: scipy's import would delay `track`'s preflight

    if len(h) < 3:
        return 0.0
    centred = h[:: max(1, len(h) // 400)]  # the hull of a subsample: a hundred vertices or so
    centred = centred - centred.mean(axis=0)
    try:
        hull = centred[ConvexHull(centred).vertices]
    except QhullError:
        _, vecs = np.linalg.eigh(centred.T @ centred)
        return float((np.arctan2(vecs[1, -1], vecs[0, -1]) + np.pi / 2) % np.pi - np.pi / 2)
    edges = np.roll(hull, -1, axis=0) - hull
    angles = np.arctan2(edges[:, 1], edges[:, 0])
    c, s = np.cos(angles), np.sin(angles)
    x = hull[:, :1] * c + hull[:, 1:] * s  # (V, E): hull vertices along each candidate box x
    y = -hull[:, :1] * s + hull[:, 1:] * c
    area = (x.max(0) - x.min(0)) * (y.max(0) - y.min(0))
    return float((angles[np.argmin(area)] + np.pi / 2) % np.pi - np.pi / 2)


def _box_frame(basis: np.ndarray, yaw: float) -> np.ndarray:
    """Rows: box x, box y, up in world coordinates."""
    c, s = np.cos(yaw), np.sin(yaw)
    return np.stack([c * basis[0] + s * basis[1], -s * basis[0] + c * basis[1], basis[2]])


def fit_boxes(pts: np.ndarray, basis: np.ndarray, pct: float):
    """(aabb lo, aabb hi) in world axes and (box frame rows, lo, hi) along the box axes."""
    a_lo, a_hi = extents(pts, pct)
    yaw = footprint_yaw(pts @ basis[:2].T)
    frame = _box_frame(basis, yaw)
    b_lo, b_hi = extents(pts @ frame.T, pct)
    return a_lo, a_hi, yaw, frame, b_lo, b_hi


def box_vector(frame: np.ndarray, yaw: float, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Schema box (centre xyz, size x/y/up, yaw) from extents along the box frame's axes."""
    centre = frame.T @ ((lo + hi) / 2)
    return np.concatenate([centre, hi - lo, [yaw]])


def complete_extents(lo, hi, size, cam):
    """Grow visible extents [lo, hi] to ``size``: on the side away from the camera coordinate ``cam`` when the
    camera is outside the slab (the near side is then exact), evenly on both sides when it is inside (both extremes
    then lie beyond the silhouette)."""
    lo, hi = lo.copy(), hi.copy()
    short = (hi - lo) < size
    below = short & (cam < lo)  # camera on the low side: the hidden far side is high
    above = short & (cam > hi)
    inside = short & ~below & ~above
    hi[below] = lo[below] + size[below]
    lo[above] = hi[above] - size[above]
    grow = (size - (hi - lo)) / 2
    lo[inside] -= grow[inside]
    hi[inside] += grow[inside]
    return lo, hi


def smooth(values: np.ndarray, visible: np.ndarray, window: int) -> np.ndarray:
    """Centred moving average within each contiguous visible run; the window narrows symmetrically at a run's ends
    so a straight path stays straight."""
    out = np.full_like(values, np.nan)
    for start, stop in runs(visible):
        for t in range(start, stop):
            half = min(window // 2, t - start, stop - 1 - t)
            out[t] = values[t - half:t + half + 1].mean(axis=0)
    return out


def runs(flags: np.ndarray) -> list[tuple[int, int]]:
    """[start, stop) of each run of True."""
    padded = np.concatenate([[False], flags.astype(bool), [False]])
    edges = np.flatnonzero(padded[1:] != padded[:-1])
    return list(zip(edges[::2].tolist(), edges[1::2].tolist(), strict=True))


def velocities(centroids: np.ndarray, visible: np.ndarray, timestamps: np.ndarray, window: int) -> np.ndarray:
    smoothed = smooth(centroids, visible, window)
    out = np.full_like(centroids, np.nan)
    for start, stop in runs(visible):
        if stop - start >= 2:
            out[start:stop] = np.gradient(smoothed[start:stop], timestamps[start:stop], axis=0)
    return out


def fit_sphere(pts: np.ndarray, iters: int = 10) -> tuple[np.ndarray, float, float]:
    """Least-squares sphere through points: (centre, radius, RMS distance / radius). An algebraic fit starts
    Gauss-Newton on the geometric distances (the algebraic fit alone is biased on a cap)."""
    mean = pts.mean(axis=0)
    c, r = _algebraic_ball(pts - mean)
    return (*_refine_ball(pts - mean, c, r, iters, mean),)


def fit_circle(xy: np.ndarray, iters: int = 10) -> tuple[np.ndarray, float, float]:
    """Least-squares circle through 2D points, as :func:`fit_sphere`."""
    mean = xy.mean(axis=0)
    c, r = _algebraic_ball(xy - mean)
    return (*_refine_ball(xy - mean, c, r, iters, mean),)


def _algebraic_ball(p: np.ndarray) -> tuple[np.ndarray, float]:
    a = np.concatenate([2.0 * p, np.ones((len(p), 1))], axis=1)
    sol = np.linalg.lstsq(a, (p * p).sum(axis=1), rcond=None)[0]
    c = sol[:-1]
    return c, float(np.sqrt(max(sol[-1] + c @ c, 1e-24)))


def _refine_ball(p, c, r, iters, mean):
    for _ in range(iters):
        d = p - c
        dist = np.maximum(np.linalg.norm(d, axis=1), 1e-12)
        jac = np.concatenate([-d / dist[:, None], -np.ones((len(p), 1))], axis=1)
        try:  # normal equations: a (D+1) x (D+1) system, however many points
            step = np.linalg.solve(jac.T @ jac, -(jac.T @ (dist - r)))
        except np.linalg.LinAlgError:
            break
        c, r = c + step[:-1], r + float(step[-1])
        if np.linalg.norm(step) < 1e-7 * max(abs(r), 1e-12):
            break
    rms = float(np.sqrt(np.mean((np.linalg.norm(p - c, axis=1) - r) ** 2)))
    return c + mean, abs(r), rms / max(abs(r), 1e-12)


def horizontal_span(h: np.ndarray, directions: int = 90) -> float:
    """Widest extent of a 2D point set over ``directions`` evenly spaced directions (its diameter, to within
    1 - cos(pi / 2 directions), 0.015% for 90)."""
    a = np.linspace(0.0, np.pi, directions, endpoint=False)
    proj = h @ np.stack([np.cos(a), np.sin(a)])
    return float(np.max(proj.max(axis=0) - proj.min(axis=0))) if len(h) else 0.0


@dataclass
class Primitive:
    """A closed shape fitted to an object's visible surface: its gravity-frame centre (e1, e2, up) and half sizes
    (horizontal radius, up)."""

    kind: str  # "sphere" | "cylinder"
    centre: np.ndarray  # (3,) in gravity-frame coordinates
    radius: float
    half_up: float
    rms: float  # RMS distance of the points to the surface / radius


def fit_primitive(pts: np.ndarray, basis: np.ndarray, bottom: float, cfg: LiftConfig, kinds=("sphere", "cylinder")):
    """The best of a sphere and an upright cylinder fitted to world points, or None when neither explains them.

    The points of a face seen from one side only fix the object when a closed shape fits them: a sphere's cap gives
    its centre, the curved side of an upright cylinder its axis. A fit counts when the points lie on its surface
    (``primitive_rms``) and its diameter is the points' widest horizontal span (``primitive_span``; a flat face
    fits a huge sphere closely, but not its span). ``bottom`` is the up-coordinate the cylinder reaches (its
    support, when snapped)."""
    found = fit_primitives(pts, basis, bottom, cfg, kinds)
    return min(found.values(), key=lambda p: p.rms) if found else None


def fit_primitives(pts: np.ndarray, basis: np.ndarray, bottom: float, cfg: LiftConfig,
                   kinds=("sphere", "cylinder")) -> dict[str, Primitive]:
    """Every primitive of ``kinds`` that explains the points (see :func:`fit_primitive`), by kind."""
    if len(pts) < 20:
        return {}
    pts = pts[:: max(1, len(pts) // 2000)]  # a fit needs no more; keeps the cost flat
    g = pts @ basis.T
    span = horizontal_span(g[:, :2])
    found = {}
    if "sphere" in kinds:
        c, r, rms = fit_sphere(g)
        if rms <= cfg.primitive_rms and abs(2 * r - span) <= cfg.primitive_span * 2 * r:
            found["sphere"] = Primitive("sphere", c, r, r, rms)
    top = float(g[:, 2].max())
    side = g[:, 2] < top - 0.05 * (top - bottom)  # the top cap lies inside the circle: fit the side only
    if "cylinder" in kinds and side.sum() >= 20 and top > bottom:
        c2, r, rms = fit_circle(g[side, :2])
        if rms <= cfg.primitive_rms and abs(2 * r - span) <= cfg.primitive_span * 2 * r:
            found["cylinder"] = Primitive("cylinder", np.array([c2[0], c2[1], (top + bottom) / 2]), r,
                                          (top - bottom) / 2, rms)
    return found


def primitive_boxes(prim: Primitive, basis: np.ndarray, frame: np.ndarray, yaw: float):
    """(centre in world, aabb (6,), schema box (7,)) of a fitted primitive; its box keeps the footprint's yaw (a round
    footprint has none of its own)."""
    centre = basis.T @ prim.centre
    up = basis[2]
    # An upright cylinder's extent along world axis k: its axis' share of the half height plus the disc's.
    half = np.full(3, prim.radius) if prim.kind == "sphere" else \
        np.abs(up) * prim.half_up + prim.radius * np.sqrt(np.clip(1.0 - up ** 2, 0.0, 1.0))
    size = np.array([2 * prim.radius, 2 * prim.radius, 2 * prim.half_up])
    return centre, np.concatenate([centre - half, centre + half]), np.concatenate([centre, size, [yaw]])


@dataclass
class _Obs:
    """One object in one frame."""

    points: np.ndarray  # (P, 3) kept surface points, subsampled
    a_lo: np.ndarray  # visible extents along world axes
    a_hi: np.ndarray
    yaw: float
    frame: np.ndarray  # rows: box x, box y, up
    b_lo: np.ndarray  # visible extents along the box axes
    b_hi: np.ndarray
    support: float  # up-coordinate of what it stands on, NaN if unknown
    truncated: bool  # cut by the image border or by a nearer tracked object: extents may be short anywhere


def truncated(mask: np.ndarray, others: np.ndarray, depth: np.ndarray, crop) -> bool:
    """Whether the mask touches the image border or borders a nearer object's mask."""
    h, w = mask.shape
    rows, cols = crop
    if rows.start == 0 or cols.start == 0 or rows.stop >= h or cols.stop >= w:
        m = mask[rows, cols]
        if (rows.start == 0 and m[0].any()) or (cols.start == 0 and m[:, 0].any()) or \
                (rows.stop >= h and m[-1].any()) or (cols.stop >= w and m[:, -1].any()):
            return True
    m, o, d = mask[crop], others[crop], depth[crop]
    ring = np.zeros_like(m)
    ring[1:] |= m[:-1]
    ring[:-1] |= m[1:]
    ring[:, 1:] |= m[:, :-1]
    ring[:, :-1] |= m[:, 1:]
    ring &= ~m & o & (d > 0)
    return bool(ring.any() and (d[ring] < np.median(d[m & (d > 0)]) if (m & (d > 0)).any() else False).any())


def lift_tracks(masks, depth, conf, pointmaps, cam2world, timestamps, world_up, cfg: LiftConfig | None = None,
                scene_scale: float | None = None) -> dict[str, np.ndarray]:
    """Lift instance masks to world tracks.

    masks: (O, N, H, W) bool, or any object where ``masks[:, n]`` gives frame n's (O, H, W) masks.
    depth, conf: (N, H, W); pointmaps: (N, H, W, 3); frame-indexable (numpy or zarr). cam2world: (N, 4, 4).
    Returns ``visible`` (O, N), ``centroid`` (O, N, 3), ``box`` (O, N, 7), ``aabb`` (O, N, 6), ``velocity``
    (O, N, 3), ``moving`` (O,), as float32/bool with NaN where not visible, and ``completion``: per object how its
    hidden side was completed ("sphere", "cylinder": a fitted primitive; "extent": visible extents grown to the
    size seen over frames; "none": never visible).
    """
    cfg = cfg or LiftConfig()
    n_obj, n_frames = int(masks.shape[0]), int(masks.shape[1])
    basis = gravity_basis(world_up)
    cam_pos = np.asarray(cam2world, dtype=np.float64)[:, :3, 3]
    per_frame: list[list[_Obs | None]] = [[None] * n_frames for _ in range(n_obj)]
    depth_samples = []
    for n in range(n_frames):
        m = np.asarray(masks[:, n]).astype(bool)
        if not m.any():
            continue
        d = np.asarray(depth[n], dtype=np.float32)
        c = np.asarray(conf[n], dtype=np.float32)
        p = np.asarray(pointmaps[n])
        valid = (d > 0) & (c > 0)
        depth_samples.append(d[::8, ::8][valid[::8, ::8]])
        pad = cfg.erode + SUPPORT_BAND + 1
        present = [o for o in range(n_obj) if m[o].any()]
        for o in present:
            rows, cols = np.flatnonzero(m[o].any(axis=1)), np.flatnonzero(m[o].any(axis=0))
            # Work on the mask's bounding box (plus what erosion and the support band look at): cost follows
            # the object's size, not the frame's.
            crop = (slice(max(rows[0] - pad, 0), rows[-1] + pad + 1), slice(max(cols[0] - pad, 0), cols[-1] + pad + 1))
            mo, dc, pc = m[o][crop], d[crop], p[crop]
            good = valid[crop] & ~depth_edges(dc, cfg.edge_rel)
            pts = object_points(mo, pc, dc, c[crop], good, cfg)
            if len(pts) < 3:
                continue
            pts = pts[:: max(1, len(pts) // cfg.max_pool_points)]  # extents need no more; keeps cost flat
            support = support_height(mo, pc, good, basis[2], float(np.min(pts @ basis[2])))
            others = np.zeros_like(m[o])
            for q in present:
                if q != o:
                    others[crop] |= m[q][crop]
            per_frame[o][n] = _Obs(pts, *fit_boxes(pts, basis, cfg.extent_pct), support,
                                   truncated(m[o], others, d, crop))
    if scene_scale is None:
        samples = np.concatenate(depth_samples) if depth_samples else np.zeros(0)
        scene_scale = float(np.median(samples)) if len(samples) else 1.0

    out = {
        "visible": np.zeros((n_obj, n_frames), bool),
        "centroid": np.full((n_obj, n_frames, 3), np.nan),
        "box": np.full((n_obj, n_frames, 7), np.nan),
        "aabb": np.full((n_obj, n_frames, 6), np.nan),
        "velocity": np.full((n_obj, n_frames, 3), np.nan),
        "moving": np.zeros(n_obj, bool),
        "completion": ["none"] * n_obj,
    }
    ts = np.asarray(timestamps, dtype=np.float64)
    for o in range(n_obj):
        frames = [n for n in range(n_frames) if per_frame[o][n] is not None]
        if not frames:
            continue
        out["visible"][o, frames] = True
        _lift_object(o, frames, [per_frame[o][n] for n in frames], cam_pos, basis, cfg, scene_scale, out)
        vis = out["visible"][o]
        out["velocity"][o] = velocities(out["centroid"][o], vis, ts, cfg.smooth_window)
        if not out["moving"][o]:
            out["velocity"][o][vis] = 0.0
    return {k: (v.astype(np.float32) if isinstance(v, np.ndarray) and v.dtype == np.float64 else v)
            for k, v in out.items()}


def _lift_object(o: int, frames: list[int], obs: list[_Obs], cam_pos, basis, cfg: LiftConfig, scene_scale: float,
                 out: dict) -> None:
    up_axis = _up_axis(basis[2])
    for ob in obs:  # bottoms onto their support, before sizes are taken from the extents
        _snap(ob, up_axis, cfg.support_gap)
    whole = [i for i, ob in enumerate(obs) if not ob.truncated] or list(range(len(obs)))
    # Per-frame boxes completed to the object's size on the hidden side (right for a moving rigid object); the
    # size comes from frames that show the object whole.
    a_size = np.percentile([obs[i].a_hi - obs[i].a_lo for i in whole], cfg.size_pct, axis=0)
    b_ext = np.sort([(obs[i].b_hi - obs[i].b_lo)[:2] for i in whole], axis=1)
    b_small, b_large = np.percentile(b_ext, cfg.size_pct, axis=0)
    b_up = np.percentile([(obs[i].b_hi - obs[i].b_lo)[2] for i in whole], cfg.size_pct)
    for n, ob in zip(frames, obs, strict=True):
        lo, hi = complete_extents(ob.a_lo, ob.a_hi, a_size, cam_pos[n])
        out["aabb"][o, n] = np.concatenate([lo, hi])
        own = ob.b_hi - ob.b_lo
        b_size = np.array([b_large, b_small, b_up]) if own[0] >= own[1] else np.array([b_small, b_large, b_up])
        b_lo, b_hi = complete_extents(ob.b_lo, ob.b_hi, b_size, ob.frame @ cam_pos[n])
        out["box"][o, n] = box_vector(ob.frame, ob.yaw, b_lo, b_hi)
        out["centroid"][o, n] = (lo + hi) / 2  # one frame's yaw is too unsure for the box centre
    # Amodal completion: where the frames showing the object whole fit a sphere or an upright cylinder, the fitted
    # shape's centre and box replace the visible extents completed to a size (which miss a side no frame shows).
    kind, fits = _frame_primitives(obs, whole, basis, cfg)
    out["completion"][o] = kind or "extent"
    for i, prim in fits.items():
        n = frames[i]
        out["centroid"][o, n], out["aabb"][o, n], out["box"][o, n] = primitive_boxes(prim, basis, obs[i].frame,
                                                                                     obs[i].yaw)
    # Moving or static, from how far the completed centroids wander around their median: over the frames that
    # show the object whole when they are enough and spread over its time in view, else over all.
    trusted = [frames[i] for i in whole]
    if len(trusted) < 3 or trusted[-1] - trusted[0] < (frames[-1] - frames[0]) / 2:
        trusted = frames
    c = out["centroid"][o, trusted]
    wander = float(np.percentile(np.linalg.norm(c - np.median(c, axis=0), axis=1), 95))
    moving = wander > max(cfg.moving_rel_scene * scene_scale, cfg.moving_rel_size * float(np.max(a_size)))
    out["moving"][o] = moving
    # Frames where the object is cut off (image border, a nearer object): the visible extent along an axis may be
    # short on either side, not just the hidden far side. Between frames that show it whole, the centroid is
    # interpolated (objects move smoothly over a short gap); before the first or after the last, each axis keeps
    # whichever of its own estimate or the centres anchored on its low or high visible side lies nearest the
    # motion extrapolated from the nearest whole frames (extrapolating alone runs past an object that stops).
    kept = np.array([frames[i] for i in whole])
    if moving and len(kept) < len(frames):
        for n, ob in zip(frames, obs, strict=True):
            if not ob.truncated:
                continue
            if kept[0] < n < kept[-1]:
                j = int(np.searchsorted(kept, n))
                before, after = kept[j - 1], kept[j]
                w = (n - before) / (after - before)
                out["centroid"][o, n] = (1 - w) * out["centroid"][o, before] + w * out["centroid"][o, after]
            else:
                near = kept[np.argsort(np.abs(kept - n))[:4]]
                if len(near) >= 2:
                    coef = np.polyfit(near.astype(np.float64), out["centroid"][o, near], 1)
                    predicted = coef[0] * n + coef[1]
                else:
                    predicted = out["centroid"][o, near[0]]
                out["centroid"][o, n] = _anchor_nearest(ob.a_lo, ob.a_hi, a_size, predicted, out["centroid"][o, n])
            # Its own footprint is cut too: the box keeps the object's size and the nearest whole frame's yaw.
            ref = int(kept[np.argmin(np.abs(kept - n))])
            out["box"][o, n] = out["box"][o, ref]
            out["box"][o, n, :3] = out["box"][o, ref, :3] + out["centroid"][o, n] - out["centroid"][o, ref]
    if moving:
        return
    # Static: pool the surface points of every visible frame; the pooled extents are the bounding volume.
    pool = robust_inliers(np.concatenate([ob.points for ob in obs]), cfg.outlier_k)
    lo, hi, yaw, frame, b_lo, b_hi = fit_boxes(pool, basis, cfg.extent_pct)
    supports = np.array([ob.support for ob in obs])
    support = float(np.nanmedian(supports)) if np.isfinite(supports).any() else np.nan
    b_lo[2] = snap_to_support(b_lo[2], b_hi[2], support, cfg.support_gap, _horizontal(b_lo, b_hi))
    if up_axis is not None and up_axis[1] > 0:
        k = up_axis[0]
        lo[k] = snap_to_support(lo[k], hi[k], support, cfg.support_gap, _horizontal(b_lo, b_hi))
    # Sides no frame saw (a static camera) are completed with the per-frame size estimate, or the pool's primitive.
    lo, hi = complete_extents(lo, hi, a_size, np.mean(cam_pos[frames], axis=0))
    prim = fit_primitives(pool, basis, b_lo[2], cfg, (kind,)).get(kind) if kind else None
    if prim is not None:
        centre, aabb, box = primitive_boxes(prim, basis, frame, yaw)
        out["aabb"][o, frames], out["box"][o, frames], out["centroid"][o, frames] = aabb, box, centre
        return
    out["completion"][o] = "extent"
    out["aabb"][o, frames] = np.concatenate([lo, hi])
    out["box"][o, frames] = box_vector(frame, yaw, b_lo, b_hi)
    out["centroid"][o, frames] = out["box"][o, frames[0], :3]


def _frame_primitives(obs: list[_Obs], whole: list[int], basis, cfg: LiftConfig) -> tuple[str | None, dict]:
    """The primitive kind that at least half of the whole frames fit (the most often fitted; ties: the closer
    fit), and its fit per frame that has one."""
    per_frame = {i: fit_primitives(obs[i].points, basis, obs[i].b_lo[2], cfg) for i in whole}
    counts = {k: [f[k].rms for f in per_frame.values() if k in f] for k in ("sphere", "cylinder")}
    counts = {k: v for k, v in counts.items() if 2 * len(v) >= len(whole) and v}
    if not counts:
        return None, {}
    kind = max(counts, key=lambda k: (len(counts[k]), -float(np.median(counts[k]))))
    return kind, {i: f[kind] for i, f in per_frame.items() if kind in f}


def _anchor_nearest(lo, hi, size, predicted, own) -> np.ndarray:
    """Per axis, of the frame's own estimate and the centres anchored on its low or its high visible side, the one
    nearest the prediction."""
    cands = np.stack([own, lo + size / 2, hi - size / 2])
    pick = np.argmin(np.abs(cands - predicted), axis=0)
    return cands[pick, np.arange(3)]


def _horizontal(lo: np.ndarray, hi: np.ndarray) -> float:
    return float(np.max(hi[:2] - lo[:2]))


def _up_axis(up: np.ndarray):
    """(world axis, sign) when world_up is a coordinate axis (then the aabb's bottom can snap too), else None."""
    k = int(np.argmax(np.abs(up)))
    return (k, float(np.sign(up[k]))) if abs(up[k]) > 0.999 else None


def _snap(ob: _Obs, up_axis, max_gap: float) -> None:
    width = _horizontal(ob.b_lo, ob.b_hi)
    ob.b_lo = ob.b_lo.copy()
    ob.b_lo[2] = snap_to_support(ob.b_lo[2], ob.b_hi[2], ob.support, max_gap, width)
    if up_axis is not None and up_axis[1] > 0:
        ob.a_lo = ob.a_lo.copy()
        k = up_axis[0]
        ob.a_lo[k] = snap_to_support(ob.a_lo[k], ob.a_hi[k], ob.support, max_gap, width)
