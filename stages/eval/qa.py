"""`eval qa`: score predictions against a benchmark and aggregate exactly as that benchmark's official scorer does.

The benchmark is detected from the ground-truth records (`benches.detect_layout`); ``--bench`` is needed only
when the records do not say, and a declared bench that differs from the detected one is an error.

Aggregations (each official quirk is listed, with its source, in `spatialctl/scoring.py`):

- ``vsibench`` (thinking-in-space's `vsibench_aggregate_results`, the VSI-Bench authors' scorer): per question
  type, the mean item score (accuracy for multiple choice, MRA for numbers); overall = mean of the task scores.
  Only when ``object_rel_direction_easy`` is present are the three relative-direction levels averaged into one
  ``object_rel_direction`` task (then medium and hard must be present too: the official code fails without
  them, and so do we). Without the easy level, medium and hard stay two separate tasks in the overall mean.
  A question type absent from the file is simply not a task (it does not count as 0). An unknown question
  type is an error, as it is in the official code.
- ``ours``: our own rule over our ``type`` field: any ``X_easy/X_medium/X_hard`` family present is averaged
  into ``X``, then the mean of tasks; per-family and per-scale item means as breakdowns. A ground truth of 0
  is scored with SpaceVista's absolute-error rule (our generators can ask for a count or speed of 0).
- ``dsr``: accuracy per ``type``; overall = accuracy over all items.
- ``vlm4d``: accuracy over all items (VLM4D's `get_acc_async`: correct / all), parsed by ``reasoning`` in place
  of its LLM judge.
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
from spatialctl.scoring import PARSERS, choose_parser, is_readable, score_item
from spatialctl.stages.eval import benches, report

log = logging.getLogger("spatialctl.eval")

BENCHES = ("vsibench", "dsr", "spacevista", "vlm4d", "ours")
REL_DIRECTION_LEVELS = ("object_rel_direction_easy", "object_rel_direction_medium", "object_rel_direction_hard")
# VLM4D has no rule-based parser: its official scorer asks an LLM judge (o4-mini) to extract the final answer;
# `reasoning` agrees with that judge on 94.7% of its released chain-of-thought verdicts (benchmarks/RESULTS.md).
DEFAULT_PARSER = {"vsibench": "vsibench", "dsr": "lmms", "spacevista": "spacevista", "vlm4d": "reasoning",
                  "ours": "lmms"}
ZERO_GT = {"vsibench": "error", "dsr": "error", "spacevista": "absolute", "vlm4d": "error", "ours": "absolute"}
MACRO = {"vsibench": True, "ours": True, "dsr": False, "spacevista": False, "vlm4d": False}
_LEVEL_RE = re.compile(r"^(?P<base>.+)_(?:easy|medium|hard)$")


@dataclass
class QAEvalConfig:
    bench: str = opt("auto", "Benchmark whose scoring and aggregation rules apply: auto (detected from the ground"
                     "-truth records), vsibench, dsr, spacevista, vlm4d or ours. A declared bench that differs from "
                     "the detected one is an error.", choices=("auto", *BENCHES))
    gt: str | None = opt(None, "Ground truth: our qa.jsonl/.parquet, VSI-Bench, DSR-Bench, SpaceVista-Bench or "
                         "VLM4D records. Default: the answers carried in the prediction lines (as `eval run` and "
                         "lmms-eval --log_samples write them).", runtime=True)
    parser: str | None = opt(None, "Answer parser: vsibench (first token), lmms (first letter/number), answer_tag "
                             "(<answer>...</answer>), spacevista, reasoning (the final answer of a chain of thought),"
                             " auto (reasoning when the predictions carry any). Default: the bench's own (vsibench: "
                             "vsibench, dsr/ours: lmms, spacevista: spacevista, vlm4d: reasoning).",
                             choices=(*PARSERS, "auto"))
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
    """Reported task -> the raw tasks averaged into it (difficulty levels merged as the bench does)."""
    tasks = sorted(set(tasks))
    if bench == "vsibench":
        return _vsibench_groups(tasks)
    groups: dict[str, list[str]] = defaultdict(list)
    for t in tasks:
        m = _LEVEL_RE.match(t) if bench == "ours" else None
        groups[m.group("base") if m else t].append(t)
    return dict(groups)


def _vsibench_groups(tasks: list[str]) -> dict[str, list[str]]:
    unknown = [t for t in tasks if t not in benches.VSI_MC_TYPES + benches.VSI_NUMBER_TYPES]
    if unknown:
        raise SpatialctlError(f"question type {unknown[0]!r} is not a VSI-Bench type: the official scorer rejects "
                              "it, so no official score exists")
    groups = {t: [t] for t in tasks}
    if REL_DIRECTION_LEVELS[0] in tasks:  # the official code merges only when the easy level is present
        missing = [t for t in REL_DIRECTION_LEVELS[1:] if t not in tasks]
        if missing:
            raise SpatialctlError(f"VSI-Bench records have {REL_DIRECTION_LEVELS[0]} but no {missing[0]}: the "
                                  "official scorer fails on this (KeyError), so no official score exists")
        for t in REL_DIRECTION_LEVELS:
            del groups[t]
        groups["object_rel_direction"] = list(REL_DIRECTION_LEVELS)
    return groups


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


def score(items: list[dict], preds: dict[str, dict], bench: str, parser: str,
          progress: Callable[[Iterable], Iterable] | None = None) -> list[dict]:
    """Per-item rows: id, task, scale, family, answer_type, score, parsed, missing, readable."""
    zero_gt = ZERO_GT[bench]
    rows = []
    for it in progress(items) if progress else items:
        pred = preds.get(it["id"])
        text = None if pred is None else pred.get("prediction")
        try:
            s = score_item(it, text, parser, zero_gt=zero_gt, text_match="exact" if bench == "spacevista" else "loose")
        except ValueError as e:
            raise SpatialctlError(f"item {it['id']}: {e}") from None
        parsed = s.parsed if not isinstance(s.parsed, float) or np.isfinite(s.parsed) else str(s.parsed)
        rows.append({"id": it["id"], "task": it["task"], "scale": it.get("scale"), "family": it.get("family"),
                     "answer_type": it["answer_type"], "metric": s.metric, "score": s.score, "parsed": parsed,
                     "answer": it["answer"], "missing": pred is None,
                     "readable": pred is None or is_readable(s.parsed, it["answer_type"], it.get("options"))})
    return rows


def summarise(rows: list[dict], bench: str, parser: str, config: QAEvalConfig) -> dict:
    if not rows:
        raise SpatialctlError("no items to score")
    by_task: dict[str, list[float]] = defaultdict(list)
    metric_of: dict[str, str] = {}
    for r in rows:
        by_task[r["task"]].append(r["score"])
        metric_of[r["task"]] = r["metric"]
    scores = {t: np.asarray(v, dtype=np.float64) for t, v in by_task.items()}
    tasks, overall = aggregate({t: s.mean() for t, s in scores.items()}, {t: len(s) for t, s in scores.items()},
                               bench)
    task_ci, overall_ci = bootstrap(scores, bench, config.n_boot, config.ci, config.seed)
    groups = task_groups(list(scores), bench)
    task_rows = {}
    for name, members in groups.items():
        metrics = sorted({metric_of[m] for m in members})
        task_rows[name] = {
            "score": float(tasks[name]), "ci": list(task_ci[name]), "n": int(sum(len(scores[m]) for m in members)),
            "metric": "/".join(metrics), "members": members if members != [name] else None,
        }
    out = {
        "kind": "qa", "bench": bench, "parser": parser,
        "aggregation": "mean of task scores" if MACRO[bench] else "mean of item scores",
        "n_items": len(rows), "n_missing": int(sum(r["missing"] for r in rows)),
        "n_unreadable": int(sum(not r["readable"] for r in rows)),
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


def load(config: QAEvalConfig, predictions: str, gt: str | None) -> tuple[list[dict], dict[str, dict], str]:
    """Items, predictions and the bench, checked before anything is written."""
    preds = benches.read_predictions(predictions)
    if gt is not None:
        items, bench = benches.load_items(gt, config.bench)
    else:
        try:
            items, bench = benches.items_from_rows(list(preds.values()), predictions, config.bench)
        except SpatialctlError as e:
            raise SpatialctlError(f"{e} (the predictions carry no ground truth we can read: pass --gt)") from None
    known = {it["id"] for it in items}
    unmatched = [p for p in preds if p not in known]
    if unmatched and len(unmatched) == len(preds):
        raise SpatialctlError(f"{predictions}: no prediction id matches the ground truth ids (e.g. {unmatched[0]})")
    return items, preds, bench


def pick_parser(requested: str | None, bench: str, items: list[dict], preds: dict[str, dict],
                progress: Callable[[Iterable], Iterable] | None = None) -> tuple[str, str, list[dict]]:
    """(parser, why, rows). ``auto`` takes `choose_parser`'s pick, and then ``reasoning`` over the bench's own
    parser when the latter leaves predictions unread that ``reasoning`` reads ("C: text", "Answer: D")."""
    own = DEFAULT_PARSER[bench]
    parser, why = choose_parser(requested, own, [p.get("prediction") for p in preds.values()])
    rows = score(items, preds, bench, parser, progress)
    if requested == "auto" and parser != "reasoning":
        unread = sum(not r["readable"] for r in rows)
        if unread:
            alt = score(items, preds, bench, "reasoning")
            alt_unread = sum(not r["readable"] for r in alt)
            if alt_unread < unread:
                return "reasoning", f"auto: {own} leaves {unread} predictions unread, reasoning {alt_unread}", alt
    return parser, why, rows


def run(config: QAEvalConfig, predictions: str, progress: Callable[[Iterable], Iterable] | None = None
        ) -> jobs.Summary:
    """Score `predictions` (JSONL) against `config.gt` (or the truth carried in the predictions) into
    `config.out` (default: PREDICTIONS_report/); ``progress`` wraps the items scored. ``Summary.details`` is the
    report dict."""
    config.validate()
    gt, out_dir = config.gt, config.out or report.default_out(predictions, "_report")
    report.check_out(out_dir)  # before any work: a user's file of a report's name is never replaced
    items, preds, bench = load(config, predictions, gt)
    parser, why, rows = pick_parser(config.parser, bench, items, preds, progress)
    summary = summarise(rows, bench, parser, config)
    summary["bench_source"] = "declared" if config.bench != "auto" else "detected"
    summary["parser_source"] = why
    summary["n_unmatched_predictions"] = len(preds) - len({it["id"] for it in items} & set(preds))
    summary["inputs"] = {"predictions": str(predictions), "gt": None if gt is None else str(gt)}
    if summary["n_missing"]:
        log.warning("%d of %d items have no prediction; they score 0", summary["n_missing"], len(rows))
    if summary["n_unreadable"]:
        log.warning("%d of %d predictions give no valid answer under the %s parser (scored 0); if they hold "
                    "reasoning, see --parser auto", summary["n_unreadable"], len(rows), parser)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    scores_path = out / "scores.jsonl"
    io.write_lines(scores_path, (json.dumps(r, default=str) for r in rows))
    files = [str(scores_path)] + report.write_qa_report(summary, out, plots=config.plots)
    return jobs.Summary(done=[str(predictions)], outputs=files, details=summary)
