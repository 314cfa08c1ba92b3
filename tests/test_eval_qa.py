"""`eval qa`: benchmark readers, each benchmark's aggregation, bootstrap intervals, reports and the CLI."""

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from spatialctl.errors import SpatialctlError
from spatialctl.qa_format import QARecord, write_qa
from spatialctl.stages.eval.benches import load_items
from spatialctl.stages.eval.qa import QAEvalConfig, bootstrap, run


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


VSI_ROWS = [
    dict(id=1, dataset="scannet", scene_name="a", question_type="object_counting", question="q", options=None,
         ground_truth="4"),
    dict(id=2, dataset="scannet", scene_name="a", question_type="object_counting", question="q", options=None,
         ground_truth="2"),
    dict(id=3, dataset="arkitscenes", scene_name="b", question_type="object_rel_direction_easy", question="q",
         options=["A. left", "B. right"], ground_truth="A"),
    dict(id=4, dataset="scannet", scene_name="b", question_type="object_rel_direction_medium", question="q",
         options=["A. left", "B. right"], ground_truth="B"),
    dict(id=5, dataset="scannet", scene_name="b", question_type="object_rel_direction_hard", question="q",
         options=["A. left", "B. right", "C. back"], ground_truth="C"),
    dict(id=6, dataset="scannet", scene_name="c", question_type="route_planning", question="q",
         options=["A. x", "B. y"], ground_truth="B"),
    dict(id=7, dataset="scannet", scene_name="c", question_type="route_planning", question="q",
         options=["A. x", "B. y"], ground_truth="A"),
]


def test_vsibench_aggregation_matches_the_official_rule(tmp_path):
    pq.write_table(pa.Table.from_pylist(VSI_ROWS), tmp_path / "vsi.parquet")
    preds = write_jsonl(tmp_path / "p.jsonl", [
        {"id": 1, "prediction": "3"}, {"id": 2, "prediction": "2 chairs"}, {"id": 3, "prediction": "A."},
        {"id": 4, "prediction": "A"}, {"id": 5, "prediction": "C"}, {"id": 6, "prediction": "B"},
        {"id": 7, "prediction": "The answer is A"},  # the original parser reads "The": wrong
    ])
    rep = run(QAEvalConfig(bench="vsibench", n_boot=200, gt=str(tmp_path / "vsi.parquet"), out=str(tmp_path / "out")), preds).details
    # counting: MRA(3,4)=0.6 and MRA(2,2)=1 -> 0.8; directions: easy 1, medium 0, hard 1 -> 2/3 (levels first);
    # route planning 0.5; overall = mean of the three tasks.
    assert rep["tasks"]["object_counting"]["score"] == pytest.approx(0.8)
    assert rep["tasks"]["object_rel_direction"]["score"] == pytest.approx(2 / 3)
    assert rep["tasks"]["route_planning"]["score"] == pytest.approx(0.5)
    assert rep["overall"] == pytest.approx((0.8 + 2 / 3 + 0.5) / 3)
    assert rep["parser"] == "vsibench" and rep["n_missing"] == 0
    lo, hi = rep["overall_ci"]
    assert 0 <= lo <= rep["overall"] <= hi <= 1
    assert rep["by_family"]["arkitscenes"] == {"score": 1.0, "n": 1}
    files = {p.name for p in (tmp_path / "out").iterdir()}
    assert {"report.json", "report.md", "tasks.png", "scores.jsonl"} <= files
    assert "| object_rel_direction | accuracy | 3 | 66.7 |" in (tmp_path / "out" / "report.md").read_text()


def test_missing_predictions_score_zero(tmp_path):
    gt = write_jsonl(tmp_path / "vsi.jsonl", VSI_ROWS)
    preds = write_jsonl(tmp_path / "p.jsonl", [{"id": 6, "prediction": "B"}, {"id": 99, "prediction": "A"}])
    rep = run(QAEvalConfig(bench="vsibench", n_boot=20, plots=False, gt=gt, out=str(tmp_path / "o")), preds).details
    assert rep["n_missing"] == 6 and rep["n_unmatched_predictions"] == 1
    assert rep["tasks"]["route_planning"]["score"] == 0.5
    with pytest.raises(SpatialctlError, match="no prediction id matches"):
        run(QAEvalConfig(bench="vsibench", gt=gt, out=str(tmp_path / "o")), write_jsonl(tmp_path / "x.jsonl", [{"id": 99, "prediction": "A"}]))


