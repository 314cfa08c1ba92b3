"""Pi3X (yyfz/Pi3, BSD): π³ with convolutional heads, optional conditions and an approximate metric scale.

Differences from ``pi3.py`` (whose encoder, decoder, RoPE blocks and camera head it reuses):

- ``point_head`` / ``conf_head``: MoGe-style conv heads. The patch grid is upsampled x8 by three stages of
  (transposed conv 2x2, conv 3x3, 2 residual conv blocks with group norm), each stage's input gets the
  normalised view-plane (u, v) as 2 extra channels; then bilinear resize to the image, (u, v) again, and a
  3x3 conv, ReLU, 1x1 conv per output (point: x/z, y/z and log z, clamped at 15; conf: a logit);
- ``metric_decoder``: a learned token cross-attends (5 blocks) to all frames' tokens; ``metric_head`` gives
  log(scale). Points, local points and camera translations are multiplied by that scale;
- conditions (all optional, all frames or none): ``intrinsics`` (pixels, pixel centres at +0.5 as in the
  reference) become per-pixel ray slopes embedded by ``ray_embed``; ``depths`` (0 = unknown) are divided by
  their mean and embedded by ``depth_encoder`` (a second DINOv2 on depth + validity); ``poses`` (OpenCV
  cam2world) are made relative to frame 0 and scale-normalised, then injected after decoder blocks
  1, 9, 17, 25, 33 by ``pose_inject_blk`` (attention over all frames with PRoPE's camera-aware encoding
  of the first half of each head's channels and 2D RoPE on the rest).

Parameter names equal the published ``yyfz233/Pi3X`` safetensors.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from spatialctl.models.pi3 import (
    N_REGISTERS,
    PATCH,
    Attention,
    CameraHead,
    DinoV2,
    LayerScale,
    Mlp,
    PatchEmbed,
    Pi3Config,
    Pi3Trunk,
    RoPE2D,
    TransformerDecoder,
    homogenize,
)


@dataclass
class Pi3XConfig(Pi3Config):
    metric_dim: int = 512
    metric_heads: int = 8
    conv_dims: tuple[int, ...] = (256, 128, 64)  # conv-head widths after each x2 upsampling
    conv_last: int = 32
    pose_inject_layers: tuple[int, ...] = (1, 9, 17, 25, 33)

    def __post_init__(self):
        self.conv_dims = tuple(int(d) for d in self.conv_dims)
        self.pose_inject_layers = tuple(int(i) for i in self.pose_inject_layers)


# ---------------------------------------------------------------------------------------------------- conv head


def view_plane_uv(h: int, w: int, aspect: float, dtype, device) -> torch.Tensor:
    """(2, h, w): u, v spanning ±aspect/diag and ±1/diag (pixel centres), for the head's sense of aspect."""
    span_x, span_y = aspect / (1 + aspect**2) ** 0.5, 1 / (1 + aspect**2) ** 0.5
    u = torch.linspace(-span_x * (w - 1) / w, span_x * (w - 1) / w, w, dtype=dtype, device=device)
    v = torch.linspace(-span_y * (h - 1) / h, span_y * (h - 1) / h, h, dtype=dtype, device=device)
    return torch.stack(torch.meshgrid(u, v, indexing="xy"), dim=0)


def _conv3(cin: int, cout: int) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, kernel_size=3, padding=1, padding_mode="replicate")


