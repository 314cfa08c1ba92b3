"""The Geometry Selection Module (DSR Suite) and the Qwen2.5-VL wrapper that feeds its tokens to the LLM.

K learnable queries at the LLM's width; block 1 lets them attend to the question's text embeddings (the LLM's own
embedding table; no special, vision or answer tokens), block 2 lets the result attend to geometry tokens; a final
RMSNorm. The K outputs replace K geometry slot tokens (``<|vision_pad|>``) placed right after the video tokens.

Geometry tokens: every source is pooled to the same ``geo_grid`` x ``geo_grid`` cells per frame so sources line
up token by token: DUSt3R encoder features (``encoder_features``), pointmap patches (xyz normalised per sample +
log confidence + the sample's log scale, so metric size survives normalisation), and VEGA-3D ``genfeat``
features mixed in through :class:`spatialctl.fusion.AdaptiveGatedFusion`.

Adapter folder (what ``train-gsm`` writes and ``eval run --adapter`` loads with :func:`load_adapter`):
``adapter_model.safetensors`` + ``adapter_config.json`` (peft LoRA; or the full language-model weights with
``{"spatialctl_full_finetune": true}``), ``gsm.safetensors``, ``gsm_config.json``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from spatialctl import io, qa_format, qwen, store
from spatialctl.errors import SpatialctlError
from spatialctl.fusion import AdaptiveGatedFusion

GEOMETRY_SOURCES = ("dust3r", "pointmap", "genfeat")
POS_FEATURES = 48  # sinusoidal features per token position (t, y, x): 8 frequencies x sin/cos x 3 axes
GSM_WEIGHTS, GSM_CONFIG = "gsm.safetensors", "gsm_config.json"
ADAPTER_WEIGHTS, ADAPTER_CONFIG = "adapter_model.safetensors", "adapter_config.json"
PROMPT_CONFIG = "prompt.json"  # the instruction appended to every question at training time (GRPO's format)


@dataclass
class GSMConfig:
    hidden_size: int  # the LLM's width
    num_queries: int = 32
    num_heads: int = 0  # 0: hidden_size // 128 (at least 1), so heads are 128 wide at 7B scale
    mlp_ratio: float = 2.0
    geometry: tuple[str, ...] = ("dust3r", "pointmap")
    input_dims: dict[str, int] = field(default_factory=dict)  # channels of dust3r / genfeat features
    geo_grid: int = 8  # cells per side each frame's geometry is pooled to
    pointmap_patch: int = 4  # pixels per side of a pointmap cell after resampling to geo_grid * patch
    rms_norm_eps: float = 1e-6
    geo_token: str = qwen.GEO_PAD

    def __post_init__(self):
        self.geometry = tuple(self.geometry)
        bad = [g for g in self.geometry if g not in GEOMETRY_SOURCES]
        if bad or not self.geometry:
            raise SpatialctlError(f"geometry sources {list(self.geometry)}: choose from {', '.join(GEOMETRY_SOURCES)}")
        if self.geometry == ("genfeat",):
            raise SpatialctlError("genfeat is fused into dust3r or pointmap tokens; add one of them to --geometry")
        if self.num_heads <= 0:
            heads = max(1, self.hidden_size // 128)
            while self.hidden_size % heads:
                heads -= 1
            self.num_heads = heads
        if self.hidden_size % self.num_heads:
            raise SpatialctlError(f"GSM heads {self.num_heads} do not divide the LLM width {self.hidden_size}")

    def input_dim(self, source: str) -> int:
        if source == "pointmap":
            return 4 * self.pointmap_patch**2 + 1
        if source not in self.input_dims:
            raise SpatialctlError(f"GSM config lacks the channel count of {source} features")
        return int(self.input_dims[source])

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["geometry"] = list(self.geometry)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> GSMConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


# ---------------------------------------------------------------------------------------------------- module


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)).to(x.dtype) * self.weight.to(x.dtype)


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.q, self.k, self.v, self.o = (nn.Linear(dim, dim) for _ in range(4))

    def forward(self, x: torch.Tensor, ctx: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        b, n, d = x.shape
        h = self.heads

        def split(t):
            return t.view(b, -1, h, d // h).transpose(1, 2)

        attn_mask = None if mask is None else mask[:, None, None, :]
        out = F.scaled_dot_product_attention(split(self.q(x)), split(self.k(ctx)), split(self.v(ctx)), attn_mask=attn_mask)
        return self.o(out.transpose(1, 2).reshape(b, n, d))


class GSMBlock(nn.Module):
    """Queries: self-attention, cross-attention to a context, MLP; pre-norm residuals."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float, eps: float):
        super().__init__()
        self.norm_self, self.norm_q, self.norm_ctx, self.norm_mlp = (RMSNorm(dim, eps) for _ in range(4))
        self.self_attn = Attention(dim, heads)
        self.cross_attn = Attention(dim, heads)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, q: torch.Tensor, ctx: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = self.norm_self(q)
        q = q + self.self_attn(x, x)
        q = q + self.cross_attn(self.norm_q(q), self.norm_ctx(ctx), mask)
        return q + self.mlp(self.norm_mlp(q))


