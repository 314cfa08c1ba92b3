"""Qwen2.5-VL plumbing shared by train-gsm and eval: loading, a numpy video processor, chat prompts.

The video processor in transformers needs torchvision; ours is numpy + PIL and lays out ``pixel_values_videos``
and ``video_grid_thw`` exactly as it does (resize to multiples of patch*merge by the smart-resize rule, bicubic,
rescale, CLIP mean/std, temporal patches of 2, patches ordered merge-window by merge-window).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from spatialctl.errors import SpatialctlError
from spatialctl.hub import resolve_model_dir

DEFAULT_BASE = "Qwen/Qwen2.5-VL-7B-Instruct"
SYSTEM_PROMPT = "You are a helpful assistant."
IM_START, IM_END = "<|im_start|>", "<|im_end|>"
VISION_START, VISION_END = "<|vision_start|>", "<|vision_end|>"
VIDEO_PAD, IMAGE_PAD = "<|video_pad|>", "<|image_pad|>"
# Qwen2.5-VL never emits <|vision_pad|>, so it is free to mark where the geometry tokens go (no new vocab rows).
GEO_PAD = "<|vision_pad|>"
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
# The image processors' own defaults (min, max pixels per image) when preprocessor_config.json does not say.
IMAGE_PIXELS = {"qwen2_5_vl": (56 * 56, 28 * 28 * 1280), "qwen3_vl": (65536, 16777216)}


# ---------------------------------------------------------------------------------------------------- loading


def load_tokenizer(base: str):
    from transformers import AutoTokenizer

    path = resolve_model_dir(base)
    try:
        tok = AutoTokenizer.from_pretrained(path)
    except Exception as e:
        raise SpatialctlError(f"{path}: cannot load the tokenizer ({type(e).__name__}: {e})") from e
    missing = [t for t in (IM_START, IM_END, VISION_START, VISION_END, VIDEO_PAD, IMAGE_PAD, GEO_PAD)
               if _token_id(tok, t) is None]
    if missing:
        raise SpatialctlError(f"{path}: tokenizer lacks Qwen2.5-VL special tokens {missing}")
    return tok


FAMILIES = ("qwen2_5_vl", "qwen3_vl")


def model_family(path: str) -> str:
    """``qwen2_5_vl`` or ``qwen3_vl``, from the checkpoint's config.json (its ``model_type``)."""
    file = os.path.join(path, "config.json")
    try:
        with open(file) as f:
            kind = json.load(f).get("model_type")
    except (OSError, json.JSONDecodeError) as e:
        raise SpatialctlError(f"{file}: unreadable ({type(e).__name__})") from e
    if kind not in FAMILIES:
        raise SpatialctlError(f"{path}: model_type {kind!r} is neither Qwen2.5-VL nor Qwen3-VL")
    return kind


def load_model(base: str, *, dtype=None, device=None, attn_implementation: str | None = None):
    """Qwen2.5-VL or Qwen3-VL (``...ForConditionalGeneration``) from a hub id or folder; a one-line error when it
    is missing."""
    from transformers import Qwen2_5_VLForConditionalGeneration, Qwen3VLForConditionalGeneration

    path = resolve_model_dir(base)
    cls = {"qwen2_5_vl": Qwen2_5_VLForConditionalGeneration,
           "qwen3_vl": Qwen3VLForConditionalGeneration}[model_family(path)]
    kwargs = {}
    if dtype is not None:
        kwargs["dtype"] = dtype
    if attn_implementation:
        kwargs["attn_implementation"] = attn_implementation
    try:
        model = cls.from_pretrained(path, **kwargs)
    except Exception as e:
        raise SpatialctlError(f"{path}: cannot load {cls.__name__} weights ({type(e).__name__}: {e})") from e
    if device is not None:
        model.to(device)
    return model


def _token_id(tokenizer, token: str) -> int | None:
    tid = tokenizer.convert_tokens_to_ids(token)
    if tid is None or tid == tokenizer.unk_token_id:
        return None
    return int(tid)


# ---------------------------------------------------------------------------------------------------- video