def test_dsr_parquet_is_item_accuracy(tmp_path):
    rows = [
        {"videoID": "v1", "question": "q", "options": str(["A. up", "B. down", "C. left", "D. right"]), "answer": "A",
         "type": "abs_dis"},  # options as text: a Python literal here, JSON below
        {"videoID": "v1", "question": "q", "options": json.dumps(["A. a", "B. b", "C. c", "D. d"]), "answer": "B",
         "type": "abs_dis"},
        {"videoID": "v2", "question": "q", "options": json.dumps(["A. a", "B. b", "C. c", "D. d"]), "answer": "C",
         "type": "rel_dir"},
    ]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "dsr.parquet")
    items, layout = load_items(tmp_path / "dsr.parquet")
    assert layout == "dsr"
    assert [it["id"] for it in items] == ["0", "1", "2"] and items[1]["options"][1] == "B. b"
    assert items[0]["options"] == ["A. up", "B. down", "C. left", "D. right"]
    preds = write_jsonl(tmp_path / "p.jsonl", [{"id": "0", "prediction": "(A)"}, {"id": "1", "prediction": "C"},
                                               {"id": "2", "prediction": "The answer is C."}])
    rep = run(QAEvalConfig(bench="dsr", n_boot=50, plots=False, gt=str(tmp_path / "dsr.parquet"), out=str(tmp_path / "o")), preds).details
    assert rep["parser"] == "lmms"
    assert rep["tasks"]["abs_dis"]["score"] == 0.5 and rep["tasks"]["rel_dir"]["score"] == 1.0
    assert rep["overall"] == pytest.approx(2 / 3)  # items, not tasks: (1 + 0 + 1) / 3


def test_ours_merges_levels_and_breaks_down_by_scale(tmp_path):
    recs = [
        QARecord(id="a", scene="s", question="q", answer="A", answer_type="mc", family="dsr", type="rel_dir_easy",
                 options=["x", "y"], scale="indoor"),
        QARecord(id="b", scene="s", question="q", answer="B", answer_type="mc", family="dsr", type="rel_dir_hard",
                 options=["x", "y"], scale="indoor"),
        QARecord(id="c", scene="s", question="q", answer=0.0, answer_type="number", family="vsi",
                 type="speed", unit="m/s", scale="tabletop"),
    ]
    write_qa(tmp_path / "qa.jsonl", recs)
    preds = write_jsonl(tmp_path / "p.jsonl", [{"id": "a", "prediction": "A"}, {"id": "b", "prediction": "A"},
                                               {"id": "c", "prediction": "0.3 m/s"}])
    rep = run(QAEvalConfig(bench="ours", n_boot=50, plots=False, gt=str(tmp_path / "qa.jsonl"), out=str(tmp_path / "o")), preds).details
    assert rep["tasks"]["rel_dir"]["score"] == 0.5 and rep["tasks"]["rel_dir"]["members"] == ["rel_dir_easy",
                                                                                                "rel_dir_hard"]
    # gt 0: the absolute error 0.3 passes thresholds up to 0.7 -> 0.5
    assert rep["tasks"]["speed"]["score"] == pytest.approx(0.5)
    assert rep["overall"] == pytest.approx(0.5)
    assert rep["by_scale"] == {"indoor": {"score": 0.5, "n": 2}, "tabletop": {"score": 0.5, "n": 1}}


def test_spacevista_rows(tmp_path):
    rows = [
        {"id": "s1", "question": "q", "ground_truth": "0", "answer_type": "numerical", "category": "Tabletop",
         "original_type": "DEPTH"},
        {"id": "s2", "question": "q", "ground_truth": "B", "answer_type": "mc", "category": "Indoor",
         "original_type": "EXISTENCE", "options": ["A. yes", "B. no"]},
        {"id": "s3", "question": "q", "ground_truth": "chair", "answer_type": "text", "category": "Indoor",
         "original_type": "MATCHING"},
    ]
    gt = write_jsonl(tmp_path / "sv.jsonl", rows)
    preds = write_jsonl(tmp_path / "p.jsonl", [{"id": "s1", "prediction": "<answer>zero</answer>"},
                                               {"id": "s2", "prediction": "b) no"},
                                               {"id": "s3", "prediction": "<answer>Chair.</answer>"}])
    rep = run(QAEvalConfig(bench="spacevista", n_boot=20, plots=False, gt=gt, out=str(tmp_path / "o")), preds).details
    # SpaceVista's exact_match: "chair." is not "chair"; overall = item mean 2/3.
    assert rep["overall"] == pytest.approx(2 / 3) and rep["by_scale"]["Tabletop"]["score"] == 1.0