def _sinusoid(pos: torch.Tensor) -> torch.Tensor:
    """(..., 3) positions in [0, 1] -> (..., POS_FEATURES)."""
    freqs = torch.pi * 2.0 ** torch.arange(POS_FEATURES // 6, device=pos.device, dtype=torch.float32)
    angles = pos.float()[..., None] * freqs  # (..., 3, F)
    return torch.cat([angles.sin(), angles.cos()], -1).flatten(-2)


class GeometrySelectionModule(nn.Module):
    def __init__(self, cfg: GSMConfig):
        super().__init__()
        self.cfg = cfg
        d = cfg.hidden_size
        self.queries = nn.Parameter(torch.randn(cfg.num_queries, d) * 0.02)
        self.text_block = GSMBlock(d, cfg.num_heads, cfg.mlp_ratio, cfg.rms_norm_eps)
        self.geo_block = GSMBlock(d, cfg.num_heads, cfg.mlp_ratio, cfg.rms_norm_eps)
        self.norm_out = RMSNorm(d, cfg.rms_norm_eps)
        self.projectors = nn.ModuleDict({
            s: nn.Sequential(nn.Linear(cfg.input_dim(s), d), nn.GELU(), nn.Linear(d, d))
            for s in cfg.geometry if s != "genfeat"
        })
        self.pos_proj = nn.Linear(POS_FEATURES, d)
        self.fusion = AdaptiveGatedFusion(d, cfg.input_dim("genfeat")) if "genfeat" in cfg.geometry else None

    def encode_geometry(self, geometry: dict[str, torch.Tensor], pos: torch.Tensor) -> torch.Tensor:
        """Aligned per-source features (B, L, C_s) and positions (B, L, 3) -> geometry tokens (B, L, d)."""
        dtype = self.queries.dtype
        tokens = sum(self.projectors[s](geometry[s].to(dtype)) for s in self.projectors)
        if self.fusion is not None:
            tokens = self.fusion(tokens, geometry["genfeat"].to(tokens.dtype))
        return tokens + self.pos_proj(_sinusoid(pos).to(tokens.dtype))

    def forward(self, question_embeds: torch.Tensor, question_mask: torch.Tensor,
                geometry: dict[str, torch.Tensor], geo_pos: torch.Tensor, geo_mask: torch.Tensor) -> torch.Tensor:
        """(B, Lq, d) text embeddings + geometry -> (B, K, d) geometry tokens for the LLM."""
        b = question_embeds.shape[0]
        q = self.queries.unsqueeze(0).expand(b, -1, -1)
        text = question_embeds.to(q.dtype)
        q = self.text_block(q, text, _nonempty(question_mask))
        q = self.geo_block(q, self.encode_geometry(geometry, geo_pos), _nonempty(geo_mask))
        return self.norm_out(q)


def _nonempty(mask: torch.Tensor) -> torch.Tensor:
    # A row with nothing to attend to would give NaN; let it see its first (padding) slot instead.
    mask = mask.bool().clone()
    mask[:, 0] |= ~mask.any(1)
    return mask


# ---------------------------------------------------------------------------------------------------- features


def _pool_grid(x: np.ndarray, g: int) -> np.ndarray:
    """(T, h, w, C) -> (T, g, g, C) float32 by adaptive average pooling (replicates when h or w < g)."""
    t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).permute(0, 3, 1, 2)
    return F.adaptive_avg_pool2d(t, (g, g)).permute(0, 2, 3, 1).numpy()