@dataclass
class VideoProcessorConfig:
    """The knobs of Qwen2-VL's video processor (defaults: its own, i.e. qwen-vl-utils' video min/max pixels)."""

    patch_size: int = 14
    temporal_patch_size: int = 2
    merge_size: int = 2
    min_pixels: int = 128 * 28 * 28
    max_pixels: int = 768 * 28 * 28
    image_mean: tuple = field(default=CLIP_MEAN)
    image_std: tuple = field(default=CLIP_STD)
    family: str = "qwen2_5_vl"  # qwen3_vl: its resize rule (pixel budget over all frames), per-frame timestamps
    # Qwen3-VL's video processor option (qwen-vl-utils' rule), as the model's video_preprocessor_config.json sets it;
    # transformers leaves it off when unset, so do we
    cap_pixels_per_frame: bool = False
    max_video_tokens: int = 768

    @property
    def factor(self) -> int:
        return self.patch_size * self.merge_size

    @classmethod
    def from_model_dir(cls, path: str, *, images: bool = False, **overrides) -> VideoProcessorConfig:
        """Read ``video_preprocessor_config.json`` (or the patch sizes from ``preprocessor_config.json``); with
        ``images``, the image processor's settings (``preprocessor_config.json`` alone, its pixel limits per image)."""
        cfg = cls()
        if os.path.isfile(os.path.join(path, "config.json")):
            cfg.family = model_family(path)
        if images:
            cfg.min_pixels, cfg.max_pixels = IMAGE_PIXELS[cfg.family]
        names = (("preprocessor_config.json", True),) if images else (("preprocessor_config.json", False),
                                                                      ("video_preprocessor_config.json", True))
        for name, is_video in names:
            file = os.path.join(path, name)
            if not os.path.isfile(file):
                continue
            try:
                with open(file) as f:
                    data = json.load(f)
            except (OSError, json.JSONDecodeError) as e:
                raise SpatialctlError(f"{file}: unreadable ({type(e).__name__})") from e
            for key in ("patch_size", "temporal_patch_size", "merge_size"):
                if key in data:
                    setattr(cfg, key, int(data[key]))
            for key in ("image_mean", "image_std"):
                if key in data:
                    setattr(cfg, key, tuple(float(v) for v in data[key]))
            if is_video:  # the image processor's pixel limits are for images, not video frames
                cfg.cap_pixels_per_frame = bool(data.get("cap_pixels_per_frame") or False)
                cfg.max_video_tokens = int(data.get("max_video_tokens", cfg.max_video_tokens))
                size = data.get("size") or {}
                cfg.min_pixels = int(data.get("min_pixels", size.get("shortest_edge", cfg.min_pixels)))
                cfg.max_pixels = int(data.get("max_pixels", size.get("longest_edge", cfg.max_pixels)))
        for key, value in overrides.items():
            if value is not None:
                setattr(cfg, key, value)
        return cfg


def smart_resize(height: int, width: int, factor: int, min_pixels: int, max_pixels: int) -> tuple[int, int]:
    """Qwen2-VL's rule: both sides multiples of ``factor``, area within [min, max], aspect ratio kept."""
    if min(height, width) <= 0 or max(height, width) / min(height, width) > 200:
        raise SpatialctlError(f"frame size {height}x{width} is empty or its aspect ratio exceeds 200")
    h = round(height / factor) * factor
    w = round(width / factor) * factor
    if h * w > max_pixels:
        beta = math.sqrt(height * width / max_pixels)
        h = max(factor, math.floor(height / beta / factor) * factor)
        w = max(factor, math.floor(width / beta / factor) * factor)
    elif h * w < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h = math.ceil(height * beta / factor) * factor
        w = math.ceil(width * beta / factor) * factor
    return h, w


def smart_resize_video(num_frames: int, height: int, width: int, temporal_factor: int, factor: int,
                       min_pixels: int, max_pixels: int) -> tuple[int, int]:
    """Qwen3-VL's video rule: as :func:`smart_resize`, but the pixel limits bound all frames together."""
    if height < factor or width < factor:
        scale = max(factor / height, factor / width)
        height, width = int(height * scale), int(width * scale)
    if max(height, width) / min(height, width) > 200:
        raise SpatialctlError(f"frame size {height}x{width}: aspect ratio exceeds 200")
    h = round(height / factor) * factor
    w = round(width / factor) * factor
    t = max(temporal_factor, round(num_frames / temporal_factor) * temporal_factor)
    if t * h * w > max_pixels:
        beta = math.sqrt(num_frames * height * width / max_pixels)
        h = max(factor, math.floor(height / beta / factor) * factor)
        w = max(factor, math.floor(width / beta / factor) * factor)
    elif t * h * w < min_pixels:
        beta = math.sqrt(min_pixels / (num_frames * height * width))
        h = math.ceil(height * beta / factor) * factor
        w = math.ceil(width * beta / factor) * factor
    return h, w


