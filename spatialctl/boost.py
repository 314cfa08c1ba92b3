"""SpatialBoost's dual-channel attention on a frozen vision encoder (DINOv3-ViT, DINOv2, SigLIP2 vision).

Every chosen attention layer gets a parallel copy Attn⁺ and a gate ``a``; the layer's output becomes
α·Attn(x) + (1−α)·Attn⁺(x) with α = sigmoid(a). It is computed as Attn(x) + (1−α)·(Attn⁺(x) − Attn(x)), the
same value, because that form is exactly Attn(x) while Attn⁺ is still a bit-for-bit copy (any α), so a freshly
boosted encoder reproduces the base encoder with a maximum difference of 0.

Artifacts:

- ``boost.safetensors``: only the Attn⁺ weights and the gates, named as in the wrapped model
  (``<path to layer attention>.plus.q_proj.weight``, ``<...>.a``); ``boost_config.json`` says which encoder,
  family, layers and gate shape. :func:`load` applies them to the base encoder.
- A merged folder (:func:`merge`): the base encoder's config plus a ``spatialctl_boost`` section, the full
  wrapped state dict, and ``architectures``/``auto_map`` naming a ``SpatialBoost<Base>`` class. Two attentions
  side by side are not a single attention of the base class (DINOv3's and SigLIP2's head size is tied to the
  hidden size, so the pair cannot become one attention with twice the heads), so the merged model is the base
  class with its attention layers wrapped, loadable with ``SpatialBoost<Base>.from_pretrained``,
  ``AutoModel.from_pretrained(dir, trust_remote_code=True)`` or :func:`load`.
"""

from __future__ import annotations

import copy
import json
import math
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from spatialctl import io
from spatialctl.errors import SpatialctlError, UsageError
from spatialctl.hub import resolve_model_dir

BOOST_WEIGHTS = "boost.safetensors"
BOOST_CONFIG = "boost_config.json"
CONFIG_KEY = "spatialctl_boost"  # the section of a merged model's config.json
BOOST_FORMAT = 1
DEFAULT_ENCODER = "facebook/dinov3-vitl16-pretrain-lvd1689m"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Family:
    """What differs between encoder families: classes, where attention sits, which tokens are patches."""

    name: str
    model_types: tuple[str, ...]
    model_class: str
    layer_class: str
    attention_attr: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