def pointmap_tokens(pointmaps: np.ndarray, conf: np.ndarray, g: int, patch: int) -> np.ndarray:
    """(T, H, W, 3) world points + (T, H, W) conf -> (T, g, g, 4 * patch^2 + 1).

    Points are centred on the valid points' median and divided by their mean distance to it; the log of that
    scale is appended so absolute size stays recoverable. Invalid pixels (conf 0) stay 0.
    """
    valid = conf > 0
    pts = pointmaps[valid].astype(np.float64)
    if len(pts):
        centre = np.median(pts, axis=0)
        scale = float(np.mean(np.linalg.norm(pts - centre, axis=1))) or 1.0
    else:
        centre, scale = np.zeros(3), 1.0
    xyz = np.where(valid[..., None], (pointmaps - centre) / scale, 0.0).astype(np.float32)
    c = np.log1p(np.maximum(conf, 0)).astype(np.float32)[..., None]
    side = g * patch
    t, h, w = conf.shape
    rows = (np.arange(side) * h // side)[:, None]  # nearest-neighbour resampling keeps points on surfaces
    cols = (np.arange(side) * w // side)[None, :]
    cells = np.concatenate([xyz, c], -1)[:, rows, cols]  # (T, side, side, 4)
    cells = cells.reshape(t, g, patch, g, patch, 4).transpose(0, 1, 3, 2, 4, 5).reshape(t, g, g, 4 * patch * patch)
    log_scale = np.full((t, g, g, 1), math.log(scale), np.float32)
    return np.concatenate([cells, log_scale], -1)


def load_geometry(scene_url: str, frames, cfg: GSMConfig) -> dict[str, np.ndarray]:
    """Per-source (T, g, g, C) float32 features of the given frames of a scene store."""
    s = store.open_scene(scene_url)
    frames = list(frames)
    out = {}
    g = cfg.geo_grid
    for source in cfg.geometry:
        if source == "dust3r":
            if not s.has("encoder_features"):
                raise SpatialctlError(f"{scene_url}: no encoder_features for --geometry dust3r; "
                                      "rerun reconstruct with encoder features stored, or drop dust3r")
            out[source] = _pool_grid(s.read("encoder_features", frames), g)
        elif source == "pointmap":
            out[source] = pointmap_tokens(s.read("pointmaps", frames), s.read("conf", frames), g, cfg.pointmap_patch)
        else:
            if not s.has("genfeat"):
                raise SpatialctlError(f"{scene_url}: no genfeat group for --geometry genfeat; run extract-gen-features")
            out[source] = _pool_grid(s.open_group("genfeat").read("features", np.asarray(frames)), g)
    for source, x in out.items():
        if not np.isfinite(x).all():
            raise SpatialctlError(f"{scene_url}: {source} geometry features hold NaN or infinite values")
    return out


def geometry_dims(geometry: dict[str, np.ndarray]) -> dict[str, int]:
    return {s: int(x.shape[-1]) for s, x in geometry.items() if s != "pointmap"}


# ---------------------------------------------------------------------------------------------------- examples


def resolve_scene(scene: str, scenes_dir: str | None) -> str:
    """A record's ``scene`` (a name, as make-qa writes it, or a path) -> the scene store's URL."""
    candidates = [scene] if os.path.isabs(scene) or scenes_dir is None else []
    if scenes_dir is not None:
        candidates += [os.path.join(scenes_dir, scene, "scene.zarr"), os.path.join(scenes_dir, f"{scene}.zarr"),
                       os.path.join(scenes_dir, scene)]
    for url in candidates:
        if store.exists(url) and store.node_header(url) is not None:
            return url
    raise SpatialctlError(f"scene {scene!r}: no scene store at {' or '.join(candidates)}")


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
                   prompt_suffix: str = "") -> dict:
    """One QA record and its sampled frames -> the arrays the model takes (prompt ids, video patches). Numpy only.

    ``prompt_suffix`` is appended to the user's text (GRPO's answer-format instruction).
    """
    video = qwen.process_video(frames, video_cfg)
    # Qwen2.5-VL spaces temporal RoPE by seconds per temporal patch.
    fps = (len(times) - 1) / float(times[-1] - times[0]) if len(times) > 1 and times[-1] > times[0] else 1.0
    text = qa_format.prompt_text(record.question, record.options, record.answer_type)
    if prompt_suffix:
        text = f"{text}\n{prompt_suffix}"
    answer = qa_format.answer_text(record.answer, record.answer_type) if with_answer else None
    prompt = qwen.build_prompt_ids(
        tokenizer, text, n_video_tokens=qwen.video_token_count(video["video_grid_thw"], video_cfg.merge_size),
        n_geo_tokens=n_geo_tokens, answer=answer)
    return {
        "id": record.id,
        "input_ids": np.asarray(prompt.input_ids, np.int64),
        "labels": np.asarray(prompt.labels, np.int64),
        "mm_token_type_ids": np.asarray(prompt.mm_token_type_ids, np.int64),
        "question_ids": np.asarray(prompt.question_ids, np.int64),
        "pixel_values_videos": video["pixel_values_videos"],
        "video_grid_thw": video["video_grid_thw"],
        "second_per_grid_ts": np.float32(video_cfg.temporal_patch_size / fps),
    }


def prepare_example(record: qa_format.QARecord, scene_url: str, tokenizer, video_cfg: qwen.VideoProcessorConfig,
                    gsm_cfg: GSMConfig | None, *, num_frames: int = 16, with_answer: bool = True,
                    prompt_suffix: str = "") -> dict:
    """One QA record -> model inputs from its scene store's frames, plus geometry when a GSM is used."""
    s = store.open_scene(scene_url)
    frames = select_frames(s.n_frames, record.frames, num_frames)
    example = frames_example(record, s.read("frames", frames), s.read("timestamps", frames), tokenizer, video_cfg,
                             n_geo_tokens=gsm_cfg.num_queries if gsm_cfg else 0, with_answer=with_answer,
                             prompt_suffix=prompt_suffix)
    if gsm_cfg is not None:
        example["geometry"] = load_geometry(scene_url, frames, gsm_cfg)
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
        "pixel_values_videos": torch.cat([torch.from_numpy(e["pixel_values_videos"]) for e in examples]),
        "video_grid_thw": torch.cat([torch.from_numpy(e["video_grid_thw"]) for e in examples]),
        "second_per_grid_ts": torch.tensor([float(e["second_per_grid_ts"]) for e in examples]),
    }
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
        batch["geo_pos"] = torch.stack([_grid_positions(t, g, t_max) for t in lengths])
        batch["geo_mask"] = torch.stack([torch.arange(t_max * g * g) < t * g * g for t in lengths])
    return batch


