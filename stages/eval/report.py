"""Reports: report.json, report.md (a markdown table) and PNG plots (matplotlib, Agg backend)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from spatialctl import io
from spatialctl.errors import UsageError


def default_out(path: str, suffix: str) -> str:
    """Where a report goes by default: ``preds.jsonl`` -> ``preds<suffix>``, ``x/scene.zarr`` -> ``x/scene<suffix>``."""
    p = Path(path.rstrip("/"))
    return str(p.with_name(p.name.removesuffix(".zarr").removesuffix(".jsonl") + suffix))


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)  # files only; never a display
    import matplotlib.pyplot as plt

    return plt


def _pct(x: float) -> str:
    return f"{100 * x:.1f}"


def qa_markdown(summary: dict) -> str:
    lines = [
        f"# QA evaluation — {summary['bench']}" + (" (detected)" if summary.get("bench_source") == "detected" else ""),
        "",
        f"Parser `{summary['parser']}` ({summary.get('parser_source', 'declared')}); overall = {summary['aggregation']}; "
        f"{int(round(100 * summary['ci_level']))}% bootstrap intervals ({summary['n_boot']} resamples).",
        "",
        "| task | metric | n | score | CI |",
        "|---|---|---:|---:|---|",
    ]
    for name, t in summary["tasks"].items():
        lo, hi = t["ci"]
        lines.append(f"| {name} | {t['metric']} | {t['n']} | {_pct(t['score'])} | [{_pct(lo)}, {_pct(hi)}] |")
    lo, hi = summary["overall_ci"]
    lines.append(f"| **overall** | | {summary['n_items']} | **{_pct(summary['overall'])}** | "
                 f"[{_pct(lo)}, {_pct(hi)}] |")
    for key in ("by_scale", "by_family"):
        if key in summary:
            lines += ["", f"| {key[3:]} | n | score |", "|---|---:|---:|"]
            lines += [f"| {k} | {v['n']} | {_pct(v['score'])} |" for k, v in summary[key].items()]
    if summary.get("n_missing"):
        lines += ["", f"{summary['n_missing']} items had no prediction and scored 0."]
    if summary.get("n_unreadable"):
        lines += ["", f"{summary['n_unreadable']} predictions gave no valid answer under the `{summary['parser']}` "
                  "parser and scored 0 (see `--parser auto` for reasoning replies)."]
    return "\n".join(lines) + "\n"


def plot_task_bars(summary: dict, path: Path) -> None:
    """Per-task bars (score in %) with the bootstrap interval as whiskers; the overall bar last."""
    plt = _pyplot()
    names = list(summary["tasks"]) + ["overall"]
    vals = [summary["tasks"][n]["score"] for n in names[:-1]] + [summary["overall"]]
    cis = [summary["tasks"][n]["ci"] for n in names[:-1]] + [summary["overall_ci"]]
    vals_pct = 100 * np.asarray(vals)
    err = np.abs(100 * np.asarray(cis).T - vals_pct)
    fig, ax = plt.subplots(figsize=(max(4.0, 0.6 * len(names) + 1.5), 3.6))
    colours = ["#4c72b0"] * (len(names) - 1) + ["#dd8452"]
    ax.bar(range(len(names)), vals_pct, yerr=err, color=colours, capsize=3)
    ax.set_xticks(range(len(names)))
    ax.set_xticklabels(names, rotation=45, ha="right", fontsize=8)
    ax.set_ylabel("score (%)")
    ax.set_ylim(0, 100)
    ax.set_title(f"{summary['bench']} ({summary['parser']} parser)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


REPORT_FILES = ("report.json", "report.md", "tasks.png", "trajectory.png", "scores.jsonl")


def _ours(report_json: Path) -> bool:
    try:
        summary = json.loads(report_json.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return False
    return isinstance(summary, dict) and ({"bench", "parser"} <= set(summary) or {"estimate", "gt_kind"} <= set(summary))


def check_out(out_dir: str | Path) -> None:
    """A report folder may be new, hold none of the files an eval report writes, or hold an earlier eval report
    (its report.json one of our summaries); a user's file of those names is refused (exit 2), before any work,
    instead of being replaced."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise UsageError(f"{out}: exists and is not a folder; give a report folder with --out")
    present = [out / n for n in REPORT_FILES if (out / n).exists() or (out / n).is_symlink()]
    if present and not _ours(out / "report.json"):
        raise UsageError(f"{present[0]}: exists and spatialctl eval did not write it (no eval report.json beside "
                         "it); refusing to replace it (choose another --out or move it away)")


