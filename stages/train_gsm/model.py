"""Build the trainable model: Qwen-VL + (LoRA on the language model | full fine-tuning) + GSM, optionally with
SpatialBoost's dual-channel attention in the vision tower."""

from __future__ import annotations

import os

import torch

from spatialctl import boost, gsm, qwen, vega
from spatialctl.errors import SpatialctlError
from spatialctl.stages.train_gsm.config import TrainGSMConfig


def lora_target_regex(targets) -> str:
    # Language-model projections only: the vision tower has its own q/k/v-like names and stays frozen.
    return rf".*language_model.*\.({'|'.join(targets)})$"


def build_model(cfg: TrainGSMConfig, tokenizer, geometry_dims: dict[str, int], *, dtype=None) -> gsm.GeometryVLM:
    base = qwen.load_model(cfg.base, dtype=dtype)
    if cfg.init_adapter is not None:
        base = init_from_adapter(base, cfg.init_adapter)
    base.config.use_cache = False
    base.requires_grad_(False)
    if cfg.gradient_checkpointing:
        kwargs = {"use_reentrant": False}  # reentrant checkpointing loses gradients when inputs are frozen
        if hasattr(base, "activation_checkpointing_enable"):  # transformers >= 5.x; the old name warns
            base.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
        else:
            base.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
    # before LoRA: Attn⁺ starts as a copy of the frozen, unadapted vision attention (or continues --init-adapter's)
    if cfg.boost and not boost.boosted_modules(base):
        boost.wrap_tower(base, cfg.boost_layers)
    elif cfg.boost and cfg.boost_layers is not None:
        raise SpatialctlError(f"--boost-layers: --init-adapter {cfg.init_adapter} already fixes the boosted layers")
    if cfg.freeze_llm:
        vlm = base
    elif cfg.full_finetune:
        base.model.language_model.requires_grad_(True)
        base.lm_head.requires_grad_(True)
        vlm = base
    else:
        from peft import LoraConfig, get_peft_model

        lora = LoraConfig(r=cfg.lora_rank, lora_alpha=cfg.lora_alpha or 2 * cfg.lora_rank,
                          lora_dropout=cfg.lora_dropout, target_modules=lora_target_regex(cfg.lora_targets),
                          bias="none")
        try:
            vlm = get_peft_model(base, lora)
        except ValueError as e:
            raise SpatialctlError(f"{cfg.base}: LoRA targets {list(cfg.lora_targets)} not found ({e})") from e
    fusion = None
    if cfg.fusion.kind != "none":
        if "genfeat" not in geometry_dims:
            raise SpatialctlError("--fusion vega: the scenes hold no generative features (run extract-gen-features)")
        fusion = vega.VegaFusion(vega.VegaConfig(
            base.config.text_config.hidden_size, geometry_dims["genfeat"], cfg.fusion.method,
            encoder=cfg.fusion.encoder if cfg.fusion.kind == "encoder" else None))
    if cfg.boost:  # after LoRA, which freezes every base weight it does not adapt
        boost.trainable_parameters(base.model.visual)
    module = geo_token_id = None
    if cfg.gsm:
        gsm_cfg = gsm_config(cfg, base.config.text_config.hidden_size, geometry_dims)
        geo_token_id = tokenizer.convert_tokens_to_ids(gsm_cfg.geo_token)
        module = gsm.GeometrySelectionModule(gsm_cfg)
    return gsm.GeometryVLM(vlm, module, geo_token_id, fusion)


def init_from_adapter(base, adapter_dir: str):
    """``base`` with a train-gsm adapter's language-model weights (LoRA merged) and boost applied, in place."""
    extra = [name for name in (gsm.GSM_CONFIG, vega.VEGA_CONFIG) if os.path.isfile(os.path.join(adapter_dir, name))]
    if extra or gsm.read_adapter_config(adapter_dir).get("peft_type") == "XLORA":
        raise SpatialctlError(f"--init-adapter {adapter_dir}: holds a GSM, fusion or scale experts "
                              f"({', '.join(extra) or 'X-LoRA'}); only language-model and boost weights carry over")
    return gsm.load_adapter(base, adapter_dir, merge=True).base


def gsm_config(cfg: TrainGSMConfig, hidden_size: int, geometry_dims: dict[str, int]) -> gsm.GSMConfig:
    return gsm.GSMConfig(hidden_size=hidden_size, num_queries=cfg.queries, depth=cfg.gsm_depth, geometry=cfg.geometry,
                         input_dims=dict(geometry_dims), geo_grid=cfg.geo_grid, pointmap_patch=cfg.pointmap_patch)


def param_groups(model: gsm.GeometryVLM, cfg: TrainGSMConfig) -> list[dict]:
    """Language-model, GSM and SpatialBoost (Attn⁺, gates) parameters, each with its learning rate; no weight decay
    on norms, biases and gates."""
    boosted = {id(p) for _, m in boost.boosted_modules(model) for p in [*m.plus.parameters(), m.a]}
    groups: dict[tuple[str, bool], list[torch.nn.Parameter]] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        kind = "gsm" if name.startswith("gsm.") else "boost" if id(p) in boosted else "lm"
        no_decay = p.ndim < 2 or name.endswith("queries")
        groups.setdefault((kind, no_decay), []).append(p)
    lrs = {"gsm": cfg.gsm_lr or cfg.lr, "boost": cfg.boost_lr or cfg.lr, "lm": cfg.lr}
    return [{"params": params, "lr": lrs[kind], "weight_decay": 0.0 if no_decay else cfg.weight_decay}
            for (kind, no_decay), params in sorted(groups.items())]