FAMILIES = {
    f.name: f
    for f in (
        Family("dinov3", ("dinov3_vit",), "DINOv3ViTModel", "DINOv3ViTLayer", "attention", IMAGENET_MEAN, IMAGENET_STD),
        Family("dinov2", ("dinov2",), "Dinov2Model", "Dinov2Layer", "attention", IMAGENET_MEAN, IMAGENET_STD),
        Family("siglip2", ("siglip2_vision_model", "siglip2"), "Siglip2VisionModel", "Siglip2EncoderLayer", "self_attn",
               (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
    )
}


# Qwen-VL vision towers (train-gsm --boost): kept apart from FAMILIES, which name standalone encoders that
# boost-encoder loads on their own.
TOWERS = {
    "qwen2_5_vl": Family("qwen2_5_vl_vision", ("qwen2_5_vl",), "Qwen2_5_VisionTransformerPretrainedModel",
                         "Qwen2_5_VLVisionBlock", "attn", (0.48145466, 0.4578275, 0.40821073),
                         (0.26862954, 0.26130258, 0.27577711)),
    "qwen3_vl": Family("qwen3_vl_vision", ("qwen3_vl",), "Qwen3VLVisionModel", "Qwen3VLVisionBlock", "attn",
                       (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
}


def parse_layers(text: str) -> list[int] | None:
    """"all" -> None (every attention layer); "0,1,-1" -> [0, 1, -1]."""
    if text.strip().lower() == "all":
        return None
    try:
        layers = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        layers = []
    if not layers:  # "" or "," would boost nothing while --boost reads as on
        raise UsageError(f"layers {text!r}: expected 'all' or comma-separated layer indices, e.g. 0,1,-1")
    return layers


def family_of(model_type: str, where: str = "encoder") -> Family:
    for fam in FAMILIES.values():
        if model_type in fam.model_types:
            return fam
    known = ", ".join(t for f in FAMILIES.values() for t in f.model_types)
    raise SpatialctlError(f"{where}: model_type {model_type!r} is not a supported encoder ({known})")


# ---------------------------------------------------------------------------------------------------- the wrapper


def _torch():
    import torch

    return torch


class _Lazy:
    """Build the nn.Module subclasses on first use so importing this module does not import torch."""

    cls = None


def dual_channel_attention_class():
    if _Lazy.cls is not None:
        return _Lazy.cls
    torch = _torch()
    nn = torch.nn

    class DualChannelAttention(nn.Module):
        """out = α·base(x) + (1−α)·plus(x), α = sigmoid(a); everything the layer passes goes to both."""

        def __init__(self, base: nn.Module, hidden_size: int, per_channel: bool = False):
            super().__init__()
            self.base = base
            self.plus = copy.deepcopy(base)
            ref = next(base.parameters())
            self.a = nn.Parameter(torch.zeros((hidden_size,) if per_channel else (), dtype=ref.dtype, device=ref.device))

        @property
        def alpha(self):
            return torch.sigmoid(self.a)

        def forward(self, *args, **kwargs):
            # Encoder attentions return (output, weights); Qwen-VL's vision attention returns the output alone.
            base_ret = self.base(*args, **kwargs)
            plus_ret = self.plus(*args, **kwargs)
            base_out = base_ret[0] if isinstance(base_ret, tuple) else base_ret
            plus_out = plus_ret[0] if isinstance(plus_ret, tuple) else plus_ret
            # Equal to α·base + (1−α)·plus, and exactly base_out while plus is an untouched copy.
            out = base_out + (1.0 - self.alpha).to(base_out.dtype) * (plus_out - base_out)
            return (out, *base_ret[1:2]) if isinstance(base_ret, tuple) else out

    _Lazy.cls = DualChannelAttention
    return DualChannelAttention


def attention_slots(model, family: Family) -> list[tuple[object, str]]:
    """(layer module, attribute name) of every attention layer, in depth order."""
    slots = [(m, family.attention_attr) for m in model.modules() if type(m).__name__ == family.layer_class]
    if not slots:
        raise SpatialctlError(f"{type(model).__name__}: no {family.layer_class} layers found")
    return slots


def resolve_layers(layers, n_layers: int) -> list[int]:
    """None/"all" -> every layer; ints may be negative (from the end)."""
    if layers is None or layers == "all":
        return list(range(n_layers))
    out = []
    for i in layers:
        j = int(i) + n_layers if int(i) < 0 else int(i)
        if not 0 <= j < n_layers:
            raise SpatialctlError(f"boost layer {i} is outside the encoder's {n_layers} layers")
        if j not in out:
            out.append(j)
    return sorted(out)


def wrap(model, family: Family, layers=None, per_channel: bool = False) -> list[int]:
    """Wrap the chosen attention layers of ``model`` in place; returns the layer indices wrapped."""
    dca = dual_channel_attention_class()
    slots = attention_slots(model, family)
    chosen = resolve_layers(layers, len(slots))
    hidden = int(model.config.hidden_size)
    for i in chosen:
        layer, attr = slots[i]
        current = getattr(layer, attr)
        if isinstance(current, dca):
            raise SpatialctlError(f"layer {i} of {type(model).__name__} is already boosted")
        setattr(layer, attr, dca(current, hidden, per_channel))
    return chosen


def boosted_modules(model) -> list[tuple[str, object]]:
    dca = dual_channel_attention_class()
    return [(name, m) for name, m in model.named_modules() if isinstance(m, dca)]


def delta_state_dict(model) -> dict:
    """Only Attn⁺ weights and gates, named as in the wrapped model."""
    out = {}
    for name, m in boosted_modules(model):
        for key, value in m.plus.state_dict().items():
            out[f"{name}.plus.{key}"] = value.detach().cpu().contiguous()
        out[f"{name}.a"] = m.a.detach().cpu().contiguous()
    return out


def trainable_parameters(model) -> list:
    """Freeze everything but Attn⁺ and the gates; return those parameters."""
    for p in model.parameters():
        p.requires_grad_(False)
    params = []
    for _, m in boosted_modules(model):
        for p in [*m.plus.parameters(), m.a]:
            p.requires_grad_(True)
            params.append(p)
    return params


# ---------------------------------------------------------------------------------------------------- the config


@dataclass
class BoostSpec:
    """What ``boost_config.json`` records: enough to re-apply the delta to the base encoder."""

    encoder: str
    family: str
    layers: list[int]
    per_channel: bool = False
    model_type: str = ""
    format: int = BOOST_FORMAT

    @classmethod
    def read(cls, path: str) -> BoostSpec:
        try:
            data = json.loads(Path(path).read_text())
        except FileNotFoundError:
            raise SpatialctlError(f"{path}: no such file; not a boost folder") from None
        except (OSError, json.JSONDecodeError) as e:
            raise SpatialctlError(f"{path}: unreadable ({type(e).__name__})") from e
        if not isinstance(data, dict) or data.get("format", 0) > BOOST_FORMAT:
            raise SpatialctlError(f"{path}: boost format {data.get('format') if isinstance(data, dict) else '?'} "
                                  f"is not one this spatialctl reads ({BOOST_FORMAT}); upgrade spatialctl")
        try:
            return cls(encoder=str(data["encoder"]), family=str(data["family"]), layers=[int(i) for i in data["layers"]],
                       per_channel=bool(data.get("per_channel", False)), model_type=str(data.get("model_type", "")),
                       format=int(data.get("format", BOOST_FORMAT)))
        except (KeyError, TypeError, ValueError) as e:
            raise SpatialctlError(f"{path}: missing or bad field ({type(e).__name__}: {e})") from None


def save_delta(model, spec: BoostSpec, out_dir: str) -> None:
    """Write ``boost.safetensors`` (Attn⁺ + gates) and ``boost_config.json``, each atomically."""
    os.makedirs(out_dir, exist_ok=True)
    io.save_safetensors(os.path.join(out_dir, BOOST_WEIGHTS), delta_state_dict(model), {"format": "pt"})
    extra = {}
    cfg_path = os.path.join(out_dir, BOOST_CONFIG)
    if os.path.isfile(cfg_path):  # keep what the training stages recorded beside the boost spec
        try:
            extra = json.loads(Path(cfg_path).read_text())
        except (OSError, json.JSONDecodeError):
            extra = {}
    io.write_json(cfg_path, {**extra, **asdict(spec)})


def load_delta(model, boost_dir: str) -> None:
    """Load ``boost.safetensors`` into an already wrapped model; every key must match exactly."""
    from safetensors.torch import load_file

    path = os.path.join(boost_dir, BOOST_WEIGHTS)
    if not os.path.isfile(path):
        raise SpatialctlError(f"{path}: no such file; not a boost folder (boost-encoder --stage 3 or train-gsm "
                              "--boost write one)")
    try:
        tensors = load_file(path)
    except Exception as e:
        raise SpatialctlError(f"{path}: not a readable safetensors file ({type(e).__name__})") from e
    expected = delta_state_dict(model)
    missing = sorted(set(expected) - set(tensors))
    extra = sorted(set(tensors) - set(expected))
    if missing or extra:
        raise SpatialctlError(f"{path}: does not fit this encoder (missing {missing[:2]}, unexpected {extra[:2]})")
    for key, value in tensors.items():
        if tuple(value.shape) != tuple(expected[key].shape):
            raise SpatialctlError(f"{path}: {key} has shape {tuple(value.shape)}, the encoder needs "
                                  f"{tuple(expected[key].shape)}")
        if not bool(_torch().isfinite(value).all()):
            raise SpatialctlError(f"{path}: {key} holds NaN or infinite values")
    state = {}
    for name, m in boosted_modules(model):
        state[f"{name}.a"] = tensors[f"{name}.a"]
        for key in m.plus.state_dict():
            state[f"{name}.plus.{key}"] = tensors[f"{name}.plus.{key}"]
    result = model.load_state_dict(state, strict=False)
    if result.unexpected_keys:
        raise SpatialctlError(f"{path}: unexpected keys {result.unexpected_keys[:2]}")


# ---------------------------------------------------------------------------------------------------- Qwen-VL


def check_tower_layers(model_dir: str, layers: list[int]) -> None:
    """UsageError unless every index in ``layers`` is a block of the vision tower ``model_dir/config.json``
    describes (checked before a run writes anything)."""
    import json

    with open(os.path.join(model_dir, "config.json")) as f:
        cfg = json.load(f)
    depth = (cfg.get("vision_config") or {}).get("depth")
    if cfg.get("model_type") not in TOWERS or not isinstance(depth, int):
        raise UsageError(f"{model_dir}: model_type {cfg.get('model_type')!r} has no SpatialBoost vision tower "
                         f"({', '.join(TOWERS)})")
    try:
        resolve_layers(layers, depth)
    except SpatialctlError as e:
        raise UsageError(f"--boost-layers: {e}") from None


def tower_family(vlm) -> Family:
    """The vision-tower family of a Qwen2.5-VL / Qwen3-VL ``...ForConditionalGeneration``."""
    kind = str(vlm.config.model_type)
    if kind not in TOWERS:
        raise SpatialctlError(f"model_type {kind!r}: no SpatialBoost vision tower for it ({', '.join(TOWERS)})")
    return TOWERS[kind]


def wrap_tower(vlm, layers=None, per_channel: bool = False) -> list[int]:
    """Wrap the attention of the chosen blocks of the VLM's vision tower (``model.visual``) in place."""
    return wrap(vlm.model.visual, tower_family(vlm), layers, per_channel)


def save_tower(vlm, base: str, out_dir: str) -> None:
    """``boost.safetensors`` (Attn⁺ and gates, named inside ``model.visual``) + ``boost_config.json``."""
    visual = vlm.model.visual
    layers = [i for i, (layer, attr) in enumerate(attention_slots(visual, tower_family(vlm)))
              if isinstance(getattr(layer, attr), dual_channel_attention_class())]
    per_channel = any(m.a.ndim == 1 for _, m in boosted_modules(visual))
    save_delta(visual, BoostSpec(encoder=base, family=tower_family(vlm).name, layers=layers, per_channel=per_channel,
                                 model_type=str(vlm.config.model_type)), out_dir)


def load_tower(vlm, boost_dir: str) -> bool:
    """Apply a ``save_tower`` folder to a base VLM; False (nothing done) when the folder holds no boost."""
    if not os.path.isfile(os.path.join(boost_dir, BOOST_CONFIG)):
        return False
    spec = BoostSpec.read(os.path.join(boost_dir, BOOST_CONFIG))
    fam = tower_family(vlm)
    if spec.family != fam.name:
        raise SpatialctlError(f"{boost_dir}: boost is for a {spec.family} tower, the model's is {fam.name}")
    wrap(vlm.model.visual, fam, spec.layers, spec.per_channel)
    load_delta(vlm.model.visual, boost_dir)
    ref = next(vlm.model.visual.parameters())
    vlm.model.visual.to(device=ref.device, dtype=ref.dtype)
    return True


# ---------------------------------------------------------------------------------------------------- loading


def read_model_config(path: str) -> dict:
    file = os.path.join(path, "config.json")
    try:
        return json.loads(Path(file).read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise SpatialctlError(f"{file}: unreadable ({type(e).__name__})") from e


def boosted_class(family: Family):
    """``SpatialBoost<Base>``: the base class whose __init__ wraps the layers its config's boost section names."""
    if family.name in _BOOSTED:
        return _BOOSTED[family.name]
    import transformers

    base_cls = getattr(transformers, family.model_class)

    def __init__(self, config, *args, **kwargs):
        base_cls.__init__(self, config, *args, **kwargs)
        spec = getattr(config, CONFIG_KEY, None)
        if not isinstance(spec, dict):
            raise SpatialctlError(f"{type(self).__name__}: config has no '{CONFIG_KEY}' section")
        wrap(self, family, spec["layers"], bool(spec.get("per_channel", False)))

    cls = type(f"SpatialBoost{family.model_class}", (base_cls,), {"__init__": __init__, "__module__": __name__})
    _BOOSTED[family.name] = cls
    globals()[cls.__name__] = cls  # importable by name, as a trust_remote_code module refers to it
    return cls


_BOOSTED: dict[str, type] = {}


def load_encoder(encoder: str, *, dtype=None):
    """A base (or merged, boosted) encoder from a hub id or folder, in eval mode; (model, family, folder)."""
    path = resolve_model_dir(encoder)
    cfg = read_model_config(path)
    fam = family_of(str(cfg.get("model_type")), path)
    import transformers

    cls = boosted_class(fam) if CONFIG_KEY in cfg else getattr(transformers, fam.model_class)
    kwargs = {"dtype": dtype} if dtype is not None else {}
    try:
        model = cls.from_pretrained(path, **kwargs)
    except Exception as e:
        raise SpatialctlError(f"{path}: cannot load {fam.model_class} weights ({type(e).__name__}: {e})") from e
    return model.eval(), fam, path


def load(encoder: str, boost_dir: str | None = None, *, dtype=None):
    """The boosted encoder: ``encoder`` (hub id or folder) with the delta in ``boost_dir`` applied.

    ``encoder`` may also be a merged folder (then ``boost_dir`` must be None). Without ``boost_dir`` the base
    encoder comes back unchanged.
    """
    model, fam, path = load_encoder(encoder, dtype=dtype)
    if boost_dir is None:
        return model
    if boosted_modules(model):
        raise SpatialctlError(f"{path}: already a merged boosted encoder; do not pass a boost folder too")
    spec = BoostSpec.read(os.path.join(boost_dir, BOOST_CONFIG))
    if spec.family != fam.name:
        raise SpatialctlError(f"{boost_dir}: boost is for a {spec.family} encoder, {path} is {fam.name}")
    wrap(model, fam, spec.layers, spec.per_channel)
    load_delta(model, boost_dir)
    if dtype is not None:
        model.to(dtype)
    return model.eval()


_REMOTE_CODE = '''"""SpatialBoost dual-channel attention encoder, written by spatialctl (needs `pip install spatialctl`)."""

from spatialctl.boost import FAMILIES, boosted_class

{cls} = boosted_class(FAMILIES["{family}"])
'''


def merge(encoder: str, boost_dir: str, out_dir: str) -> str:
    """Write a full model folder of the boosted encoder (see the module docstring); returns ``out_dir``."""
    model = load(encoder, boost_dir)
    spec = BoostSpec.read(os.path.join(boost_dir, BOOST_CONFIG))
    fam = FAMILIES[spec.family]
    cls = boosted_class(fam)
    model.config.update({CONFIG_KEY: {"layers": spec.layers, "per_channel": spec.per_channel, "base": spec.encoder},
                         "auto_map": {"AutoModel": f"modeling_spatialboost.{cls.__name__}"}})
    model.__class__ = cls  # the same modules; save_pretrained names the class that rebuilds them
    src = resolve_model_dir(encoder)
    with io.aside(out_dir) as tmp:
        model.save_pretrained(tmp)
        for name in ("preprocessor_config.json",):  # the encoder's image settings travel with it
            if os.path.isfile(os.path.join(src, name)):
                shutil.copy(os.path.join(src, name), os.path.join(tmp, name))
        Path(tmp, "modeling_spatialboost.py").write_text(_REMOTE_CODE.format(cls=cls.__name__, family=fam.name))
    return out_dir


# ---------------------------------------------------------------------------------------------------- images


@dataclass
class ImagePrep:
    """Numpy/PIL preprocessing: resize to a patch-aligned grid (aspect kept), rescale, normalise."""

    patch_size: int
    mean: tuple
    std: tuple
    image_size: int = 224  # the side of a square image of the same area

    @classmethod
    def for_model(cls, model, family: Family, model_dir: str | None = None, image_size: int | None = None) -> ImagePrep:
        mean, std = family.mean, family.std
        size = image_size
        file = os.path.join(model_dir, "preprocessor_config.json") if model_dir else None
        if file and os.path.isfile(file):
            try:
                data = json.loads(Path(file).read_text())
            except (OSError, json.JSONDecodeError) as e:
                raise SpatialctlError(f"{file}: unreadable ({type(e).__name__})") from e
            mean = tuple(data.get("image_mean", mean))
            std = tuple(data.get("image_std", std))
            s = data.get("size") or {}
            if size is None and isinstance(s, dict) and "height" in s:
                size = int(math.sqrt(int(s["height"]) * int(s.get("width", s["height"]))))
        return cls(int(model.config.patch_size), mean, std, size or 224)

    def grid(self, height: int, width: int) -> tuple[int, int]:
        scale = self.image_size / math.sqrt(height * width)
        return max(1, round(height * scale / self.patch_size)), max(1, round(width * scale / self.patch_size))

    def __call__(self, frames: np.ndarray) -> tuple[np.ndarray, tuple[int, int]]:
        """(B, H, W, 3) uint8 -> (B, 3, gh*p, gw*p) float32 and the patch grid (gh, gw)."""
        frames = np.asarray(frames)
        if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
            raise SpatialctlError(f"frames must be (B, H, W, 3) uint8, got {frames.shape} {frames.dtype}")
        gh, gw = self.grid(*frames.shape[1:3])
        h, w = gh * self.patch_size, gw * self.patch_size
        if frames.shape[1:3] != (h, w):
            frames = np.stack([np.asarray(Image.fromarray(f).resize((w, h), Image.BICUBIC)) for f in frames])
        x = frames.astype(np.float32) / 255.0
        x = (x - np.asarray(self.mean, np.float32)) / np.asarray(self.std, np.float32)
        return np.ascontiguousarray(x.transpose(0, 3, 1, 2)), (gh, gw)


def model_inputs(family: Family, pixels: np.ndarray, grid: tuple[int, int], patch_size: int, device=None) -> dict:
    """The keyword arguments the family's forward takes for a batch of preprocessed images."""
    torch = _torch()
    x = torch.from_numpy(pixels)
    if family.name != "siglip2":
        return {"pixel_values": x.to(device)}
    # SigLIP2 (NaFlex) takes flattened patches, (row, col, py, px, channel) order, and their grid.
    b, c = x.shape[:2]
    gh, gw = grid
    patches = x.reshape(b, c, gh, patch_size, gw, patch_size).permute(0, 2, 4, 3, 5, 1).reshape(b, gh * gw, -1)
    return {"pixel_values": patches.to(device),
            "pixel_attention_mask": torch.ones(b, gh * gw, dtype=torch.long, device=device),
            "spatial_shapes": torch.tensor([[gh, gw]] * b, dtype=torch.long, device=device)}


def patch_features(model, family: Family, inputs: dict, grid: tuple[int, int]):
    """Run the encoder; its last hidden state's patch tokens as (B, gh, gw, C) (CLS/register tokens dropped)."""
    out = model(**inputs).last_hidden_state
    gh, gw = grid
    skip = out.shape[1] - gh * gw  # DINOv2: CLS; DINOv3: CLS + registers; SigLIP2: none
    if skip < 0:
        raise SpatialctlError(f"{type(model).__name__}: {out.shape[1]} tokens for a {gh}x{gw} patch grid")
    return out[:, skip:].reshape(out.shape[0], gh, gw, out.shape[-1])
