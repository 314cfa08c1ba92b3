"""Answer parsers against VLM4D's own LLM judge, on the chain-of-thought outputs the VLM4D authors released.

    git --git-dir=VLM4D/.git archive HEAD processed_outputs_paper_results | tar -x -C /tmp/vlm4d
    python benchmarks/eval_parsers.py /tmp/vlm4d [--golden tests/golden/vlm4d_judge_sample.json]

For every model's judged file (`processed_outputs_paper_results/real_mc_cot/*.json`: the reply, the choices, the
ground truth, and the judge's (o4-mini) extracted answer and verdict) it prints the accuracy by the judge, by
our ``reasoning`` parser and by ``lmms``, and how often each parser picks the judge's letter. ``--golden`` writes
the fixed sample that tests/test_eval_qa.py pins (8 replies from each of six models of different styles).
"""

import argparse
import json
import re
from pathlib import Path

import numpy as np

from spatialctl.scoring import parse_lmms, parse_reasoning

SAMPLE_MODELS = ("gemini-2.5-pro-preview-06-05_1fps", "gpt-4o_32frame", "Qwen2.5-VL-7B-Instruct_1fps",
                 "pixtral-12b_8frame", "Phi-4-multimodal-instruct_16frame", "deepseek-vl2_8frame")


def judge_letter(row: dict) -> str | None:
    m = re.match(r"\s*([A-D])\s*:", row.get("extracted_answer") or "")
    return m.group(1) if m else None


def truth_letter(row: dict) -> str:
    return next(k for k, v in row["choices"].items() if str(v).strip() == str(row["ground_truth_answer"]).strip())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("vlm4d", help="folder holding processed_outputs_paper_results/")
    ap.add_argument("--golden", help="write the test sample here")
    args = ap.parse_args()
    folder = Path(args.vlm4d) / "processed_outputs_paper_results" / "real_mc_cot"
    print("| model | n | judge acc | reasoning acc | lmms acc | reasoning = judge | lmms = judge |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    totals = np.zeros(6)
    sample = []
    for path in sorted(folder.glob("*.json")):
        rows = json.loads(path.read_text())
        c = np.zeros(6)
        for r in rows:
            opts = [f"{k}: {v}" for k, v in r["choices"].items()]
            ours, lm = parse_reasoning(r["response"] or "", "mc", opts), parse_lmms(r["response"] or "", "mc", opts)
            gt, judge = truth_letter(r), judge_letter(r)
            c += [1, bool(r["correct"]), ours == gt, lm == gt, ours == judge, lm == judge]
        totals += c
        print(f"| {path.stem} | {int(c[0])} | " + " | ".join(f"{100 * v / c[0]:.1f}" for v in c[1:]) + " |")
        if path.stem in SAMPLE_MODELS:
            rng = np.random.default_rng(0)
            for i in sorted(rng.choice(len(rows), 8, replace=False)):
                r = rows[int(i)]
                sample.append({"id": f"{path.stem}/{r['id']}", "question": r["question"], "choices": r["choices"],
                               "answer": r["ground_truth_answer"], "response": r["response"],
                               "judge_extracted_answer": r["extracted_answer"], "judge_correct": r["correct"]})
    print(f"| all | {int(totals[0])} | " + " | ".join(f"{100 * v / totals[0]:.1f}" for v in totals[1:]) + " |")
    if args.golden:
        Path(args.golden).write_text(json.dumps(sample, indent=1, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
