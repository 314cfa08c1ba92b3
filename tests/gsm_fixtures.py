"""Hand-built scene stores and make-qa-like records for the train-gsm tests (no other stage needed)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from conftest import SCENE_ATTRS, scene_arrays

from spatialctl import qa_format, store

OBJECTS = ["red cube", "blue sphere", "green box", "yellow car", "person", "chair", "table", "lamp"]
ENC_CHANNELS, GEN_CHANNELS = 16, 8


def make_scenes(root, n_scenes: int = 2, n_frames: int = 4, size: int = 56, genfeat: bool = False) -> str:
    """Scene stores ``root/scenes/s{i}/scene.zarr`` with encoder features (and optionally genfeat)."""
    scenes = f"{root}/scenes"
    for i in range(n_scenes):
        arrays = scene_arrays(n=n_frames, h=size, w=size, seed=i)
        rng = np.random.default_rng(100 + i)
        arrays["encoder_features"] = rng.standard_normal((n_frames, 4, 4, ENC_CHANNELS)).astype(np.float16)
        url = f"{scenes}/s{i}/scene.zarr"
        store.write_scene(url, arrays, SCENE_ATTRS, {"stage": "test"})
        if genfeat:
            feats = rng.standard_normal((n_frames, 2, 2, GEN_CHANNELS)).astype(np.float16)
            store.write_group(url, "genfeat", {"features": feats}, {"grid": [2, 2]}, {"stage": "test"})
    return scenes


def make_records(n: int = 16, n_scenes: int = 2, n_frames: int = 4) -> list[qa_format.QARecord]:
    """Multiple-choice questions in make-qa's record form; answers spread over A-D."""
    records = []
    for i in range(n):
        a, b = OBJECTS[i % len(OBJECTS)], OBJECTS[(3 * i + 1) % len(OBJECTS)]
        question = f"Which object is closer to the camera, the {a} or the {b}? ({i})"
        options = [a, b, "same distance", "not visible"]
        records.append(qa_format.QARecord(
            id=f"q{i:02d}", scene=f"s{i % n_scenes}", question=question, answer="ABCD"[(i * 7) % 4],
            answer_type="mc", family="dsr", type="rel_distance", options=options, frames=list(range(n_frames)),
        ))
    return records


def write_records(path, records) -> str:
    qa_format.write_qa(path, records)
    return str(path)


def assert_eval_run_answers_all(cli, qa, adapter, scenes, preds, *extra) -> list[dict]:
    """`eval run` with the adapter answers every record of ``qa`` exactly, and `eval qa` scores them all right."""
    r = cli("eval", "run", "--qa", qa, "--adapter", adapter, "--scenes", scenes, "--out", preds,
            "--max-new-tokens", "4", "--batch-size", "8", "--quiet", *extra)
    assert r.exit_code == 0, r.output
    lines = [json.loads(line) for line in Path(preds).read_text().splitlines()]
    assert lines and [x["prediction"] for x in lines] == [x["answer"] for x in lines]
    r = cli("eval", "qa", preds)
    assert r.exit_code == 0 and f"| {len(lines)} | 100.0 |" in r.output, r.output
    return lines