def test_bootstrap_intervals():
    scores = {"t1": np.array([1.0, 0.0] * 50), "t2": np.ones(10)}
    task_ci, overall_ci = bootstrap(scores, "ours", 500, 0.95, seed=0)
    lo, hi = task_ci["t1"]
    assert 0.35 < lo < 0.5 < hi < 0.65  # binomial mean 0.5, n = 100: about ±0.1
    assert task_ci["t2"] == (1.0, 1.0)
    assert overall_ci[0] < 0.75 < overall_ci[1]
    assert bootstrap(scores, "ours", 500, 0.95, seed=0) == (task_ci, overall_ci)


def test_cli_errors(tmp_path, cli):
    gt = write_jsonl(tmp_path / "vsi.jsonl", VSI_ROWS)
    preds = write_jsonl(tmp_path / "p.jsonl", [{"id": 1, "prediction": "4"}])
    assert cli("eval", "qa", preds, "--bench", "mmlu", "--gt", gt).exit_code == 2
    assert cli("eval", "qa", preds, "--parser", "regex", "--gt", gt).exit_code == 2
    r = cli("eval", "qa", str(tmp_path / "none.jsonl"), "--gt", gt)
    assert r.exit_code == 1 and "no such file" in r.output
    (tmp_path / "bad.jsonl").write_text('{"id": 1, "prediction": "4"}\nnot json\n')
    r = cli("eval", "qa", str(tmp_path / "bad.jsonl"), "--gt", gt)
    assert r.exit_code == 1 and "line 2 is not JSON" in r.output
    r = cli("eval", "qa", preds, "--bench", "vsibench", "--gt", gt, "--out", str(tmp_path / "rep"), "--n-boot", "20")
    assert r.exit_code == 0 and "| **overall** |" in r.output


# ------------------------------------------------------------------ official VSI-Bench scorer (golden outputs)

GOLDEN = json.loads((Path(__file__).parent / "golden" / "vsibench_official.json").read_text())


def _golden_files(tmp_path, case):
    recs = GOLDEN["cases"][case]["records"]
    gt = write_jsonl(tmp_path / f"{case}_gt.jsonl", [{k: v for k, v in r.items() if k != "prediction"} for r in recs])
    preds = write_jsonl(tmp_path / f"{case}_p.jsonl", [{"id": r["id"], "prediction": r["prediction"]} for r in recs])
    return gt, preds


@pytest.mark.parametrize("case", ["full", "no_easy", "no_levels", "two_tasks"])
def test_vsibench_equals_the_official_scorer_without_bench(tmp_path, case):
    """Detected layout, per-item scores and the overall equal thinking-in-space's own outputs (golden file made
    by tests/golden/make_vsibench_golden.py), including its quirk: without the easy level, medium and hard
    stay separate tasks."""
    gt, preds = _golden_files(tmp_path, case)
    official = GOLDEN["cases"][case]["official"]
    rep = run(QAEvalConfig(n_boot=20, plots=False, gt=gt, out=str(tmp_path / "o")), preds).details
    assert rep["bench"] == "vsibench" and rep["bench_source"] == "detected" and rep["parser"] == "vsibench"
    assert rep["overall"] * 100 == pytest.approx(official["overall"], abs=1e-9)
    scores = [json.loads(line)["score"] for line in (tmp_path / "o" / "scores.jsonl").read_text().splitlines()]
    assert scores == pytest.approx(official["item_scores"], abs=1e-12)
    for key, value in official["tasks"].items():
        task = key.rsplit("_accuracy", 1)[0].rsplit("_MRA", 1)[0]
        assert rep["tasks"][task]["score"] * 100 == pytest.approx(value, abs=1e-9)
    if case == "no_easy":
        assert {"object_rel_direction_medium", "object_rel_direction_hard"} <= set(rep["tasks"])
        assert "object_rel_direction" not in rep["tasks"]


def test_vsibench_easy_without_medium_has_no_official_score(tmp_path):
    assert "KeyError" in GOLDEN["cases"]["no_medium"]["official"]["error"]
    gt, preds = _golden_files(tmp_path, "no_medium")
    with pytest.raises(SpatialctlError, match="official scorer fails"):
        run(QAEvalConfig(n_boot=5, plots=False, gt=gt, out=str(tmp_path / "o")), preds)
    assert not (tmp_path / "o").exists()


