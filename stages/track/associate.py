"""Id association: one physical object keeps one id through occlusion, crossings and leaving the view.

Two uses. At a keyframe, fresh detections are matched to the masks the tracks already have in that frame
(``match_masks``): matched ones are the same object, the rest start tracks. After propagation, the SAM 2 tracklets
are run through ``Associator`` frame by frame: a tracklet that continues a track overlaps its last mask (mask IoU),
and one that re-appears after a gap lies where the track's 3D motion predicts (world centroid, constant velocity),
so a re-entering object rejoins its old id while a new object of the same label does not.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # annotations only: torch is imported where it is used, so the CLI starts fast
    pass

_NO = 1e6  # cost of a forbidden pairing


def mask_iou(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """IoU and intersection over the smaller mask, (A, B) each, for (A, H, W) and (B, H, W) bool masks."""
    import torch
    ta = torch.from_numpy(np.ascontiguousarray(a).reshape(len(a), -1)).float()
    tb = torch.from_numpy(np.ascontiguousarray(b).reshape(len(b), -1)).float()
    inter = ta @ tb.T
    area_a, area_b = ta.sum(1)[:, None], tb.sum(1)[None, :]
    union = area_a + area_b - inter
    iou = torch.where(union > 0, inter / union.clamp(min=1), torch.zeros_like(inter))
    small = torch.minimum(area_a, area_b)
    over_small = torch.where(small > 0, inter / small.clamp(min=1), torch.zeros_like(inter))
    return iou.numpy(), over_small.numpy()


def assign(cost: np.ndarray) -> list[tuple[int, int]]:
    """Minimum-cost one-to-one pairs whose cost is allowed."""
    from scipy.optimize import linear_sum_assignment  # here: scipy's import would delay `track`'s preflight

    if cost.size == 0:
        return []
    rows, cols = linear_sum_assignment(np.minimum(cost, _NO))
    return [(int(r), int(c)) for r, c in zip(rows, cols, strict=True) if cost[r, c] < _NO]


def match_masks(track_masks, det_masks, track_labels, det_labels, iou_min: float = 0.5,
                contain_min: float = 0.8) -> tuple[list[tuple[int, int]], list[int]]:
    """Keyframe matching: (track, detection) pairs and the detections that start new tracks.

    A detection of a known label that mostly lies inside a track's mask (or the reverse) is that object seen
    partly; it neither matches a second track nor starts a duplicate.
    """
    n_det = len(det_masks)
    if len(track_masks) == 0 or n_det == 0:
        return [], list(range(n_det))
    iou, over_small = mask_iou(np.asarray(track_masks), np.asarray(det_masks))
    same = np.array([[t == d for d in det_labels] for t in track_labels])
    cost = np.where(same & (iou >= iou_min), 1.0 - iou, _NO)
    pairs = assign(cost)
    matched = {d for _, d in pairs}
    covered = ((over_small >= contain_min) & same).any(axis=0)
    new = [d for d in range(n_det) if d not in matched and not covered[d]]
    return pairs, new


@dataclass
class AssociationConfig:
    iou_min: float = 0.3  # mask IoU with a track's last mask to continue it
    max_gap: int = 3  # frames a track may go unseen and still continue by IoU
    reid_dist: float = 0.75  # re-identify by 3D position within this many object sizes of the prediction
    velocity_slack: float = 0.5  # plus this fraction of the predicted travel (speed changes while unseen)
    velocity_span: int = 5  # frames back to estimate a track's velocity from


@dataclass
class _Track:
    id: int
    label: str
    last_frame: int
    last_mask: np.ndarray
    size: float
    history: list = field(default_factory=list)  # (frame, centroid)

    def predict(self, frame: int, span: int) -> tuple[np.ndarray, float] | None:
        if not self.history:
            return None
        f1, c1 = self.history[-1]
        older = [(f, c) for f, c in self.history if f1 - span <= f < f1]
        if not older:
            return c1, 0.0
        f0, c0 = older[0]
        v = (c1 - c0) / (f1 - f0)
        travel = v * (frame - f1)
        return c1 + travel, float(np.linalg.norm(travel))


class Associator:
    """Online id assignment over per-frame instance observations (masks, labels, optional world centroids)."""

    def __init__(self, config: AssociationConfig | None = None):
        self.config = config or AssociationConfig()
        self.tracks: list[_Track] = []

    def step(self, frame: int, masks: np.ndarray, labels: list[str], centroids: np.ndarray | None = None,
             sizes: np.ndarray | None = None) -> list[int]:
        """Ids for this frame's observations, in their order; unmatched observations get new ids."""
        cfg = self.config
        k = len(masks)
        if k == 0:
            return []
        masks = np.asarray(masks, dtype=bool)
        cents = np.full((k, 3), np.nan) if centroids is None else np.asarray(centroids, dtype=np.float64)
        sz = np.full(k, np.nan) if sizes is None else np.asarray(sizes, dtype=np.float64)
        cost = np.full((k, len(self.tracks)), _NO)
        if self.tracks:
            iou, _ = mask_iou(masks, np.stack([t.last_mask for t in self.tracks]))
            for j, tr in enumerate(self.tracks):
                gap = frame - tr.last_frame
                if gap <= 0:
                    continue
                pred = tr.predict(frame, cfg.velocity_span)
                for i in range(k):
                    if labels[i] != tr.label:
                        continue
                    if gap <= cfg.max_gap and iou[i, j] >= cfg.iou_min:
                        cost[i, j] = 1.0 - iou[i, j]
                    if pred is not None and np.isfinite(cents[i]).all():
                        size = np.nanmax([tr.size, sz[i], 1e-9])
                        dist = float(np.linalg.norm(cents[i] - pred[0]))
                        if dist <= cfg.reid_dist * size + cfg.velocity_slack * pred[1]:
                            cost[i, j] = min(cost[i, j], 1.0 + dist / size)
        ids = [-1] * k
        for i, j in assign(cost):
            ids[i] = self.tracks[j].id
            self._update(self.tracks[j], frame, masks[i], cents[i], sz[i])
        for i in range(k):
            if ids[i] < 0:
                tr = _Track(len(self.tracks), labels[i], frame, masks[i], float(np.nan_to_num(sz[i], nan=0.0)))
                if np.isfinite(cents[i]).all():
                    tr.history.append((frame, cents[i]))
                self.tracks.append(tr)
                ids[i] = tr.id
        return ids

    @staticmethod
    def _update(tr: _Track, frame: int, mask, centroid, size) -> None:
        tr.last_frame, tr.last_mask = frame, mask
        if np.isfinite(size):
            tr.size = max(tr.size, float(size))
        if np.isfinite(centroid).all():
            tr.history.append((frame, centroid))


def merge_tracklets(masks_at, labels: list[str], n_frames: int, centroids: np.ndarray | None = None,
                    sizes: np.ndarray | None = None, config: AssociationConfig | None = None) -> list[int]:
    """Object id per tracklet: run the associator over all frames and give each tracklet its most common id.

    masks_at(frame) -> (T, H, W) bool masks of all T tracklets in that frame; centroids (T, N, 3) world, sizes (T,).
    """
    assoc = Associator(config)
    votes: list[dict[int, int]] = [{} for _ in labels]
    for n in range(n_frames):
        m = masks_at(n)
        present = [t for t in range(len(labels)) if m[t].any()]
        if not present:
            continue
        ids = assoc.step(n, m[present], [labels[t] for t in present],
                         None if centroids is None else centroids[present, n],
                         None if sizes is None else sizes[present])
        for t, i in zip(present, ids, strict=True):
            votes[t][i] = votes[t].get(i, 0) + 1
    out = [max(v, key=v.get) if v else -1 for v in votes]
    # Dense object numbering in order of first appearance.
    remap: dict[int, int] = {}
    for i in out:
        if i >= 0 and i not in remap:
            remap[i] = len(remap)
    return [remap.get(i, -1) for i in out]
