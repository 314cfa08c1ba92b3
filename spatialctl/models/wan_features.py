"""VEGA-3D generative priors: features from inside a frozen Wan2.1 text-to-video DiT.

The recipe (VEGA-3D): each frame is encoded by the Wan VAE as a one-frame clip, its latent is
normalised with the VAE's per-channel mean/std, noised by flow matching at the schedule timestep
nearest k (default 300 of 1000, shift 5.0), and passed once through the DiT with the empty-prompt
text context. The hidden state after block L (a 0-based index into ``transformer.blocks``; default
20, so 21 of the 30 blocks of Wan2.1-T2V-1.3B run) on the patch grid (latent /2, i.e. frame /16)
is the feature. Blocks after L are never computed.

Everything is done with diffusers' and transformers' own classes and submodules
(``AutoencoderKLWan``, ``WanTransformer3DModel``, ``FlowMatchEulerDiscreteScheduler``,
``UMT5EncoderModel``) so the numbers stay in step with the library; the truncated forward is checked
bit-exact against a hook on the full diffusers forward in the tests.

Noise schedule: the 1000-entry *training* table of diffusers' ``FlowMatchEulerDiscreteScheduler``
(num_train_timesteps=1000, shift): sigma = shift*s / (1 + (shift-1)*s) for s = 1/1000 .. 1, timestep =
1000*sigma. It is the set of timesteps the DiT was trained on and does not depend on a sampler's step
count (the UniPC table Wan's pipeline samples with does); k=300, shift 5 gives timestep 300.15, sigma 0.3002.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from spatialctl import io
from spatialctl.errors import SpatialctlError
from spatialctl.models import WAN_T2V_1_3B

if TYPE_CHECKING:  # annotations only: torch is imported where it is used, so the CLI starts fast
    import torch

DEFAULT_MODEL = WAN_T2V_1_3B
# Wan's pipeline pads every prompt to 512 tokens and zeroes the embedding past the real tokens.
TEXT_MAX_LEN = 512
PATCH_STRIDE = 16  # VAE 8x spatial compression times the DiT's 1x2x2 patch


# --------------------------------------------------------------------------- loading


def _looks_like_path(model: str) -> bool:
    """A local folder (existing, or not shaped like a hub id "org/name")."""
    return Path(model).expanduser().exists() or re.fullmatch(r"[\w.-]+/[\w.-]+", model) is None


def _fetch_hint(model: str) -> str:
    repo = model if not _looks_like_path(model) else DEFAULT_MODEL
    return f"fetch it with `huggingface-cli download {repo} --local-dir DIR` and pass --model DIR"


def _check_model_source(model: str) -> None:
    if _looks_like_path(model) and not Path(model).expanduser().is_dir():
        raise SpatialctlError(f"{model}: no such Wan2.1 model folder; {_fetch_hint(model)}")


def _load(kind: str, model: str, loader):
    _check_model_source(model)
    try:
        return loader()
    except (OSError, ValueError) as exc:  # hub/HTTP errors are OSError subclasses, bad ids ValueError
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise SpatialctlError(
            f"{model}: cannot load the Wan2.1 {kind} ({reason[:160]}); {_fetch_hint(model)}"
        ) from exc


def load_vae(model: str, device: torch.device | str = "cpu"):
    """The Wan VAE, always float32: the encode is a small share of the cost and fp32 keeps latents stable."""
    import torch
    from diffusers import AutoencoderKLWan

    vae = _load("VAE", model, lambda: AutoencoderKLWan.from_pretrained(
        str(Path(model).expanduser()) if _looks_like_path(model) else model,
        subfolder="vae", torch_dtype=torch.float32))
    return vae.to(device).eval().requires_grad_(False)


def load_transformer(model: str, device: torch.device | str = "cpu", dtype: torch.dtype | None = None):
    import torch
    from diffusers import WanTransformer3DModel

    dtype = torch.float32 if dtype is None else dtype  # the default is set here: torch loads late

    transformer = _load("transformer", model, lambda: WanTransformer3DModel.from_pretrained(
        str(Path(model).expanduser()) if _looks_like_path(model) else model,
        subfolder="transformer", torch_dtype=dtype))
    if transformer.config.image_dim is not None or transformer.config.added_kv_proj_dim is not None:
        raise SpatialctlError(f"{model}: an image-conditioned Wan model; VEGA-3D features need a T2V model")
    return transformer.to(device).eval().requires_grad_(False)


# --------------------------------------------------------------------------- empty-prompt context


def compute_empty_prompt_embedding(model: str, device: torch.device | str = "cpu",
                                   dtype: torch.dtype | None = None) -> torch.Tensor:
    """UMT5 embedding of "" exactly as Wan's pipeline builds it: (1, 512, text_dim) float32, zero past EOS."""
    import torch
    from transformers import AutoTokenizer, UMT5EncoderModel

    dtype = torch.float32 if dtype is None else dtype

    root = str(Path(model).expanduser()) if _looks_like_path(model) else model
    tokenizer = _load("tokenizer", model, lambda: AutoTokenizer.from_pretrained(root, subfolder="tokenizer"))
    encoder = _load("text encoder", model, lambda: UMT5EncoderModel.from_pretrained(
        root, subfolder="text_encoder", dtype=dtype))
    encoder = encoder.to(device).eval()
    tokens = tokenizer([""], padding="max_length", max_length=TEXT_MAX_LEN, truncation=True,
                       add_special_tokens=True, return_attention_mask=True, return_tensors="pt")
    n_real = int(tokens.attention_mask.sum())
    with torch.inference_mode():
        hidden = encoder(tokens.input_ids.to(device), tokens.attention_mask.to(device)).last_hidden_state
    out = torch.zeros(1, TEXT_MAX_LEN, hidden.shape[-1], dtype=torch.float32)
    out[:, :n_real] = hidden[:, :n_real].float().cpu()
    return out


