"""Open-vocabulary boxes on keyframes: Grounding DINO or OWLv2 through transformers, then duplicate suppression.

Grounding DINO scores each query against every text token. We score a query for a label by its best token inside
that label's span of the prompt "a . b . c ." (so a box is never credited for matching "." or [CLS]), keep it when
the best label beats the box threshold and that label's tokens beat the text threshold, as DSR Suite's defaults
(box 0.35, text 0.25) intend. OWLv2 scores queries per label directly; the box threshold applies.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from spatialctl.devices import no_grad
from spatialctl.errors import SpatialctlError, UsageError
from spatialctl.hub import resolve_model_dir

if TYPE_CHECKING:  # annotations only: torch is imported where it is used, so the CLI starts fast
    import torch

log = logging.getLogger("spatialctl.track")

DETECTORS = ("grounding-dino", "owlv2")
AUTO = "auto"  # --labels auto: each scene's labels proposed by the tagger
DEFAULT_MODELS = {"grounding-dino": "IDEA-Research/grounding-dino-tiny", "owlv2": "google/owlv2-base-patch16-ensemble"}
# What spatial QA asks about most (DSR / VSI-Bench object classes), when no labels are given.
DEFAULT_VOCABULARY = (
    "person", "car", "chair", "table", "sofa", "bed", "cabinet", "door", "box", "ball", "cup", "bottle", "book",
    "laptop", "tv", "plant", "bicycle", "dog", "cat", "tree",
)


@dataclass
class Detection:
    box: np.ndarray  # (4,) x0, y0, x1, y1 in pixels
    score: float
    label: str


def parse_labels(text: str | None, path: str | None) -> list[str]:
    """Labels from a comma list or a file (one per line or comma separated); the default vocabulary if neither;
    ``[AUTO]`` for ``--labels auto``."""
    if text and path:
        raise UsageError("give --labels or --labels-file, not both")
    if path:
        try:
            with open(path) as f:
                text = f.read().replace("\n", ",")
        except OSError as e:
            raise SpatialctlError(f"{path}: cannot read labels ({e.strerror})") from e
    if not text:
        return list(DEFAULT_VOCABULARY)
    if not path and text.strip().lower() == AUTO:
        return [AUTO]
    labels = []
    for part in text.split(","):
        label = " ".join(part.strip().lower().split())
        if label and label not in labels:
            labels.append(label)
    if not labels:
        raise UsageError(f"{path or '--labels'}: no labels")
    return labels


def box_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(A, 4) x (B, 4) xyxy -> (A, B) IoU."""
    import torch
    lt = torch.maximum(a[:, None, :2], b[None, :, :2])
    rb = torch.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(-1)
    area_a = (a[:, 2:] - a[:, :2]).clamp(min=0).prod(-1)
    area_b = (b[:, 2:] - b[:, :2]).clamp(min=0).prod(-1)
    return inter / (area_a[:, None] + area_b[None, :] - inter).clamp(min=1e-9)


