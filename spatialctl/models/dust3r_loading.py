"""Load Naver's DUSt3R checkpoints into ``spatialctl.models.dust3r.Dust3r``, in both published forms.

- A folder (or Hugging Face hub id, resolved from the local cache only) holding ``config.json`` and
  ``model.safetensors``, as written by ``huggingface_hub.PyTorchModelHubMixin``. The config holds
  ``Infinity`` tokens that strict JSON rejects; they are parsed as floats.
- A ``.pth`` file ``{'args': Namespace(model="AsymmetricCroCo3DStereo(...)", ...), 'model': state_dict}``.
  The constructor string is parsed with ``ast`` into literal keyword arguments and never evaluated; the
  file is opened with ``torch.load(weights_only=True)`` (only ``argparse.Namespace`` is allowed beyond
  tensors and containers), so a checkpoint cannot run code. A missing ``dec_blocks2`` is copied from
  ``dec_blocks`` (as Naver's loader does).
"""

from __future__ import annotations

import argparse
import ast
import json
import math
from pathlib import Path

import torch

from spatialctl.errors import SpatialctlError
from spatialctl.models.checkpoints import PTH_URL, RELEASED, resolve_checkpoint  # noqa: F401 - public here too
from spatialctl.models.dust3r import Dust3r, Dust3rConfig
from spatialctl.models.weights import load_state

DEFAULT_DUST3R = "naver/DUSt3R_ViTLarge_BaseDecoder_512_dpt"


_MODEL_CLASS = "AsymmetricCroCo3DStereo"
_NAMED_CONSTANTS = {"inf": math.inf, "nan": math.nan, "True": True, "False": False, "None": None}


# ----------------------------------------------------------------------------------------------------
# Configs
# ----------------------------------------------------------------------------------------------------


def _literal(node: ast.AST, source: str):
    """A literal value from the constructor string: constants, tuples/lists/dicts, +/-, inf/nan names."""
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.Tuple | ast.List):
        values = [_literal(n, source) for n in node.elts]
        return tuple(values) if isinstance(node, ast.Tuple) else values
    if isinstance(node, ast.Dict) and all(k is not None for k in node.keys):
        return {_literal(k, source): _literal(v, source) for k, v in zip(node.keys, node.values, strict=True)}
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
        value = _literal(node.operand, source)
        if isinstance(value, int | float) and not isinstance(value, bool):
            return -value if isinstance(node.op, ast.USub) else value
    if isinstance(node, ast.Name) and node.id in _NAMED_CONSTANTS:
        return _NAMED_CONSTANTS[node.id]
    if isinstance(node, ast.Attribute) and node.attr in ("inf", "nan") and isinstance(node.value, ast.Name):
        return _NAMED_CONSTANTS[node.attr]  # np.inf, math.inf, torch.inf
    if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "float"
            and len(node.args) == 1 and not node.keywords and isinstance(node.args[0], ast.Constant)
            and str(node.args[0].value).strip().lower() in ("inf", "-inf", "+inf", "nan")):
        return float(node.args[0].value)
    raise SpatialctlError(f"{source}: unsupported expression {ast.unparse(node)!r} in the model string")


def parse_model_string(model: str, source: str = "checkpoint") -> dict:
    """``"AsymmetricCroCo3DStereo(pos_embed='RoPE100', ...)"`` -> keyword arguments, without evaluating it."""
    try:
        tree = ast.parse(model.strip(), mode="eval")
    except SyntaxError as exc:
        raise SpatialctlError(f"{source}: cannot parse the model string ({exc.msg})") from None
    call = tree.body
    if not isinstance(call, ast.Call) or not isinstance(call.func, ast.Name):
        raise SpatialctlError(f"{source}: the model string is not a constructor call")
    if call.func.id != _MODEL_CLASS:
        raise SpatialctlError(f"{source}: model class {call.func.id} is not supported (expected {_MODEL_CLASS})")
    if call.args or any(kw.arg is None for kw in call.keywords):
        raise SpatialctlError(f"{source}: the model string must use keyword arguments only")
    return {kw.arg: _literal(kw.value, source) for kw in call.keywords}


def config_from_model_string(model: str, source: str = "checkpoint") -> Dust3rConfig:
    return Dust3rConfig.from_kwargs(parse_model_string(model, source), source)


def _json_constant(token: str) -> float:
    return {"Infinity": math.inf, "-Infinity": -math.inf, "NaN": math.nan}[token]