def _grid_positions(t: int, g: int, t_max: int) -> torch.Tensor:
    """(t_max*g*g, 3) normalised (frame, row, col) of each geometry cell (zeros for padding frames)."""
    tt, yy, xx = torch.meshgrid(torch.arange(t_max), torch.arange(g), torch.arange(g), indexing="ij")
    pos = torch.stack([tt / max(t - 1, 1), yy / max(g - 1, 1), xx / max(g - 1, 1)], -1).reshape(-1, 3)
    pos[t * g * g:] = 0
    return pos.float()


# ---------------------------------------------------------------------------------------------------- wrapper


class GeometryVLM(nn.Module):
    """Qwen2.5-VL (plain or peft-wrapped) + GSM: the GSM's tokens replace the geometry slot embeddings.

    A forward hook on the LLM's input embeddings does the replacement, so ``generate`` works unchanged: the
    prompt pass holds the slots, later single-token passes hold none.
    """

    def __init__(self, vlm: nn.Module, gsm: GeometrySelectionModule | None, geo_token_id: int | None):
        super().__init__()
        self.vlm = vlm
        self.gsm = gsm
        self.geo_token_id = geo_token_id
        self._pending: torch.Tensor | None = None
        self.base.get_input_embeddings().register_forward_hook(self._inject)

    @property
    def xlora(self) -> nn.Module | None:
        """The peft XLoraModel when the LLM is a mixture of LoRA experts (scale experts), else None."""
        inner = getattr(self.vlm, "base_model", None)
        return inner if hasattr(inner, "internal_xlora_classifier") else None

    @property
    def base(self) -> nn.Module:
        """The Qwen2_5_VLForConditionalGeneration itself (LoRA layers, if any, live inside it)."""
        return self.vlm.get_base_model() if hasattr(self.vlm, "get_base_model") else self.vlm

    def _inject(self, module, args, output):
        if self._pending is None:
            return output
        mask = args[0] == self.geo_token_id
        n = int(mask.sum())
        if n == 0:
            return output
        tokens = self._pending
        if n != tokens.shape[0] * tokens.shape[1]:
            raise SpatialctlError(f"{n} geometry slots in the batch, expected {tokens.shape[0] * tokens.shape[1]}")
        return output.masked_scatter(mask.unsqueeze(-1), tokens.to(output.dtype))

    def geometry_tokens(self, batch: dict) -> torch.Tensor:
        emb = self.base.get_input_embeddings().weight
        question = F.embedding(batch["question_ids"].to(emb.device), emb)
        return self.gsm(question, batch["question_mask"].to(emb.device),
                        {k: v.to(emb.device) for k, v in batch["geometry"].items()},
                        batch["geo_pos"].to(emb.device), batch["geo_mask"].to(emb.device))

    def _vlm_inputs(self, batch: dict) -> dict:
        keys = ("input_ids", "attention_mask", "pixel_values_videos", "video_grid_thw", "second_per_grid_ts",
                "mm_token_type_ids")
        device = self.base.get_input_embeddings().weight.device
        return {k: batch[k].to(device) for k in keys}

    def forward(self, batch: dict, per_token: bool = False) -> torch.Tensor:
        """Mean cross-entropy over the answer tokens of the batch; or, with ``per_token``, the (B, L-1) log
        probabilities of each label token (0 where the label is -100), as GRPO needs them."""
        inputs = self._vlm_inputs(batch)
        self._pending = self.geometry_tokens(batch) if self.gsm is not None else None
        try:
            labels = batch["labels"].to(inputs["input_ids"].device)[:, 1:]
            keep = labels != -100
            xlora = self.xlora
            if xlora is None:
                hidden = self.base.model(**inputs, use_cache=False).last_hidden_state
                # The LM head only where there is a target: vocab x sequence logits are the memory peak otherwise.
                logits = self.base.lm_head(hidden[:, :-1][keep])
            else:
                # X-LoRA computes its routing in a pre-hook of the full model (a first pass with the experts off),
                # so the full model is called; logits only at the target columns keep the memory down.
                cols = keep.any(0).nonzero().squeeze(1)
                with xlora._enable_peft_forward_hooks():
                    out = self.base(**inputs, use_cache=False, logits_to_keep=cols)
                logits = out.logits[keep[:, cols]]
        finally:
            self._pending = None
        if not per_token:
            return F.cross_entropy(logits.float(), labels[keep])
        logp = torch.zeros(labels.shape, dtype=torch.float32, device=logits.device)
        token_logp = torch.log_softmax(logits.float(), -1).gather(-1, labels[keep].unsqueeze(-1)).squeeze(-1)
        return logp.masked_scatter(keep, token_logp)

    @torch.no_grad()
    def generate(self, batch: dict, max_new_tokens: int = 16, **kwargs) -> torch.Tensor:
        """Continuation of a left-padded batch (greedy unless ``do_sample=True``); only the new tokens
        (B, <= max_new_tokens)."""
        inputs = self._vlm_inputs(batch)
        self._pending = self.geometry_tokens(batch) if self.gsm is not None else None
        xlora = self.xlora
        try:
            kwargs = {"do_sample": False, **kwargs}
            if xlora is None:
                out = self.base.generate(**inputs, max_new_tokens=max_new_tokens, **kwargs)
            else:
                with xlora._enable_peft_forward_hooks():  # X-LoRA routes in every pass; it runs without a cache
                    out = self.base.generate(**inputs, max_new_tokens=max_new_tokens, use_cache=False, **kwargs)
        finally:
            self._pending = None
        return out[:, inputs["input_ids"].shape[1]:]

    def answer(self, examples: list[dict], tokenizer, max_new_tokens: int = 16) -> list[str]:
        """Examples from :func:`prepare_example` (``with_answer=False``) -> decoded answers."""
        batch = collate(examples, tokenizer.pad_token_id, left_pad=True)
        ids = self.generate(batch, max_new_tokens=max_new_tokens, pad_token_id=tokenizer.pad_token_id,
                            eos_token_id=tokenizer.convert_tokens_to_ids(qwen.IM_END))
        return [t.strip() for t in tokenizer.batch_decode(ids, skip_special_tokens=True)]


