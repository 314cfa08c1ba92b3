"""Checkpoint names -> local files, and a checkpoint's architecture from its key names, without importing torch:
a missing or wrong model is reported before torch's seconds of import (``reconstruct``'s preflight).

Never downloads: a hub id must already be in the Hugging Face cache (local files only, no retries).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from spatialctl.errors import SpatialctlError, UsageError

# ---------------------------------------------------------------------------------------------------- DUSt3R

PTH_URL = "https://download.europe.naverlabs.com/ComputerVision/DUSt3R/{name}.pth"

# The constructor strings of the three released checkpoints (their .pth ``args.model``).
_ARCH = ("output_mode='pts3d', depth_mode=('exp', -inf, inf), conf_mode=('exp', 1, inf), enc_embed_dim=1024, "
         "enc_depth=24, enc_num_heads=16, dec_embed_dim=768, dec_depth=12, dec_num_heads=12)")


RELEASED = {
    "DUSt3R_ViTLarge_BaseDecoder_224_linear":
        "AsymmetricCroCo3DStereo(pos_embed='RoPE100', img_size=(224, 224), head_type='linear', " + _ARCH,
    "DUSt3R_ViTLarge_BaseDecoder_512_linear":
        "AsymmetricCroCo3DStereo(pos_embed='RoPE100', patch_embed_cls='ManyAR_PatchEmbed', img_size=(512, 512), "
        "head_type='linear', " + _ARCH,
    "DUSt3R_ViTLarge_BaseDecoder_512_dpt":
        "AsymmetricCroCo3DStereo(pos_embed='RoPE100', patch_embed_cls='ManyAR_PatchEmbed', img_size=(512, 512), "
        "head_type='dpt', " + _ARCH,
}
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def _missing_message(name: str) -> str:
    short = name.split("/")[-1]
    url = PTH_URL.format(name=short) if short in RELEASED else "the .pth link in the DUSt3R README"
    return (f"DUSt3R checkpoint {name} is not in the local Hugging Face cache (spatialctl never downloads "
            f"models): run `huggingface-cli download {name}`, or download {url} and pass its path with --model")


def resolve_checkpoint(name_or_path: str | Path) -> Path:
    """A local checkpoint path (.pth file or folder) for a path or a hub id (local cache only)."""
    path = Path(name_or_path).expanduser()
    if path.exists():
        return path
    name = str(name_or_path)
    if not _HUB_ID.match(name) or name.endswith((".pth", ".pt", ".safetensors")):
        raise UsageError(f"{name}: no such DUSt3R checkpoint file or folder (--model)")
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(name, local_files_only=True))
    except Exception:  # any hub error here means: not available offline
        raise UsageError(_missing_message(name)) from None



# ---------------------------------------------------------------------------------------------------- π³ / Pi3X

HUB_IDS = {"pi3": "yyfz233/Pi3", "pi3x": "yyfz233/Pi3X"}
WEIGHTS = "model.safetensors"
CONFIG = "config.json"


def detect_architecture(keys) -> str | None:
    """Which model a state dict belongs to, from its key names alone."""
    keys = set(keys)
    if "metric_token" in keys and any(k.startswith("point_head.upsample_blocks.") for k in keys):
        return "pi3x"
    if "point_head.proj.weight" in keys and "register_token" in keys and "camera_head.fc_rot.weight" in keys:
        return "pi3"
    if any(k.startswith(("dec_blocks2.", "downstream_head1.")) for k in keys):
        return "dust3r"
    return None



def resolve_weights(name: str, architecture: str) -> tuple[Path, dict]:
    """(safetensors path, config dict) for a hub id (local cache only), a folder or a .safetensors file."""
    path = Path(name).expanduser()
    if not path.exists():
        looks_like_id = name.count("/") == 1 and not name.startswith((".", "/")) and not name.endswith(".safetensors")
        if not looks_like_id:
            raise UsageError(f"{name}: no such π³ checkpoint file or folder (--model)")
        from huggingface_hub import snapshot_download

        try:
            path = Path(snapshot_download(name, local_files_only=True))
        except Exception:  # not in the cache (or not a repo): never download implicitly
            raise UsageError(f"{architecture} checkpoint {name} is not in the local Hugging Face cache "
                                  f"(spatialctl never downloads models): run `huggingface-cli download {name}` "
                                  f"or pass a local folder or .safetensors file with --model") from None
    if path.is_dir():
        folder, weights = path, path / WEIGHTS
        if not weights.is_file():
            raise SpatialctlError(f"{path}: no {WEIGHTS} in this folder")
    else:
        folder, weights = path.parent, path
    config = {}
    if (folder / CONFIG).is_file():
        try:
            config = json.loads((folder / CONFIG).read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise SpatialctlError(f"{folder / CONFIG}: cannot read ({e})") from None
        if not isinstance(config, dict):
            raise SpatialctlError(f"{folder / CONFIG}: not a JSON object")
    return weights, config



def check_checkpoint(name: str, architecture: str) -> tuple[Path, dict]:
    """Resolve ``name`` and read only its key names: the wrong architecture is an error before any work."""
    from safetensors import SafetensorError, safe_open

    weights, config = resolve_weights(name, architecture)
    try:
        with safe_open(str(weights), framework="pt") as f:
            keys = list(f.keys())
    except (SafetensorError, OSError) as e:
        raise SpatialctlError(f"{weights}: cannot read safetensors ({e})") from None
    found = detect_architecture(keys)
    if found != architecture:
        what = f"a {found} checkpoint" if found else "not a π³/Pi3X/DUSt3R checkpoint"
        raise SpatialctlError(f"{weights}: {what}, but --backend {architecture} needs a {architecture} checkpoint "
                              f"(e.g. {HUB_IDS[architecture]})")
    return weights, config