def test_cli_vsibench_file_without_bench_gives_the_official_score(tmp_path, cli):
    gt, preds = _golden_files(tmp_path, "full")
    r = cli("eval", "qa", preds, "--gt", gt, "--out", str(tmp_path / "rep"), "--n-boot", "10", "--no-plots")
    assert r.exit_code == 0, r.output
    rep = json.loads((tmp_path / "rep" / "report.json").read_text())
    assert rep["overall"] * 100 == pytest.approx(GOLDEN["cases"]["full"]["official"]["overall"], abs=1e-9)
    # The same records carrying their predictions (no --gt), and as lmms-eval --log_samples lines.
    recs = GOLDEN["cases"]["full"]["records"]
    carried = write_jsonl(tmp_path / "carried.jsonl", recs)
    samples = write_jsonl(tmp_path / "samples.jsonl", [
        {"doc_id": n, "doc": {k: v for k, v in r.items() if k != "prediction"}, "target": r["ground_truth"],
         "resps": [[r["prediction"]]], "filtered_resps": [r["prediction"]]} for n, r in enumerate(recs)])
    for path in (carried, samples):
        rep = run(QAEvalConfig(n_boot=10, plots=False, gt=None, out=str(tmp_path / "o2")), path).details
        assert rep["bench"] == "vsibench"
        assert rep["overall"] * 100 == pytest.approx(GOLDEN["cases"]["full"]["official"]["overall"], abs=1e-9)


def test_declared_bench_must_match_the_records(tmp_path, cli):
    gt, preds = _golden_files(tmp_path, "full")
    with pytest.raises(SpatialctlError, match="vsibench layout, not dsr"):
        run(QAEvalConfig(bench="dsr", n_boot=5, gt=gt, out=str(tmp_path / "o")), preds)
    r = cli("eval", "qa", preds, "--gt", gt, "--bench", "ours", "--out", str(tmp_path / "o"))
    assert r.exit_code == 1 and "not ours as --bench says" in r.output and not (tmp_path / "o").exists()
    # A record no layout claims needs --bench... and no --bench can read it either: one line naming the file.
    odd = write_jsonl(tmp_path / "odd.jsonl", [{"id": 1, "q": "x", "gt": "A"}])
    r = cli("eval", "qa", preds, "--gt", odd)
    assert r.exit_code == 1 and "odd.jsonl: a record matches no known layout" in r.output
    r = cli("eval", "qa", preds, "--gt", odd, "--bench", "dsr")
    assert r.exit_code == 1 and "odd.jsonl: row 0 lacks answer/type (DSR-Bench layout)" in r.output
    # Records that mark no layout (DSR rows without videoID) are read by the declared bench's reader.
    plain = write_jsonl(tmp_path / "plain.jsonl", [{"id": 1, "question": "q", "options": ["A. x", "B. y"],
                                                    "answer": "B", "type": "dir"}])
    rep = run(QAEvalConfig(bench="dsr", n_boot=5, plots=False, gt=plain, out=str(tmp_path / "o3")), preds).details
    assert rep["bench"] == "dsr" and rep["n_items"] == 1


def test_empty_or_blank_predictions_are_errors(tmp_path, cli):
    gt = write_jsonl(tmp_path / "vsi.jsonl", VSI_ROWS)
    (tmp_path / "empty.jsonl").write_text("")
    blank = write_jsonl(tmp_path / "blank.jsonl", [{"id": 1, "prediction": ""}, {"id": 2, "prediction": "  \n"}])
    r = cli("eval", "qa", str(tmp_path / "empty.jsonl"), "--gt", gt)
    assert r.exit_code == 1 and "empty.jsonl: no predictions" in r.output
    r = cli("eval", "qa", blank, "--gt", gt)
    assert r.exit_code == 1 and "blank.jsonl: all 2 predictions are blank" in r.output


