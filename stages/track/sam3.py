"""SAM 3 concept tracking (transformers' ``Sam3VideoModel``): text prompts give masks and identities in one model.

Every label is a text prompt of one session; on each frame the model detects every prompt, matches detections to
its tracks and propagates the tracks with its SAM 2-style tracker; an object's prompt is its label.

Chunks. A session's bookkeeping grows with every frame it has seen (its per-frame score tables are deep-copied at
every step, and reconditioned frames stay in memory), so a long video runs as chunks of ``chunk_frames`` frames, one
session each. The next chunk's session opens on the previous chunk's last frame: every live object is re-added
there with its last mask as a mask prompt (the mask fed back), its id, prompt and score, and counted as past its
hot-start period. Within a chunk, tracker outputs older than the frames the tracker still reads are dropped. Memory
is bounded by the chunk, not the video.

Output as transformers' ``propagate_in_video_iterator`` + ``Sam3VideoProcessor.postprocess_outputs`` give it: a
frame is emitted ``hotstart_delay`` frames late so objects the hot-start heuristics remove by then are never shown;
suppressed objects are hidden on their frame; masks are upsampled bilinearly to the frame size, and within one
prompt a pixel belongs to the object with the highest tracker score.

No torchvision: ``Sam3VideoProcessor`` requires it, so frames are prepared here as SAM 3's processor does (resize
to the model's square input with antialiasing, scale to [0, 1], mean/std 0.5) and prompts are tokenized with the
checkpoint's own tokenizer (``AutoTokenizer``), padded to 32 tokens as the processor does.
"""

from __future__ import annotations

import importlib.util
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from spatialctl import hub
from spatialctl.devices import inference_mode
from spatialctl.errors import SpatialctlError

from .propagate import LazyFrames, Tracklet

if TYPE_CHECKING:  # annotations only: torch is imported where it is used, so the CLI starts fast
    import torch

log = logging.getLogger("spatialctl.track")

DEFAULT_SAM3 = "facebook/sam3"
PROMPT_TOKENS = 32  # Sam3VideoProcessor.add_text_prompt pads every prompt to 32 tokens
MEAN = STD = 0.5  # Sam3 image/video processors' normalisation

_kernels_logged = False


def log_kernels_once() -> bool:
    """Whether the optional ``kernels`` package (mask NMS, hole filling) is installed; say so once if not."""
    global _kernels_logged
    present = importlib.util.find_spec("kernels") is not None
    if not present and not _kernels_logged:
        log.warning("kernels is not installed: SAM 3 runs without its mask NMS and hole filling "
                    "(`pip install kernels` to use them)")
        _kernels_logged = True
    return present


def preprocess_frame(frame: np.ndarray, size: int) -> torch.Tensor:
    """(H, W, 3) uint8 RGB -> (3, size, size) float32 as SAM 3's processor prepares it."""
    import torch
    import torch.nn.functional as F
    x = torch.from_numpy(np.ascontiguousarray(frame)).permute(2, 0, 1)[None].float()
    x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    return ((x / 255.0).clamp(0, 1)[0] - MEAN) / STD


@dataclass
class _Live:
    """An object carried into the next chunk, with its hot-start bookkeeping (frame indices are the video's)."""

    label: str
    score: float
    logits: torch.Tensor  # (H_low, W_low) low-resolution mask logits on the chunk's last frame
    first_frame: int
    keep_alive: int
    unmatched: list