# ---------------------------------------------------------------------------------------------------- saving


def trainable_state(model: GeometryVLM) -> tuple[dict, dict]:
    """(language-model weights that train, GSM weights), CPU tensors, keyed as the adapter files store them."""
    base = model.base
    lm = {}
    if model.xlora is not None:
        lm = dict(model.xlora.internal_xlora_classifier.state_dict())
    elif hasattr(model.vlm, "peft_config"):
        from peft import get_peft_model_state_dict

        lm = get_peft_model_state_dict(model.vlm)
    else:
        lm = {k: p for k, p in base.named_parameters() if p.requires_grad}
    gsm = dict(model.gsm.state_dict()) if model.gsm is not None else {}
    return ({k: v.detach().cpu().contiguous() for k, v in lm.items()},
            {k: v.detach().cpu().contiguous() for k, v in gsm.items()})


def save_adapter(out_dir: str, model: GeometryVLM, gsm_cfg: GSMConfig | None, *, base: str,
                 extra: dict | None = None, prompt_suffix: str = "") -> None:
    """Write the adapter files (see the module docstring) into ``out_dir``.

    ``prompt_suffix``, when the model was trained with one, is saved so inference asks questions the same way."""
    from safetensors.torch import save_file

    os.makedirs(out_dir, exist_ok=True)
    lm, gsm = trainable_state(model)
    if model.xlora is not None:
        _save_xlora(out_dir, model, base)
    elif hasattr(model.vlm, "peft_config"):
        model.vlm.save_pretrained(out_dir, safe_serialization=True)
        cfg_file = os.path.join(out_dir, ADAPTER_CONFIG)
        with open(cfg_file) as f:
            adapter_cfg = json.load(f)
        adapter_cfg["base_model_name_or_path"] = base
        io.write_json(cfg_file, adapter_cfg)
    else:
        save_file(lm, os.path.join(out_dir, ADAPTER_WEIGHTS), metadata={"format": "pt"})
        io.write_json(os.path.join(out_dir, ADAPTER_CONFIG), {"spatialctl_full_finetune": True,
                                                            "base_model_name_or_path": base})
    if gsm_cfg is not None:
        save_file(gsm, os.path.join(out_dir, GSM_WEIGHTS), metadata={"format": "pt"})
        info = {**gsm_cfg.to_dict(), "geo_token_id": model.geo_token_id, **(extra or {})}
        io.write_json(os.path.join(out_dir, GSM_CONFIG), info)
    if prompt_suffix:
        io.write_json(os.path.join(out_dir, PROMPT_CONFIG), {"prompt_suffix": prompt_suffix})


