"""The train-gsm configuration."""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import cached_property

from spatialctl.boost import BOOST_CONFIG, DEFAULT_ENCODER, check_tower_layers, parse_layers
from spatialctl.config import check_fields, opt, overwrite_opt, quiet_opt, section, split_list
from spatialctl.errors import SpatialctlError, UsageError
from spatialctl.gsm import GEOMETRY_SOURCES
from spatialctl.hub import resolve_model_dir
from spatialctl.qwen import DEFAULT_BASE
from spatialctl.vega import METHODS as VEGA_METHODS

GRPO_PROMPT = ("First think about the question inside <think> </think>, then give the final answer inside "
               "<answer> </answer>.")
LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass
class ExpertsConfig:
    """--experts scale: one LoRA expert per scale, then a peft X-LoRA router (and the GSM) trained on all records."""

    mode: str = opt("none", "none, or scale: one LoRA expert per scale (records' scale), then a peft X-LoRA router "
                    "over them; writes router_usage.json.", flag="--experts", choices=("none", "scale"))
    router_depth: int = opt(1, "X-LoRA router layers (1: linear).")
    router_size: int = 256  # hidden width of a deeper router
    router_temperature: float = 1.0
    router_lr: float = opt(0.0, "Router-phase learning rate; 0 means --lr.")


@dataclass
class GRPOConfig:
    """--objective grpo: group-relative policy optimisation on the QA records (LoRA only)."""

    group_size: int = opt(4, "GRPO: sampled answers per question.")
    max_new_tokens: int = opt(128, "GRPO: longest sampled answer.")
    temperature: float = opt(1.0, "GRPO: sampling temperature.")
    top_p: float = 1.0
    kl_beta: float = opt(0.04, "GRPO: weight of the KL to the base (LoRA off).")
    format_weight: float = opt(0.5, "GRPO: reward for <think>..</think><answer>..</answer>.")
    reward_parser: str = opt("answer_tag", "GRPO: how answers are read (answer_tag, lmms, vsibench, spacevista).")
    # Progressive numeric reward: the lowest MRA threshold rises linearly from 0.5 to this by the last step,
    # per scale ("scale=theta") or for every scale (a bare number).
    progressive: tuple[str, ...] = opt(("0.8",), "GRPO: final lowest MRA threshold, for all scales or per scale "
                                       "(indoor=0.9,outdoor=0.75); rises from 0.5.", parse=split_list,
                                       show_default="0.8")
    prompt: str = GRPO_PROMPT

    def __post_init__(self):
        self.progressive = tuple(str(p) for p in self.progressive)

    @cached_property
    def schedule(self) -> dict[str, float]:
        """--progressive parsed once: scale (or "*") -> final lowest MRA threshold."""
        from spatialctl.stages.train_gsm.rewards import parse_progressive

        return parse_progressive(self.progressive)


@dataclass
class FusionConfig:
    """--fusion vega: VEGA-3D's token-gated fusion of generative features into the video tokens."""

    kind: str = opt("none", "none; vega: VEGA-3D token-gated fusion of the scene's generative features "
                    "(extract-gen-features) into the video tokens before the LLM; encoder: the same with an "
                    "AutoModel encoder's features (--fusion-encoder); with or without the GSM.",
                    flag="--fusion", choices=("none", "vega", "encoder"))
    method: str = opt("token_gated", "VEGA-3D fusion: token_gated (as released) or token_gated_residual "
                      "(f2d + 0.2 * (mixed - f2d)).", flag="--fusion-method", choices=VEGA_METHODS)
    encoder: str = opt(DEFAULT_ENCODER, "--fusion encoder: vision encoder (DINOv3, DINOv2 or SigLIP2; hub id or "
                       "folder) whose patch features are fused into the video tokens, through the same projector "
                       "and gate.", flag="--fusion-encoder")


