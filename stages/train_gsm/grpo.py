"""GRPO (group-relative policy optimisation) for train-gsm: sample, reward, group-normalise, update + KL.

Per question, G answers are sampled from the current policy; each gets the reward of :mod:`rewards`; its
advantage is (reward - group mean) / (group std + eps), shared by all its tokens. The loss is the policy
gradient objective plus beta times the per-token KL estimate exp(r) - r - 1 (r = log pi_ref - log pi) to the
reference policy, which is the same network with its LoRA adapters switched off (so no second copy of the
model). Each sampled batch gets exactly one update, so the sampling policy is the current one and PPO's ratio
clip would never act (its ratio is 1): there is no clip option. The per-sequence token mean is averaged over
sequences, as GRPO does.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from spatialctl import gsm, qwen
from spatialctl.stages.train_gsm.config import TrainGSMConfig
from spatialctl.stages.train_gsm.rewards import RewardFunction, group_advantages


def grpo_loss(logp: torch.Tensor, ref_logp: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor,
              kl_beta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, T) token log-probs under the policy / the reference, (N,) advantages, (N, T) completion mask ->
    (loss, mean per-token KL)."""
    mask = mask.to(logp.dtype)
    ratio = torch.exp(logp - logp.detach())  # 1, with the gradient of log pi: the sampling policy is this one
    adv = advantages.to(logp.dtype)[:, None]
    pg = -ratio * adv
    log_ref_ratio = ref_logp - logp
    kl = torch.exp(log_ref_ratio) - log_ref_ratio - 1.0
    n_tokens = mask.sum(1).clamp(min=1.0)
    per_seq = ((pg + kl_beta * kl) * mask).sum(1) / n_tokens
    return per_seq.mean(), ((kl * mask).sum(1) / n_tokens).mean().detach()


def _trim(ids: list[int], eos_id: int) -> list[int]:
    """Generated ids up to and including the first end-of-turn token (what follows is padding)."""
    return ids[: ids.index(eos_id) + 1] if eos_id in ids else ids


@dataclass
class StepStats:
    reward: float
    answer_reward: float
    format_reward: float
    kl: float
    completion_tokens: float


class GRPOObjective:
    """Called once per micro-batch of prompt examples (``prepare_example(with_answer=False)``)."""

    def __init__(self, cfg: TrainGSMConfig, tokenizer, records: list, total_steps: int, accelerator):
        self.cfg, self.tokenizer, self.total_steps, self.accelerator = cfg, tokenizer, total_steps, accelerator
        self.records = {r.id: r for r in records}
        self.reward = RewardFunction(cfg.grpo.reward_parser, cfg.grpo.format_weight, cfg.grpo.schedule)
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        self.eos_id = tokenizer.convert_tokens_to_ids(qwen.IM_END)

    def sample(self, policy: gsm.GeometryVLM, prompts: list[dict]) -> list[list[int]]:
        was_training = policy.training
        policy.eval()  # no dropout while sampling: the samples come from the policy that is scored
        try:
            batch = gsm.collate(prompts, self.pad_id, left_pad=True)
            out = policy.generate(batch, max_new_tokens=self.cfg.grpo.max_new_tokens, do_sample=True,
                                  temperature=self.cfg.grpo.temperature, top_p=self.cfg.grpo.top_p, top_k=0,
                                  pad_token_id=self.pad_id, eos_token_id=self.eos_id)
        finally:
            policy.train(was_training)
        return [_trim(row, self.eos_id) for row in out.tolist()]

    def completion_batch(self, prompts: list[dict], completions: list[list[int]]) -> dict:
        rows = []
        for e, c in zip(prompts, completions, strict=True):
            c = np.asarray(c, np.int64)
            rows.append({**e, "input_ids": np.concatenate([e["input_ids"], c]),
                         "labels": np.concatenate([np.full(len(e["input_ids"]), -100, np.int64), c]),
                         "mm_token_type_ids": np.concatenate([e["mm_token_type_ids"], np.zeros(len(c), np.int64)])})
        return gsm.collate(rows, self.pad_id)

    def __call__(self, model, examples: list[dict], step: int) -> tuple[torch.Tensor, StepStats]:
        policy = self.accelerator.unwrap_model(model)
        g = self.cfg.grpo.group_size
        prompts = [e for e in examples for _ in range(g)]  # consecutive groups of G per question
        completions = self.sample(policy, prompts)
        texts = self.tokenizer.batch_decode(completions, skip_special_tokens=True)
        progress = step / max(1, self.total_steps - 1)
        rewards = [self.reward(self.records[e["id"]], t, progress) for e, t in zip(prompts, texts, strict=True)]
        totals = np.array([r.total for r in rewards])
        batch = self.completion_batch(prompts, completions)
        logp = model(batch, per_token=True)
        with torch.no_grad(), policy.vlm.disable_adapter():
            ref_logp = policy(batch, per_token=True)
        mask = batch["labels"][:, 1:].to(logp.device) != -100
        adv = torch.as_tensor(group_advantages(totals, g), device=logp.device)
        loss, kl = grpo_loss(logp, ref_logp, adv, mask, self.cfg.grpo.kl_beta)
        stats = StepStats(reward=float(totals.mean()), answer_reward=float(np.mean([r.answer for r in rewards])),
                          format_reward=float(np.mean([r.format for r in rewards])), kl=float(kl),
                          completion_tokens=float(np.mean([len(c) for c in completions])))
        return loss, stats
