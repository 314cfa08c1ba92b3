"""`eval qa`: benchmark readers, each benchmark's aggregation, bootstrap intervals, reports and the CLI."""

import json

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
    rep = run(QAEvalConfig(bench="vsibench", n_boot=200, gt=str(tmp_path / "vsi.parquet"), out=str(tmp_path / "out")),
              preds).details
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
        run(QAEvalConfig(bench="vsibench", gt=gt, out=str(tmp_path / "o")),
            write_jsonl(tmp_path / "x.jsonl", [{"id": 99, "prediction": "A"}]))


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
    items = load_items(tmp_path / "dsr.parquet")
    assert [it["id"] for it in items] == ["0", "1", "2"] and items[1]["options"][1] == "B. b"
    assert items[0]["options"] == ["A. up", "B. down", "C. left", "D. right"]
    preds = write_jsonl(tmp_path / "p.jsonl", [{"id": "0", "prediction": "(A)"}, {"id": "1", "prediction": "C"},
                                               {"id": "2", "prediction": "The answer is C."}])
    rep = run(QAEvalConfig(bench="dsr", n_boot=50, plots=False, gt=str(tmp_path / "dsr.parquet"), out=str(tmp_path / "o")),
              preds).details
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
    rep = run(QAEvalConfig(bench="ours", n_boot=50, plots=False, gt=str(tmp_path / "qa.jsonl"), out=str(tmp_path / "o")),
              preds).details
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
    ]
    gt = write_jsonl(tmp_path / "sv.jsonl", rows)
    preds = write_jsonl(tmp_path / "p.jsonl", [{"id": "s1", "prediction": "<answer>zero</answer>"},
                                               {"id": "s2", "prediction": "b) no"}])
    rep = run(QAEvalConfig(bench="spacevista", n_boot=20, plots=False, gt=gt, out=str(tmp_path / "o")), preds).details
    assert rep["overall"] == 1.0 and rep["by_scale"]["Tabletop"]["score"] == 1.0


def test_bootstrap_intervals():
    scores = {"t1": np.array([1.0, 0.0] * 50), "t2": np.ones(10)}
    task_ci, overall_ci = bootstrap(scores, "vsibench", 500, 0.95, seed=0)
    lo, hi = task_ci["t1"]
    assert 0.35 < lo < 0.5 < hi < 0.65  # binomial mean 0.5, n = 100: about ±0.1
    assert task_ci["t2"] == (1.0, 1.0)
    assert overall_ci[0] < 0.75 < overall_ci[1]
    assert bootstrap(scores, "vsibench", 500, 0.95, seed=0) == (task_ci, overall_ci)


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
