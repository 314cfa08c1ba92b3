"""QA records -> model inputs: frames sampled from the scene store, Qwen2.5-VL prompt ids and video patches,
geometry tokens; and the collate that pads them into a batch."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from spatialctl import qa_format, qwen, store, vega
from spatialctl.errors import SpatialctlError
from spatialctl.gsm.module import GSMConfig
from spatialctl.gsm.tokens import load_geometry


def select_frames(n_frames: int, record_frames, num_frames: int) -> list[int]:
    """The record's frames (uniformly thinned to ``num_frames``), or ``num_frames`` spread over the video."""
    frames = [int(f) for f in record_frames] if record_frames else list(range(n_frames))
    bad = [f for f in frames if not 0 <= f < n_frames]
    if bad:
        raise SpatialctlError(f"frame indices {bad[:3]} are outside the scene's {n_frames} frames")
    if num_frames and len(frames) > num_frames:
        pick = np.linspace(0, len(frames) - 1, num_frames).round().astype(int)
        frames = [frames[i] for i in pick]
    return frames


def frames_example(record: qa_format.QARecord, frames: np.ndarray, times: np.ndarray, tokenizer,
                   video_cfg: qwen.VideoProcessorConfig, *, n_geo_tokens: int = 0, with_answer: bool = False,
                   prompt_suffix: str = "", text_first: bool = False,
                   image_cfg: qwen.VideoProcessorConfig | None = None) -> dict:
    """One QA record and its sampled frames -> the arrays the model takes (prompt ids, video patches). Numpy only.

    ``prompt_suffix`` is appended to the user's text (GRPO's answer-format instruction); ``text_first`` puts the
    text before the video. With ``image_cfg`` (the image processor's settings) the frames are separate views, one
    image each, instead of a video.
    """
    text = qa_format.prompt_text(record.question, record.options, record.answer_type)
    if prompt_suffix:
        text = f"{text}\n{prompt_suffix}"
    answer = qa_format.answer_text(record.answer, record.answer_type) if with_answer else None
    # earlier turns of a multi-turn record: context at inference, supervised targets in training
    history = [(qa_format.prompt_text(t["question"], t.get("options"), t["answer_type"]),
                qa_format.answer_text(t["answer"], t["answer_type"])) for t in record.turns()[:-1]]
    if image_cfg is not None:
        views = qwen.process_images(frames, image_cfg)
        counts = [qwen.video_token_count(g, image_cfg.merge_size) for g in views["image_grid_thw"]]
        prompt = qwen.build_prompt_ids(tokenizer, text, n_video_tokens=0, n_geo_tokens=n_geo_tokens, answer=answer,
                                       history=history, image_tokens=counts, text_first=text_first)
        return {**_prompt_arrays(record, prompt), **views}
    video = qwen.process_video(frames, video_cfg)
    # Qwen2.5-VL spaces temporal RoPE by seconds per temporal patch.
    fps = (len(times) - 1) / float(times[-1] - times[0]) if len(times) > 1 and times[-1] > times[0] else 1.0
    frame_times = None
    if video_cfg.family == "qwen3_vl":  # each temporal patch's time: the mean of its first and last frame's
        tp = video_cfg.temporal_patch_size
        t = np.concatenate([times, np.repeat(times[-1:], -len(times) % tp)])
        frame_times = [(t[i] + t[i + tp - 1]) / 2 for i in range(0, len(t), tp)]
    prompt = qwen.build_prompt_ids(
        tokenizer, text, n_video_tokens=qwen.video_token_count(video["video_grid_thw"], video_cfg.merge_size),
        n_geo_tokens=n_geo_tokens, answer=answer, history=history, frame_times=frame_times, text_first=text_first)
    return {**_prompt_arrays(record, prompt), **video,
            "second_per_grid_ts": np.float32(video_cfg.temporal_patch_size / fps)}


def _prompt_arrays(record: qa_format.QARecord, prompt: qwen.PromptIds) -> dict:
    return {
        "id": record.id,
        "input_ids": np.asarray(prompt.input_ids, np.int64),
        "labels": np.asarray(prompt.labels, np.int64),
        "mm_token_type_ids": np.asarray(prompt.mm_token_type_ids, np.int64),
        "question_ids": np.asarray(prompt.question_ids, np.int64),
    }