def default_prompt_cache(model: str) -> Path:
    """Where the empty-prompt context of ``model`` is cached: one safetensors file per model id or folder."""
    base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "spatialctl" / "wan_empty_prompt"
    key = str(Path(model).expanduser().resolve()) if _looks_like_path(model) else model
    slug = "".join(c if c.isalnum() or c in "-_." else "_" for c in key.strip("/"))[-60:]
    return base / f"{slug}-{hashlib.sha256(key.encode()).hexdigest()[:10]}.safetensors"


def save_prompt_embedding(path: Path, embedding: torch.Tensor, model: str) -> None:

    # atomic: a concurrent job never reads half a file
    io.save_safetensors(path, {"prompt_embeds": embedding.float().contiguous()},
                        metadata={"model": model, "prompt": "", "max_sequence_length": str(TEXT_MAX_LEN)})


def load_prompt_embedding(path: str | Path) -> torch.Tensor:
    """A (1, S, D) float32 context from a safetensors file holding ``prompt_embeds`` ((S, D) or (1, S, D))."""
    import torch
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise SpatialctlError(f"{path}: prompt embedding file not found")
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError) as exc:
        raise SpatialctlError(f"{path}: not a readable safetensors file ({exc})") from exc
    emb = tensors.get("prompt_embeds")
    if emb is None:
        raise SpatialctlError(f"{path}: no 'prompt_embeds' tensor (has {sorted(tensors)})")
    if emb.ndim == 2:
        emb = emb[None]
    if emb.ndim != 3 or emb.shape[0] != 1:
        raise SpatialctlError(f"{path}: prompt_embeds must be (S, D) or (1, S, D), got {tuple(emb.shape)}")
    if not torch.isfinite(emb).all():
        raise SpatialctlError(f"{path}: prompt_embeds holds NaN or Inf")
    return emb.float()