@dataclass
class TrainGSMConfig:
    """Sections: the fields of the config itself are what every run uses (supervised fine-tuning needs nothing
    else); ``experts`` (scale experts + X-LoRA router) and ``grpo`` hold the options of those modes."""

    qa: str = opt(help="QA records from make-qa (.jsonl or .parquet).")
    out: str = opt(help="Output folder for the adapter, checkpoints and logs.")
    scenes: str | None = opt(None, "Folder holding the scene stores the records name (<scene>/scene.zarr or "
                             "<scene>.zarr). Default: scene paths as written.")
    base: str = opt(DEFAULT_BASE, "Base model: hub id (already downloaded) or local folder.")
    geometry: tuple[str, ...] = opt(("dust3r", "pointmap"), "Geometry sources, comma-separated: dust3r (stored "
                                    "encoder features), pointmap, genfeat (VEGA-3D, gated fusion).",
                                    parse=split_list, show_default="dust3r,pointmap", choices=GEOMETRY_SOURCES)
    queries: int = opt(32, "GSM queries = geometry tokens given to the LLM.")
    gsm_depth: int = opt(1, "GSM (Q-Former) depth: rounds of text then geometry blocks.")
    # False: the plain VLM (for ablations and the benchmark's "GSM off")
    gsm: bool = opt(True, "Train the plain VLM without geometry (ablation).", flag="--no-gsm", invert=True)
    geo_grid: int = opt(8, "Geometry cells per side per frame.")
    pointmap_patch: int = 4
    lora_rank: int = opt(64, "LoRA rank on the language model.")
    lora_alpha: float = opt(0.0, "LoRA alpha; 0 means twice the rank.")
    lora_dropout: float = opt(0.05, "LoRA dropout.")
    full_finetune: bool = opt(False, "Train all language-model weights instead of LoRA (vision tower stays frozen).")
    freeze_llm: bool = opt(False, "Train no language-model weights: only the GSM, --fusion or --boost (with --boost "
                           "alone: SpatialBoost stage 3, only Attn+ and the gates).")
    init_adapter: str | None = opt(None, "Start the language model (and any boost) from a train-gsm adapter folder, "
                                   "e.g. SpatialBoost stage 3 from a stage-2 run; the adapter is then saved with the "
                                   "full language-model weights. Needs --full-finetune or --freeze-llm.")
    lora_targets: tuple[str, ...] = LORA_TARGETS
    lr: float = opt(1e-4, "Peak learning rate (cosine schedule with warm-up).")
    gsm_lr: float = opt(0.0, "GSM learning rate; 0 means --lr.")
    weight_decay: float = opt(0.0, "AdamW weight decay (not on norms/biases).")
    warmup_ratio: float = opt(0.03, "Fraction of steps spent warming up.")
    epochs: float = opt(1.0, "Passes over the QA records (when --max-steps is 0).")
    max_steps: int = opt(0, "Optimizer steps; 0 means from --epochs.")
    batch_size: int = opt(1, "Samples per process per micro-step.")
    grad_accum: int = opt(1, "Micro-steps per optimizer step.")
    max_grad_norm: float = opt(1.0, "Gradient clipping; 0 disables.")
    num_frames: int = opt(16, "Frames per sample (the record's, thinned).")
    views: int = opt(0, "Multi-view records: the record's frames thinned to N views, each given as a separate image "
                     "(SpatialBoost's multi-view VQA: 2, 4 or 8) instead of a video; 0: a video of --num-frames. "
                     "Needs --no-gsm and --fusion none.")
    boost: bool = opt(False, "SpatialBoost on the VLM's vision tower: every chosen attention block becomes "
                      "a*Attn + (1-a)*Attn+ (Attn+ a copy, gate a=sigmoid(0)), identical at step 0; Attn+ and the "
                      "gates train with the LLM (LoRA, or --full-finetune); saved as boost.safetensors.")
    boost_layers: list[int] | None = opt(None, "--boost: vision blocks to boost: all, or indices like 0,1,-1.",
                                         parse=parse_layers, show_default="all")
    boost_lr: float = opt(0.0, "--boost: learning rate of Attn+ and the gates; 0 means --lr.")
    max_pixels: int = opt(0, "Pixels per frame after resizing; 0 means the model's video processor setting (with "
                          "--views: its image processor's).")
    gradient_checkpointing: bool = opt(True, "Keep activations (faster, more memory).",
                                       flag="--no-gradient-checkpointing", invert=True)
    # Fields marked runtime do not change the trained weights: a resumed run may change them freely.
    bf16: str = opt("auto", "bf16 mixed precision: auto (on GPU), yes, no.", runtime=True, choices=("auto", "yes", "no"))
    save_every: int = opt(500, "Checkpoint every N optimizer steps.", runtime=True)
    keep_checkpoints: int = opt(2, "Checkpoints kept on disk.", runtime=True)
    resume: bool = opt(False, "Continue from the latest checkpoint in --out.", runtime=True)
    overwrite: bool = overwrite_opt("Discard a previous run in --out.")
    seed: int = opt(0, "Seed for initial weights and data order.")
    num_workers: int = opt(0, "Data-loading worker processes.", runtime=True)
    log_every: int = opt(10, "Write train_log.jsonl every N steps.", runtime=True)
    scales: tuple[str, ...] = ()  # train on records of these scales only (empty: all); each scale expert uses it
    fusion: FusionConfig = section(FusionConfig)
    experts: ExpertsConfig = section(ExpertsConfig)
    objective: str = opt("sft", "sft (answer cross-entropy) or grpo (sampled answers rewarded by eval's checker; LoRA "
                         "only).", choices=("sft", "grpo"))
    grpo: GRPOConfig = section(GRPOConfig)
    quiet: bool = quiet_opt()

    def __post_init__(self):
        self.geometry = split_list(self.geometry)
        self.lora_targets = tuple(self.lora_targets)
        self.scales = tuple(self.scales)

    def validate(self) -> None:
        from spatialctl import scoring

        check_fields(self)
        if self.resume and self.overwrite:
            raise UsageError("--resume and --overwrite exclude each other")
        for name in ("batch_size", "grad_accum", "num_frames", "queries", "gsm_depth", "geo_grid", "pointmap_patch",
                     "save_every"):
            if getattr(self, name) < 1:
                raise UsageError(f"--{name.replace('_', '-')} must be at least 1")
        if self.gsm and not self.geometry:
            raise UsageError("--geometry: give at least one source (or --no-gsm)")
        if self.freeze_llm and self.full_finetune:
            raise UsageError("--freeze-llm and --full-finetune exclude each other")
        if self.freeze_llm and not (self.gsm or self.fusion.kind != "none" or self.boost):
            raise UsageError("--freeze-llm leaves nothing to train: add the GSM, --fusion or --boost")
        if self.init_adapter is not None and not (self.full_finetune or self.freeze_llm):
            raise UsageError("--init-adapter carries full language-model weights: add --full-finetune or --freeze-llm")
        if self.init_adapter is not None:
            if not os.path.isfile(os.path.join(self.init_adapter, "adapter_config.json")):
                raise UsageError(f"--init-adapter {self.init_adapter}: not a train-gsm adapter folder (no "
                                 "adapter_config.json)")
            if os.path.realpath(self.init_adapter) == os.path.realpath(self.out):
                raise UsageError("--init-adapter must not be --out (the run would replace what it starts from)")
            _check_same_base(self.init_adapter, self.base)
        if (self.freeze_llm or self.init_adapter) and (self.experts.mode != "none" or self.objective != "sft"):
            raise UsageError("--freeze-llm and --init-adapter train with --objective sft and --experts none")
        if not self.full_finetune and not self.freeze_llm and self.lora_rank < 1:
            raise UsageError("--lora-rank must be at least 1 (or use --full-finetune)")
        if self.max_steps < 0 or self.epochs <= 0 and self.max_steps == 0:
            raise UsageError("give --max-steps > 0 or --epochs > 0")
        if self.views < 0:
            raise UsageError("--views must be 0 (a video) or at least 1")
        if self.views and self.num_frames != TrainGSMConfig.num_frames:
            raise UsageError("--num-frames and --views exclude each other (--views N takes N of the record's frames)")
        if self.views and (self.gsm or self.fusion.kind != "none"):
            raise UsageError("--views gives the frames as images; the GSM and --fusion need a video (add --no-gsm, "
                             "--fusion none)")
        if (self.views or self.boost) and (self.experts.mode != "none" or self.objective != "sft"):
            raise UsageError("--views and --boost train with --objective sft and --experts none")
        if self.boost_lr < 0:
            raise UsageError("--boost-lr must be >= 0")
        if not self.boost and (self.boost_layers is not None or self.boost_lr):
            raise UsageError("--boost-layers and --boost-lr configure --boost; add --boost")
        if self.boost and self.boost_layers is not None:
            if self.init_adapter is not None and os.path.isfile(os.path.join(self.init_adapter, BOOST_CONFIG)):
                raise UsageError(f"--boost-layers: --init-adapter {self.init_adapter} already fixes the boosted layers")
            try:
                model_dir = resolve_model_dir(self.base)
            except SpatialctlError:  # not here yet: loading it reports that, with the download command
                model_dir = None
            if model_dir is not None:
                check_tower_layers(model_dir, self.boost_layers)
        if self.experts.mode == "scale" and self.full_finetune:
            raise UsageError("--experts scale combines LoRA experts; it cannot be used with --full-finetune")
        if self.fusion.kind != "none" and (self.experts.mode != "none" or self.objective != "sft"):
            raise UsageError("--fusion trains with --objective sft and --experts none")
        if self.objective == "grpo":
            if self.full_finetune:
                raise UsageError("--objective grpo is LoRA-only (the reference policy is the base with LoRA off)")
            if self.experts.mode != "none":
                raise UsageError("--objective grpo trains one LoRA; train scale experts with --objective sft")
            if self.grpo.group_size < 2 or self.grpo.max_new_tokens < 1:
                raise UsageError("--group-size must be at least 2 and --max-new-tokens at least 1")
            try:
                scoring.get_parser(self.grpo.reward_parser)
            except ValueError as e:
                raise UsageError(f"--reward-parser: {e}") from None
            self.grpo.schedule  # noqa: B018  (--progressive parsed, and checked, before any work)
        # last: the more specific errors above name the real conflict first
        lora = {"--lora-rank": self.lora_rank != TrainGSMConfig.lora_rank,
                "--lora-alpha": self.lora_alpha != TrainGSMConfig.lora_alpha,
                "--lora-dropout": self.lora_dropout != TrainGSMConfig.lora_dropout}
        if (self.full_finetune or self.freeze_llm) and any(lora.values()):
            raise UsageError(f"{', '.join(k for k, v in lora.items() if v)}: LoRA settings, unused with "
                             f"{'--full-finetune' if self.full_finetune else '--freeze-llm'} (no LoRA is trained)")


def _check_same_base(adapter_dir: str, base: str) -> None:
    """--init-adapter's weights only fit the base model it was trained on: the same folder (or hub id), or a copy
    of it (same config.json). A different base is an error rather than a silently mismatched start."""
    import json

    from spatialctl.gsm.adapter import adapter_base

    trained_on = adapter_base(adapter_dir)
    if trained_on == base:
        return
    dirs = []
    for name in (trained_on, base):
        try:
            dirs.append(os.path.realpath(resolve_model_dir(name)))
        except SpatialctlError:
            dirs.append(None)
    if None not in dirs:
        if dirs[0] == dirs[1]:
            return
        configs = []
        for d in dirs:
            with open(os.path.join(d, "config.json")) as f:
                configs.append({k: v for k, v in json.load(f).items() if k not in ("_name_or_path", "transformers_version")})
        if configs[0] == configs[1]:
            return
    raise UsageError(f"--init-adapter {adapter_dir}: trained on {trained_on}, not --base {base}")
