"""3D box overlap: axis-aligned boxes (schema ``aabb``) and gravity-aligned boxes (schema ``box``, world up = +z).

A gravity-aligned box is its footprint (a rectangle yawed about z) swept over a height range, so the volume of
the intersection of two is the area where their footprints overlap (convex polygon clipping) times the overlap of
their height ranges.
"""

from __future__ import annotations

import numpy as np


def aabb_iou(a, b) -> float:
    """IoU of two axis-aligned boxes (min xyz, max xyz)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    inter = np.prod(np.clip(np.minimum(a[3:], b[3:]) - np.maximum(a[:3], b[:3]), 0.0, None))
    union = np.prod(a[3:] - a[:3]) + np.prod(b[3:] - b[:3]) - inter
    return float(inter / union) if union > 0 else 0.0


def footprint(box) -> np.ndarray:
    """(4, 2) corners, counter-clockwise, of a schema box's footprint (centre xyz, size x/y/up, yaw)."""
    cx, cy, _, sx, sy, _, yaw = np.asarray(box, dtype=np.float64)
    local = np.array([[-sx, -sy], [sx, -sy], [sx, sy], [-sx, sy]]) / 2
    c, s = np.cos(yaw), np.sin(yaw)
    return local @ np.array([[c, s], [-s, c]]) + [cx, cy]


def polygon_area(poly: np.ndarray) -> float:
    if len(poly) < 3:
        return 0.0
    x, y = poly[:, 0], poly[:, 1]
    return float(0.5 * abs(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))


def clip_convex(subject: np.ndarray, clip: np.ndarray) -> np.ndarray:
    """Sutherland-Hodgman: the part of polygon ``subject`` inside the convex counter-clockwise polygon ``clip``."""
    out = subject
    for a, b in zip(clip, np.roll(clip, -1, axis=0), strict=True):
        if len(out) == 0:
            break
        edge = b - a
        side = edge[0] * (out[:, 1] - a[1]) - edge[1] * (out[:, 0] - a[0])  # >= 0: inside (left of the edge)
        kept = []
        for i in range(len(out)):
            j = (i + 1) % len(out)
            if side[i] >= 0:
                kept.append(out[i])
            if (side[i] >= 0) != (side[j] >= 0):
                t = side[i] / (side[i] - side[j])
                kept.append(out[i] + t * (out[j] - out[i]))
        out = np.array(kept).reshape(-1, 2)
    return out


def box_iou(a, b) -> float:
    """IoU of two gravity-aligned boxes (schema ``box``: centre xyz, size x/y/up, yaw about +z)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    area = polygon_area(clip_convex(footprint(a), footprint(b)))
    height = max(0.0, min(a[2] + a[5] / 2, b[2] + b[5] / 2) - max(a[2] - a[5] / 2, b[2] - b[5] / 2))
    inter = area * height
    union = np.prod(a[3:6]) + np.prod(b[3:6]) - inter
    return float(inter / union) if union > 0 else 0.0