class ResidualConvBlock(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.layers = nn.Sequential(nn.GroupNorm(1, dim), nn.ReLU(), _conv3(dim, hidden),
                                    nn.GroupNorm(hidden // 32, hidden), nn.ReLU(), _conv3(hidden, dim))

    def forward(self, x):
        return x + self.layers(x)


class ConvHead(nn.Module):
    def __init__(self, dim_in: int, dims: tuple[int, ...], outputs: tuple[int, ...], last: int = 32):
        super().__init__()
        self.upsample_blocks = nn.ModuleList(
            nn.Sequential(nn.Sequential(nn.ConvTranspose2d(cin + 2, cout, kernel_size=2, stride=2), _conv3(cout, cout)),
                          *(ResidualConvBlock(cout, 2 * cout) for _ in range(2)))
            for cin, cout in zip((dim_in, *dims[:-1]), dims, strict=True))
        self.output_block = nn.ModuleList(
            nn.Sequential(_conv3(dims[-1] + 2, last), nn.ReLU(), nn.Conv2d(last, out, kernel_size=1))
            for out in outputs)

    def _with_uv(self, x, aspect):
        uv = view_plane_uv(x.shape[-2], x.shape[-1], aspect, x.dtype, x.device)
        return torch.cat((x, uv.expand(x.shape[0], -1, -1, -1)), dim=1)

    def forward(self, tokens: torch.Tensor, grid_h: int, grid_w: int) -> list[torch.Tensor]:
        """(n, h*w, C) -> one (n, out, 14h, 14w) map per output."""
        aspect = grid_w / grid_h
        x = tokens.transpose(1, 2).unflatten(2, (grid_h, grid_w))
        for block in self.upsample_blocks:
            x = block(self._with_uv(x, aspect))
        x = F.interpolate(x, (grid_h * PATCH, grid_w * PATCH), mode="bilinear", align_corners=False)
        x = self._with_uv(x, aspect)
        return [block(x) for block in self.output_block]


def chunked(head: ConvHead, tokens, grid_h, grid_w, chunk: int = 64) -> list[torch.Tensor]:
    """The conv head at full resolution is the memory peak: run it on at most ``chunk`` frames at a time."""
    parts = [head(tokens[i:i + chunk], grid_h, grid_w) for i in range(0, len(tokens), chunk)]
    return [torch.cat(outs, dim=0) for outs in zip(*parts, strict=True)]


# ---------------------------------------------------------------------------------------------------- metric


class CrossAttention(nn.Module):
    def __init__(self, dim: int, heads: int, rope: RoPE2D):
        super().__init__()
        self.heads, self.rope = heads, rope
        self.q_proj, self.k_proj, self.v_proj, self.proj = (nn.Linear(dim, dim) for _ in range(4))

    def forward(self, x, context, xpos, cpos):
        b, t, c = x.shape
        q = self.q_proj(x).reshape(b, t, self.heads, -1).transpose(1, 2)
        k = self.k_proj(context).reshape(b, context.shape[1], self.heads, -1).transpose(1, 2)
        v = self.v_proj(context).reshape(b, context.shape[1], self.heads, -1).transpose(1, 2)
        q, k = self.rope(q, xpos), self.rope(k, cpos)
        return self.proj(F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, t, c))


class CrossOnlyBlock(nn.Module):
    def __init__(self, dim: int, heads: int, rope: RoPE2D):
        super().__init__()
        self.norm2, self.norm_y, self.norm3 = (nn.LayerNorm(dim, eps=1e-6) for _ in range(3))
        self.cross_attn = CrossAttention(dim, heads, rope)
        self.mlp = Mlp(dim, 4 * dim)

    def forward(self, x, context, xpos, cpos):
        x = x + self.cross_attn(self.norm2(x), self.norm_y(context), xpos, cpos)
        return x + self.mlp(self.norm3(x))


class MetricDecoder(nn.Module):
    def __init__(self, in_dim: int, dim: int, heads: int, rope: RoPE2D, depth: int = 5):
        super().__init__()
        self.projects_x, self.projects_y = nn.Linear(in_dim, dim), nn.Linear(in_dim, dim)
        self.blocks = nn.ModuleList(CrossOnlyBlock(dim, heads, rope) for _ in range(depth))
        self.linear_out = nn.Linear(dim, dim)

    def forward(self, x, context, xpos, cpos):
        x, context = self.projects_x(x), self.projects_y(context)
        for block in self.blocks:
            x = block(x, context, xpos, cpos)
        return self.linear_out(x)


# ---------------------------------------------------------------------------------------------------- pose injection


def invert_se3(pose: torch.Tensor) -> torch.Tensor:
    rot_t = pose[..., :3, :3].transpose(-1, -2)
    out = torch.zeros_like(pose)
    out[..., :3, :3] = rot_t
    out[..., :3, 3] = -(rot_t @ pose[..., :3, 3:4])[..., 0]
    out[..., 3, 3] = 1.0
    return out


def _rope_1d(x, cos, sin, inverse: bool = False):
    """PRoPE's split-half rotation; ``inverse`` undoes it (applied to the attention output)."""
    a, b = x.chunk(2, dim=-1)
    if inverse:
        return torch.cat((cos * a - sin * b, sin * a + cos * b), dim=-1)
    return torch.cat((cos * a + sin * b, -sin * a + cos * b), dim=-1)


class PRoPEAttention(Attention):
    """Attention over all frames; per head, channels [0, d/2) are multiplied in 4-blocks by a per-frame camera
    matrix (query: world2cam^T, key/value: cam2world, output: world2cam, the GTA form without intrinsics),
    channels [d/2, 3d/4) and [3d/4, d) are rotated by the patch column and row (base 100)."""

    def forward(self, x, world2cam: torch.Tensor, grid_h: int, grid_w: int):
        q, k, v = self.qkv_heads(x)
        b, frames = world2cam.shape[:2]
        d = q.shape[-1]
        quarter = d // 4
        freqs = 100.0 ** (-torch.arange(quarter // 2, device=x.device) / (quarter // 2))
        cols = torch.arange(grid_w, device=x.device).repeat(grid_h * frames)
        rows = torch.arange(grid_h, device=x.device).repeat_interleave(grid_w).repeat(frames)
        angles_x, angles_y = cols[:, None] * freqs, rows[:, None] * freqs
        cx, sx, cy, sy = angles_x.cos(), angles_x.sin(), angles_y.cos(), angles_y.sin()

        def transform(t, matrix, inverse=False):
            cam, rot_x, rot_y = t.split([d // 2, quarter, quarter], dim=-1)
            cam = torch.einsum("bcij,bhcpkj->bhcpki", matrix,
                               cam.reshape(b, t.shape[1], frames, -1, d // 8, 4)).reshape(cam.shape)
            return torch.cat((cam, _rope_1d(rot_x, cx, sx, inverse), _rope_1d(rot_y, cy, sy, inverse)), dim=-1)

        cam2world = invert_se3(world2cam)
        out = F.scaled_dot_product_attention(transform(q, world2cam.transpose(-1, -2)), transform(k, cam2world),
                                             transform(v, cam2world))
        out = transform(out, world2cam, inverse=True)
        return self.proj(out.transpose(1, 2).reshape(x.shape))


class PoseInjectBlock(nn.Module):
    """Returns the update only (attention and MLP in parallel on the same input), added by the caller."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(dim, eps=1e-6), nn.LayerNorm(dim, eps=1e-6)
        self.attn = PRoPEAttention(dim, heads, qk_norm=True)
        self.mlp = Mlp(dim, 4 * dim)
        self.ls1, self.ls2 = LayerScale(dim, 0.01), LayerScale(dim, 0.01)

    def forward(self, x, cam2world, grid_h, grid_w):
        return self.ls1(self.attn(self.norm1(x), invert_se3(cam2world), grid_h, grid_w)) + self.ls2(
            self.mlp(self.norm2(x)))


# ---------------------------------------------------------------------------------------------------- model


def ray_slopes(intrinsics: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """(B, N, 3, 3) K (pixel centres at +0.5) -> (B, N, H, W, 2) x/z, y/z of each pixel's ray."""
    v, u = torch.meshgrid(torch.arange(h, device=intrinsics.device), torch.arange(w, device=intrinsics.device),
                          indexing="ij")
    pix = torch.stack((u + 0.5, v + 0.5, torch.ones_like(u, dtype=torch.float64)), -1).float()
    return torch.einsum("bnij,hwj->bnhwi", torch.inverse(intrinsics.float()), pix)[..., :2]


class Pi3X(Pi3Trunk):
    """Pi3X: ``forward(images, intrinsics=None, poses=None, depths=None)`` -> dict of points, local_points,
    conf (logits), camera_poses (cam2world), rays, metric (scale per batch item), features."""

    architecture = "pi3x"

    def __init__(self, config: Pi3XConfig | None = None, conditioned: bool = True):
        super().__init__(config or Pi3XConfig())
        c = self.config
        self.conditioned = conditioned
        if conditioned:
            self.depth_encoder = DinoV2(c.enc_dim, c.enc_depth, c.enc_heads, c.enc_img_size, in_chans=2)
            self.depth_emb = nn.Parameter(torch.zeros(1, 1, c.enc_dim))
            self.ray_embed = PatchEmbed(2, c.enc_dim)
            self.pose_inject_blk = nn.ModuleList(PoseInjectBlock(c.dec_dim, c.dec_heads)
                                                 for _ in c.pose_inject_layers)
        self.point_decoder = TransformerDecoder(2 * c.dec_dim, c.head_dim, c.head_heads, c.head_dim, self.rope)
        self.point_head = ConvHead(c.head_dim, c.conv_dims, (2, 1), c.conv_last)
        self.camera_decoder = TransformerDecoder(2 * c.dec_dim, c.head_dim, c.head_heads, c.cam_dim, self.rope)
        self.camera_head = CameraHead(c.cam_dim)
        self.metric_token = nn.Parameter(torch.zeros(1, 1, 2 * c.dec_dim))
        self.metric_decoder = MetricDecoder(2 * c.dec_dim, c.metric_dim, c.metric_heads, self.rope)
        self.metric_head = nn.Linear(c.metric_dim, 1)
        self.conf_decoder = TransformerDecoder(2 * c.dec_dim, c.head_dim, c.head_heads, c.head_dim, self.rope)
        self.conf_head = ConvHead(c.head_dim, c.conv_dims, (1,), c.conv_last)

    @staticmethod
    def normalise_conditions(poses, depths):
        """The reference's normalisation: depth / its mean over the sequence; poses relative to frame 0 with
        translations / that mean, or, without depth, / the mean camera distance from frame 0 (unless static)."""
        b, n = poses.shape[:2]
        valid = torch.where(depths > 0, depths, torch.nan).reshape(b, -1)
        mean = torch.nan_to_num(torch.nanmean(valid, dim=1), nan=1.0)
        depths = depths / (mean.view(b, 1, 1, 1) + 1e-8)
        rel = invert_se3(poses[:, :1]) @ poses
        rel[..., :3, 3] /= mean.view(b, 1, 1)
        return rel, depths

    def encode(self, images, intrinsics=None, poses=None, depths=None):
        b, n, _, h, w = images.shape
        tokens = self.encode_images(images)
        if not self.conditioned or (intrinsics is None and poses is None and depths is None):
            return tokens, None
        use_depth = depths is not None
        if poses is not None and n < 2:
            poses = None  # one pose fixes nothing: the reference drops it
        pose_given = poses is not None
        poses = poses.float() if pose_given else torch.eye(4, device=images.device).expand(b, n, 4, 4)
        depths = depths.float() if use_depth else torch.zeros(b, n, h, w, device=images.device)
        rel, norm_depths = self.normalise_conditions(poses, depths)
        if not use_depth and n > 1:
            dist = rel[:, 1:, :3, 3].norm(dim=-1)
            moving = dist.max(dim=1).values >= 2e-2
            scale = torch.where(moving, dist.mean(dim=1) + 1e-8, torch.ones_like(dist[:, 0]))
            rel[..., :3, 3] /= scale.view(b, 1, 1)
            norm_depths = norm_depths / scale.view(b, 1, 1, 1)
        if intrinsics is not None:  # rays before depth: the reference's order of additions
            rays = ray_slopes(intrinsics, h, w).reshape(b * n, h, w, 2).permute(0, 3, 1, 2)
            tokens = tokens + self.ray_embed(rays).to(tokens.dtype)
        if use_depth:
            depth_in = torch.stack((norm_depths, (norm_depths > 0).float()), dim=2).reshape(b * n, 2, h, w)
            tokens = tokens + (self.depth_encoder(depth_in) + self.depth_emb).to(tokens.dtype)
        return tokens, (rel if pose_given else None)

    def forward(self, images, intrinsics=None, poses=None, depths=None) -> dict[str, torch.Tensor]:
        b, n, _, h, w = images.shape
        gh, gw = h // PATCH, w // PATCH
        tokens, rel_poses = self.encode(images, intrinsics, poses, depths)
        inject = None
        if rel_poses is not None:
            layers = dict(zip(self.config.pose_inject_layers, self.pose_inject_blk, strict=True))

            def inject(i, hidden):
                if i not in layers:
                    return hidden
                hidden = hidden.reshape(b, n, -1, hidden.shape[-1])
                patches = hidden[:, :, N_REGISTERS:].reshape(b, n * gh * gw, -1)
                update = layers[i](patches, rel_poses, gh, gw).reshape(b, n, gh * gw, -1)
                hidden = torch.cat((hidden[:, :, :N_REGISTERS], hidden[:, :, N_REGISTERS:] + update), dim=2)
                return hidden.reshape(b, n * hidden.shape[2], -1)

        hidden, pos = self.decode(tokens, b, n, (gh, gw), inject)
        t = hidden.shape[1]
        point = self.point_decoder(hidden, pos)[:, N_REGISTERS:].float()
        camera = self.camera_decoder(hidden, pos)[:, N_REGISTERS:].float()
        pos_all = pos.reshape(b, n * t, 2)
        metric = self.metric_decoder(self.metric_token.expand(b, -1, -1).to(hidden.dtype), hidden.reshape(b, n * t, -1),
                                     pos_all[:, :1], pos_all)
        conf = self.conf_decoder(hidden, pos)[:, N_REGISTERS:].float()
        with torch.autocast(device_type=images.device.type, enabled=False):
            xy, z = chunked(self.point_head, point, gh, gw)
            xy, z = xy.permute(0, 2, 3, 1).reshape(b, n, h, w, 2), z.permute(0, 2, 3, 1).reshape(b, n, h, w, 1)
            z = torch.exp(z.clamp(max=15.0))
            local_points = torch.cat((xy * z, z), dim=-1)
            rays = F.normalize(torch.cat((xy, torch.ones_like(z)), dim=-1), dim=-1)
            poses_out = self.camera_head(camera).reshape(b, n, 4, 4)
            scale = self.metric_head(metric.float()).reshape(b).exp()
            conf = chunked(self.conf_head, conf, gh, gw)[0].permute(0, 2, 3, 1).reshape(b, n, h, w, 1)
            points = torch.einsum("bnij,bnhwj->bnhwi", poses_out, homogenize(local_points))[..., :3]
            points = points * scale.view(b, 1, 1, 1, 1)
            poses_out[..., :3, 3] = poses_out[..., :3, 3] * scale.view(b, 1, 1)
            local_points = local_points * scale.view(b, 1, 1, 1, 1)
        return {"points": points, "local_points": local_points, "conf": conf, "camera_poses": poses_out,
                "rays": rays, "metric": scale, "features": hidden[:, N_REGISTERS:]}
