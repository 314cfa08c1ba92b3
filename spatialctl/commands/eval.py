"""`spatialctl eval qa|run|geometry|blind`: score predictions, run a VLM over QA records, measure reconstructions.

The sub-app is `eval_app`; another stage's evaluation command (e.g. an encoder probe) joins it with
``eval_app.command("probe")(function)`` inside `register`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from spatialctl.errors import UsageError
from spatialctl.options import Quiet, setup_logging

eval_app = typer.Typer(
    name="eval",
    help="Evaluate: benchmark scoring (qa), a Qwen2.5-VL runner (run), reconstruction metrics (geometry), "
    "blind QA audit (blind).",
    no_args_is_help=True,
)


def _default_out(path: str, suffix: str) -> str:
    p = Path(path.rstrip("/"))
    return str(p.with_name(p.name.removesuffix(".zarr").removesuffix(".jsonl") + suffix))


@eval_app.command("qa")
def qa(
    predictions: Annotated[str, typer.Argument(help="Predictions JSONL: {\"id\", \"prediction\", ...} per line.")],
    bench: Annotated[str, typer.Option(help="Scoring and aggregation rules: vsibench, dsr, spacevista or ours.")] = "ours",
    gt: Annotated[str | None, typer.Option(
        help="Ground truth: our qa.jsonl/.parquet, VSI-Bench or DSR-Bench or SpaceVista-Bench records. "
        "Default: the answers carried in the prediction lines (as `eval run` writes them).")] = None,
    layout: Annotated[str, typer.Option(help="Layout of --gt: auto, ours, vsibench, dsr or spacevista.")] = "auto",
    parser: Annotated[str | None, typer.Option(
        help="Answer parser: vsibench (first token), lmms (first letter/number), answer_tag (<answer>...</answer>),"
        " spacevista. Default: the bench's own (vsibench: vsibench, dsr/ours: lmms, spacevista: spacevista).")] = None,
    out: Annotated[str | None, typer.Option(
        help="Report folder (report.json, report.md, tasks.png, scores.jsonl). Default: PREDICTIONS_report/.")] = None,
    n_boot: Annotated[int, typer.Option(help="Bootstrap resamples for the confidence intervals.")] = 1000,
    ci: Annotated[float, typer.Option(help="Confidence level of the intervals.")] = 0.95,
    seed: Annotated[int, typer.Option(help="Bootstrap seed.")] = 0,
    plots: Annotated[bool, typer.Option("--plots/--no-plots", help="Write PNG plots.")] = True,
    quiet: Quiet = False,
) -> None:
    """Score predictions against a benchmark and write a report with per-task bootstrap intervals."""
    from spatialctl.scoring import PARSERS
    from spatialctl.stages.eval.benches import LAYOUTS
    from spatialctl.stages.eval.qa import BENCHES, QAEvalConfig, run

    setup_logging(quiet)
    if bench not in BENCHES:
        raise UsageError(f"--bench {bench!r}: expected one of {', '.join(BENCHES)}")
    if parser is not None and parser not in PARSERS:
        raise UsageError(f"--parser {parser!r}: expected one of {', '.join(PARSERS)}")
    if layout not in LAYOUTS:
        raise UsageError(f"--layout {layout!r}: expected one of {', '.join(LAYOUTS)}")
    if n_boot < 1 or not 0 < ci < 1:
        raise UsageError(f"--n-boot {n_boot} --ci {ci}: need at least 1 resample and 0 < ci < 1")
    config = QAEvalConfig(bench=bench, parser=parser, layout=layout, n_boot=n_boot, ci=ci, seed=seed, plots=plots)
    out_dir = out or _default_out(predictions, "_report")
    run(config, predictions, gt, out_dir)
    typer.echo(Path(out_dir, "report.md").read_text())
    if not quiet:
        typer.echo(f"report: {out_dir}", err=True)


@eval_app.command("run")
def run_model(
    qa_file: Annotated[str, typer.Option("--qa", help="QA records to answer (qa.jsonl or .parquet, as make-qa writes).")],
    out: Annotated[str, typer.Option(help="Predictions JSONL; appended per batch, so a rerun resumes.")],
    model: Annotated[str, typer.Option(
        help="Qwen2.5-VL hub id or folder. Default: the adapter's base model, else Qwen/Qwen2.5-VL-7B-Instruct.")] = "",
    adapter: Annotated[str | None, typer.Option(help="A train-gsm adapter folder (LoRA, optionally + GSM).")] = None,
    frames: Annotated[int, typer.Option(help="Frames per question (the record's frames thinned, or spread over "
                                             "the video).")] = 8,
    scenes: Annotated[str | None, typer.Option(
        help="Folder of scene stores named by the records' `scene` (SCENES/NAME/scene.zarr or SCENES/NAME.zarr). "
        "Default: records are read from their video.")] = None,
    batch_size: Annotated[int, typer.Option(help="Questions per generate call.")] = 1,
    max_new_tokens: Annotated[int, typer.Option(help="Longest answer, in tokens (greedy decoding).")] = 16,
    device: Annotated[str | None, typer.Option(help="torch device. Default: cuda when available, else cpu.")] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Start OUT afresh instead of resuming.")] = False,
    quiet: Quiet = False,
) -> None:
    """Answer QA records with Qwen2.5-VL (greedy, batched, resumable) into a predictions JSONL."""
    from spatialctl.options import progress
    from spatialctl.stages.eval.runner import RunnerConfig, run

    setup_logging(quiet)
    if frames < 1 or batch_size < 1 or max_new_tokens < 1:
        raise UsageError("--frames, --batch-size and --max-new-tokens must be >= 1")
    config = RunnerConfig(model=model, adapter=adapter, num_frames=frames, max_new_tokens=max_new_tokens,
                          scenes_dir=scenes, batch_size=batch_size, device=device, overwrite=overwrite)
    result = run(config, qa_file, out, progress(quiet, "answering", unit="batch"))
    if not quiet:
        typer.echo(f"answered {result.n_done}, skipped {result.n_skipped} (already in {out})", err=True)


@eval_app.command("blind")
def blind(
    qa_file: Annotated[str, typer.Argument(help="QA records (qa.jsonl or .parquet, as make-qa writes).")],
    out: Annotated[str | None, typer.Option(
        help="Write OUT.audit.json and OUT.audit.md. Default: beside QA_FILE (QA.audit.json, QA.audit.md).")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the scene-disjoint halves.")] = 0,
    quiet: Quiet = False,
) -> None:
    """Blind audit: text-only baselines per family and type, fitted on half the scenes, scored on the other."""
    from spatialctl.qa_format import read_qa
    from spatialctl.stages.make_qa.audit import audit, render, write_audit

    setup_logging(quiet)
    report = audit(read_qa(qa_file), seed=seed)
    paths = write_audit(report, out or qa_file)
    typer.echo(render(report))
    if not quiet:
        typer.echo(f"audit: {paths[0]}, {paths[1]}", err=True)


def _intrinsics(text: str | None) -> tuple[float, float, float, float] | None:
    if text is None:
        return None
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        values = ()
    if len(values) != 4:
        raise UsageError(f"--gt-intrinsics {text!r}: expected fx,fy,cx,cy")
    return values  # type: ignore[return-value]


@eval_app.command("geometry")
def geometry(
    estimate: Annotated[str, typer.Argument(help="The estimated scene store (scene.zarr).")],
    gt: Annotated[str, typer.Option(help="Ground truth: a scene store (e.g. synth's), a TUM RGB-D folder or a "
                                         "7-Scenes sequence folder.")],
    out: Annotated[str | None, typer.Option(help="Report folder. Default: ESTIMATE_geometry/ beside the store.")] = None,
    align: Annotated[str, typer.Option(help="Trajectory alignment before ATE: sim3, se3 or none.")] = "sim3",
    depth_align: Annotated[str, typer.Option(
        help="Depth alignment: none, median (per frame), sequence (one scale), scale_shift (per frame).")] = "median",
    rpe_delta: Annotated[int, typer.Option(help="Frame gap of the relative pose error.")] = 1,
    max_depth: Annotated[float | None, typer.Option(help="Ignore ground-truth depth beyond this (metres).")] = None,
    max_dt: Annotated[float, typer.Option(help="Largest time gap (s) when matching frames to ground truth.")] = 0.02,
    time_offset: Annotated[float | None, typer.Option(
        help="Seconds added to the estimate's timestamps to reach the truth's clock. Default: clocks start together.")] = None,
    gt_fps: Annotated[float, typer.Option(help="Frame rate of a 7-Scenes sequence.")] = 30.0,
    depth_factor: Annotated[float | None, typer.Option(
        help="Depth PNG units per metre. Default: 5000 (TUM), 1000 (7-Scenes).")] = None,
    gt_intrinsics: Annotated[str | None, typer.Option(
        help="fx,fy,cx,cy of the ground-truth depth images. Default: TUM 525,525,319.5,239.5; 7-Scenes 585,585,320,240.")] = None,
    max_points: Annotated[int, typer.Option(help="Points sampled per cloud for accuracy/completeness.")] = 100_000,
    pc_threshold: Annotated[float, typer.Option(help="Distance for point-cloud precision/recall/F-score.")] = 0.05,
    plots: Annotated[bool, typer.Option("--plots/--no-plots", help="Write the top-down trajectory plot.")] = True,
    quiet: Quiet = False,
) -> None:
    """ATE (Sim(3)/SE(3)), RPE, depth AbsRel / δ<1.25 and point-cloud accuracy / completeness against truth."""
    from spatialctl.geometry_metrics import DEPTH_ALIGNS
    from spatialctl.stages.eval.geometry import GeometryEvalConfig, run

    setup_logging(quiet)
    if rpe_delta < 1:
        raise UsageError(f"--rpe-delta {rpe_delta}: must be >= 1")
    if align not in ("sim3", "se3", "none"):
        raise UsageError(f"--align {align!r}: expected sim3, se3 or none")
    if depth_align not in DEPTH_ALIGNS:
        raise UsageError(f"--depth-align {depth_align!r}: expected one of {', '.join(DEPTH_ALIGNS)}")
    config = GeometryEvalConfig(
        align=align, rpe_delta=rpe_delta, depth_align=depth_align, max_depth=max_depth, max_points=max_points,
        pc_threshold=pc_threshold, max_dt=max_dt, time_offset=time_offset, gt_fps=gt_fps, depth_factor=depth_factor,
        gt_intrinsics=_intrinsics(gt_intrinsics), plots=plots,
    )
    out_dir = out or _default_out(estimate, "_geometry")
    run(config, estimate, gt, out_dir)
    typer.echo(Path(out_dir, "report.md").read_text())
    if not quiet:
        typer.echo(f"report: {out_dir}", err=True)


def register(app: typer.Typer) -> None:
    from spatialctl.commands.boost_encoder import probe

    eval_app.command("probe")(probe)
    app.add_typer(eval_app, name="eval")