class Sam3Tracker:
    """A loaded Sam3VideoModel and its tokenizer (hub id already downloaded, or a local folder)."""

    def __init__(self, model_id: str | None, device: str = "cpu", threshold: float | None = None):
        self.model_id = model_id or DEFAULT_SAM3
        folder = hub.resolve_model_dir(self.model_id, DEFAULT_SAM3)  # never downloads; fails fast with the command
        import transformers
        from transformers import AutoTokenizer

        if not hasattr(transformers, "Sam3VideoModel"):
            raise SpatialctlError(f"--backend sam3 needs a transformers release with Sam3VideoModel (installed: "
                                  f"{transformers.__version__}); `pip install -U transformers`")
        from transformers import Sam3VideoModel

        try:
            self.tokenizer = AutoTokenizer.from_pretrained(folder)
            self.model = Sam3VideoModel.from_pretrained(folder).to(device).eval()
        except OSError as e:
            raise SpatialctlError(f"{self.model_id}: cannot load SAM 3 ({e}); {hub.fetch_hint(self.model_id)}") from e
        if threshold is not None:  # both the detection threshold and the one for starting a new object
            self.model.score_threshold_detection = threshold
            self.model.new_det_thresh = threshold
        self.device = device
        self.size = int(self.model.config.image_size)
        self.dtype = next(self.model.parameters()).dtype
        tracker = self.model.config.tracker_config
        # How far back the tracker reads a frame's outputs (memory frames and object pointers).
        self.horizon = max(int(tracker.num_maskmem), int(tracker.max_object_pointers_in_encoder))
        self.kernels = log_kernels_once()

    def session(self, frames: LazyFrames, hw: tuple[int, int], labels: list[str]):
        from transformers.models.sam3_video.modeling_sam3_video import Sam3VideoInferenceSession

        s = Sam3VideoInferenceSession(video=None, video_height=hw[0], video_width=hw[1], inference_device=self.device,
                                      inference_state_device=self.device, video_storage_device=self.device,
                                      dtype=self.dtype)
        s.processed_frames = frames
        for label in labels:
            pid = s.add_prompt(label)
            enc = self.tokenizer(label, return_tensors="pt", padding="max_length", max_length=PROMPT_TOKENS,
                                 truncation=True).to(self.device)
            s.prompt_input_ids[pid] = enc.input_ids
            s.prompt_attention_masks[pid] = enc.attention_mask
        return s

    def seed(self, session, frame_idx: int, live: dict[int, _Live], max_obj_id: int,
             overlaps: dict | None = None) -> None:
        """Re-add carried objects at ``frame_idx`` with their last masks as mask prompts, ids and prompts kept."""
        import torch
        pixels = session.get_frame(frame_idx).unsqueeze(0)
        embeds = self.model.detector_model.get_vision_features(pixel_values=pixels)
        feats, pos = self.model.get_vision_features_for_tracker(vision_embeds=embeds)
        session.cache.cache_vision_features(frame_idx, {"vision_feats": feats, "vision_pos_embeds": pos})
        session.max_obj_id = max_obj_id
        if not live:
            return
        ids = sorted(live)
        for obj_id in ids:
            ob = live[obj_id]
            session.obj_id_to_prompt_id[obj_id] = session.add_prompt(ob.label)
            session.obj_id_to_score[obj_id] = ob.score
            # The hot-start heuristics go on where they were (frame indices are the video's in every chunk).
            session.obj_first_frame_idx[obj_id] = ob.first_frame
            session.trk_keep_alive[obj_id] = ob.keep_alive
            session.unmatched_frame_inds[obj_id] = list(ob.unmatched)
        for pair, frames in (overlaps or {}).items():  # duplicate candidates: frames where two objects overlapped
            if pair[0] in live and pair[1] in live:
                session.overlap_pair_to_frame_inds[pair] = list(frames)
        masks = torch.stack([live[i].logits for i in ids]).to(self.device)
        # What the model does with a new detection's mask (it also registers the ids in ``session.obj_ids``).
        self.model._tracker_add_new_objects(session, frame_idx, ids, masks)

    def forget(self, session, frame_idx: int) -> None:
        """Drop a frame's tracker outputs once no later frame reads them."""
        for per_obj in session.output_dict_per_obj.values():
            per_obj["non_cond_frame_outputs"].pop(frame_idx, None)


