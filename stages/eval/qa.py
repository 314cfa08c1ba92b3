"""`eval qa`: score predictions against a benchmark and aggregate as that benchmark defines.

Aggregations:

- ``vsibench``: per question type, the mean item score (accuracy for multiple choice, MRA for numbers); the
  three relative-direction levels (``*_easy``, ``*_medium``, ``*_hard``) are averaged into one task first;
  overall = mean of the task scores. The official code counts a level missing from the file as 0 (and
  lmms-eval fails on it); here only the levels present are averaged, so the two agree on the full benchmark.
- ``ours``: the same rule over our ``type`` field (any ``X_easy/X_medium/X_hard`` family is merged into ``X``),
  with per-family and per-scale item means as breakdowns. A ground truth of 0 is scored with SpaceVista's
  absolute-error rule (our generators can ask for a count or speed of 0).
- ``dsr``: accuracy per ``type``; overall = accuracy over all items.
- ``spacevista``: per task and per scale category the item mean; overall = mean over all items; a ground
  truth of 0 uses the absolute error.

Confidence intervals: a percentile bootstrap that resamples items with replacement within each task, so the
interval of the overall score reflects the benchmark's own aggregation.
"""

from __future__ import annotations

import json
import logging
import re
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from spatialctl import io, jobs
from spatialctl.config import check_fields, opt, quiet_opt
from spatialctl.errors import SpatialctlError, UsageError
from spatialctl.scoring import PARSERS, score_item
from spatialctl.stages.eval import benches, report

log = logging.getLogger("spatialctl.eval")

BENCHES = ("vsibench", "dsr", "spacevista", "ours")
DEFAULT_PARSER = {"vsibench": "vsibench", "dsr": "lmms", "spacevista": "spacevista", "ours": "lmms"}
ZERO_GT = {"vsibench": "error", "dsr": "error", "spacevista": "absolute", "ours": "absolute"}
MACRO = {"vsibench": True, "ours": True, "dsr": False, "spacevista": False}
_LEVEL_RE = re.compile(r"^(?P<base>.+)_(?:easy|medium|hard)$")


@dataclass
class QAEvalConfig:
    bench: str = opt("ours", "Scoring and aggregation rules: vsibench, dsr, spacevista or ours.", choices=BENCHES)
    gt: str | None = opt(None, "Ground truth: our qa.jsonl/.parquet, VSI-Bench or DSR-Bench or SpaceVista-Bench "
                         "records. Default: the answers carried in the prediction lines (as `eval run` writes them).",
                         runtime=True)
    layout: str = opt("auto", "Layout of --gt: auto, ours, vsibench, dsr or spacevista.", choices=benches.LAYOUTS)
    parser: str | None = opt(None, "Answer parser: vsibench (first token), lmms (first letter/number), answer_tag "
                             "(<answer>...</answer>), spacevista. Default: the bench's own (vsibench: vsibench, "
                             "dsr/ours: lmms, spacevista: spacevista).", choices=PARSERS)
    out: str | None = opt(None, "Report folder (report.json, report.md, tasks.png, scores.jsonl). Default: "
                          "PREDICTIONS_report/.", runtime=True)
    n_boot: int = opt(1000, "Bootstrap resamples for the confidence intervals.")
    ci: float = opt(0.95, "Confidence level of the intervals.")
    seed: int = opt(0, "Bootstrap seed.")
    plots: bool = opt(True, "Write PNG plots.", flag="--plots/--no-plots")
    quiet: bool = quiet_opt()

    def __post_init__(self):
        self.validate()  # library callers get errors at construction, as before

    def validate(self) -> None:
        check_fields(self)
        if self.n_boot < 1 or not 0 < self.ci < 1:
            raise UsageError(f"--n-boot {self.n_boot} --ci {self.ci}: need at least 1 resample and 0 < ci < 1")


def task_groups(tasks: list[str], bench: str) -> dict[str, list[str]]:
    """Reported task -> the raw tasks averaged into it (relative-direction levels merged)."""
    groups: dict[str, list[str]] = defaultdict(list)
    for t in sorted(set(tasks)):
        m = _LEVEL_RE.match(t) if MACRO[bench] else None
        if bench == "vsibench" and m and not t.startswith("object_rel_direction"):
            m = None  # VSI-Bench merges only the relative-direction levels
        groups[m.group("base") if m else t].append(t)
    return dict(groups)