def nms(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """Greedy non-maximum suppression; indices kept, best first."""
    import torch
    order = torch.argsort(scores, descending=True)
    iou = box_iou(boxes[order], boxes[order])
    keep = torch.ones(len(order), dtype=torch.bool)
    for i in range(len(order)):
        if keep[i]:
            keep[i + 1:] &= iou[i, i + 1:] <= iou_threshold
    return order[keep]


def suppress_duplicates(dets: list[Detection], iou_threshold: float) -> list[Detection]:
    """Per-label NMS, then across labels at a stricter overlap (one object named twice keeps its best name)."""
    import torch
    if not dets:
        return []
    boxes = torch.tensor(np.stack([d.box for d in dets]), dtype=torch.float32)
    scores = torch.tensor([d.score for d in dets])
    keep = []
    for label in dict.fromkeys(d.label for d in dets):
        idx = torch.tensor([i for i, d in enumerate(dets) if d.label == label])
        keep += idx[nms(boxes[idx], scores[idx], iou_threshold)].tolist()
    idx = torch.tensor(keep)
    cross = idx[nms(boxes[idx], scores[idx], max(iou_threshold, 0.8))]
    return [dets[i] for i in sorted(cross.tolist(), key=lambda i: -dets[i].score)]


def _missing_model(model_id: str, e: Exception) -> SpatialctlError:
    return SpatialctlError(
        f"{model_id}: model not found locally ({type(e).__name__}); fetch it with `huggingface-cli download {model_id}` "
        "or pass a local folder"
    )


class Detector:
    """A zero-shot detector loaded through transformers' Auto classes (hub id or local folder)."""

    def __init__(self, kind: str, model_id: str | None, labels: list[str], device: str = "cpu",
                 box_threshold: float = 0.35, text_threshold: float = 0.25, nms_iou: float = 0.5,
                 max_detections: int = 20):
        from transformers import AutoModelForZeroShotObjectDetection, AutoProcessor

        if kind not in DETECTORS:
            raise UsageError(f"--detector {kind!r}: expected one of {', '.join(DETECTORS)}")
        self.kind, self.device = kind, device
        self.model_id = model_id or DEFAULT_MODELS[kind]
        self.box_threshold, self.text_threshold = box_threshold, text_threshold
        self.nms_iou, self.max_detections = nms_iou, max_detections
        local = resolve_model_dir(self.model_id, option="--detector-model", what="detector model")
        try:
            self.processor = AutoProcessor.from_pretrained(local)
            self.model = AutoModelForZeroShotObjectDetection.from_pretrained(local).to(device).eval()
        except OSError as e:
            raise _missing_model(self.model_id, e) from e
        self.set_labels(labels)

    def set_labels(self, labels: list[str]) -> None:
        """The names to detect (a scene's own labels under ``--labels auto``)."""
        self.labels = list(labels)
        if self.kind == "grounding-dino":
            self.prompt = " . ".join(self.labels) + " ."
            self.spans = self._label_spans()

    def _label_spans(self) -> list[list[int]]:
        """Token positions of each label in the tokenized prompt (labels separated by '.')."""
        tok = self.processor.tokenizer
        ids = tok(self.prompt)["input_ids"]
        dot = tok.convert_tokens_to_ids(".")
        spans, current = [], []
        for pos, tid in enumerate(ids):
            if tid in tok.all_special_ids:
                continue
            if tid == dot:
                spans.append(current)
                current = []
            else:
                current.append(pos)
        if len(spans) != len(self.labels) or not all(spans):
            raise UsageError(f"labels {self.labels}: cannot locate each label in the tokenized prompt")
        return spans

    @no_grad
    def __call__(self, image: np.ndarray) -> list[Detection]:
        """Detections on one (H, W, 3) uint8 RGB frame."""
        import torch
        h, w = image.shape[:2]
        if self.kind == "grounding-dino":
            inputs = self.processor(images=[image], text=[self.prompt], return_tensors="pt").to(self.device)
            out = self.model(**inputs)
            probs = torch.sigmoid(out.logits[0].float())  # (Q, text tokens)
            per_label = torch.stack([probs[:, s].max(dim=1).values for s in self.spans], dim=1)  # (Q, L)
            boxes = out.pred_boxes[0].float()  # (Q, 4) cx, cy, w, h relative to the image
            scale = torch.tensor([w, h, w, h], dtype=torch.float32, device=boxes.device)
        else:
            max_len = int(self.model.config.text_config.max_position_embeddings)
            inputs = self.processor(text=[self.labels], images=[image], return_tensors="pt", padding="max_length",
                                    truncation=True, max_length=max_len).to(self.device)
            out = self.model(**inputs)
            per_label = torch.sigmoid(out.logits[0].float())  # (Q, L)
            boxes = out.pred_boxes[0].float()
            side = float(max(h, w))  # OWLv2 pads to a square at the bottom/right; boxes are relative to it
            scale = torch.tensor([side, side, side, side], dtype=torch.float32, device=boxes.device)
        score, label = per_label.max(dim=1)
        keep = score > self.box_threshold
        if self.kind == "grounding-dino":
            keep &= score > self.text_threshold
        xyxy = torch.cat([boxes[:, :2] - boxes[:, 2:] / 2, boxes[:, :2] + boxes[:, 2:] / 2], dim=1) * scale
        xyxy[:, 0::2] = xyxy[:, 0::2].clamp(0, w - 1)
        xyxy[:, 1::2] = xyxy[:, 1::2].clamp(0, h - 1)
        keep &= ((xyxy[:, 2] - xyxy[:, 0]) >= 2) & ((xyxy[:, 3] - xyxy[:, 1]) >= 2)
        dets = [Detection(xyxy[i].cpu().numpy().astype(np.float64), float(score[i]), self.labels[int(label[i])])
                for i in torch.nonzero(keep).flatten().tolist()]
        return suppress_duplicates(dets, self.nms_iou)[: self.max_detections]
