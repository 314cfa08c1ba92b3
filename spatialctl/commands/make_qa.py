"""`spatialctl make-qa SCENE.zarr... --out qa.jsonl`: spatial QA from scene stores (four families)."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from spatialctl.options import Quiet, Shard, progress, setup_logging


def make_qa(
    scenes: Annotated[list[str], typer.Argument(help="Scene stores with tracks (paths or URLs), or manifests of them.")],
    out: Annotated[str, typer.Option("--out", "-o", help="Output file; with --split, OUT's stem gets .train/.bench.")] = "qa.jsonl",
    families: Annotated[str, typer.Option("--families", help="Comma-separated families: dsr, static, multiturn, scale.")] = "dsr,static,multiturn,scale",
    per_scene: Annotated[int, typer.Option("--per-scene", help="At most this many questions per scene and family.")] = 40,
    seed: Annotated[int, typer.Option("--seed", help="Random seed; the same seed and inputs give identical output.")] = 0,
    fmt: Annotated[str, typer.Option("--format", help="sharegpt (LLaVA conversations JSONL), qwen (Qwen2.5-VL messages JSONL) or parquet.")] = "sharegpt",
    split: Annotated[float, typer.Option("--split", help="Fraction of scenes held out as the benchmark split (by scene; 0 = no split).")] = 0.0,
    stats: Annotated[bool, typer.Option("--stats", help="Write OUT.stats.json (counts per type, letter balance, answer histograms) and print a summary.")] = False,
    rephrase_model: Annotated[str | None, typer.Option("--rephrase-model", help="Local folder or hub id of a transformers causal LM that rephrases questions (kept only if numbers, letters and labels survive). Default: none.", show_default=False)] = None,
    max_turns: Annotated[int, typer.Option("--max-turns", help="Turns per multi-turn sample (2-12).")] = 12,
    frames_dir: Annotated[str | None, typer.Option("--frames-dir", help="Export the frames each question uses as JPEGs here and reference them instead of the video. Default: reference the video.", show_default=False)] = None,
    max_images: Annotated[int, typer.Option("--max-images", help="With --frames-dir: at most this many frames per question.")] = 16,
    balance: Annotated[bool, typer.Option("--balance/--no-balance", help="Cap each answer (and step label) per type so answers are as flat as the scenes allow, and draw wrong options from other questions' true answers.")] = True,
    audit: Annotated[bool, typer.Option("--audit/--no-audit", help="Blind audit: text-only baselines per type, fitted on half the scenes and scored on the other half; printed and written to OUT.audit.json/.md.")] = True,
    shard: Shard = None,
    quiet: Quiet = False,
) -> None:
    """Generate verified spatial QA: DSR dynamic, VSI static, hierarchical multi-turn and all-scale families."""
    from spatialctl import jobs
    from spatialctl.stages.make_qa import MakeQAConfig, run

    setup_logging(quiet)
    inputs = jobs.resolve_inputs(scenes)
    i, n = jobs.resolve_shard(shard)
    if n > 1:
        inputs = jobs.select_shard(inputs, (i, n))
        stem, dot, ext = out.rpartition(".")
        out = f"{stem}.shard{i}of{n}.{ext}" if dot else f"{out}.shard{i}of{n}"
    config = MakeQAConfig(out=out, families=tuple(f.strip() for f in families.split(",") if f.strip()),
                          per_scene=per_scene, seed=seed, format=fmt, split=split, stats=stats,
                          rephrase_model=rephrase_model, max_turns=max_turns, frames_dir=frames_dir,
                          max_images=max_images, balance=balance, audit=audit, quiet=quiet)
    result = run(config, inputs, progress=progress(quiet, "make-qa", "scene"))
    if stats and not quiet:
        from spatialctl.stages.make_qa.stats import render

        typer.echo(render(result["stats"]), err=True)
    if audit and not quiet:
        from spatialctl.stages.make_qa.audit import render as render_audit

        typer.echo(render_audit(result["audit"]), err=True)
    summary = {k: v for k, v in result.items() if k not in ("stats", "audit")}
    typer.echo(json.dumps(summary))


def register(app: typer.Typer) -> None:
    app.command("make-qa")(make_qa)
