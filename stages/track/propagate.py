"""SAM 2 video masks (transformers' ``Sam2VideoModel``), box-prompted, forward and backward, with re-detection.

No torchvision: ``Sam2VideoProcessor`` needs it for its image processor, so frames are prepared here in torch the
way SAM 2's video processor does (resize to the model's square input with antialiasing, scale to [0, 1], ImageNet
mean/std), lazily one frame at a time, and box prompts are scaled to the model's input size by hand.

Schedule. Objects are detected on keyframes (every K frames). Each keyframe's detections that match no existing
track (mask IoU, ``associate.match_masks``) start a *group*: one inference session prompted by their boxes at that
frame. All sessions share one vision-feature cache and step through the video in lockstep, so the image encoder runs
once per frame however many groups there are. After the forward sweep, groups born after frame 0 are propagated
backward from their keyframe to the start (objects visible before anyone detected them).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from spatialctl.devices import no_grad
from spatialctl.errors import SpatialctlError
from spatialctl.hub import resolve_model_dir

from .associate import match_masks
from .detect import Detection

if TYPE_CHECKING:  # annotations only: torch is imported where it is used, so the CLI starts fast
    import torch

log = logging.getLogger("spatialctl.track")

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
DEFAULT_SAM2 = "facebook/sam2.1-hiera-tiny"


def preprocess_frame(frame: np.ndarray, size: int) -> torch.Tensor:
    """(H, W, 3) uint8 RGB -> (3, size, size) float32, normalised as SAM 2 expects."""
    import torch
    import torch.nn.functional as F
    x = torch.from_numpy(np.ascontiguousarray(frame)).permute(2, 0, 1)[None].float()
    x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    x = (x / 255.0).clamp(0, 1)
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return ((x - mean) / std)[0]


class LazyFrames:
    """A session's ``processed_frames``: frames are read and prepared only when the model asks for them
    (``prepare``: SAM 2's preprocessing by default; SAM 3 passes its own)."""

    def __init__(self, read_frame: Callable[[int], np.ndarray], n_frames: int, size: int,
                 prepare: Callable[[np.ndarray, int], torch.Tensor] | None = None):
        self.read_frame, self.n_frames, self.size = read_frame, n_frames, size
        self.prepare = prepare or preprocess_frame

    def __len__(self) -> int:
        return self.n_frames

    def __getitem__(self, idx: int) -> torch.Tensor:
        if not 0 <= idx < self.n_frames:
            raise KeyError(idx)
        return self.prepare(self.read_frame(idx), self.size)


class Segmenter:
    """A loaded Sam2VideoModel and the video it works on."""

    def __init__(self, model_id: str | None, device: str = "cpu"):
        from transformers import Sam2VideoModel

        self.model_id = model_id or DEFAULT_SAM2
        self.device = device
        local = resolve_model_dir(self.model_id, option="--sam2-model", what="SAM 2 model")
        try:
            self.model = Sam2VideoModel.from_pretrained(local).to(device).eval()
        except OSError as e:
            raise SpatialctlError(
                f"{self.model_id}: SAM 2 model not found locally ({type(e).__name__}); fetch it with "
                f"`huggingface-cli download {self.model_id}` or pass a local folder"
            ) from e
        self.size = int(self.model.config.image_size)
        self.dtype = next(self.model.parameters()).dtype
        # How far back a tracked frame's outputs are still read (memory frames and object pointers).
        self.horizon = max(int(self.model.config.num_maskmem), int(self.model.config.max_object_pointers_in_encoder))

    def open(self, read_frame: Callable[[int], np.ndarray], n_frames: int, hw: tuple[int, int]) -> None:
        from transformers.models.sam2_video.modeling_sam2_video import Sam2VideoInferenceCache

        self.frames = LazyFrames(read_frame, n_frames, self.size)
        self.hw = hw
        self.cache = Sam2VideoInferenceCache(self.device, self.device, max_vision_features_cache_size=1)

    def session(self):
        from transformers.models.sam2_video.modeling_sam2_video import Sam2VideoInferenceSession

        s = Sam2VideoInferenceSession(video=None, video_height=self.hw[0], video_width=self.hw[1],
                                      inference_device=self.device, inference_state_device=self.device,
                                      video_storage_device=self.device, dtype=self.dtype)
        s.processed_frames = self.frames
        s.cache = self.cache
        return s

    def add_boxes(self, session, frame_idx: int, obj_ids: list[int], boxes: np.ndarray) -> None:
        import torch
        h, w = self.hw
        scale = torch.tensor([self.size / w, self.size / h], dtype=torch.float32)
        for obj_id, box in zip(obj_ids, boxes, strict=True):
            corners = torch.tensor(np.asarray(box, dtype=np.float32).reshape(2, 2)) * scale
            idx = session.obj_id_to_idx(obj_id)
            session.add_point_inputs(idx, frame_idx, {
                "point_coords": corners.view(1, 1, 2, 2),
                "point_labels": torch.tensor([[[2, 3]]], dtype=torch.int32),  # box corners
            })
            session.remove_mask_inputs(idx, frame_idx)
        session.obj_with_new_inputs = list(obj_ids)

    @no_grad
    def step(self, session, frame_idx: int, reverse: bool = False) -> tuple[list[int], np.ndarray]:
        """Masks of every object of the session in one frame: (ids, (K, H, W) bool)."""
        import torch.nn.functional as F
        out = self.model(inference_session=session, frame_idx=frame_idx, reverse=reverse)
        logits = out.pred_masks.float()
        if logits.dim() == 3:
            logits = logits[:, None]
        # As SAM 2's post-processing: to the square input size, then to the frame size.
        logits = F.interpolate(logits, size=(self.size, self.size), mode="bilinear", align_corners=False)
        logits = F.interpolate(logits, size=self.hw, mode="bilinear", align_corners=False)
        return list(out.object_ids), (logits[:, 0] > 0).cpu().numpy()

    def forget(self, session, frame_idx: int) -> None:
        """Drop a tracked frame's outputs once no later frame reads them (memory stays flat on long videos)."""
        for per_obj in session.output_dict_per_obj.values():
            per_obj["non_cond_frame_outputs"].pop(frame_idx, None)


@dataclass
class Tracklet:
    label: str
    score: float
    born: int  # keyframe of its prompt
    masks: np.ndarray  # (N, ceil(H*W/8)) packed masks


def _pack(mask: np.ndarray) -> np.ndarray:
    return np.packbits(mask.reshape(-1))


def _unpack(packed: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    return np.unpackbits(packed, count=hw[0] * hw[1]).reshape(hw).astype(bool)


@dataclass
class _Group:
    session: object
    born: int
    members: list[int]


def track_video(segmenter: Segmenter, detect: Callable[[int], list[Detection]], n_frames: int,
                hw: tuple[int, int], keyframe_every: int, match_iou: float = 0.5,
                progress: Callable = lambda x: x) -> list[Tracklet]:
    """Tracklets of every object detected on a keyframe, with masks in every frame."""
    m_bytes = (hw[0] * hw[1] + 7) // 8
    tracklets: list[Tracklet] = []
    groups: list[_Group] = []

    def store(ids, masks, frame):
        for obj_id, mask in zip(ids, masks, strict=True):
            tracklets[obj_id].masks[frame] = _pack(mask)

    for t in progress(range(n_frames)):
        for g in groups:
            if t > g.born:
                store(*segmenter.step(g.session, t), t)
                old = t - segmenter.horizon - 1
                if old > g.born + segmenter.horizon:  # the backward sweep still reads the first frames after born
                    segmenter.forget(g.session, old)
        if t % keyframe_every:
            continue
        dets = detect(t)
        if not dets:
            continue
        probe = segmenter.session()
        segmenter.add_boxes(probe, t, list(range(len(dets))), np.stack([d.box for d in dets]))
        _, det_masks = segmenter.step(probe, t)
        keep = [i for i in range(len(dets)) if det_masks[i].any()]
        existing = [i for i, tr in enumerate(tracklets) if tr.born <= t]
        current = np.stack([_unpack(tracklets[i].masks[t], hw) for i in existing]) if existing else np.zeros((0, *hw), bool)
        _, new = match_masks(current, det_masks[keep], [tracklets[i].label for i in existing],
                             [dets[i].label for i in keep], iou_min=match_iou)
        new = [keep[i] for i in new]
        if not new:
            continue
        ids = list(range(len(tracklets), len(tracklets) + len(new)))
        for i in new:
            tracklets.append(Tracklet(dets[i].label, dets[i].score, t, np.zeros((n_frames, m_bytes), np.uint8)))
        group = _Group(segmenter.session(), t, ids)
        segmenter.add_boxes(group.session, t, ids, np.stack([dets[i].box for i in new]))
        store(*segmenter.step(group.session, t), t)
        groups.append(group)
        log.info("frame %d: %d new object(s): %s", t, len(new), ", ".join(dets[i].label for i in new))

    late = [g for g in groups if g.born > 0]
    for t in progress(range(max((g.born for g in late), default=0) - 1, -1, -1)):
        for g in late:
            if t < g.born:
                store(*segmenter.step(g.session, t, reverse=True), t)
    return tracklets
