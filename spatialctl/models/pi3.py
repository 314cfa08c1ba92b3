"""π³ (Pi3, yyfz/Pi3, BSD): all frames in, one feed-forward pass, per-frame local pointmaps, confidence and
camera-to-world poses out, with no reference frame (permutation-equivariant).

One readable file, in the manner of a transformers model file. The architecture:

- ``encoder``: DINOv2 ViT-L/14 with 4 registers, applied to each frame alone (ImageNet-normalised RGB in
  [0, 1]); its position embedding (trained on a 37 x 37 grid) is resized bicubically (antialiased) to the
  frame's patch grid; the normalised patch tokens go on;
- ``decoder``: 36 blocks with 2D RoPE (base 100) and QK-norm that alternate between attention within a frame
  (even blocks) and attention over all frames' tokens (odd blocks); each frame gets 5 learned register tokens
  (position 0; patches are at 1 + (row, col)). The outputs of the last two blocks are concatenated (2C);
- three 5-block RoPE decoders over each frame's tokens: ``point_decoder`` -> ``point_head`` (linear,
  pixel-shuffle) gives (x/z, y/z, log z) per pixel, so local points = (x/z·z, y/z·z, z); ``conf_decoder`` ->
  ``conf_head`` gives a confidence logit; ``camera_decoder`` -> ``camera_head`` (residual MLPs, mean over
  the patch grid, 9D rotation orthogonalised by SVD, translation) gives the OpenCV camera-to-world pose;
- world points = cam2world @ local points.

Parameter names equal the published safetensors (``yyfz233/Pi3``), so they load with strict key matching.
The blocks defined here (encoder, RoPE blocks, decoders, camera head) are reused by ``pi3x.py``.
Attention runs through ``torch.nn.functional.scaled_dot_product_attention`` (flash kernels on GPU in bf16).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from spatialctl.errors import SpatialctlError
from spatialctl.models.checkpoints import (  # noqa: F401 - public here too
    CONFIG,
    HUB_IDS,
    WEIGHTS,
    check_checkpoint,
    detect_architecture,
    resolve_weights,
)
from spatialctl.models.weights import load_state

PATCH = 14
N_REGISTERS = 5  # decoder register tokens per frame
IMAGE_MEAN = (0.485, 0.456, 0.406)
IMAGE_STD = (0.229, 0.224, 0.225)
PIXEL_LIMIT = 255000  # the reference loader's default pixel budget per frame


@dataclass
class Pi3Config:
    """Widths and depths; the defaults are the published model. Tests shrink the widths, not the structure."""

    enc_dim: int = 1024  # DINOv2 ViT-L
    enc_depth: int = 24
    enc_heads: int = 16
    enc_img_size: int = 518  # grid of the encoder's position embedding: 518 / 14 = 37
    dec_dim: int = 1024
    dec_depth: int = 36
    dec_heads: int = 16
    head_dim: int = 1024  # point / conf decoders (and Pi3X's conv-head input)
    head_heads: int = 16
    cam_dim: int = 512  # camera decoder output and camera head width
    rope_freq: float = 100.0

    @classmethod
    def from_dict(cls, data: dict, source: str = "config") -> Pi3Config:
        names = {f.name for f in fields(cls)}
        known = {k: v for k, v in data.items() if k in names}
        if data.get("decoder_size", "large") != "large" and "dec_dim" not in data:
            raise SpatialctlError(f"{source}: decoder_size {data['decoder_size']!r} is not supported (large only)")
        return cls(**known)


# ---------------------------------------------------------------------------------------------------- RoPE


class RoPE2D(nn.Module):
    """2D rotary embedding: the first half of each head's channels turns with the token's row, the second half
    with its column; within a half, channel pairs (i, i + D/2) rotate at frequency base^(-2i/D)."""

    def __init__(self, freq: float = 100.0):
        super().__init__()
        self.base = freq
        self._cache: dict = {}

    def _cos_sin(self, dim: int, length: int, device, dtype):
        key = (dim, length, device, dtype)
        if key not in self._cache:
            inv_freq = 1.0 / (self.base ** (torch.arange(0, dim, 2, device=device).float() / dim))
            angles = torch.outer(torch.arange(length, device=device, dtype=torch.float32), inv_freq).to(dtype)
            angles = torch.cat((angles, angles), dim=-1)
            self._cache[key] = (angles.cos(), angles.sin())
        return self._cache[key]

    @staticmethod
    def _rotate(tokens, pos, cos, sin):
        cos, sin = F.embedding(pos, cos)[:, None], F.embedding(pos, sin)[:, None]
        half = tokens.shape[-1] // 2
        rotated = torch.cat((-tokens[..., half:], tokens[..., :half]), dim=-1)
        return tokens * cos + rotated * sin

    def forward(self, tokens: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        """tokens (B, heads, T, d), pos (B, T, 2) integer (row, col)."""
        dim = tokens.shape[-1] // 2
        cos, sin = self._cos_sin(dim, int(pos.max()) + 1, tokens.device, tokens.dtype)
        rows, cols = tokens.chunk(2, dim=-1)
        return torch.cat((self._rotate(rows, pos[..., 0], cos, sin), self._rotate(cols, pos[..., 1], cos, sin)), -1)


def patch_positions(n: int, grid_h: int, grid_w: int, device) -> torch.Tensor:
    """(n, R + h*w, 2) decoder positions: 0 for the registers, 1 + (row, col) for the patches."""
    rows, cols = torch.meshgrid(torch.arange(grid_h, device=device), torch.arange(grid_w, device=device),
                                indexing="ij")
    patches = torch.stack((rows, cols), -1).reshape(1, -1, 2) + 1
    pos = torch.cat((torch.zeros(1, N_REGISTERS, 2, dtype=patches.dtype, device=device), patches), 1)
    return pos.expand(n, -1, -1)


# ---------------------------------------------------------------------------------------------------- blocks


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1, self.act, self.fc2 = nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class LayerScale(nn.Module):
    def __init__(self, dim: int, init: float = 1.0):
        super().__init__()
        self.gamma = nn.Parameter(torch.full((dim,), init))

    def forward(self, x):
        return x * self.gamma


class Attention(nn.Module):
    """Self-attention, optional QK-norm (LayerNorm over each head's channels) and RoPE."""

    def __init__(self, dim: int, heads: int, qk_norm: bool = False, rope: RoPE2D | None = None):
        super().__init__()
        self.heads = heads
        self.qkv, self.proj = nn.Linear(dim, dim * 3), nn.Linear(dim, dim)
        self.q_norm = nn.LayerNorm(dim // heads) if qk_norm else nn.Identity()
        self.k_norm = nn.LayerNorm(dim // heads) if qk_norm else nn.Identity()
        self.rope = rope

    def qkv_heads(self, x):
        b, t, c = x.shape
        q, k, v = self.qkv(x).reshape(b, t, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        return self.q_norm(q).to(v.dtype), self.k_norm(k).to(v.dtype), v

    def forward(self, x, pos=None):
        q, k, v = self.qkv_heads(x)
        if self.rope is not None:
            q, k = self.rope(q, pos), self.rope(k, pos)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(x.shape))


class Block(nn.Module):
    """Pre-norm transformer block; LayerScale when ``init_values`` is given (DINOv2, the main decoder)."""

    def __init__(self, dim: int, heads: int, init_values: float | None = None, qk_norm: bool = False,
                 rope: RoPE2D | None = None):
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(dim, eps=1e-6), nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, heads, qk_norm, rope)
        self.mlp = Mlp(dim, 4 * dim)
        self.ls1 = LayerScale(dim, init_values) if init_values else nn.Identity()
        self.ls2 = LayerScale(dim, init_values) if init_values else nn.Identity()

    def forward(self, x, pos=None):
        x = x + self.ls1(self.attn(self.norm1(x), pos))
        return x + self.ls2(self.mlp(self.norm2(x)))


class PatchEmbed(nn.Module):
    def __init__(self, in_chans: int, dim: int):
        super().__init__()
        self.proj = nn.Conv2d(in_chans, dim, kernel_size=PATCH, stride=PATCH)

    def forward(self, x):
        return self.proj(x).flatten(2).transpose(1, 2)


class DinoV2(nn.Module):
    """DINOv2 ViT/14 with 4 registers (``dinov2_vitl14_reg``), returning normalised patch tokens."""

    def __init__(self, dim: int, depth: int, heads: int, img_size: int = 518, in_chans: int = 3):
        super().__init__()
        grid = img_size // PATCH
        self.patch_embed = PatchEmbed(in_chans, dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, grid * grid + 1, dim))
        self.register_tokens = nn.Parameter(torch.zeros(1, 4, dim))
        self.blocks = nn.ModuleList(Block(dim, heads, init_values=1.0) for _ in range(depth))
        self.norm = nn.LayerNorm(dim, eps=1e-6)

    def position_embedding(self, grid_h: int, grid_w: int, dtype) -> torch.Tensor:
        grid = math.isqrt(self.pos_embed.shape[1] - 1)
        if (grid_h, grid_w) == (grid, grid):
            return self.pos_embed
        pos = self.pos_embed.float()
        patches = pos[:, 1:].reshape(1, grid, grid, -1).permute(0, 3, 1, 2)
        patches = F.interpolate(patches, size=(grid_h, grid_w), mode="bicubic", antialias=True)
        patches = patches.permute(0, 2, 3, 1).reshape(1, grid_h * grid_w, -1)
        return torch.cat((pos[:, :1], patches), dim=1).to(dtype)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        n, _, h, w = images.shape
        x = self.patch_embed(images)
        x = torch.cat((self.cls_token.expand(n, -1, -1), x), dim=1)
        x = x + self.position_embedding(h // PATCH, w // PATCH, x.dtype)
        x = torch.cat((x[:, :1], self.register_tokens.expand(n, -1, -1), x[:, 1:]), dim=1)
        for block in self.blocks:
            x = block(x)
        return self.norm(x)[:, 1 + self.register_tokens.shape[1]:]


class TransformerDecoder(nn.Module):
    """Linear projection, 5 RoPE blocks over one frame's tokens, linear output."""

    def __init__(self, in_dim: int, dim: int, heads: int, out_dim: int, rope: RoPE2D, depth: int = 5):
        super().__init__()
        self.projects = nn.Linear(in_dim, dim)
        self.blocks = nn.ModuleList(Block(dim, heads, rope=rope) for _ in range(depth))
        self.linear_out = nn.Linear(dim, out_dim)

    def forward(self, x, pos):
        x = self.projects(x)
        for block in self.blocks:
            x = block(x, pos)
        return self.linear_out(x)


class LinearPts3d(nn.Module):
    """Each patch token -> a 14 x 14 tile of ``out`` channels (pixel shuffle)."""

    def __init__(self, dim: int, out: int):
        super().__init__()
        self.proj = nn.Linear(dim, out * PATCH * PATCH)

    def forward(self, tokens, h: int, w: int) -> torch.Tensor:
        n = tokens.shape[0]
        feat = self.proj(tokens).transpose(-1, -2).reshape(n, -1, h // PATCH, w // PATCH)
        return F.pixel_shuffle(feat, PATCH).permute(0, 2, 3, 1)  # (n, H, W, out)


class ResConvBlock(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.res_conv1, self.res_conv2, self.res_conv3 = (nn.Linear(dim, dim) for _ in range(3))

    def forward(self, x):
        return x + F.relu(self.res_conv3(F.relu(self.res_conv2(F.relu(self.res_conv1(x))))))


class CameraHead(nn.Module):
    """Patch features -> mean over the grid -> OpenCV cam2world (rotation by SVD orthogonalisation)."""

    def __init__(self, dim: int = 512):
        super().__init__()
        self.res_conv = nn.ModuleList(ResConvBlock(dim) for _ in range(2))
        self.more_mlps = nn.Sequential(nn.Linear(dim, dim), nn.ReLU(), nn.Linear(dim, dim), nn.ReLU())
        self.fc_t, self.fc_rot = nn.Linear(dim, 3), nn.Linear(dim, 9)

    def forward(self, feat: torch.Tensor) -> torch.Tensor:
        for block in self.res_conv:
            feat = block(feat)
        feat = self.more_mlps(feat.mean(dim=1)).float()
        t, rot = self.fc_t(feat), svd_orthogonalize(self.fc_rot(feat))
        pose = torch.zeros(len(feat), 4, 4, device=feat.device)
        pose[:, :3, :3], pose[:, :3, 3], pose[:, 3, 3] = rot, t, 1.0
        return pose


def svd_orthogonalize(m: torch.Tensor) -> torch.Tensor:
    """9 numbers -> the nearest rotation (rows normalised first, reflection removed)."""
    m = F.normalize(m.reshape(-1, 3, 3), p=2, dim=-1).transpose(-1, -2)
    u, _, vh = torch.linalg.svd(m)
    v = vh.transpose(-1, -2)
    det = torch.det(v @ u.transpose(-1, -2))
    return torch.cat((v[:, :, :-1], v[:, :, -1:] * det.view(-1, 1, 1)), dim=2) @ u.transpose(-1, -2)


def homogenize(points: torch.Tensor) -> torch.Tensor:
    return torch.cat((points, torch.ones_like(points[..., :1])), dim=-1)


# ---------------------------------------------------------------------------------------------------- model


class Pi3Trunk(nn.Module):
    """What π³ and Pi3X share: encoder, register tokens, the alternating decoder, ImageNet normalisation."""

    def __init__(self, config: Pi3Config):
        super().__init__()
        self.config = config
        c = config
        self.encoder = DinoV2(c.enc_dim, c.enc_depth, c.enc_heads, c.enc_img_size)
        self.rope = RoPE2D(c.rope_freq)
        self.decoder = nn.ModuleList(Block(c.dec_dim, c.dec_heads, init_values=0.01, qk_norm=True, rope=self.rope)
                                     for _ in range(c.dec_depth))
        self.register_token = nn.Parameter(torch.zeros(1, 1, N_REGISTERS, c.dec_dim))
        self.register_buffer("image_mean", torch.tensor(IMAGE_MEAN).view(1, 3, 1, 1))
        self.register_buffer("image_std", torch.tensor(IMAGE_STD).view(1, 3, 1, 1))

    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        """(B, N, 3, H, W) in [0, 1] -> (B*N, h*w, C) encoder patch tokens."""
        b, n, _, h, w = images.shape
        if h % PATCH or w % PATCH:
            raise SpatialctlError(f"frames of {h}x{w} pixels: π³ needs multiples of {PATCH}")
        images = (images.reshape(b * n, 3, h, w) - self.image_mean) / self.image_std
        return self.encoder(images)

    def decode(self, tokens: torch.Tensor, b: int, n: int, grid_hw: tuple[int, int], inject=None):
        """Alternating frame/global attention. ``inject(i, hidden)`` may update hidden after block i.
        Returns ((B*N, R + h*w, 2C) the last two blocks' outputs side by side, (B*N, R + h*w, 2) positions)."""
        registers = self.register_token.expand(b, n, -1, -1).reshape(b * n, N_REGISTERS, -1)
        hidden = torch.cat((registers.to(tokens.dtype), tokens), dim=1)
        t = hidden.shape[1]
        pos = patch_positions(b * n, *grid_hw, tokens.device)
        penultimate = None
        for i, block in enumerate(self.decoder):
            if i % 2 == 0:
                hidden = block(hidden.reshape(b * n, t, -1), pos)
            else:
                hidden = block(hidden.reshape(b, n * t, -1), pos.reshape(b, n * t, 2))
            if inject is not None:
                hidden = inject(i, hidden)
            if i == len(self.decoder) - 2:
                penultimate = hidden.reshape(b * n, t, -1)
        return torch.cat((penultimate, hidden.reshape(b * n, t, -1)), dim=-1), pos


class Pi3(Pi3Trunk):
    """π³: ``forward(images (B, N, 3, H, W) in [0, 1])`` -> dict of points, local_points, conf (logits),
    camera_poses (OpenCV cam2world, (B, N, 4, 4)), and ``features`` (the decoder output the heads read)."""

    architecture = "pi3"

    def __init__(self, config: Pi3Config | None = None):
        super().__init__(config or Pi3Config())
        c = self.config
        self.point_decoder = TransformerDecoder(2 * c.dec_dim, c.head_dim, c.head_heads, c.head_dim, self.rope)
        self.point_head = LinearPts3d(c.head_dim, 3)
        self.conf_decoder = TransformerDecoder(2 * c.dec_dim, c.head_dim, c.head_heads, c.head_dim, self.rope)
        self.conf_head = LinearPts3d(c.head_dim, 1)
        self.camera_decoder = TransformerDecoder(2 * c.dec_dim, c.head_dim, c.head_heads, c.cam_dim, self.rope)
        self.camera_head = CameraHead(c.cam_dim)

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        b, n, _, h, w = images.shape
        hidden, pos = self.decode(self.encode_images(images), b, n, (h // PATCH, w // PATCH))
        point = self.point_decoder(hidden, pos)[:, N_REGISTERS:].float()
        conf = self.conf_decoder(hidden, pos)[:, N_REGISTERS:].float()
        camera = self.camera_decoder(hidden, pos)[:, N_REGISTERS:].float()
        with torch.autocast(device_type=images.device.type, enabled=False):
            xy, z = self.point_head(point, h, w).reshape(b, n, h, w, 3).split([2, 1], dim=-1)
            z = torch.exp(z)
            local_points = torch.cat((xy * z, z), dim=-1)
            conf = self.conf_head(conf, h, w).reshape(b, n, h, w, 1)
            poses = self.camera_head(camera).reshape(b, n, 4, 4)
            points = torch.einsum("bnij,bnhwj->bnhwi", poses, homogenize(local_points))[..., :3]
        return {"points": points, "local_points": local_points, "conf": conf, "camera_poses": poses,
                "features": hidden[:, N_REGISTERS:]}


# ---------------------------------------------------------------------------------------------------- loading

ARCHITECTURES = ("pi3", "pi3x")



def load_model(name: str, architecture: str, device: str | torch.device = "cpu", conditioned: bool = True):
    """A π³ or Pi3X network in eval mode from a hub id (local cache only), folder or .safetensors file.

    Pi3X without ``conditioned`` skips building its conditioning branches (as the reference's
    ``disable_multimodal``), their weights are ignored."""
    from safetensors.torch import load_file

    weights, config_dict = check_checkpoint(name, architecture)
    if architecture == "pi3":
        model = Pi3(Pi3Config.from_dict(config_dict, str(weights)))
    else:
        from spatialctl.models.pi3x import Pi3X, Pi3XConfig

        model = Pi3X(Pi3XConfig.from_dict(config_dict, str(weights)), conditioned=conditioned)
    state = load_file(str(weights), device="cpu")
    if architecture == "pi3x" and not conditioned:
        state = {k: v for k, v in state.items() if not k.startswith(("depth_encoder.", "depth_emb", "ray_embed.",
                                                                     "pose_inject_blk."))}
    for name, value in (("image_mean", IMAGE_MEAN), ("image_std", IMAGE_STD)):
        state.setdefault(name, torch.tensor(value).view(1, 3, 1, 1))  # constant buffers some exports omit
    load_state(model, state, str(weights))
    return model.to(device).eval()


def save_model(model: nn.Module, folder: str | Path) -> Path:
    """``config.json`` (our size fields) + ``model.safetensors`` (the published key names)."""
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / CONFIG).write_text(json.dumps(asdict(model.config), indent=2))
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(folder / WEIGHTS))
    return folder