def empty_prompt_context(model: str, cache: str | Path | None = None, device: torch.device | str = "cpu",
                         dtype: torch.dtype | None = None) -> torch.Tensor:
    """The cached empty-prompt context; the text encoder is loaded only when the cache file is absent."""
    path = Path(cache) if cache is not None else default_prompt_cache(model)
    if path.is_file():
        return load_prompt_embedding(path)
    emb = compute_empty_prompt_embedding(model, device=device, dtype=dtype)
    save_prompt_embedding(path, emb, model)
    return emb


# --------------------------------------------------------------------------- noise


@dataclass(frozen=True)
class NoiseLevel:
    """One entry of the flow-matching training table: x_t = (1 - sigma) * x_0 + sigma * noise."""

    timestep: float
    sigma: float
    index: int


def flow_schedule(shift: float = 5.0, num_train_timesteps: int = 1000):
    """diffusers' FlowMatchEulerDiscreteScheduler training table (1000 shifted timesteps, sigma = t / 1000)."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    return FlowMatchEulerDiscreteScheduler(num_train_timesteps=num_train_timesteps, shift=shift)


def nearest_noise_level(scheduler, k: float) -> NoiseLevel:
    import torch
    table = scheduler.timesteps
    i = int(torch.argmin((table - float(k)).abs()))
    return NoiseLevel(timestep=float(table[i]), sigma=float(scheduler.sigmas[i]), index=i)


def seeded_noise(shape: tuple[int, ...], seed: int, key: int) -> torch.Tensor:
    """float32 CPU noise determined by (seed, key) alone, so features do not depend on batching or device."""
    import torch
    state = np.random.SeedSequence([int(seed), int(key)]).generate_state(2, dtype=np.uint32)
    gen = torch.Generator().manual_seed(int(state[0]) << 31 ^ int(state[1]))
    return torch.randn(shape, generator=gen, dtype=torch.float32)


# --------------------------------------------------------------------------- VAE


def resize_center_crop(x: torch.Tensor, size_hw: tuple[int, int]) -> torch.Tensor:
    """(N, C, H, W) → (N, C, h, w): scaled (bilinear) until it covers ``size_hw``, then the centre cut out, as
    VEGA-3D's generative encoders prepare frames (its default Wan size is 1280x720)."""
    import torch.nn.functional as F

    out_h, out_w = size_hw
    h, w = x.shape[-2:]
    scale = max(out_h / h, out_w / w)
    new_h, new_w = max(1, int(round(h * scale))), max(1, int(round(w * scale)))
    if (new_h, new_w) != (h, w):
        x = F.interpolate(x, size=(new_h, new_w), mode="bilinear", align_corners=False)
    top, left = max(0, (new_h - out_h) // 2), max(0, (new_w - out_w) // 2)
    return x[..., top:top + out_h, left:left + out_w]


def frames_to_video(frames: torch.Tensor, size_hw: tuple[int, int]) -> torch.Tensor:
    """uint8 (B, T, H, W, 3) → float32 (B, 3, T, h, w) in [-1, 1] at ``size_hw`` (resized to cover, centre crop)."""
    b, t, h, w, _ = frames.shape
    x = frames.reshape(b * t, h, w, 3).permute(0, 3, 1, 2).float()
    x = resize_center_crop(x / 127.5 - 1.0, tuple(size_hw))
    return x.reshape(b, t, 3, *size_hw).permute(0, 2, 1, 3, 4).clamp_(-1.0, 1.0)


def encode_latents(vae, video: torch.Tensor) -> torch.Tensor:
    """(B, 3, T, H, W) in [-1, 1] → normalised latents (B, z, 1 + (T-1)//4, H/8, W/8): posterior mean."""
    import torch
    with torch.inference_mode():
        latents = vae.encode(video.to(vae.device, vae.dtype)).latent_dist.mode().float()
    z = vae.config.z_dim
    mean = torch.tensor(vae.config.latents_mean, dtype=torch.float32, device=latents.device).view(1, z, 1, 1, 1)
    std = torch.tensor(vae.config.latents_std, dtype=torch.float32, device=latents.device).view(1, z, 1, 1, 1)
    return (latents - mean) / std


# --------------------------------------------------------------------------- DiT


def _prologue(transformer, hidden_states, timestep, context):
    """What WanTransformer3DModel.forward does before its block loop, with its own submodules."""
    rotary_emb = transformer.rope(hidden_states)
    tokens = transformer.patch_embedding(hidden_states).flatten(2).transpose(1, 2).contiguous()
    _temb, timestep_proj, context, _ = transformer.condition_embedder(timestep, context, None, timestep_seq_len=None)
    return tokens, context, timestep_proj.unflatten(1, (6, -1)), rotary_emb


def _check_layer(transformer, layer: int) -> None:
    n = len(transformer.blocks)
    if not 0 <= layer < n:
        raise SpatialctlError(f"layer {layer} is out of range: this Wan transformer has blocks 0..{n - 1}")


def drop_blocks_after(transformer, layer: int) -> int:
    """Free the blocks after ``layer`` (they never run for features); returns the original block count.

    The truncated model no longer supports the full forward; only ``truncated_forward`` should use it.
    """
    import torch
    _check_layer(transformer, layer)
    n = len(transformer.blocks)
    transformer.blocks = torch.nn.ModuleList(list(transformer.blocks)[: layer + 1])
    return n


def _to_grid(transformer, tokens: torch.Tensor, latent_shape) -> torch.Tensor:
    b, _, t, h, w = latent_shape
    p_t, p_h, p_w = transformer.config.patch_size
    return tokens.reshape(b, t // p_t, h // p_h, w // p_w, tokens.shape[-1])


def truncated_forward(transformer, latents: torch.Tensor, timestep: torch.Tensor, context: torch.Tensor,
                      layer: int) -> torch.Tensor:
    """Output of block ``layer`` (0-based), running only blocks 0..layer: (B, T', H/2, W/2, C).

    ``latents`` (B, z, T, h, w) and ``context`` (B, S, D) in the transformer's dtype, ``timestep`` (B,).
    """
    import torch
    _check_layer(transformer, layer)
    with torch.inference_mode():
        tokens, ctx, timestep_proj, rotary_emb = _prologue(transformer, latents, timestep, context)
        for block in transformer.blocks[: layer + 1]:
            tokens = block(tokens, ctx, timestep_proj, rotary_emb)
    return _to_grid(transformer, tokens, latents.shape)


def hooked_full_forward(transformer, latents: torch.Tensor, timestep: torch.Tensor, context: torch.Tensor,
                        layer: int) -> torch.Tensor:
    """The reference: a plain full-depth diffusers forward, block ``layer``'s output caught by a forward hook."""
    import torch
    _check_layer(transformer, layer)
    caught: list[torch.Tensor] = []
    handle = transformer.blocks[layer].register_forward_hook(lambda _m, _i, out: caught.append(out))
    try:
        with torch.inference_mode():
            transformer(hidden_states=latents, timestep=timestep, encoder_hidden_states=context, return_dict=False)
    finally:
        handle.remove()
    return _to_grid(transformer, caught[0], latents.shape)


# --------------------------------------------------------------------------- grids


def qwen_merged_grid(height: int, width: int, min_pixels: int | None = None,
                     max_pixels: int | None = None) -> tuple[int, int]:
    """The token grid Qwen2/2.5-VL's video processor gives an H×W frame after its 2×2 merge.

    Same rule and defaults as ``spatialctl.qwen`` (which train-gsm feeds the VLM with), so the features line
    up with the video tokens they are fused with.
    """
    from spatialctl.qwen import VideoProcessorConfig, smart_resize

    cfg = VideoProcessorConfig()
    h, w = smart_resize(height, width, cfg.factor, min_pixels or cfg.min_pixels, max_pixels or cfg.max_pixels)
    return h // cfg.factor, w // cfg.factor


def pool_to_grid(features: torch.Tensor, grid_hw: tuple[int, int]) -> torch.Tensor:
    """(B, h, w, C) → (B, gh, gw, C) by area averaging (adaptive average pooling, computed in float32)."""
    import torch.nn.functional as F
    if tuple(features.shape[1:3]) == tuple(grid_hw):
        return features.float()
    x = features.float().permute(0, 3, 1, 2)
    return F.adaptive_avg_pool2d(x, grid_hw).permute(0, 2, 3, 1)


# --------------------------------------------------------------------------- extractor


def latent_index(position_in_clip: int) -> int:
    """Latent frame holding a clip's frame: frame 0 alone, then 4 frames per latent (Wan's causal VAE)."""
    return 0 if position_in_clip == 0 else (position_in_clip - 1) // 4 + 1


class WanFeatureExtractor:
    """Frozen VAE + truncated DiT + cached context; call it on uint8 clips to get block-L features."""

    def __init__(self, vae, transformer, context: torch.Tensor, *, layer: int = 20, timestep: float = 300,
                 shift: float = 5.0, seed: int = 0, drop_unused: bool = False):
        _check_layer(transformer, layer)
        if context.shape[-1] != transformer.config.text_dim:
            raise SpatialctlError(
                f"prompt embedding width {context.shape[-1]} does not match the transformer's text_dim "
                f"{transformer.config.text_dim}")
        self.vae, self.transformer, self.layer, self.seed = vae, transformer, layer, seed
        self.num_layers = len(transformer.blocks)
        self.scheduler = flow_schedule(shift)
        self.level = nearest_noise_level(self.scheduler, timestep)
        self.device = transformer.device
        self.dtype = transformer.dtype
        self.context = context.to(self.device, self.dtype)
        if drop_unused:  # the stage never needs the full forward: keep only the weights that run
            drop_blocks_after(transformer, layer)

    @property
    def width(self) -> int:
        return self.transformer.config.num_attention_heads * self.transformer.config.attention_head_dim

    def latents(self, clips: torch.Tensor, size_hw: tuple[int, int], keys: list[int]) -> torch.Tensor:
        """uint8 (B, T, H, W, 3) → noised latents (B, z, T', h, w) float32; noise seeded by (seed, key)."""
        import torch
        video = frames_to_video(clips.to(self.vae.device), size_hw)
        clean = encode_latents(self.vae, video)
        noise = torch.stack([seeded_noise(tuple(clean.shape[1:]), self.seed, k) for k in keys]).to(clean.device)
        t = torch.full((clean.shape[0],), self.level.timestep, dtype=torch.float32, device=clean.device)
        return self.scheduler.scale_noise(clean, t, noise)

    def dit_inputs(self, noised: torch.Tensor):
        import torch
        b = noised.shape[0]
        t = torch.full((b,), self.level.timestep, dtype=torch.float32, device=self.device)
        return noised.to(self.device, self.dtype), t, self.context.expand(b, -1, -1)

    def __call__(self, clips: torch.Tensor, size_hw: tuple[int, int], keys: list[int]) -> torch.Tensor:
        """Block-L features (B, T', H/16, W/16, C) in the transformer's dtype."""
        if size_hw[0] % PATCH_STRIDE or size_hw[1] % PATCH_STRIDE:
            raise SpatialctlError(f"resolution {size_hw[1]}x{size_hw[0]} is not a multiple of {PATCH_STRIDE}")
        return truncated_forward(self.transformer, *self.dit_inputs(self.latents(clips, size_hw, keys)), self.layer)


def parse_resolution(text: str) -> tuple[int, int] | None:
    """"WxH" → (H, W); "native" → None (the frames' own size, floored to a multiple of 16)."""
    if text == "native":
        return None
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise SpatialctlError(f"resolution '{text}' is not WxH (e.g. 832x480) or 'native'") from None
    if w <= 0 or h <= 0 or w % PATCH_STRIDE or h % PATCH_STRIDE:
        raise SpatialctlError(f"resolution '{text}': width and height must be positive multiples of {PATCH_STRIDE}")
    return h, w


def native_size(height: int, width: int) -> tuple[int, int]:
    h, w = (max(PATCH_STRIDE, v // PATCH_STRIDE * PATCH_STRIDE) for v in (height, width))
    return h, w