def write_qa_report(summary: dict, out_dir: Path, plots: bool = True) -> list[str]:
    out_dir = Path(out_dir)
    files = [out_dir / "report.json", out_dir / "report.md"]
    io.write_text(files[0], json.dumps(summary, indent=2, default=str) + "\n")
    io.write_text(files[1], qa_markdown(summary))
    if plots:
        files.append(out_dir / "tasks.png")
        plot_task_bars(summary, files[-1])
    return [str(f) for f in files]


# -------------------------------------------------------------------------------------------- geometry


def geometry_markdown(summary: dict) -> str:
    lines = [f"# Geometry evaluation — {summary['estimate']}", "", f"Ground truth: `{summary['gt']}` "
             f"({summary['gt_kind']}); {summary['n_frames']} frames associated "
             f"{summary.get('association', '')}.", ""]
    rpe = (summary.get("trajectory") or {}).get("rpe")
    if rpe:
        pairs = "all pairs" if rpe["all_pairs"] else "consecutive pairs"
        lines += [f"RPE: delta {rpe['delta']:g} {rpe['delta_unit']}, {pairs} ({rpe['n_pairs']}).", ""]
    if summary.get("depth"):
        d = summary["depth"]
        lines += [f"Depth: {d['align']} alignment, {d['averaging']}, {d['min_depth']:g} < gt < "
                  f"{d['max_depth'] if d['max_depth'] is not None else 'inf'}, crop {d['crop']}.", ""]
    if summary.get("pointcloud"):
        lines += [f"Chamfer = {summary['pointcloud']['chamfer_form']}.", ""]
    lines += ["| metric | value |", "|---|---:|"]
    for section in ("trajectory", "depth", "pointcloud"):
        for k, v in (summary.get(section) or {}).items():
            if isinstance(v, dict):
                for k2, v2 in v.items():
                    if isinstance(v2, float):
                        lines.append(f"| {section}.{k}.{k2} | {v2:.4g} |")
            elif isinstance(v, float):
                lines.append(f"| {section}.{k} | {v:.4g} |")
    for note in summary.get("notes", []):
        lines += ["", f"Note: {note}"]
    return "\n".join(lines) + "\n"


def top_down_axes(points: np.ndarray, world_up: np.ndarray | None) -> np.ndarray:
    """Two orthonormal in-plane axes (2,3) of the ground plane: the plane normal to `world_up`, or, without
    one, the plane of the two directions the points spread most along."""
    if world_up is not None:
        up = np.asarray(world_up, dtype=np.float64)
        up /= np.linalg.norm(up)
        helper = np.array([1.0, 0, 0]) if abs(up[0]) < 0.9 else np.array([0, 1.0, 0])
        a = np.cross(up, helper)
        a /= np.linalg.norm(a)
        return np.stack([a, np.cross(up, a)])
    centred = points - points.mean(0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    return vt[:2]


def plot_trajectory(est: np.ndarray, gt: np.ndarray, path: Path, world_up=None, title: str = "") -> None:
    """Top-down view of aligned estimate positions against ground-truth positions."""
    plt = _pyplot()
    axes = top_down_axes(gt, world_up)
    g2, e2 = gt @ axes.T, est @ axes.T
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    ax.plot(g2[:, 0], g2[:, 1], "-", color="black", label="ground truth")
    ax.plot(e2[:, 0], e2[:, 1], "--", color="#c44e52", label="estimate (aligned)")
    ax.scatter(g2[:1, 0], g2[:1, 1], color="black", s=20, zorder=3)
    ax.set_aspect("equal", adjustable="datalim")
    ax.set_title(title or "trajectory (top-down)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_geometry_report(summary: dict, out_dir: Path, est_aligned=None, gt_positions=None, world_up=None,
                          plots: bool = True) -> list[str]:
    out_dir = Path(out_dir)
    files = [out_dir / "report.json", out_dir / "report.md"]
    io.write_text(files[0], json.dumps(summary, indent=2, default=str) + "\n")
    io.write_text(files[1], geometry_markdown(summary))
    if plots and est_aligned is not None and gt_positions is not None:
        files.append(out_dir / "trajectory.png")
        ate_rmse = summary.get("trajectory", {}).get("ate", {}).get("rmse")
        title = f"ATE {ate_rmse:.3g}" if ate_rmse is not None else ""
        plot_trajectory(est_aligned, gt_positions, files[-1], world_up=world_up, title=title)
    return [str(f) for f in files]
