"""Golden VSI-Bench scores from the official scorer (vision-x-nyu/thinking-in-space), run outside the repo.

    git --git-dir=THINKING_IN_SPACE/.git archive HEAD lmms_eval/tasks/vsibench | tar -x -C /tmp/tis
    python tests/golden/make_vsibench_golden.py /tmp/tis COMMIT > tests/golden/vsibench_official.json

The official `lmms_eval/tasks/vsibench/utils.py` is loaded from that checkout (commit recorded below) and its
`vsibench_process_results` / `vsibench_aggregate_results` are applied to fixed records and adversarial
predictions; only their outputs are committed. `loguru` is replaced by a silent logger when absent.
"""

import importlib.util
import json
import sys
import types
from pathlib import Path

import numpy as np

MC = ["object_rel_direction_easy", "object_rel_direction_medium", "object_rel_direction_hard",
      "object_rel_distance", "route_planning", "obj_appearance_order"]
NA = ["object_abs_distance", "object_counting", "object_size_estimation", "room_size_estimation"]
MC_PREDS = ["A", "B", "C", "D", "a", "A.", " A", "A.\n", "C: the chair", "(B)", "The answer is A", "", "D.", "b"]
NA_PREDS = ["3", "3.0", "4.5", "3m", "1,000", "1e3", "nan", "inf", "", " 2", "2.", "two", "10", "0.5", "-1"]


def records(seed: int) -> list[dict]:
    rng = np.random.default_rng(seed)
    rows, i = [], 0
    for qtype in MC + NA:
        for _ in range(int(rng.integers(3, 9))):
            if qtype in MC:
                gt = "ABCD"[int(rng.integers(4))]
                pred = MC_PREDS[int(rng.integers(len(MC_PREDS)))]
                if rng.random() < 0.3:
                    pred = gt  # some right answers
                opts = [f"{c}. option {c}" for c in "ABCD"]
            else:
                gt = f"{float(rng.choice([0.5, 1.0, 2.0, 3.0, 4.2, 10.0, 1000.0])):g}"
                pred = NA_PREDS[int(rng.integers(len(NA_PREDS)))]
                opts = None
            rows.append({"id": i, "dataset": "scannet", "scene_name": f"s{i % 5}", "question_type": qtype,
                         "question": "q", "options": opts, "ground_truth": gt, "prediction": pred})
            i += 1
    return rows


def load_official(repo: Path):
    if importlib.util.find_spec("loguru") is None:
        log = types.SimpleNamespace(info=lambda *a, **k: None, warning=lambda *a, **k: None)
        sys.modules["loguru"] = types.SimpleNamespace(logger=log)
    path = repo / "lmms_eval/tasks/vsibench/utils.py"
    spec = importlib.util.spec_from_file_location("official_vsibench", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def official(mod, rows: list[dict]) -> dict:
    docs = []
    for r in rows:
        doc = {k: v for k, v in r.items() if k != "prediction"}
        docs.append(mod.vsibench_process_results(doc, [r["prediction"]])["vsibench_score"])
    try:
        agg = mod.vsibench_aggregate_results(docs)
    except KeyError as e:
        return {"error": f"KeyError {e}"}
    scores = [float(d.get("accuracy", d.get("MRA:.5:.95:.05"))) for d in docs]
    return {"overall": agg["overall"], "tasks": {k: v for k, v in agg.items() if k not in
                                                  ("overall", "tabulated_keys", "tabulated_results")},
            "item_scores": scores}


def main(repo: str, commit: str) -> None:
    repo_path = Path(repo)
    mod = load_official(repo_path)
    full = records(0)
    cases = {
        "full": full,
        "no_easy": [r for r in full if r["question_type"] != "object_rel_direction_easy"],
        "no_medium": [r for r in full if r["question_type"] != "object_rel_direction_medium"],
        "no_levels": [r for r in full if not r["question_type"].startswith("object_rel_direction")],
        "two_tasks": [r for r in records(1) if r["question_type"] in ("object_counting", "route_planning")],
    }
    out = {"reference": "vision-x-nyu/thinking-in-space lmms_eval/tasks/vsibench/utils.py", "commit": commit,
           "cases": {name: {"records": rows, "official": official(mod, rows)} for name, rows in cases.items()}}
    json.dump(out, sys.stdout, indent=1)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
