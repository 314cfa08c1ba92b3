"""`spatialctl train-gsm`: fine-tune Qwen2.5-VL with the Geometry Selection Module (LoRA by default).

Multi-GPU / multi-node: `accelerate launch -m spatialctl train-gsm ...` or `torchrun -m spatialctl train-gsm ...`
(DDP, FSDP or DeepSpeed come from accelerate's own config).
"""

from __future__ import annotations

from typing import Annotated

import typer

from spatialctl.errors import UsageError
from spatialctl.options import Quiet, setup_logging
from spatialctl.qwen import DEFAULT_BASE


def train_gsm(
    qa: Annotated[str, typer.Option("--qa", help="QA records from make-qa (.jsonl or .parquet).")],
    out: Annotated[str, typer.Option("--out", help="Output folder for the adapter, checkpoints and logs.")],
    scenes: Annotated[str | None, typer.Option("--scenes", help="Folder holding the scene stores the records name "
                                               "(<scene>/scene.zarr or <scene>.zarr). Default: scene paths as written.")] = None,
    base: Annotated[str, typer.Option("--base", help="Base model: hub id (already downloaded) or local folder.")] = DEFAULT_BASE,
    geometry: Annotated[str, typer.Option("--geometry", help="Geometry sources, comma-separated: dust3r (stored "
                                          "encoder features), pointmap, genfeat (VEGA-3D, gated fusion).")] = "dust3r,pointmap",
    queries: Annotated[int, typer.Option("--queries", help="GSM queries = geometry tokens given to the LLM.")] = 32,
    no_gsm: Annotated[bool, typer.Option("--no-gsm", help="Train the plain VLM without geometry (ablation).")] = False,
    geo_grid: Annotated[int, typer.Option("--geo-grid", help="Geometry cells per side per frame.")] = 8,
    lora_rank: Annotated[int, typer.Option("--lora-rank", help="LoRA rank on the language model.")] = 64,
    lora_alpha: Annotated[float, typer.Option("--lora-alpha", help="LoRA alpha; 0 means twice the rank.")] = 0.0,
    lora_dropout: Annotated[float, typer.Option("--lora-dropout", help="LoRA dropout.")] = 0.05,
    full_finetune: Annotated[bool, typer.Option("--full-finetune", help="Train all language-model weights "
                                                "instead of LoRA (vision tower stays frozen).")] = False,
    lr: Annotated[float, typer.Option("--lr", help="Peak learning rate (cosine schedule with warm-up).")] = 1e-4,
    gsm_lr: Annotated[float, typer.Option("--gsm-lr", help="GSM learning rate; 0 means --lr.")] = 0.0,
    weight_decay: Annotated[float, typer.Option("--weight-decay", help="AdamW weight decay (not on norms/biases).")] = 0.0,
    warmup_ratio: Annotated[float, typer.Option("--warmup-ratio", help="Fraction of steps spent warming up.")] = 0.03,
    epochs: Annotated[float, typer.Option("--epochs", help="Passes over the QA records (when --max-steps is 0).")] = 1.0,
    max_steps: Annotated[int, typer.Option("--max-steps", help="Optimizer steps; 0 means from --epochs.")] = 0,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Samples per process per micro-step.")] = 1,
    grad_accum: Annotated[int, typer.Option("--grad-accum", help="Micro-steps per optimizer step.")] = 1,
    max_grad_norm: Annotated[float, typer.Option("--max-grad-norm", help="Gradient clipping; 0 disables.")] = 1.0,
    num_frames: Annotated[int, typer.Option("--num-frames", help="Frames per sample (the record's, thinned).")] = 16,
    max_pixels: Annotated[int, typer.Option("--max-pixels", help="Pixels per frame after resizing; 0 means the "
                                            "model's video processor setting.")] = 0,
    no_gradient_checkpointing: Annotated[bool, typer.Option("--no-gradient-checkpointing",
                                                            help="Keep activations (faster, more memory).")] = False,
    bf16: Annotated[str, typer.Option("--bf16", help="bf16 mixed precision: auto (on GPU), yes, no.")] = "auto",
    save_every: Annotated[int, typer.Option("--save-every", help="Checkpoint every N optimizer steps.")] = 500,
    keep_checkpoints: Annotated[int, typer.Option("--keep-checkpoints", help="Checkpoints kept on disk.")] = 2,
    resume: Annotated[bool, typer.Option("--resume", help="Continue from the latest checkpoint in --out.")] = False,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Discard a previous run in --out.")] = False,
    seed: Annotated[int, typer.Option("--seed", help="Seed for initial weights and data order.")] = 0,
    num_workers: Annotated[int, typer.Option("--num-workers", help="Data-loading worker processes.")] = 0,
    log_every: Annotated[int, typer.Option("--log-every", help="Write train_log.jsonl every N steps.")] = 10,
    experts: Annotated[str, typer.Option("--experts", help="none, or scale: one LoRA expert per scale (records' "
                                         "scale), then a peft X-LoRA router over them; writes router_usage.json.")] = "none",
    router_depth: Annotated[int, typer.Option("--router-depth", help="X-LoRA router layers (1: linear).")] = 1,
    router_lr: Annotated[float, typer.Option("--router-lr", help="Router-phase learning rate; 0 means --lr.")] = 0.0,
    objective: Annotated[str, typer.Option("--objective", help="sft (answer cross-entropy) or grpo (sampled answers "
                                           "rewarded by eval's checker; LoRA only).")] = "sft",
    group_size: Annotated[int, typer.Option("--group-size", help="GRPO: sampled answers per question.")] = 4,
    max_new_tokens: Annotated[int, typer.Option("--max-new-tokens", help="GRPO: longest sampled answer.")] = 128,
    temperature: Annotated[float, typer.Option("--temperature", help="GRPO: sampling temperature.")] = 1.0,
    kl_beta: Annotated[float, typer.Option("--kl-beta", help="GRPO: weight of the KL to the base (LoRA off).")] = 0.04,
    format_weight: Annotated[float, typer.Option("--format-weight", help="GRPO: reward for <think>..</think>"
                                                 "<answer>..</answer>.")] = 0.5,
    reward_parser: Annotated[str, typer.Option("--reward-parser", help="GRPO: how answers are read "
                                               "(answer_tag, lmms, vsibench, spacevista).")] = "answer_tag",
    progressive: Annotated[str, typer.Option("--progressive", help="GRPO: final lowest MRA threshold, for all "
                                             "scales or per scale (indoor=0.9,outdoor=0.75); rises from 0.5.")] = "0.8",
    quiet: Quiet = False,
) -> None:
    """Train LoRA (or the whole LLM) + the Geometry Selection Module and write an adapter folder for `eval run --adapter`."""
    setup_logging(quiet)
    if resume and overwrite:
        raise UsageError("--resume and --overwrite exclude each other")
    from spatialctl.stages.train_gsm import TrainGSMConfig, run

    cfg = TrainGSMConfig(
        qa=qa, out=out, scenes=scenes, base=base, geometry=tuple(g.strip() for g in geometry.split(",") if g.strip()),
        gsm=not no_gsm, queries=queries, geo_grid=geo_grid, full_finetune=full_finetune, lora_rank=lora_rank,
        lora_alpha=lora_alpha, lora_dropout=lora_dropout, lr=lr, gsm_lr=gsm_lr, weight_decay=weight_decay,
        warmup_ratio=warmup_ratio, epochs=epochs, max_steps=max_steps, batch_size=batch_size, grad_accum=grad_accum,
        max_grad_norm=max_grad_norm, num_frames=num_frames, max_pixels=max_pixels,
        gradient_checkpointing=not no_gradient_checkpointing, bf16=bf16, save_every=save_every,
        keep_checkpoints=keep_checkpoints, resume=resume, overwrite=overwrite, seed=seed, num_workers=num_workers,
        log_every=log_every, quiet=quiet, experts=experts, router_depth=router_depth, router_lr=router_lr,
        objective=objective, group_size=group_size, max_new_tokens=max_new_tokens, temperature=temperature,
        kl_beta=kl_beta, format_weight=format_weight, reward_parser=reward_parser,
        progressive=tuple(p.strip() for p in progressive.split(",") if p.strip()),
    )
    result = run(cfg)
    if not quiet:
        first, last = (result.losses[0], result.losses[-1]) if result.losses else (float("nan"),) * 2
        rewards = f", reward {result.rewards[0]:.3f} -> {result.rewards[-1]:.3f}" if result.rewards else ""
        typer.echo(f"trained steps {result.start_step}..{result.steps}, loss {first:.4f} -> {last:.4f}{rewards}; "
                   f"adapter in {out}", err=True)


def register(app: typer.Typer) -> None:
    app.command("train-gsm")(train_gsm)
