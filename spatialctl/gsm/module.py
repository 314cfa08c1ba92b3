"""The Geometry Selection Module (DSR Suite): its config and its torch modules.

K learnable queries at the LLM's width; block 1 lets them attend to the question's text embeddings (the LLM's own
embedding table; no special, vision or answer tokens), block 2 lets the result attend to geometry tokens; a final
RMSNorm. The K outputs replace K geometry slot tokens (``<|vision_pad|>``) placed right after the video tokens.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from spatialctl import qwen
from spatialctl.errors import SpatialctlError
from spatialctl.fusion import AdaptiveGatedFusion

GEOMETRY_SOURCES = ("dust3r", "pointmap", "genfeat")
POS_FEATURES = 48  # sinusoidal features per token position (t, y, x): 8 frequencies x sin/cos x 3 axes


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
