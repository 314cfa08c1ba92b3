"""Tiny π³ / Pi3X models for tests, and the seeded weights the golden files were made with.

    from pi3_tiny import tiny_model, fill_seeded_, save_tiny
    model = tiny_model("pi3x")            # published structure (24 + 36 blocks), widths 1024 -> 64, 512 -> 32
    fill_seeded_(model, seed=0)           # the same values the reference got in tests/golden/make_pi3_golden.py
    folder = save_tiny(tmp_path, "pi3x")  # config.json + model.safetensors, loadable with --model folder

``fill_seeded_`` draws every tensor from its own generator seeded by (seed, crc32 of its name), so two models
with the same key names and shapes get identical weights whatever order they build their modules in. This file
does not import spatialctl, so the golden script can use it beside the reference code.
"""

from __future__ import annotations

import zlib

import torch

# The published widths scaled down (1024 -> 64, 512 -> 32, heads 16 -> 4, 8 -> 2), depths unchanged.
TINY = dict(enc_dim=64, enc_heads=4, dec_dim=64, dec_heads=4, head_dim=64, head_heads=4, cam_dim=32)
TINY_X = dict(TINY, metric_dim=32, metric_heads=2)
# Fewer blocks and narrower conv heads for the end-to-end tests (not the published structure).
SMALL_X = dict(TINY_X, enc_depth=2, dec_depth=4, conv_dims=(64, 32, 32), pose_inject_layers=(1,))
BUFFERS = {"image_mean": (0.485, 0.456, 0.406), "image_std": (0.229, 0.224, 0.225)}


def seeded_tensor(name: str, shape, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed * 1_000_003 + zlib.crc32(name.encode()))
    noise = torch.randn(tuple(shape), generator=gen)
    if len(shape) >= 2:  # weights: unit-variance outputs, but log-depth near 0 so exp(z) stays O(1)
        fan_in = max(1, torch.Size(shape[1:]).numel())
        return noise / fan_in**0.5 * (0.2 if name.startswith("point_head.") else 1.0)
    leaf = name.rsplit(".", 1)[-1]
    if leaf == "gamma":  # LayerScale
        return 0.1 + 0.05 * noise
    if leaf == "weight":  # norms
        return 1.0 + 0.1 * noise
    return 0.05 * noise  # biases


@torch.no_grad()
def fill_seeded_(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    for name, tensor in model.state_dict().items():
        if name in BUFFERS:
            tensor.copy_(torch.tensor(BUFFERS[name]).view(1, 3, 1, 1))
        else:
            tensor.copy_(seeded_tensor(name, tensor.shape, seed))
    return model


def fixed_inputs(n: int = 3, h: int = 42, w: int = 56, seed: int = 0) -> dict[str, torch.Tensor]:
    """Images in [0, 1] and consistent conditions (K with +0.5 pixel centres, cam2world, depth with holes)."""
    gen = torch.Generator().manual_seed(seed)
    images = torch.rand(1, n, 3, h, w, generator=gen)
    k = torch.tensor([[0.8 * w, 0.0, w / 2], [0.0, 0.8 * w, h / 2], [0.0, 0.0, 1.0]])
    intrinsics = k.expand(1, n, 3, 3).clone()
    intrinsics[0, :, 0, 0] += torch.arange(n) * 0.5
    poses = torch.eye(4).repeat(1, n, 1, 1)
    for i in range(n):
        a = 0.1 * i
        poses[0, i, :3, :3] = torch.tensor([[1.0, 0, 0], [0, float(torch.cos(torch.tensor(a))),
                                             -float(torch.sin(torch.tensor(a)))],
                                            [0, float(torch.sin(torch.tensor(a))), float(torch.cos(torch.tensor(a)))]])
        poses[0, i, :3, 3] = torch.tensor([0.3 * i, 0.05 * i, -0.1 * i])
    depths = 1.0 + 2.0 * torch.rand(1, n, h, w, generator=gen)
    depths[..., :4, :6] = 0.0  # unknown depth
    return {"images": images, "intrinsics": intrinsics, "poses": poses, "depths": depths}


PI3X_CASES = {  # condition sets the golden files cover
    "plain": (),
    "intrinsics": ("intrinsics",),
    "poses": ("poses",),
    "all": ("intrinsics", "poses", "depths"),
}


def tiny_model(architecture: str, seed: int = 0, small: bool = False):
    from spatialctl.models.pi3 import Pi3, Pi3Config
    from spatialctl.models.pi3x import Pi3X, Pi3XConfig

    if architecture == "pi3":
        model = Pi3(Pi3Config(**(dict(TINY, enc_depth=2, dec_depth=4) if small else TINY)))
    else:
        model = Pi3X(Pi3XConfig(**(SMALL_X if small else TINY_X)))
    return fill_seeded_(model, seed).eval()


@torch.no_grad()
def make_pinhole_(model) -> None:
    """Make a Pi3X's point head output x/z, y/z = the head's view-plane (u, v), so its local pointmaps are an
    exact pinhole camera (a random head's are not, and reconstruct refuses a non-positive focal length)."""
    block = model.point_head.output_block[0]
    first, last = block[0], block[2]
    channels = first.in_channels  # the last two input channels are u and v
    first.weight.zero_()
    first.bias.zero_()
    last.weight.zero_()
    last.bias.zero_()
    for out, uv in ((0, channels - 2), (1, channels - 1)):
        first.weight[out, uv, 1, 1] = 1.0
        first.bias[out] = 1.0  # u, v + 1 > 0 passes the ReLU
        last.weight[out, out, 0, 0] = 1.0
        last.bias[out] = -1.0


@torch.no_grad()
def make_tile_rays_(model) -> None:
    """A π³ linear head can only repeat one pattern per 14 x 14 tile: make x/z, y/z grow across each tile (a
    positive focal length for reconstruct to recover) and log z = 0."""
    proj = model.point_head.proj
    proj.weight.zero_()
    offsets = (torch.arange(14, dtype=torch.float32) - 6.5) * 0.05
    bias = torch.zeros(3, 14, 14)
    bias[0], bias[1] = offsets.expand(14, 14), offsets[:, None].expand(14, 14)
    proj.bias.copy_(bias.reshape(-1))


def save_tiny(folder, architecture: str = "pi3x", seed: int = 0, pinhole: bool = True):
    from spatialctl.models.pi3 import save_model

    model = tiny_model(architecture, seed, small=True)
    if pinhole:
        (make_pinhole_ if architecture == "pi3x" else make_tile_rays_)(model)
    return save_model(model, folder)