def frame_masks(session, out, hidden: set[int], hw: tuple[int, int]) -> tuple[list[int], torch.Tensor]:
    """(ids, (K, H, W) bool) of one frame's output: upsampled, empty and hidden objects dropped, and within a
    prompt each pixel given to the object with the highest tracker score (as Sam3VideoProcessor does)."""
    import torch
    import torch.nn.functional as F
    ids = [i for i in sorted(out.obj_id_to_mask) if i not in hidden]
    if not ids:
        return [], torch.zeros((0, *hw), dtype=torch.bool)
    low = torch.cat([out.obj_id_to_mask[i] for i in ids]).float().cpu()
    masks = F.interpolate(low[:, None], size=hw, mode="bilinear", align_corners=False)[:, 0] > 0
    if len(ids) > 1:
        score = torch.tensor([float(out.obj_id_to_tracker_score.get(i, 0.0)) for i in ids])
        prompt = torch.tensor([session.obj_id_to_prompt_id[i] for i in ids])
        for p in prompt.unique():
            sel = torch.nonzero(prompt == p).flatten()
            if len(sel) < 2:
                continue
            scored = torch.where(masks[sel], score[sel, None, None], torch.tensor(-1.0))
            best = scored.argmax(0)
            masks[sel] &= best[None] == torch.arange(len(sel))[:, None, None]
    keep = masks.flatten(1).any(1)
    return [i for i, k in zip(ids, keep.tolist(), strict=True) if k], masks[keep]


@inference_mode
def track_video(tracker: Sam3Tracker, read_frame: Callable[[int], np.ndarray], n_frames: int, hw: tuple[int, int],
                labels: list[str], chunk_frames: int, progress: Callable = lambda x: x) -> list[Tracklet]:
    """Tracklets of every object any prompt finds, with masks in every frame; ids kept across chunks."""
    m_bytes = (hw[0] * hw[1] + 7) // 8
    frames = LazyFrames(read_frame, n_frames, tracker.size, preprocess_frame)
    delay = max(int(tracker.model.hotstart_delay), 0)
    rows: dict[int, Tracklet] = {}  # model object id -> tracklet
    removed: set[int] = set()  # removed by the model's heuristics: hidden in every frame not yet emitted
    pending: deque = deque()  # (frame, output, session) held back ``delay`` frames, across chunks
    bar = iter(progress(range(n_frames)))

    def emit(frame, out, session):
        ids, masks = frame_masks(session, out, removed | set(out.suppressed_obj_ids or ()), hw)
        for obj_id, mask in zip(ids, masks.numpy(), strict=True):
            if obj_id not in rows:
                label = session.prompts[session.obj_id_to_prompt_id[obj_id]]
                rows[obj_id] = Tracklet(label, 0.0, frame, np.zeros((n_frames, m_bytes), np.uint8))
            row = rows[obj_id]
            row.masks[frame] = np.packbits(mask.reshape(-1))
            row.score = max(row.score, float(out.obj_id_to_score.get(obj_id, 0.0)))
        next(bar, None)

    live: dict[int, _Live] = {}
    overlaps: dict = {}
    max_obj_id, start = -1, 0
    while start < n_frames:
        # Every chunk after the first opens on the previous chunk's last frame (already tracked) to seed it.
        stop = min(start + chunk_frames - (start > 0), n_frames)
        session = tracker.session(frames, hw, labels)
        if start > 0:
            tracker.seed(session, start - 1, live, max_obj_id, overlaps)
        out = None
        for t in range(start, stop):
            out = tracker.model(inference_session=session, frame_idx=t)
            removed |= set(out.removed_obj_ids or ())
            pending.append((t, out, session))
            while len(pending) > delay:
                emit(*pending.popleft())
            old = t - tracker.horizon - 1
            if old > start:  # the chunk's first (conditioning) frame stays
                tracker.forget(session, old)
        max_obj_id = max(max_obj_id, int(session.max_obj_id))
        overlaps = dict(session.overlap_pair_to_frame_inds)
        live = {
            i: _Live(session.prompts[session.obj_id_to_prompt_id[i]], float(out.obj_id_to_score.get(i, 0.0)),
                     out.obj_id_to_mask[i][0].float(), int(session.obj_first_frame_idx.get(i, stop - 1)),
                     int(session.trk_keep_alive.get(i, tracker.model.init_trk_keep_alive)),
                     list(session.unmatched_frame_inds.get(i, [])))
            for i in out.object_ids if i not in removed and i in out.obj_id_to_mask
        }
        start = stop
    while pending:
        emit(*pending.popleft())
    return [rows[i] for i in sorted(rows)]
