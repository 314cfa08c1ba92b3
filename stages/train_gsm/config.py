"""The train-gsm configuration."""

from __future__ import annotations

from dataclasses import dataclass, field

from spatialctl.qwen import DEFAULT_BASE

GRPO_PROMPT = ("First think about the question inside <think> </think>, then give the final answer inside "
               "<answer> </answer>.")
LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def _runtime(default):
    # Fields that do not change the trained weights: a resumed run may change them freely.
    return field(default=default, metadata={"runtime": True})


@dataclass
class TrainGSMConfig:
    qa: str
    out: str
    scenes: str | None = None
    base: str = DEFAULT_BASE
    geometry: tuple[str, ...] = ("dust3r", "pointmap")
    gsm: bool = True  # False: the plain VLM (for ablations and the benchmark's "GSM off")
    queries: int = 32
    geo_grid: int = 8
    pointmap_patch: int = 4
    full_finetune: bool = False
    lora_rank: int = 64
    lora_alpha: float = 0.0  # 0: twice the rank
    lora_dropout: float = 0.05
    lora_targets: tuple[str, ...] = LORA_TARGETS
    lr: float = 1e-4
    gsm_lr: float = 0.0  # 0: same as lr
    weight_decay: float = 0.0
    warmup_ratio: float = 0.03
    epochs: float = 1.0
    max_steps: int = 0  # 0: from epochs
    batch_size: int = 1  # per process
    grad_accum: int = 1
    max_grad_norm: float = 1.0
    num_frames: int = 16
    max_pixels: int = 0  # per frame; 0: the model's video processor setting
    seed: int = 0
    gradient_checkpointing: bool = True
    scales: tuple[str, ...] = ()  # train on records of these scales only (empty: all); each scale expert uses it
    # --experts scale: one LoRA expert per scale, then a peft X-LoRA router (and the GSM) trained on all records
    experts: str = "none"  # none | scale
    router_depth: int = 1  # X-LoRA classifier layers (1: a linear map of the last hidden state)
    router_size: int = 256  # hidden width of a deeper router
    router_temperature: float = 1.0
    router_lr: float = 0.0  # learning rate of the router phase (router and GSM); 0: lr
    # --objective grpo: group-relative policy optimisation on the QA records (LoRA only)
    objective: str = "sft"  # sft | grpo
    group_size: int = 4  # sampled answers per question
    max_new_tokens: int = 128
    temperature: float = 1.0
    top_p: float = 1.0
    kl_beta: float = 0.04  # weight of the per-token KL to the reference (the base with the adapters off)
    format_weight: float = 0.5  # reward for <think>...</think><answer>...</answer>, added to the answer's
    reward_parser: str = "answer_tag"  # how the answer is read from a completion (spatialctl.scoring parsers)
    # Progressive numeric reward: the lowest MRA threshold rises linearly from 0.5 to this by the last step,
    # per scale ("scale=theta") or for every scale (a bare number).
    progressive: tuple[str, ...] = ("0.8",)
    grpo_prompt: str = GRPO_PROMPT
    bf16: str = _runtime("auto")  # auto (on GPU), yes, no
    save_every: int = _runtime(500)
    keep_checkpoints: int = _runtime(2)
    resume: bool = _runtime(False)
    overwrite: bool = _runtime(False)
    num_workers: int = _runtime(0)
    log_every: int = _runtime(10)
    quiet: bool = _runtime(False)

    def __post_init__(self):
        self.geometry = tuple(self.geometry)
        self.lora_targets = tuple(self.lora_targets)
        self.scales = tuple(self.scales)
        self.progressive = tuple(str(p) for p in self.progressive)