def process_video(frames: np.ndarray, cfg: VideoProcessorConfig) -> dict[str, np.ndarray]:
    """(T, H, W, 3) uint8 RGB -> {"pixel_values_videos": (t*gh*gw, 3*tp*p*p) float32, "video_grid_thw": (1, 3)}.

    A frame count that is not a multiple of the temporal patch is padded by repeating the last frame, as the
    transformers processor does.
    """
    frames = _check_frames(frames)
    height, width = frames.shape[1:3]
    if cfg.family == "qwen3_vl":
        max_pixels = cfg.max_pixels
        if cfg.cap_pixels_per_frame:  # each frame's share: at most max_video_tokens, at least 1.05x min_pixels
            per_frame = max(min(cfg.max_video_tokens * cfg.factor**2, cfg.max_pixels // len(frames)),
                            int(cfg.min_pixels * 1.05))
            max_pixels = per_frame * len(frames)
        rh, rw = smart_resize_video(len(frames), height, width, cfg.temporal_patch_size, cfg.factor, cfg.min_pixels,
                                    max_pixels)
    else:
        rh, rw = smart_resize(height, width, cfg.factor, cfg.min_pixels, cfg.max_pixels)
    pixels, grid = _patches(frames, rh, rw, cfg)
    return {"pixel_values_videos": pixels, "video_grid_thw": grid}


def process_images(frames: np.ndarray, cfg: VideoProcessorConfig) -> dict[str, np.ndarray]:
    """(N, H, W, 3) uint8 RGB views -> each an image, as Qwen2-VL's image processor lays them out (Qwen3-VL's is the
    same): {"pixel_values": (sum of t*gh*gw, 3*tp*p*p), "image_grid_thw": (N, 3)}. ``cfg`` from
    ``VideoProcessorConfig.from_model_dir(path, images=True)`` (pixel limits per image)."""
    frames = _check_frames(frames)
    rh, rw = smart_resize(*frames.shape[1:3], cfg.factor, cfg.min_pixels, cfg.max_pixels)
    out = [_patches(f[None], rh, rw, cfg) for f in frames]
    return {"pixel_values": np.concatenate([p for p, _ in out]), "image_grid_thw": np.concatenate([g for _, g in out])}


def _check_frames(frames) -> np.ndarray:
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8 or len(frames) == 0:
        raise SpatialctlError(f"frames must be (T, H, W, 3) uint8, got {frames.shape} {frames.dtype}")
    return frames


def _patches(frames: np.ndarray, rh: int, rw: int, cfg: VideoProcessorConfig) -> tuple[np.ndarray, np.ndarray]:
    """Resize to (rh, rw), normalise, pad to whole temporal patches and flatten merge window by merge window."""
    p, tp, m = cfg.patch_size, cfg.temporal_patch_size, cfg.merge_size
    height, width = frames.shape[1:3]
    if (rh, rw) != (height, width):
        frames = np.stack([np.asarray(Image.fromarray(f).resize((rw, rh), Image.BICUBIC)) for f in frames])
    video = frames.astype(np.float32) * np.float32(1 / 255)
    mean = np.asarray(cfg.image_mean, np.float32)
    std = np.asarray(cfg.image_std, np.float32)
    video = ((video - mean) / std).transpose(0, 3, 1, 2)  # (T, C, H, W)
    if pad := -len(video) % tp:
        video = np.concatenate([video, np.repeat(video[-1:], pad, axis=0)])
    gt, gh, gw = len(video) // tp, rh // p, rw // p
    c = video.shape[1]
    patches = video.reshape(gt, tp, c, gh // m, m, p, gw // m, m, p)
    # -> (t, gh/m, gw/m, m, m, C, tp, p, p): merge windows contiguous, each patch laid out as (C, tp, p, p)
    patches = patches.transpose(0, 3, 6, 4, 7, 2, 1, 5, 8)
    return (np.ascontiguousarray(patches.reshape(gt * gh * gw, c * tp * p * p)),
            np.array([[gt, gh, gw]], dtype=np.int64))


def video_token_count(grid_thw, merge_size: int = 2) -> int:
    t, h, w = (int(v) for v in np.asarray(grid_thw).reshape(-1)[:3])
    return t * h * w // (merge_size * merge_size)


# ---------------------------------------------------------------------------------------------------- prompts


@dataclass
class PromptIds:
    input_ids: list[int]
    labels: list[int]  # -100 except every assistant turn's answer tokens and its closing <|im_end|>
    mm_token_type_ids: list[int]  # 2 on video tokens, 1 on image tokens, 0 elsewhere (drives the 3D RoPE)
    question_ids: list[int]  # the question's text tokens alone (the last turn), for the GSM's first block


def build_prompt_ids(tokenizer, question_text: str, *, n_video_tokens: int, n_geo_tokens: int,
                     answer: str | None = None, system: str = SYSTEM_PROMPT,
                     history: list[tuple[str, str]] = (), frame_times: list[float] | None = None,
                     image_tokens: list[int] | None = None, text_first: bool = False) -> PromptIds:
    """Token ids of a Qwen2.5-VL chat (Qwen3-VL with ``frame_times``, one per temporal patch): the video in the
    first user turn, earlier ``history`` turns
    (user text, assistant answer), then the question (and, for training, its ``answer``).

    The geometry slots sit where DSR Suite inserts its K extra ``<|video_pad|>`` tokens: inside the vision span,
    right after the video's own pads, before ``<|vision_end|>``. They are marked as text (type 0), so the model's
    RoPE index gives them the positions that transformers 4.51's ``get_rope_index`` (DSR Suite's pin) gives
    pads beyond the video grid: consecutive, after the video block. They carry their own id (``GEO_PAD``) so the
    model's count of video pad tokens still matches its video features; their embeddings are the GSM's outputs.

    With ``image_tokens`` (multi-view records, one count per view) the first user turn holds one
    ``<|vision_start|><|image_pad|>...<|vision_end|>`` span per view instead of the video, as Qwen's chat template
    writes a message of several images (no geometry slots then).

    ``text_first``: the first user turn's text comes before the video (as SpaceVista's released harness sends it).

    Every assistant answer is a target (multi-turn records train on all turns). Pieces are tokenised separately
    and joined by id, so the answer (training) and the generation prompt (inference) share the same prefix.
    """
    ids = {t: _token_id(tokenizer, t) for t in (VISION_START, VISION_END, VIDEO_PAD, IMAGE_PAD, GEO_PAD, IM_END)}

    def enc(text: str) -> list[int]:
        return list(tokenizer(text, add_special_tokens=False)["input_ids"])

    special = set(tokenizer.all_special_ids) | set(ids.values()) | {_token_id(tokenizer, IMAGE_PAD)}
    question = enc(question_text)
    if image_tokens is not None:
        if n_geo_tokens:
            raise SpatialctlError("geometry slots go into a video span; multi-view images have none")
        video = []
        for n in image_tokens:
            video += [ids[VISION_START]] + [ids[IMAGE_PAD]] * n + [ids[VISION_END]]
        video.pop()  # the last span's end is appended below, as for a video
    elif frame_times is None:
        video = [ids[VISION_START]] + [ids[VIDEO_PAD]] * n_video_tokens + [ids[GEO_PAD]] * n_geo_tokens
    else:
        # Qwen3-VL: each temporal patch is "<t seconds><|vision_start|>pads<|vision_end|>"; the slots go after the
        # last patch's pads, inside its span
        per = n_video_tokens // len(frame_times)
        video = []
        for k, t in enumerate(frame_times):
            if k:
                video.append(ids[VISION_END])
            video += enc(f"<{t:.1f} seconds>") + [ids[VISION_START]] + [ids[VIDEO_PAD]] * per
        video += [ids[GEO_PAD]] * n_geo_tokens
    video.append(ids[VISION_END])
    input_ids = enc(f"{IM_START}system\n{system}{IM_END}\n{IM_START}user\n") + ([] if text_first else video)
    labels = [-100] * len(input_ids)
    assistant = enc(f"{IM_END}\n{IM_START}assistant\n")
    user = enc(f"{IM_END}\n{IM_START}user\n")
    turns = [*[(enc(q), a) for q, a in history], (question, answer)]
    for k, (text, reply) in enumerate(turns):
        prompt = text + (video if text_first and k == 0 else []) + assistant
        input_ids += prompt
        labels += [-100] * len(prompt)
        if reply is None:
            break
        target = enc(str(reply)) + [ids[IM_END]]
        input_ids += target
        labels += target
        if k + 1 < len(turns):
            # the next user turn opens after "<|im_end|>": its "\n<|im_start|>user\n" is context
            nxt = user[1:]
            input_ids += nxt
            labels += [-100] * len(nxt)
    mm = [2 if t == ids[VIDEO_PAD] else 1 if t == ids[IMAGE_PAD] else 0 for t in input_ids]
    return PromptIds(input_ids, labels, mm, [t for t in question if t not in special])
