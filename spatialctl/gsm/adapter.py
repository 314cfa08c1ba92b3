"""Adapter folders: what ``train-gsm`` writes and ``eval run --adapter`` loads with :func:`load_adapter`.

``adapter_model.safetensors`` + ``adapter_config.json`` (peft LoRA; or the full language-model weights with
``{"spatialctl_full_finetune": true}``; or a scale-experts X-LoRA router), ``gsm.safetensors``,
``gsm_config.json``, ``vega.safetensors`` + ``vega_config.json`` (VEGA-3D fusion), ``boost.safetensors`` +
``boost_config.json`` (SpatialBoost's Attn⁺ and gates in the vision tower), and ``prompt.json`` when training
appended an instruction to each question or gave each record's frames as separate views (``views``).
"""

from __future__ import annotations

import dataclasses
import json
import os

from torch import nn

from spatialctl import boost, io, qwen, vega
from spatialctl.errors import SpatialctlError
from spatialctl.gsm.module import GeometrySelectionModule, GSMConfig
from spatialctl.gsm.vlm import GeometryVLM

GSM_WEIGHTS, GSM_CONFIG = "gsm.safetensors", "gsm_config.json"
ADAPTER_WEIGHTS, ADAPTER_CONFIG = "adapter_model.safetensors", "adapter_config.json"
PROMPT_CONFIG = "prompt.json"  # the instruction appended to every question at training time (GRPO's format)


def trainable_state(model: GeometryVLM, full_lm: bool = False) -> tuple[dict, dict]:
    """(language-model weights that train, or with ``full_lm`` all of them; GSM weights), CPU tensors, keyed as the
    adapter files store them."""
    base = model.base
    lm = {}
    if model.xlora is not None:
        lm = dict(model.xlora.internal_xlora_classifier.state_dict())
    elif hasattr(model.vlm, "peft_config"):
        from peft import get_peft_model_state_dict

        lm = get_peft_model_state_dict(model.vlm, state_dict=_lm_params(model))
    else:
        # the vision tower's trainable weights (SpatialBoost's) are saved on their own, by boost.save_tower
        lm = {k: p for k, p in base.named_parameters()
              if (full_lm or p.requires_grad) and not k.startswith("model.visual.")}
    gsm = dict(model.gsm.named_parameters()) if model.gsm is not None else {}  # no buffers; see _lm_params
    return ({k: v.detach().cpu().contiguous() for k, v in lm.items()},
            {k: v.detach().cpu().contiguous() for k, v in gsm.items()})


def _lm_params(model: GeometryVLM) -> dict:
    # named_parameters, not state_dict(): under FSDP2 state_dict() reshards each unit, so the parameters
    # train-gsm gathered for saving would come back as shards
    return dict(model.vlm.named_parameters())


def save_adapter(out_dir: str, model: GeometryVLM, gsm_cfg: GSMConfig | None, *, base: str,
                 extra: dict | None = None, prompt_suffix: str = "", views: int = 0, full_lm: bool = False) -> None:
    """Write the adapter files (see the module docstring) into ``out_dir``; with ``full_lm`` (a run started from
    another adapter, ``--init-adapter``) every language-model weight, so the folder stands on its own.

    ``prompt_suffix`` and ``views``, when the model was trained with them, are saved so inference asks questions
    the same way."""
    from safetensors.torch import save_file

    os.makedirs(out_dir, exist_ok=True)
    lm, gsm = trainable_state(model, full_lm)
    if model.xlora is not None:
        save_xlora(out_dir, model, base)
    elif hasattr(model.vlm, "peft_config"):
        model.vlm.save_pretrained(out_dir, safe_serialization=True, state_dict=_lm_params(model))
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
    if model.vega is not None:
        vega.save(out_dir, model.vega)
    if boost.boosted_modules(model.base):
        boost.save_tower(model.base, base, out_dir)
    if prompt_suffix or views:
        io.write_json(os.path.join(out_dir, PROMPT_CONFIG), {"prompt_suffix": prompt_suffix, "views": views})


def _prompt_config(adapter_dir: str) -> dict:
    path = os.path.join(adapter_dir, PROMPT_CONFIG)
    if not os.path.isfile(path):
        return {}
    try:
        with open(path) as f:
            data = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise SpatialctlError(f"{path}: unreadable ({type(e).__name__})") from e
    if not isinstance(data, dict):
        raise SpatialctlError(f"{path}: expected a JSON object")
    return data


def adapter_prompt_suffix(adapter_dir: str) -> str:
    """The instruction the adapter was trained with after each question ("" when none)."""
    return str(_prompt_config(adapter_dir).get("prompt_suffix", ""))


def adapter_views(adapter_dir: str) -> int:
    """Views per record the adapter was trained with, each a separate image (0: a video)."""
    views = _prompt_config(adapter_dir).get("views", 0)
    if not isinstance(views, int) or isinstance(views, bool) or views < 0:
        raise SpatialctlError(f"{os.path.join(adapter_dir, PROMPT_CONFIG)}: views {views!r} is not a count")
    return views


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
    boost.load_tower(model, adapter_dir)  # SpatialBoost's Attn⁺ and gates, when the adapter has them
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
    fusion = vega.load(adapter_dir)
    if fusion is not None:
        fusion.to(device=model.get_input_embeddings().weight.device)
    return GeometryVLM(vlm, gsm, geo_token_id, fusion).eval()


# X-LoRA experts.
# A scale-experts run keeps one LoRA folder per expert (paths relative to the run folder, so it can move) and the
# X-LoRA router in adapter_model.safetensors. We write both ourselves: peft 0.21's save_pretrained filters state
# keys by adapter name, and with experts named "0", "1", ... it drops the router's "layers.0.weight" (an empty file).


def save_xlora(out_dir: str, model: GeometryVLM, base: str) -> None:
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
