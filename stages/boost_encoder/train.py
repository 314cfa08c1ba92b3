"""The vision-language model of the three stages and their training loops.

encoder patch features -> projector -> LLM input embeddings (a prefix of image tokens after the first user
header) -> next-token loss on the answers. Which parts train is all that differs between the stages:

1. the projector (encoder and LLM frozen);
2. the projector and LoRA adapters on the LLM's attention projections;
3. only the encoder's Attn⁺ copies and gates (projector and LLM, with stage 2's LoRA merged in, frozen).
"""

from __future__ import annotations

import json
import logging
import os
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np
import torch

from spatialctl import boost, io
from spatialctl.errors import SpatialctlError
from spatialctl.hub import resolve_model_dir

from .data import IGNORE, Example
from .projector import Projector

log = logging.getLogger("spatialctl.boost_encoder")

LORA_DIR = "llm_lora"
LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj"]


@dataclass
class Models:
    encoder: torch.nn.Module
    family: boost.Family
    prep: boost.ImagePrep
    projector: Projector
    llm: torch.nn.Module
    device: torch.device
    dtype: torch.dtype

    def features(self, frame: np.ndarray) -> torch.Tensor:
        pixels, grid = self.prep(frame[None])
        inputs = boost.model_inputs(self.family, pixels, grid, self.prep.patch_size, self.device)
        inputs["pixel_values"] = inputs["pixel_values"].to(self.dtype)
        return boost.patch_features(self.encoder, self.family, inputs, grid)

    def loss(self, ex: Example, *, encoder_grad: bool) -> torch.Tensor:
        with torch.set_grad_enabled(encoder_grad and torch.is_grad_enabled()):
            feats = self.features(ex.frame)
        image = self.projector(feats.to(self.dtype))[0]
        embed = self.llm.get_input_embeddings()
        pre = embed(torch.tensor(ex.pre_ids, device=self.device))
        post = embed(torch.tensor(ex.post_ids, device=self.device))
        embeds = torch.cat([pre, image.to(pre.dtype), post])[None]
        labels = [IGNORE] * (len(ex.pre_ids) + image.shape[0]) + list(ex.post_labels)
        out = self.llm(inputs_embeds=embeds, labels=torch.tensor([labels], device=self.device))
        if not torch.isfinite(out.loss):
            raise SpatialctlError(f"record {ex.record_id}: the loss is not finite (lower the learning rate)")
        return out.loss


def stage_parameters(models: Models, stage: int) -> list[torch.nn.Parameter]:
    """Set requires_grad for the stage and return what the optimiser updates."""
    for module in (models.encoder, models.projector, models.llm):
        for p in module.parameters():
            p.requires_grad_(False)
    if stage == 3:
        params = boost.trainable_parameters(models.encoder)
        if not params:
            raise SpatialctlError("stage 3: the encoder has no boosted layers")
        return params
    params = list(models.projector.parameters())
    if stage == 2:
        params += [p for n, p in models.llm.named_parameters() if "lora_" in n]
    for p in params:
        p.requires_grad_(True)
    return params


def train(models: Models, examples: list[Example], stage: int, *, lr: float, epochs: int, max_steps: int | None,
          seed: int, log_file: str | None = None, progress: Callable[[Iterable], Iterable] | None = None) -> dict:
    """AdamW over single examples (sequences differ in length); returns first/last/mean loss and steps."""
    if not examples:
        raise SpatialctlError(f"stage {stage}: no training examples")
    params = stage_parameters(models, stage)
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    for module in (models.encoder, models.projector, models.llm):
        module.eval()  # no dropout: frozen parts must not change, trained parts stay deterministic
    order = random.Random(seed)
    total = len(examples) * epochs if max_steps is None else max_steps
    schedule = [examples[i % len(examples)] for i in range(total)]
    steps = []
    for start in range(0, total, len(examples)):  # reshuffle each epoch, deterministically
        chunk = schedule[start:start + len(examples)]
        order.shuffle(chunk)
        steps += chunk
    losses = []
    log_handle = open(log_file, "a") if log_file else None
    try:
        for step, ex in enumerate(progress(steps) if progress else steps):
            loss = models.loss(ex, encoder_grad=stage == 3)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(float(loss.detach()))
            if log_handle:
                log_handle.write(json.dumps({"stage": stage, "step": step, "record": ex.record_id,
                                             "loss": losses[-1]}) + "\n")
    finally:
        if log_handle:
            log_handle.close()
    for p in params:
        p.requires_grad_(False)
    return {"steps": len(losses), "first_loss": losses[0], "last_loss": losses[-1],
            "mean_loss": float(np.mean(losses))}


@torch.no_grad()
def mean_loss(models: Models, examples: list[Example]) -> float:
    """Mean answer loss over ``examples`` with everything frozen (before/after comparisons)."""
    for module in (models.encoder, models.projector, models.llm):
        module.eval()
    return float(np.mean([float(models.loss(ex, encoder_grad=False)) for ex in examples]))


# ---------------------------------------------------------------------------------------------------- loading


def load_llm(llm: str, dtype: torch.dtype, device: torch.device):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = resolve_model_dir(llm, default="Qwen/Qwen2.5-7B-Instruct")
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
    except Exception as e:
        raise SpatialctlError(f"{path}: cannot load the LLM or its tokenizer ({type(e).__name__}: {e})") from e
    return tokenizer, model.to(device), path


def add_lora(llm, rank: int, alpha: int):
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=0.0, target_modules=LORA_TARGETS, bias="none",
                        task_type="CAUSAL_LM")
    return get_peft_model(llm, config)


def save_lora(llm, out_dir: str) -> str:
    final = os.path.join(out_dir, LORA_DIR)
    with io.aside(final) as tmp:
        llm.save_pretrained(tmp)
    return final


def merge_lora(llm, out_dir: str):
    """The LLM with stage 2's LoRA folded in (stage 3 keeps it frozen)."""
    from peft import PeftModel

    path = os.path.join(out_dir, LORA_DIR)
    if not os.path.isfile(os.path.join(path, "adapter_config.json")):
        raise SpatialctlError(f"{path}: no LoRA adapter; run stage 2 first (--stage 2)")
    try:
        return PeftModel.from_pretrained(llm, path).merge_and_unload()
    except Exception as e:
        raise SpatialctlError(f"{path}: cannot apply the LoRA adapter ({type(e).__name__}: {e})") from e