def prepare_example(record: qa_format.QARecord, scene_url: str, tokenizer, video_cfg: qwen.VideoProcessorConfig,
                    gsm_cfg: GSMConfig | None, *, num_frames: int = 16, with_answer: bool = True,
                    prompt_suffix: str = "", genfeat=False, image_cfg: qwen.VideoProcessorConfig | None = None
                    ) -> dict:
    """One QA record -> model inputs from its scene store's frames, plus geometry when a GSM is used and, with
    ``genfeat``, features on the visual-token grid (``genfeat_tokens``) for the fusion: the store's generative
    features (True) or ``genfeat(frames)`` (a callable, e.g. :class:`spatialctl.vega.EncoderFeatures`). With
    ``image_cfg`` the ``num_frames`` frames are separate views (images), as :func:`frames_example` lays them out."""
    s = store.open_scene(scene_url)
    frames = select_frames(s.n_frames, record.frames, num_frames)
    pixels = s.read("frames", frames)
    example = frames_example(record, pixels, s.read("timestamps", frames), tokenizer, video_cfg,
                             n_geo_tokens=gsm_cfg.num_queries if gsm_cfg else 0, with_answer=with_answer,
                             prompt_suffix=prompt_suffix, image_cfg=image_cfg)
    if gsm_cfg is not None:
        example["geometry"] = load_geometry(scene_url, frames, gsm_cfg)
    if genfeat:
        feats = genfeat(pixels) if callable(genfeat) else vega.load_genfeat(scene_url, frames)
        add_gen_tokens(example, feats, video_cfg)
    return example


def add_gen_tokens(example: dict, features: np.ndarray, video_cfg: qwen.VideoProcessorConfig) -> dict:
    """Per-frame features (T, h, w, C) on the example's merged visual-token grid, as ``genfeat_tokens``."""
    example["genfeat_tokens"] = vega.gen_tokens(features, example["video_grid_thw"], video_cfg.merge_size,
                                                video_cfg.temporal_patch_size)
    return example


def collate(examples: list[dict], pad_id: int, *, left_pad: bool = False) -> dict:
    """Pad and stack examples into one batch of tensors (left padding for generation)."""
    n = max(len(e["input_ids"]) for e in examples)

    def pad(key, value, dtype=torch.long):
        rows = []
        for e in examples:
            x = torch.as_tensor(e[key], dtype=dtype)
            fill = torch.full((n - len(x),), value, dtype=dtype)
            rows.append(torch.cat([fill, x] if left_pad else [x, fill]))
        return torch.stack(rows)

    lengths = [len(e["input_ids"]) for e in examples]
    batch = {
        "input_ids": pad("input_ids", pad_id),
        "attention_mask": torch.stack([(torch.arange(n) >= n - k) if left_pad else (torch.arange(n) < k)
                                       for k in lengths]).long(),
        "labels": pad("labels", -100),
        "mm_token_type_ids": pad("mm_token_type_ids", 0),
    }
    # a video per example, or (multi-view records) its views as images
    for key in ("pixel_values_videos", "video_grid_thw", "pixel_values", "image_grid_thw"):
        if key in examples[0]:
            batch[key] = torch.cat([torch.from_numpy(e[key]) for e in examples])
    if "second_per_grid_ts" in examples[0]:
        batch["second_per_grid_ts"] = torch.tensor([float(e["second_per_grid_ts"]) for e in examples])
    if "genfeat_tokens" in examples[0]:
        batch["genfeat_tokens"] = torch.cat([torch.from_numpy(e["genfeat_tokens"]) for e in examples])
    nq = max(1, max(len(e["question_ids"]) for e in examples))
    batch["question_ids"] = torch.stack([F.pad(torch.as_tensor(e["question_ids"]), (0, nq - len(e["question_ids"])),
                                               value=pad_id) for e in examples])
    batch["question_mask"] = torch.stack([torch.arange(nq) < len(e["question_ids"]) for e in examples])
    if "geometry" in examples[0]:
        sources = list(examples[0]["geometry"])
        lengths = [e["geometry"][sources[0]].shape[0] for e in examples]  # frames per example
        g = examples[0]["geometry"][sources[0]].shape[1]
        t_max = max(lengths)
        geo = {}
        for s in sources:
            rows = []
            for e in examples:
                x = torch.from_numpy(e["geometry"][s]).reshape(-1, e["geometry"][s].shape[-1])
                rows.append(F.pad(x, (0, 0, 0, (t_max - x.shape[0] // (g * g)) * g * g)))
            geo[s] = torch.stack(rows)
        batch["geometry"] = geo
        batch["geo_pos"] = torch.stack([grid_positions(t, g, t_max) for t in lengths])
        batch["geo_mask"] = torch.stack([torch.arange(t_max * g * g) < t * g * g for t in lengths])
    return batch


def grid_positions(t: int, g: int, t_max: int) -> torch.Tensor:
    """(t_max*g*g, 3) normalised (frame, row, col) of each geometry cell (zeros for padding frames)."""
    tt, yy, xx = torch.meshgrid(torch.arange(t_max), torch.arange(g), torch.arange(g), indexing="ij")
    pos = torch.stack([tt / max(t - 1, 1), yy / max(g - 1, 1), xx / max(g - 1, 1)], -1).reshape(-1, 3)
    pos[t * g * g:] = 0
    return pos.float()