def test_parser_auto_reads_reasoning_and_keeps_short_answers_official(tmp_path):
    rows = [dict(r) for r in VSI_ROWS]
    gt = write_jsonl(tmp_path / "vsi.jsonl", rows)
    short = write_jsonl(tmp_path / "short.jsonl", [
        {"id": 1, "prediction": "4"}, {"id": 2, "prediction": "2"}, {"id": 3, "prediction": "A"},
        {"id": 4, "prediction": "B: right"}, {"id": 5, "prediction": "C"}, {"id": 6, "prediction": "B"},
        {"id": 7, "prediction": "A"}])
    # By default the official reading: "B: right" -> "B:" (wrong, and counted as unreadable).
    rep = run(QAEvalConfig(n_boot=5, plots=False, gt=gt, out=str(tmp_path / "o")), short).details
    assert rep["parser"] == "vsibench" and rep["n_unreadable"] == 1 and rep["overall"] < 1
    # auto: the official parser leaves one answer unread that reasoning reads, so reasoning scores all seven.
    rep = run(QAEvalConfig(parser="auto", n_boot=5, plots=False, gt=gt, out=str(tmp_path / "o")), short).details
    assert rep["parser"] == "reasoning" and rep["parser_source"] == "auto: vsibench leaves 1 predictions unread, " \
        "reasoning 0" and rep["n_unreadable"] == 0 and rep["overall"] == 1.0
    # Well-formed short answers keep the official parser under auto.
    clean = write_jsonl(tmp_path / "clean.jsonl", [{"id": 3, "prediction": "A"}, {"id": 6, "prediction": "A."}])
    rep = run(QAEvalConfig(parser="auto", n_boot=5, plots=False, gt=gt, out=str(tmp_path / "o")), clean).details
    assert rep["parser"] == "vsibench" and rep["parser_source"].startswith("auto: short answers")
    cot = write_jsonl(tmp_path / "cot.jsonl", [
        {"id": 1, "prediction": "<think>I count chairs: A, B, C, D.</think><answer>4</answer>"},
        {"id": 2, "prediction": "Two chairs are visible.\n\\boxed{2}"},
        {"id": 3, "prediction": "B is right of the door... so the answer is (A)."},
        {"id": 4, "prediction": "Looking at frame 3, the sofa is to the right.\nB: right"},
        {"id": 5, "prediction": "Answer: C"},
        {"id": 6, "prediction": "A route via the hall... **Final answer:** B"},
        {"id": 7, "prediction": "A door, then a table.\nThe correct option is A."}])
    rep = run(QAEvalConfig(parser="auto", n_boot=5, plots=False, gt=gt, out=str(tmp_path / "o")), cot).details
    assert rep["parser"] == "reasoning" and rep["parser_source"].startswith("auto: 7 of 7")
    assert rep["overall"] == 1.0 and rep["n_unreadable"] == 0
    # The official parser reads the first token: "B", "A" are letters (wrong, except id 7's "A door" which is
    # right by accident), the other four are no answer at all; route planning 1/2, the rest 0.
    rep = run(QAEvalConfig(n_boot=5, plots=False, gt=gt, out=str(tmp_path / "o")), cot).details
    assert rep["overall"] == pytest.approx(0.5 / 3) and rep["n_unreadable"] == 4


def test_vlm4d_outputs_score_like_its_judge(tmp_path):
    """VLM4D's released chain-of-thought replies with its LLM judge's extracted answers (a fixed sample made by
    benchmarks/eval_parsers.py): detected as VLM4D without --bench or --gt, read by `reasoning`, which picks the
    judge's letter wherever the reply states a letter or an option's exact text."""
    sample = json.loads((Path(__file__).parent / "golden" / "vlm4d_judge_sample.json").read_text())
    path = tmp_path / "vlm4d_outputs.json"
    path.write_text(json.dumps(sample))
    rep = run(QAEvalConfig(n_boot=10, plots=False, gt=None, out=str(tmp_path / "o")), str(path)).details
    assert rep["bench"] == "vlm4d" and rep["parser"] == "reasoning" and rep["aggregation"] == "mean of item scores"
    rows = {json.loads(line)["id"]: json.loads(line)
            for line in (tmp_path / "o" / "scores.jsonl").read_text().splitlines()}
    judge = {s["id"]: s["judge_extracted_answer"][:1] if s["judge_extracted_answer"][1:2] == ":" else None
             for s in sample}
    assert {i: rows[i]["parsed"] for i in judge} == judge  # every one of the 48 (94.7% over all 31,533)
    assert rep["overall"] == pytest.approx(np.mean([s["judge_correct"] for s in sample]))
    # lmms-eval's first-capital-letter rule picks the judge's letter far less often on the same replies.
    run(QAEvalConfig(parser="lmms", n_boot=10, plots=False, gt=None, out=str(tmp_path / "o")), str(path))
    lmms = [json.loads(line)["parsed"] for line in (tmp_path / "o" / "scores.jsonl").read_text().splitlines()]
    assert sum(p == judge[i] for p, i in zip(lmms, rows, strict=True)) == 26  # of 48 (56.4% over all)
