"""The Qwen2.5-VL wrapper that feeds the GSM's tokens to the LLM and VEGA-3D's fused tokens to its video slots."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from spatialctl import qwen
from spatialctl.errors import SpatialctlError
from spatialctl.gsm.examples import collate
from spatialctl.gsm.module import GeometrySelectionModule
from spatialctl.vega import VegaFusion


class GeometryVLM(nn.Module):
    """Qwen2.5-VL (plain or peft-wrapped) + GSM: the GSM's tokens replace the geometry slot embeddings.

    A forward hook on the LLM's input embeddings does the replacement, so ``generate`` works unchanged: the
    prompt pass holds the slots, later single-token passes hold none.
    """

    def __init__(self, vlm: nn.Module, gsm: GeometrySelectionModule | None, geo_token_id: int | None,
                 vega: VegaFusion | None = None):
        super().__init__()
        self.vlm = vlm
        self.gsm = gsm
        self.geo_token_id = geo_token_id
        self.vega = vega
        self._pending: torch.Tensor | None = None
        self._pending_gen: torch.Tensor | None = None
        self.base.get_input_embeddings().register_forward_hook(self._inject)
        if vega is not None:
            # The vision tower's merged tokens (pooler_output) are what the model scatters into the video slots.
            self.base.model.visual.register_forward_hook(self._fuse_visual)

    @property
    def xlora(self) -> nn.Module | None:
        """The peft XLoraModel when the LLM is a mixture of LoRA experts (scale experts), else None."""
        inner = getattr(self.vlm, "base_model", None)
        return inner if hasattr(inner, "internal_xlora_classifier") else None

    @property
    def _no_split_modules(self) -> list[str]:
        """The base model's layer classes: what FSDP's transformer auto-wrap shards as units."""
        return list(getattr(self.base, "_no_split_modules", None) or [])

    @property
    def base(self) -> nn.Module:
        """The Qwen2_5_VLForConditionalGeneration itself (LoRA layers, if any, live inside it)."""
        return self.vlm.get_base_model() if hasattr(self.vlm, "get_base_model") else self.vlm

    def _inject(self, module, args, output):
        if self._pending is None:
            return output
        mask = args[0] == self.geo_token_id
        n = int(mask.sum())
        if n == 0:
            return output
        tokens = self._pending
        if n != tokens.shape[0] * tokens.shape[1]:
            raise SpatialctlError(f"{n} geometry slots in the batch, expected {tokens.shape[0] * tokens.shape[1]}")
        return output.masked_scatter(mask.unsqueeze(-1), tokens.to(output.dtype))

    def _fuse_visual(self, module, args, output):
        if self._pending_gen is None:
            return output
        tokens = output.pooler_output
        if tokens.shape[0] != self._pending_gen.shape[0]:
            raise SpatialctlError(f"{self._pending_gen.shape[0]} generative tokens for {tokens.shape[0]} visual tokens")
        output.pooler_output = self.vega(tokens, self._pending_gen.to(tokens.device))
        return output

    def _set_pending(self, batch: dict) -> None:
        self._pending = self.geometry_tokens(batch) if self.gsm is not None else None
        if self.vega is not None:
            if "genfeat_tokens" not in batch:
                raise SpatialctlError("the VEGA fusion needs the scene's generative features (genfeat)")
            self._pending_gen = batch["genfeat_tokens"]

    def geometry_tokens(self, batch: dict) -> torch.Tensor:
        emb = self.base.get_input_embeddings().weight
        question = F.embedding(batch["question_ids"].to(emb.device), emb)
        return self.gsm(question, batch["question_mask"].to(emb.device),
                        {k: v.to(emb.device) for k, v in batch["geometry"].items()},
                        batch["geo_pos"].to(emb.device), batch["geo_mask"].to(emb.device))

    def _vlm_inputs(self, batch: dict) -> dict:
        keys = ("input_ids", "attention_mask", "mm_token_type_ids", "pixel_values_videos", "video_grid_thw",
                "pixel_values", "image_grid_thw")  # a video, or the views of a multi-view record as images
        if self.base.config.model_type == "qwen2_5_vl":  # Qwen3-VL puts times in the prompt text instead
            keys += ("second_per_grid_ts",)
        device = self.base.get_input_embeddings().weight.device
        return {k: batch[k].to(device) for k in keys if k in batch}

    def forward(self, batch: dict, per_token: bool = False) -> torch.Tensor:
        """Mean cross-entropy over the answer tokens of the batch; or, with ``per_token``, the (B, L-1) log
        probabilities of each label token (0 where the label is -100), as GRPO needs them."""
        inputs = self._vlm_inputs(batch)
        self._set_pending(batch)
        try:
            labels = batch["labels"].to(inputs["input_ids"].device)[:, 1:]
            keep = labels != -100
            xlora = self.xlora
            if xlora is None:
                hidden = self.base.model(**inputs, use_cache=False).last_hidden_state
                # The LM head only where there is a target: vocab x sequence logits are the memory peak otherwise.
                logits = self.base.lm_head(hidden[:, :-1][keep])
            else:
                # X-LoRA computes its routing in a pre-hook of the full model (a first pass with the experts off),
                # so the full model is called; logits only at the target columns keep the memory down.
                cols = keep.any(0).nonzero().squeeze(1)
                with xlora._enable_peft_forward_hooks():
                    out = self.base(**inputs, use_cache=False, logits_to_keep=cols)
                logits = out.logits[keep[:, cols]]
        finally:
            self._pending = self._pending_gen = None
        if not per_token:
            return F.cross_entropy(logits.float(), labels[keep])
        logp = torch.zeros(labels.shape, dtype=torch.float32, device=logits.device)
        token_logp = torch.log_softmax(logits.float(), -1).gather(-1, labels[keep].unsqueeze(-1)).squeeze(-1)
        return logp.masked_scatter(keep, token_logp)

    @torch.no_grad()
    def generate(self, batch: dict, max_new_tokens: int = 16, **kwargs) -> torch.Tensor:
        """Continuation of a left-padded batch (greedy unless ``do_sample=True``); only the new tokens
        (B, <= max_new_tokens)."""
        inputs = self._vlm_inputs(batch)
        self._set_pending(batch)
        xlora = self.xlora
        try:
            kwargs = {"do_sample": False, **kwargs}
            if xlora is None:
                out = self.base.generate(**inputs, max_new_tokens=max_new_tokens, **kwargs)
            else:
                with xlora._enable_peft_forward_hooks():  # X-LoRA routes in every pass; it runs without a cache
                    out = self.base.generate(**inputs, max_new_tokens=max_new_tokens, use_cache=False, **kwargs)
        finally:
            self._pending = self._pending_gen = None
        return out[:, inputs["input_ids"].shape[1]:]

    def answer(self, examples: list[dict], tokenizer, max_new_tokens: int = 16) -> list[str]:
        """Examples from :func:`prepare_example` (``with_answer=False``) -> decoded answers."""
        batch = collate(examples, tokenizer.pad_token_id, left_pad=True)
        ids = self.generate(batch, max_new_tokens=max_new_tokens, pad_token_id=tokenizer.pad_token_id,
                            eos_token_id=tokenizer.convert_tokens_to_ids(qwen.IM_END))
        return [t.strip() for t in tokenizer.batch_decode(ids, skip_special_tokens=True)]