def read_config_json(path: Path) -> Dust3rConfig:
    """``config.json`` as written by the hub mixin; ``Infinity``/``-Infinity``/``NaN`` are accepted."""
    try:
        kwargs = json.loads(Path(path).read_text(), parse_constant=_json_constant)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SpatialctlError(f"{path}: cannot read DUSt3R config ({exc})") from None
    if not isinstance(kwargs, dict):
        raise SpatialctlError(f"{path}: DUSt3R config is not a JSON object")
    return Dust3rConfig.from_kwargs(kwargs, str(path))


def write_config_json(config: Dust3rConfig, path: Path) -> None:
    """The hub mixin's form: Python's json writes infinite bounds as ``Infinity`` tokens."""
    Path(path).write_text(json.dumps(config.to_kwargs(), indent=2))


# ----------------------------------------------------------------------------------------------------
# Checkpoints
# ----------------------------------------------------------------------------------------------------



def load_pth(path: Path) -> tuple[dict, Dust3rConfig]:
    """(state_dict, config) from Naver's ``.pth`` form, without unpickling arbitrary objects."""
    try:
        if hasattr(torch.serialization, "safe_globals"):
            with torch.serialization.safe_globals([argparse.Namespace]):
                ckpt = torch.load(path, map_location="cpu", weights_only=True)
        else:  # torch < 2.5: no context manager; allowing Namespace process-wide is harmless
            torch.serialization.add_safe_globals([argparse.Namespace])
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle refusals, truncated files, zip errors
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise SpatialctlError(f"{path}: cannot load as a weights-only DUSt3R checkpoint ({first})") from None
    if not isinstance(ckpt, dict) or "model" not in ckpt or "args" not in ckpt:
        raise SpatialctlError(f"{path}: not a DUSt3R .pth checkpoint (expected keys 'args' and 'model')")
    args = ckpt["args"]
    model_string = args.get("model") if isinstance(args, dict) else getattr(args, "model", None)
    if not isinstance(model_string, str):
        raise SpatialctlError(f"{path}: checkpoint args hold no model constructor string")
    config = config_from_model_string(model_string, str(path))
    state = dict(ckpt["model"])
    if not any(k.startswith("dec_blocks2.") for k in state):
        # Checkpoints trained from a shared decoder store it once; both decoders start from it.
        state.update({"dec_blocks2." + k[len("dec_blocks."):]: v for k, v in list(state.items())
                      if k.startswith("dec_blocks.")})
    return state, config


def load_dust3r(name_or_path: str | Path = DEFAULT_DUST3R, device: str | torch.device | None = None
                ) -> tuple[Dust3r, Dust3rConfig]:
    """Build a DUSt3R network from a hub id (local cache only), a folder or a ``.pth`` file.

    Returns ``(model, config)``, the model in eval mode on ``device`` (default: CUDA when available).
    """
    from spatialctl.devices import resolve_device

    device = resolve_device(device) if device is None or isinstance(device, str) else torch.device(device)
    path = resolve_checkpoint(name_or_path)
    if path.is_dir():
        config_path, weights = path / "config.json", path / "model.safetensors"
        if config_path.is_file() and weights.is_file():
            return _load_folder(config_path, weights, device)
        pths = sorted(path.glob("*.pth"))
        if len(pths) != 1:
            raise SpatialctlError(f"{path}: expected config.json + model.safetensors or one .pth file")
        path = pths[0]
    state, config = load_pth(path)
    model = Dust3r(config)
    load_state(model, state, str(path))
    return model.to(device).eval(), config


def _load_folder(config_path: Path, weights: Path, device: torch.device) -> tuple[Dust3r, Dust3rConfig]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    config = read_config_json(config_path)
    model = Dust3r(config)
    try:
        state = load_file(weights, device="cpu")
    except (SafetensorError, OSError) as exc:
        raise SpatialctlError(f"{weights}: cannot read safetensors ({exc})") from None
    # save_model keeps one name per shared tensor (DPT's layerK_rn == layer_rn.K-1): restore the aliases.
    aliases = {}
    for name, param in model.state_dict(keep_vars=True).items():
        aliases.setdefault(param.data_ptr(), []).append(name)
    for names in aliases.values():
        present = [n for n in names if n in state]
        for n in names:
            if present and n not in state:
                state[n] = state[present[0]]
    load_state(model, state, str(weights))
    return model.to(device).eval(), config


def save_dust3r(model: Dust3r, folder: str | Path) -> Path:
    """Write ``config.json`` + ``model.safetensors`` the way the hub mixin does (shared tensors once)."""
    from safetensors.torch import save_model

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    write_config_json(model.config, folder / "config.json")
    save_model(model, str(folder / "model.safetensors"))
    return folder
