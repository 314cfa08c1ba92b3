"""SpaceVista scale experts: one LoRA per scale, then a learned router over them (peft X-LoRA).

Phase 1 trains one LoRA expert (with its own GSM) per scale present in the QA file, each on that scale's
records only, into ``out/experts/<scale>/`` (ordinary train-gsm runs: checkpoints, resume). Phase 2 freezes
the experts and trains, on all records, peft's X-LoRA classifier (layer-wise scalings: a softmax over experts
per token and per LoRA layer, computed from the base model's last hidden state) together with a GSM that
starts from the mean of the experts' GSMs (they share one initialisation, so the mean is a sensible start).

Gradient checkpointing is off in phase 2: X-LoRA hands its scalings to the LoRA layers through forward
pre-hooks that are gone by the time checkpointed layers are recomputed in backward, which would silently
recompute them with every expert at weight 1.

At the end the router's use of the experts on the training records is written to ``router_usage.json``, through
the same loading path ``eval run --adapter`` takes: per true scale, the share per expert and mean entropy at the
position that predicts the first answer token (where the answer is decided; later answer positions already see
the teacher-forced answer), per LoRA layer and averaged over layers, and ``separation``: the largest total-variation
distance between two scales' mean routing in any layer (0 when the router ignores the scale). A collapsed router
(one expert everywhere, or uniform weights) shows as separation near 0.

Measured on tiny random models (tests/test_train_experts.py): the router does follow the scale (both scales'
answers right, separation well above 0), but not by picking each scale's own expert everywhere: the experts are
interchangeable in most layers and a small shift of the mix in a few layers flips the answer, so the share averaged
over layers stays near 1/E. ``own_expert_rate`` reports it as measured.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os

import numpy as np
import torch

from spatialctl import gsm, io, qa_format, qwen
from spatialctl.devices import resolve_device
from spatialctl.errors import SpatialctlError
from spatialctl.hub import resolve_model_dir
from spatialctl.stages.train_gsm.config import ExpertsConfig, TrainGSMConfig
from spatialctl.stages.train_gsm.model import gsm_config

log = logging.getLogger("train-gsm")
SCALE_ORDER = ("tiny_tabletop", "tabletop", "indoor", "outdoor")
EXPERTS_DIR = "experts"
ROUTER_USAGE = "router_usage.json"


def record_scales(qa_path: str) -> list[str]:
    """The scales present in the QA file, smallest first; every record must carry one."""
    records = qa_format.read_qa(qa_path)
    missing = [r.id for r in records if not r.scale]
    if missing:
        raise SpatialctlError(f"{qa_path}: record {missing[0]} has no scale; --experts scale needs make-qa's "
                              "scale-tagged records")
    present = {r.scale for r in records}
    scales = [s for s in SCALE_ORDER if s in present] + sorted(present - set(SCALE_ORDER))
    if len(scales) < 2:
        raise SpatialctlError(f"{qa_path}: records of {len(scales)} scale(s) {scales}; experts need at least two")
    return scales


def run_experts(cfg: TrainGSMConfig, on_step, train):
    """Both phases; ``train`` is the training loop (``loop._train``)."""
    scales = record_scales(cfg.qa)
    results = {}
    for scale in scales:
        sub = dataclasses.replace(cfg, experts=ExpertsConfig(), scales=(scale,),
                                  out=os.path.join(cfg.out, EXPERTS_DIR, scale))
        if not cfg.quiet:
            log.info("expert %s -> %s", scale, sub.out)
        results[scale] = train(sub)  # on --resume, a finished expert resumes at its last step: nothing to redo
    expert_dirs = {scale: f"{EXPERTS_DIR}/{scale}" for scale in scales}

    def build(c, tokenizer, dims, *, dtype=None):
        return build_router_model(c, tokenizer, dims, expert_dirs, dtype=dtype)

    router_cfg = dataclasses.replace(cfg, lr=cfg.experts.router_lr or cfg.lr,
                                     gsm_lr=cfg.gsm_lr if not cfg.experts.router_lr else 0.0)
    result = train(router_cfg, on_step, build=build, router_setup={"experts": expert_dirs, "layerwise_scalings": True})
    result.experts = results
    if _is_main_process():
        usage = router_usage(cfg)
        io.write_json(os.path.join(cfg.out, ROUTER_USAGE), usage)
        if not cfg.quiet:
            log.info("router usage: %s", json.dumps(usage["overall"]))
    return result


def _is_main_process() -> bool:
    from accelerate import PartialState

    return PartialState().is_main_process


def build_router_model(cfg: TrainGSMConfig, tokenizer, geometry_dims: dict[str, int], expert_dirs: dict[str, str],
                       *, dtype=None) -> gsm.GeometryVLM:
    """Base + frozen LoRA experts + trainable X-LoRA router (+ a GSM started from the experts' mean)."""
    from safetensors.torch import load_file

    base = qwen.load_model(cfg.base, dtype=dtype)
    base.requires_grad_(False)
    vlm = gsm.build_xlora(base, expert_dirs, root=cfg.out, layerwise_scalings=True, xlora_depth=cfg.experts.router_depth,
                          xlora_size=cfg.experts.router_size, softmax_temperature=cfg.experts.router_temperature,
                          xlora_dropout_p=0.0)
    router = vlm.base_model.internal_xlora_classifier
    router.requires_grad_(True)
    module = geo_token_id = None
    if cfg.gsm:
        gsm_cfg = gsm_config(cfg, base.config.text_config.hidden_size, geometry_dims)
        geo_token_id = tokenizer.convert_tokens_to_ids(gsm_cfg.geo_token)
        module = gsm.GeometrySelectionModule(gsm_cfg)
        states = [load_file(os.path.join(cfg.out, rel, gsm.GSM_WEIGHTS)) for rel in expert_dirs.values()]
        try:
            module.load_state_dict({k: torch.stack([s[k].float() for s in states]).mean(0) for k in states[0]})
        except (KeyError, RuntimeError) as e:
            raise SpatialctlError(f"{cfg.out}/{EXPERTS_DIR}: the experts' GSMs do not match this run's options ({e})") from e
        if dtype is not None:
            module.to(dtype)
    return gsm.GeometryVLM(vlm, module, geo_token_id)


@torch.no_grad()
def router_usage(cfg: TrainGSMConfig, batch_size: int = 8) -> dict:
    """The saved run's router on the run's QA records: share per expert and entropy, overall and per scale."""
    from spatialctl.stages.train_gsm.data import load_records

    device = str(resolve_device("auto"))
    tokenizer = qwen.load_tokenizer(cfg.base)
    model = gsm.load_adapter(qwen.load_model(cfg.base, device=device), cfg.out, tokenizer=tokenizer).to(device)
    experts = list(model.xlora.spatialctl_expert_dirs)
    video_cfg = qwen.VideoProcessorConfig.from_model_dir(resolve_model_dir(cfg.base),
                                                         max_pixels=cfg.max_pixels or None)
    gsm_cfg = model.gsm.cfg if model.gsm is not None else None
    records, urls = load_records(cfg.qa, cfg.scenes)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    layer_shares, entropies = [], []
    for i in range(0, len(records), batch_size):
        chunk = records[i:i + batch_size]
        examples = [gsm.prepare_example(r, urls[r.scene], tokenizer, video_cfg, gsm_cfg, num_frames=cfg.num_frames)
                    for r in chunk]
        batch = gsm.collate(examples, pad_id)
        model(batch)
        layer_share, entropy = decision_stats(model.xlora.get_latest_scalings(), batch["labels"])
        layer_shares.append(layer_share)
        entropies.append(entropy)
    layer_share, entropy = np.concatenate(layer_shares), np.concatenate(entropies)  # (N, layers, E), (N,)
    share = layer_share.mean(1)
    scales = np.array([r.scale for r in records])

    def summary(sel: np.ndarray) -> dict:
        mean_share = share[sel].mean(0)
        return {"records": int(sel.sum()), "share": {e: round(float(v), 6) for e, v in zip(experts, mean_share,
                                                                                          strict=True)},
                "share_per_layer": {e: [round(float(v), 6) for v in layer_share[sel, :, k].mean(0)]
                                    for k, e in enumerate(experts)},
                "entropy": round(float(entropy[sel].mean()), 6),
                "top_expert": experts[int(mean_share.argmax())]}

    present = [s for s in experts if (scales == s).any()]
    out = {"experts": experts, "max_entropy": round(math.log(len(experts)), 6),
           "overall": summary(np.ones(len(records), bool)),
           "per_scale": {s: summary(scales == s) for s in present},
           "separation": round(separation([layer_share[scales == s].mean(0) for s in present]), 6)}
    # share of each scale's records whose own expert gets the largest mean weight: 1/E by chance, 1 when separated
    own = [experts.index(s) == int(share[j].argmax()) for j, s in enumerate(scales) if s in experts]
    out["own_expert_rate"] = round(float(np.mean(own)), 6) if own else None
    return out


def decision_stats(scalings: torch.Tensor, labels: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """X-LoRA scalings (B, S, layers, E) and labels (B, S) -> per record, at the position that predicts the first
    answer token: the expert distribution per layer (B, layers, E) and its entropy (nats) averaged over layers (B,)."""
    p = scalings.float().clamp_min(0)
    p = p / p.sum(-1, keepdim=True).clamp_min(1e-12)
    has = (labels != -100).to(p.device)
    pos = (has.float().argmax(1) - 1).clamp_min(0)  # the prompt's last token predicts the first answer token
    p = p[torch.arange(p.shape[0], device=p.device), pos]  # (B, layers, E)
    entropy = -(p * p.clamp_min(1e-12).log()).sum(-1).mean(-1)
    return p.cpu().numpy(), entropy.cpu().numpy()


def separation(per_scale: list[np.ndarray]) -> float:
    """Mean routing (layers, E) of each scale -> the largest total-variation distance between two scales' expert
    distributions in any one layer (0: the router treats the scales alike; 1: disjoint experts)."""
    best = 0.0
    for i in range(len(per_scale)):
        for j in range(i + 1, len(per_scale)):
            best = max(best, float(0.5 * np.abs(per_scale[i] - per_scale[j]).sum(-1).max()))
    return best
