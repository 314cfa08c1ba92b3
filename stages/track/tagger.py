"""``--labels auto``: each scene's labels proposed from its frames by CLIP zero-shot over a fixed vocabulary.

CLIP (``CLIPModel``, default ``openai/clip-vit-base-patch32``) scores a few evenly spaced frames against the prompts
"a photo of a {label}." for every label of ``VOCABULARY``; a label's score is its best softmax probability over the
vocabulary in any frame (an object seen in one frame counts). The labels scoring at least ``min_score``, best first,
up to ``max_labels``, become the scene's text prompts; the best label is always kept. A fixed vocabulary keeps the
labels nouns a detector knows; what is not in it cannot be proposed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

from spatialctl import hub
from spatialctl.devices import no_grad
from spatialctl.errors import SpatialctlError

if TYPE_CHECKING:  # annotations only: torch is imported where it is used, so the CLI starts fast
    import torch

log = logging.getLogger("spatialctl.track")

DEFAULT_TAGGER = "openai/clip-vit-base-patch32"
FRAMES = 8  # evenly spaced frames scored per scene
TEMPLATE = "a photo of a {}."
# Objects spatial QA asks about (DSR / VSI-Bench / COCO classes that occur indoors and on streets).
VOCABULARY = (
    "person", "car", "bicycle", "motorcycle", "bus", "truck", "dog", "cat", "bird", "horse", "chair", "table",
    "sofa", "bed", "cabinet", "shelf", "door", "window", "box", "ball", "cup", "mug", "bowl", "plate", "bottle",
    "can", "vase", "book", "laptop", "keyboard", "monitor", "tv", "phone", "remote", "lamp", "clock", "plant",
    "tree", "pillow", "blanket", "towel", "backpack", "bag", "suitcase", "umbrella", "shoe", "hat", "toy",
    "teddy bear", "sink", "toilet", "bathtub", "refrigerator", "microwave", "oven", "stove", "washing machine",
    "trash can", "bench", "desk", "stool", "cushion", "rug", "picture", "mirror", "fan", "heater", "fire hydrant",
    "traffic light", "stop sign", "road sign", "pole", "fence", "building", "cylinder", "sphere", "cube", "cone",
)


class Tagger:
    """A loaded CLIP model with the vocabulary's text embeddings."""

    def __init__(self, model_id: str | None, device: str = "cpu"):
        import torch
        self.model_id = model_id or DEFAULT_TAGGER
        folder = hub.resolve_model_dir(self.model_id, DEFAULT_TAGGER)  # never downloads
        from transformers import AutoProcessor, CLIPModel

        try:
            self.processor = AutoProcessor.from_pretrained(folder)
            self.model = CLIPModel.from_pretrained(folder).to(device).eval()
        except OSError as e:
            raise SpatialctlError(f"{self.model_id}: cannot load CLIP ({e}); {hub.fetch_hint(self.model_id)}") from e
        self.device = device
        with torch.no_grad():
            text = self.processor(text=[TEMPLATE.format(v) for v in VOCABULARY], return_tensors="pt", padding=True,
                                  truncation=True).to(device)
            self.text = _unit(_features(self.model.get_text_features(**text)))

    @no_grad
    def scores(self, frames: list[np.ndarray]) -> np.ndarray:
        """(V,) each vocabulary label's best probability over the frames."""
        pixels = self.processor(images=frames, return_tensors="pt")["pixel_values"].to(self.device)
        image = _unit(_features(self.model.get_image_features(pixel_values=pixels)))
        probs = (self.model.logit_scale.exp() * image @ self.text.T).softmax(-1)  # (F, V)
        return probs.max(0).values.float().cpu().numpy()

    def propose(self, read_frame: Callable[[int], np.ndarray], n_frames: int, max_labels: int,
                min_score: float) -> list[tuple[str, float]]:
        """(label, score) pairs, best first."""
        picks = np.unique(np.linspace(0, n_frames - 1, min(FRAMES, n_frames)).round().astype(int))
        best = self.scores([read_frame(int(i)) for i in picks])
        order = np.argsort(-best, kind="stable")[:max_labels]
        keep = [i for i in order if best[i] >= min_score] or [order[0]]
        return [(VOCABULARY[i], round(float(best[i]), 4)) for i in keep]


def _features(out) -> torch.Tensor:
    """``get_*_features`` returns the projected embeddings, as a tensor or as an output's pooler_output."""
    import torch
    return out if isinstance(out, torch.Tensor) else out.pooler_output


def _unit(x: torch.Tensor) -> torch.Tensor:
    return x / x.norm(dim=-1, keepdim=True).clamp(min=1e-12)
