"""`eval run` on VSI-Bench's released layout (rows + <dataset>/<scene_name>.mp4), scored by `eval qa`."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from tiny_qwen import make_tiny_qwen

from spatialctl.stages.eval.runner import RunnerConfig, sample_video, vsibench_records
from spatialctl.video import write_video

# VSI-Bench's published columns (nyu-visionx/VSI-Bench, test split): id, dataset, scene_name, question_type,
# question, options (list of "A. ..." strings, null for numeric questions), ground_truth.
VSI_ROWS = [
    {"id": 0, "dataset": "arkitscenes", "scene_name": "41069025", "question_type": "object_counting",
     "question": "How many chair(s) are in this room?", "options": None, "ground_truth": "4"},
    {"id": 1, "dataset": "scannet", "scene_name": "scene0011_00", "question_type": "object_rel_distance",
     "question": "Measuring from the closest point of each object, which of these objects (table, sofa, lamp, bed) "
                 "is the closest to the chair?",
     "options": ["A. table", "B. sofa", "C. lamp", "D. bed"], "ground_truth": "C"},
    {"id": 2, "dataset": "scannetpp", "scene_name": "0a5c013435", "question_type": "room_size_estimation",
     "question": "What is the size of this room (in square meters)?", "options": None, "ground_truth": "21.5"},
]


@pytest.fixture(scope="module")
def vsi(tmp_path_factory):
    root = tmp_path_factory.mktemp("vsi")
    rng = np.random.default_rng(0)
    for row in VSI_ROWS:
        (root / "videos" / row["dataset"]).mkdir(parents=True, exist_ok=True)
        write_video(str(root / "videos" / row["dataset"] / f"{row['scene_name']}.mp4"),
                    rng.integers(0, 255, (40, 56, 56, 3), dtype=np.uint8), 10.0)
    pq.write_table(pa.Table.from_pylist(VSI_ROWS), root / "test.parquet")
    return root, make_tiny_qwen(root / "tinyq")


def test_vsibench_frames_are_lmms_evals_uniform_indices(tmp_path):
    frames = np.zeros((45, 16, 16, 3), np.uint8)
    frames[:, 0, 0, 0] = np.arange(45) * 5  # frame index written into a pixel
    write_video(str(tmp_path / "v.mp4"), frames, 10.0, lossless=True)
    got, _ = sample_video(str(tmp_path / "v.mp4"), 32, by_index=True)
    expected = np.linspace(0, 44, 32).astype(int)  # lmms-eval: np.linspace(0, total - 1, n, dtype=int)
    np.testing.assert_allclose(got[:, 0, 0, 0], expected * 5, atol=2)


def test_vsibench_rows_become_records(vsi):
    root, _ = vsi
    records = vsibench_records(str(root / "test.parquet"), str(root / "videos"))
    assert [r.id for r in records] == ["0", "1", "2"]
    assert records[1].options == ["table", "sofa", "lamp", "bed"] and records[1].answer == "C"
    assert records[0].answer_type == "number" and records[0].answer == 4.0
    assert records[2].video.endswith("videos/scannetpp/0a5c013435.mp4")
    assert RunnerConfig(out="x", layout="vsibench", videos="v").num_frames == 32
    assert RunnerConfig(out="x").num_frames == 8


def test_eval_run_answers_vsibench_and_eval_qa_scores_it(cli, vsi):
    root, base = vsi
    preds = root / "preds.jsonl"
    r = cli("eval", "run", "--qa", root / "test.parquet", "--layout", "vsibench", "--videos", root / "videos",
            "--model", base, "--frames", "4", "--out", preds, "--max-new-tokens", "3", "--quiet")
    assert r.exit_code == 0, r.output
    lines = [json.loads(x) for x in preds.read_text().splitlines()]
    assert [x["id"] for x in lines] == ["0", "1", "2"]
    assert [x["type"] for x in lines] == [row["question_type"] for row in VSI_ROWS]
    out = root / "scores.json"
    r = cli("eval", "qa", preds, "--gt", root / "test.parquet", "--out", out)
    assert r.exit_code == 0, r.output
    assert "object_counting" in r.output and "object_rel_distance" in r.output


def test_missing_video_fails_before_loading_a_model(cli, vsi, tmp_path):
    root, _ = vsi
    (tmp_path / "videos").mkdir()
    r = cli("eval", "run", "--qa", root / "test.parquet", "--layout", "vsibench", "--videos", tmp_path / "videos",
            "--model", tmp_path / "no-model", "--out", tmp_path / "p.jsonl")
    assert r.exit_code == 1 and "41069025.mp4 does not exist" in r.output and len(r.output.splitlines()) == 1
