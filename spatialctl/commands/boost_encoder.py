"""`spatialctl boost-encoder`: SpatialBoost's three stages; `spatialctl eval probe`: a frozen-feature depth probe."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from spatialctl.errors import UsageError
from spatialctl.options import Quiet, progress, setup_logging


def parse_layers(text: str) -> list[int] | None:
    if text.strip().lower() == "all":
        return None
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise UsageError(f"--layers {text!r}: expected 'all' or comma-separated indices, e.g. 0,1,-1") from None


def boost_encoder(
    qa: Annotated[list[str], typer.Option("--qa", help="QA records (make-qa's .jsonl/.parquet; stage 3 uses the "
                                                       "multiturn family). Repeat for several files.")],
    out: Annotated[str, typer.Option("--out", "-o", help="Output folder (projector, LoRA, boost.safetensors).")],
    encoder: Annotated[str, typer.Option(help="Vision encoder: hub id or folder (DINOv3-ViT, DINOv2, SigLIP2 vision).")]
    = "facebook/dinov3-vitl16-pretrain-lvd1689m",
    llm: Annotated[str, typer.Option(help="Text LLM (causal LM): hub id or folder.")] = "Qwen/Qwen2.5-7B-Instruct",
    stage: Annotated[str, typer.Option(help="1 (projector), 2 (projector + LoRA), 3 (Attn⁺ and gates) or all.")] = "all",
    layers: Annotated[str, typer.Option(help="Encoder layers to boost: all, or indices like 0,1,-1.")] = "all",
    per_channel: Annotated[bool, typer.Option("--per-channel", help="One gate per hidden channel instead of one "
                                                                    "per layer.")] = False,
    image_size: Annotated[int, typer.Option(help="Side of a square of the same area the frames are resized to "
                                                 "(aspect kept, patch-aligned).")] = 224,
    pool: Annotated[int, typer.Option(help="Average-pool the patch grid by this factor before projecting.")] = 2,
    epochs: Annotated[int, typer.Option(help="Passes over the records per stage.")] = 1,
    max_steps: Annotated[int | None, typer.Option(help="Steps per stage (one record a step); overrides --epochs. "
                                                       "Default: --epochs passes.", show_default=False)] = None,
    lr_projector: Annotated[float, typer.Option(help="Learning rate of stage 1.")] = 1e-3,
    lr_llm: Annotated[float, typer.Option(help="Learning rate of stage 2 (projector + LoRA).")] = 2e-4,
    lr_boost: Annotated[float, typer.Option(help="Learning rate of stage 3 (Attn⁺ and gates).")] = 1e-4,
    lora_rank: Annotated[int, typer.Option(help="LoRA rank of stage 2.")] = 16,
    lora_alpha: Annotated[int, typer.Option(help="LoRA alpha of stage 2.")] = 32,
    max_length: Annotated[int, typer.Option(help="Longest text, in tokens, per record.")] = 1024,
    max_records: Annotated[int | None, typer.Option(help="Use only the first N records. Default: all.",
                                                    show_default=False)] = None,
    scenes: Annotated[str | None, typer.Option(help="Folder of scene stores named by the records' `scene`. Default: "
                                                    "the records' images, else the store beside their video.",
                                               show_default=False)] = None,
    seed: Annotated[int, typer.Option(help="Random seed (projector/LoRA init, record order).")] = 0,
    dtype: Annotated[str, typer.Option(help="float32, bfloat16 or float16.")] = "float32",
    merge: Annotated[bool, typer.Option("--merge", help="Also write OUT/merged/, a full boosted model folder.")] = False,
    device: Annotated[str | None, typer.Option(help="torch device. Default: cuda when available, else cpu.",
                                               show_default=False)] = None,
    quiet: Quiet = False,
) -> None:
    """SpatialBoost: projector alignment, instruction tuning (LoRA), then dual-channel attention on the encoder."""
    from spatialctl.stages.boost_encoder import BoostConfig, run

    setup_logging(quiet)
    config = BoostConfig(out=out, encoder=encoder, llm=llm, stage=stage, layers=parse_layers(layers),
                         per_channel=per_channel, image_size=image_size, pool=pool, epochs=epochs,
                         max_steps=max_steps, lr_projector=lr_projector, lr_llm=lr_llm, lr_boost=lr_boost,
                         lora_rank=lora_rank, lora_alpha=lora_alpha, max_length=max_length, max_records=max_records,
                         scenes_dir=scenes, seed=seed, dtype=dtype, merge=merge, device=device, quiet=quiet)
    result = run(config, qa, progress=(lambda it, desc: progress(quiet, desc, "step")(it)))
    typer.echo(json.dumps({"out": result.out, "files": result.files, "stages": result.stages}))


def probe(
    scenes: Annotated[list[str], typer.Option("--scenes", help="Scene stores with depth: a store, a folder of "
                                                               "them (synth --count), or a manifest.")],
    encoder: Annotated[str, typer.Option(help="Vision encoder: hub id or folder (or a merged boosted folder).")]
    = "facebook/dinov3-vitl16-pretrain-lvd1689m",
    boost: Annotated[str | None, typer.Option("--boost", help="A boost-encoder output folder: report AbsRel "
                                                              "before and after boosting.", show_default=False)] = None,
    train_fraction: Annotated[float, typer.Option(help="Share of frames the probe is fitted on (by scene when "
                                                       "there are several scenes, else the first frames).")] = 0.5,
    ridge: Annotated[float, typer.Option(help="Ridge penalty of the least-squares fit (relative to the "
                                              "feature scale).")] = 1e-3,
    image_size: Annotated[int, typer.Option(help="Side of a square of the same area the frames are resized to.")]
    = 224,
    max_frames: Annotated[int, typer.Option(help="At most this many frames per scene (evenly spread).")] = 32,
    out: Annotated[str | None, typer.Option(help="Write the report JSON here as well. Default: stdout only.",
                                            show_default=False)] = None,
    device: Annotated[str | None, typer.Option(help="torch device. Default: cuda when available, else cpu.",
                                               show_default=False)] = None,
    quiet: Quiet = False,
) -> None:
    """Linear depth probe on frozen patch features of synth frames: AbsRel of the base (and boosted) encoder."""
    from spatialctl.stages.probe import ProbeConfig, run

    setup_logging(quiet)
    config = ProbeConfig(encoder=encoder, boost=boost, train_fraction=train_fraction, ridge=ridge,
                         image_size=image_size, max_frames=max_frames, device=device)
    report = run(config, scenes)
    text = json.dumps(report, indent=2)
    if out:
        from spatialctl.boost import write_json_atomic

        write_json_atomic(out, report)
    typer.echo(text)


def register(app: typer.Typer) -> None:
    app.command("boost-encoder")(boost_encoder)