def adapter_prompt_suffix(adapter_dir: str) -> str:
    """The instruction the adapter was trained with after each question ("" when none)."""
    path = os.path.join(adapter_dir, PROMPT_CONFIG)
    if not os.path.isfile(path):
        return ""
    with open(path) as f:
        return str(json.load(f).get("prompt_suffix", ""))


def read_adapter_config(adapter_dir: str) -> dict:
    path = os.path.join(adapter_dir, ADAPTER_CONFIG)
    if not os.path.isfile(path):
        raise SpatialctlError(f"{adapter_dir}: not a train-gsm adapter folder (no {ADAPTER_CONFIG})")
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise SpatialctlError(f"{path}: unreadable ({type(e).__name__})") from e


def adapter_base(adapter_dir: str) -> str:
    """The base model the adapter was trained on (hub id or folder, as given to train-gsm)."""
    return read_adapter_config(adapter_dir).get("base_model_name_or_path") or qwen.DEFAULT_BASE


def load_gsm_config(adapter_dir: str) -> tuple[GSMConfig, int] | None:
    """(GSMConfig, geometry slot token id) of an adapter folder, or None when it has no GSM."""
    path = os.path.join(adapter_dir, GSM_CONFIG)
    if not os.path.isfile(path):
        return None
    try:
        with open(path) as f:
            data = json.load(f)
        return GSMConfig.from_dict(data), int(data["geo_token_id"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise SpatialctlError(f"{path}: not a GSM config ({type(e).__name__}: {e})") from e


def load_adapter(model: nn.Module, adapter_dir: str, *, tokenizer=None, merge: bool = True) -> GeometryVLM:
    """Base Qwen2.5-VL + adapter folder -> a GeometryVLM ready for ``answer``/``generate`` (eval mode).

    ``merge`` folds LoRA into the base weights (faster inference; the base model object is changed in place).
    """
    from safetensors.torch import load_file

    cfg = read_adapter_config(adapter_dir)
    weights = os.path.join(adapter_dir, ADAPTER_WEIGHTS)
    if not os.path.isfile(weights):
        raise SpatialctlError(f"{adapter_dir}: missing {ADAPTER_WEIGHTS}")
    vlm = model
    if cfg.get("peft_type") == "XLORA":
        vlm = load_xlora(model, adapter_dir, cfg)
    elif cfg.get("spatialctl_full_finetune"):
        state = load_file(weights)
        missing = set(state) - {k for k, _ in model.named_parameters()}
        if missing:
            raise SpatialctlError(f"{weights}: weights {sorted(missing)[:3]} do not fit this base model")
        model.load_state_dict(state, strict=False)
    else:
        from peft import PeftModel

        try:
            vlm = PeftModel.from_pretrained(model, adapter_dir)
        except Exception as e:
            raise SpatialctlError(f"{adapter_dir}: LoRA adapter does not fit this base model ({type(e).__name__}: {e})") from e
        if merge:
            vlm = vlm.merge_and_unload()
    loaded = load_gsm_config(adapter_dir)
    gsm = geo_token_id = None
    if loaded is not None:
        gsm_cfg, geo_token_id = loaded
        gsm = GeometrySelectionModule(gsm_cfg)
        try:
            gsm.load_state_dict(load_file(os.path.join(adapter_dir, GSM_WEIGHTS)))
        except (OSError, RuntimeError) as e:
            raise SpatialctlError(f"{adapter_dir}/{GSM_WEIGHTS}: does not match gsm_config.json ({e})") from e
        emb = model.get_input_embeddings().weight
        gsm.to(device=emb.device)
        if tokenizer is not None and tokenizer.convert_tokens_to_ids(gsm_cfg.geo_token) != geo_token_id:
            raise SpatialctlError(f"{adapter_dir}: the tokenizer's {gsm_cfg.geo_token} id differs from the "
                                  f"one the adapter was trained with ({geo_token_id})")
    return GeometryVLM(vlm, gsm, geo_token_id).eval()


# ---------------------------------------------------------------------------------------------------- X-LoRA experts
# A scale-experts run keeps one LoRA folder per expert (paths relative to the run folder, so it can move) and the
# X-LoRA router in adapter_model.safetensors. We write both ourselves: peft 0.21's save_pretrained filters state
# keys by adapter name, and with experts named "0", "1", ... it drops the router's "layers.0.weight" (an empty file).


def _save_xlora(out_dir: str, model: GeometryVLM, base: str) -> None:
    from safetensors.torch import save_file

    xlora = model.xlora
    cfg = xlora.xlora_config.to_dict()
    cfg["adapters"] = dict(getattr(xlora, "spatialctl_expert_dirs", cfg["adapters"]))
    # The router's outputs are indexed by expert order; the JSON is written with sorted keys, so keep the order.
    cfg["spatialctl_expert_order"] = list(cfg["adapters"])
    cfg["base_model_name_or_path"] = base
    cfg["peft_type"] = "XLORA"
    cfg["inference_mode"] = True
    state = {k: v.detach().cpu().contiguous() for k, v in xlora.internal_xlora_classifier.state_dict().items()}
    save_file(state, os.path.join(out_dir, ADAPTER_WEIGHTS), metadata={"format": "pt"})
    io.write_json(os.path.join(out_dir, ADAPTER_CONFIG), cfg)


def build_xlora(model: nn.Module, expert_dirs: dict[str, str], root: str | None = None, **xlora_kwargs) -> nn.Module:
    """Base Qwen2.5-VL + LoRA expert folders -> peft X-LoRA model (experts frozen, router trainable).

    ``expert_dirs`` maps expert name -> folder (relative to ``root`` when given), in router output order; the
    mapping is kept on the XLoraModel as ``spatialctl_expert_dirs`` so that saving writes the same names and paths.
    """
    from peft import XLoraConfig, get_peft_model

    paths = {}
    for name, rel in expert_dirs.items():
        path = os.path.join(root, rel) if root and not os.path.isabs(rel) else rel
        if not os.path.isfile(os.path.join(path, ADAPTER_CONFIG)):
            raise SpatialctlError(f"{path}: expert {name!r} has no {ADAPTER_CONFIG}")
        paths[name] = path
    for config in (model.config, getattr(model.config, "text_config", None)):
        if config is not None and hasattr(config, "use_cache"):
            config.use_cache = False  # X-LoRA refuses a model with a KV cache on (it routes on the full sequence)
    names = {f.name for f in dataclasses.fields(XLoraConfig) if f.init}
    kw = {k: v for k, v in xlora_kwargs.items() if k in names and k not in ("adapters", "peft_type")}
    kw.setdefault("hidden_size", model.config.text_config.hidden_size)
    try:
        # peft loads the experts under the names "0", "1", ... but then activates the config's names, so any
        # other names fail (KeyError in disable_adapter_layers): give it its own names, keep ours aside.
        indexed = {str(i): path for i, path in enumerate(paths.values())}
        vlm = get_peft_model(model, XLoraConfig(adapters=indexed, **kw))
    except (ValueError, KeyError, RuntimeError) as e:
        raise SpatialctlError(f"X-LoRA over {list(paths)}: the experts do not fit this base model "
                              f"({type(e).__name__}: {e})") from e
    vlm.base_model.spatialctl_expert_dirs = dict(expert_dirs)
    return vlm


def load_xlora(model: nn.Module, adapter_dir: str, cfg: dict) -> nn.Module:
    """A scale-experts adapter folder (XLORA adapter_config.json + router weights) on top of ``model``."""
    from safetensors.torch import load_file

    experts = cfg.get("adapters") or {}
    order = cfg.get("spatialctl_expert_order") or list(experts)
    if not experts or sorted(order) != sorted(experts):
        raise SpatialctlError(f"{adapter_dir}/{ADAPTER_CONFIG}: X-LoRA config names no experts, or its expert "
                              "order does not match them")
    experts = {name: experts[name] for name in order}
    vlm = build_xlora(model, experts, root=adapter_dir, **cfg)
    classifier = vlm.base_model.internal_xlora_classifier
    try:
        classifier.load_state_dict(load_file(os.path.join(adapter_dir, ADAPTER_WEIGHTS)))
    except (OSError, RuntimeError) as e:
        raise SpatialctlError(f"{adapter_dir}/{ADAPTER_WEIGHTS}: not this X-LoRA router's weights ({e})") from e
    return vlm