def aggregate(raw_means: dict[str, np.ndarray], raw_counts: dict[str, int], bench: str
              ) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Task scores and overall from per-raw-task means (arrays, so bootstrap replicates go through at once)."""
    groups = task_groups(list(raw_means), bench)
    tasks = {name: np.mean([raw_means[t] for t in members], axis=0) for name, members in groups.items()}
    if MACRO[bench]:
        overall = np.mean(list(tasks.values()), axis=0)
    else:
        total = sum(raw_counts.values())
        overall = sum(raw_means[t] * raw_counts[t] for t in raw_means) / total
    return tasks, overall


def bootstrap(scores_by_task: dict[str, np.ndarray], bench: str, n_boot: int, ci: float, seed: int
              ) -> tuple[dict[str, tuple[float, float]], tuple[float, float]]:
    """Percentile intervals of each reported task and of the overall score."""
    rng = np.random.default_rng(seed)
    means = {}
    for t in sorted(scores_by_task):
        s = scores_by_task[t]
        idx = rng.integers(0, len(s), size=(n_boot, len(s)))
        means[t] = s[idx].mean(axis=1)
    counts = {t: len(s) for t, s in scores_by_task.items()}
    tasks, overall = aggregate(means, counts, bench)
    lo, hi = (1 - ci) / 2 * 100, (1 + ci) / 2 * 100

    def interval(x):
        return float(np.percentile(x, lo)), float(np.percentile(x, hi))

    return {t: interval(v) for t, v in tasks.items()}, interval(overall)


def items_from_predictions(preds: dict[str, dict], source: str) -> list[dict]:
    """Ground truth carried in the prediction lines themselves (what `eval run` writes)."""
    items = []
    for pid, row in preds.items():
        if "answer" not in row or "answer_type" not in row:
            raise SpatialctlError(f"{source}: prediction {pid} carries no answer/answer_type; pass --gt")
        answer = float(row["answer"]) if row["answer_type"] == "number" else row["answer"]
        items.append({"id": pid, "question": row.get("question", ""), "options": row.get("options"),
                      "answer": answer, "answer_type": row["answer_type"],
                      "task": row.get("type") or row.get("task") or "all", "scale": row.get("scale"),
                      "family": row.get("family")})
    return items


def score(items: list[dict], preds: dict[str, dict], config: QAEvalConfig,
          progress: Callable[[Iterable], Iterable] | None = None) -> list[dict]:
    """Per-item rows: id, task, scale, family, answer_type, score, parsed, missing."""
    parser = config.parser or DEFAULT_PARSER[config.bench]
    zero_gt = ZERO_GT[config.bench]
    rows = []
    for it in progress(items) if progress else items:
        pred = preds.get(it["id"])
        text = None if pred is None else pred.get("prediction")
        try:
            s = score_item(it, text, parser, zero_gt=zero_gt)
        except ValueError as e:
            raise SpatialctlError(f"item {it['id']}: {e}") from None
        parsed = s.parsed if not isinstance(s.parsed, float) or np.isfinite(s.parsed) else str(s.parsed)
        rows.append({"id": it["id"], "task": it["task"], "scale": it.get("scale"), "family": it.get("family"),
                     "answer_type": it["answer_type"], "metric": s.metric, "score": s.score, "parsed": parsed,
                     "answer": it["answer"], "missing": pred is None})
    return rows


def summarise(rows: list[dict], config: QAEvalConfig) -> dict:
    if not rows:
        raise SpatialctlError("no items to score")
    by_task: dict[str, list[float]] = defaultdict(list)
    metric_of: dict[str, str] = {}
    for r in rows:
        by_task[r["task"]].append(r["score"])
        metric_of[r["task"]] = r["metric"]
    scores = {t: np.asarray(v, dtype=np.float64) for t, v in by_task.items()}
    tasks, overall = aggregate({t: s.mean() for t, s in scores.items()}, {t: len(s) for t, s in scores.items()},
                               config.bench)
    task_ci, overall_ci = bootstrap(scores, config.bench, config.n_boot, config.ci, config.seed)
    groups = task_groups(list(scores), config.bench)
    task_rows = {}
    for name, members in groups.items():
        metrics = sorted({metric_of[m] for m in members})
        task_rows[name] = {
            "score": float(tasks[name]), "ci": list(task_ci[name]), "n": int(sum(len(scores[m]) for m in members)),
            "metric": "/".join(metrics), "members": members if members != [name] else None,
        }
    out = {
        "kind": "qa", "bench": config.bench, "parser": config.parser or DEFAULT_PARSER[config.bench],
        "aggregation": "mean of task scores" if MACRO[config.bench] else "mean of item scores",
        "n_items": len(rows), "n_missing": int(sum(r["missing"] for r in rows)),
        "overall": float(overall), "overall_ci": list(overall_ci), "ci_level": config.ci,
        "n_boot": config.n_boot, "tasks": task_rows,
    }
    for key in ("scale", "family"):
        vals: dict[str, list[float]] = defaultdict(list)
        for r in rows:
            if r.get(key) is not None:
                vals[str(r[key])].append(r["score"])
        if vals:
            out[f"by_{key}"] = {k: {"score": float(np.mean(v)), "n": len(v)} for k, v in sorted(vals.items())}
    return out


def run(config: QAEvalConfig, predictions: str, progress: Callable[[Iterable], Iterable] | None = None
        ) -> jobs.Summary:
    """Score `predictions` (JSONL) against `config.gt` (or the truth carried in the predictions) into
    `config.out` (default: PREDICTIONS_report/); ``progress`` wraps the items scored. ``Summary.details`` is the
    report dict."""
    config.validate()
    gt, out_dir = config.gt, config.out or report.default_out(predictions, "_report")
    preds = benches.read_predictions(predictions)
    if gt is not None:
        items = benches.load_items(gt, config.layout)
    else:
        items = items_from_predictions(preds, predictions)
    known = {it["id"] for it in items}
    unmatched = [p for p in preds if p not in known]
    if unmatched and len(unmatched) == len(preds):
        raise SpatialctlError(f"{predictions}: no prediction id matches the ground truth ids (e.g. {unmatched[0]})")
    rows = score(items, preds, config, progress)
    summary = summarise(rows, config)
    summary["n_unmatched_predictions"] = len(unmatched)
    summary["inputs"] = {"predictions": str(predictions), "gt": None if gt is None else str(gt)}
    if summary["n_missing"]:
        log.warning("%d of %d items have no prediction; they score 0", summary["n_missing"], len(rows))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    scores_path = out / "scores.jsonl"
    io.write_lines(scores_path, (json.dumps(r, default=str) for r in rows))
    files = [str(scores_path)] + report.write_qa_report(summary, out, plots=config.plots)
    return jobs.Summary(done=[str(predictions)], outputs=files, details=summary)
