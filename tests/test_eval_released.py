"""`eval run` on DSR-Bench and SpaceVista-Bench as released: frames, resolution and prompt against the benchmarks'
own harness code (golden outputs from tests/golden/make_released_golden.py), end to end from the CLI on a tiny
random Qwen2.5-VL, and `eval qa` on what it writes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from released_fixtures import DSR_FRAMES, DSR_ROWS, spacevista_bench
from tiny_qwen import CHAT_TEMPLATE, make_tiny_qwen

from spatialctl import qwen
from spatialctl.stages.eval import released
from spatialctl.stages.eval.runner import RunnerConfig, sample_video
from spatialctl.video import write_video

GOLDEN = Path(__file__).parent / "golden"
REF = json.loads((GOLDEN / "released_golden.json").read_text())


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return make_tiny_qwen(tmp_path_factory.mktemp("tinyq"))


@pytest.fixture(scope="module")
def dsr(tmp_path_factory):
    root = tmp_path_factory.mktemp("dsr")
    (root / "videos").mkdir()
    for vid, n in DSR_FRAMES.items():
        frames = np.zeros((n, 32, 48, 3), np.uint8)
        frames[:, :, :, 0] = (np.arange(n) * 5)[:, None, None]  # each frame's index, readable after decoding
        write_video(str(root / "videos" / f"{vid}.mp4"), frames, 10.0, lossless=True)
    pq.write_table(pa.Table.from_pylist(DSR_ROWS), root / "benchmark.parquet")
    return root


@pytest.fixture(scope="module")
def vista(tmp_path_factory):
    root = tmp_path_factory.mktemp("vista")
    spacevista_bench(str(root))
    return root


def lines(path) -> list[dict]:
    return [json.loads(x) for x in Path(path).read_text().splitlines()]


def test_dsr_frames_and_resolution_are_dsr_suites(tmp_path):
    """Frame count, indices and per-frame size equal what DSR Suite's VLMEvalKit + qwen-vl-utils give."""
    assert REF["dsr_suite"]["commit"] == "56a60bc"
    for case in REF["dsr_suite"]["cases"]:
        idx = released.dsr_frame_indices(case["frames"])
        assert len(idx) == case["nframes"] and idx.tolist() == case["indices"], case["frames"]
        h, w = case["size"]
        got = qwen.smart_resize(h, w, 28, released.DSR_MIN_PIXELS, released.dsr_max_pixels(case["nframes"]))
        assert list(got) == case["resized"], case
    # and the decoder hands over exactly those frames
    frames = np.zeros((45, 16, 16, 3), np.uint8)
    frames[:, 0, 0, 0] = np.arange(45) * 5
    write_video(str(tmp_path / "v.mp4"), frames, 10.0, lossless=True)
    got, _ = sample_video(str(tmp_path / "v.mp4"), 0, pick=released.dsr_frame_indices)
    case = next(c for c in REF["dsr_suite"]["cases"] if c["frames"] == 45)
    np.testing.assert_allclose(got[:, 0, 0, 0], np.asarray(case["indices"]) * 5, atol=2)


def test_spacevista_frames_marks_and_prompt_are_its_harness(vista):
    """Sampled frames with their drawn points/boxes/masks, resized, and the prompt: equal to what SpaceVista's
    evaluate_api_video.py would send for the same entries."""
    ref = np.load(GOLDEN / "spacevista_frames.npz")
    items = released.spacevista_items(str(vista / "bench_final.json"), str(vista), 16)
    assert len(items) == len(REF["spacevista"]["entries"]) == 4
    for item, want in zip(items, REF["spacevista"]["entries"], strict=True):
        frames = released.spacevista_frames(item)
        np.testing.assert_array_equal(frames, ref[f"entry{want['id']}"], err_msg=f"entry {want['id']}")
        assert item.prompt == want["prompt"] and item.text_first
        assert item.line == {k: v for k, v in want["result"].items() if k != "id"} and item.id == str(want["id"])
    assert released.spacevista_frame_indices(40) == np.linspace(0, 39, 16, dtype=int).tolist()
    assert released.spacevista_frame_indices(10) == list(range(10))


def test_prompts_follow_the_chat_template(tiny, vista):
    """Our token ids equal the chat template rendering the harness's message (text/video order included)."""
    tok = qwen.load_tokenizer(tiny)

    def rendered(content: list[dict], n_pads: int) -> list[int]:
        text = tok.apply_chat_template([{"role": "user", "content": content}], tokenize=False,
                                       add_generation_prompt=True, chat_template=CHAT_TEMPLATE)
        text = text.replace("<|video_pad|>", "<|video_pad|>" * n_pads)
        return tok(text, add_special_tokens=False)["input_ids"]

    dsr_text = released.dsr_prompt(DSR_ROWS[0]["question"], DSR_ROWS[0]["options"])
    ours = qwen.build_prompt_ids(tok, dsr_text, n_video_tokens=6, n_geo_tokens=0).input_ids
    # DSR Suite's message: SYS "" text, the video, FRAMES_TMPL_NOSUB, "Question: ...\nAnswer: "
    assert ours == rendered([{"type": "text", "text": ""}, {"type": "video"},
                             {"type": "text", "text": released.DSR_PROMPT},
                             {"type": "text", "text": dsr_text[len(released.DSR_PROMPT):]}], 6)
    item = released.spacevista_items(str(vista / "bench_final.json"), str(vista), 16)[0]
    ours = qwen.build_prompt_ids(tok, item.prompt, n_video_tokens=6, n_geo_tokens=0, text_first=True).input_ids
    assert ours == rendered([{"type": "text", "text": item.prompt}, {"type": "video"}], 6)  # text, then video


def test_eval_run_dsrbench_and_eval_qa_score_it(cli, dsr, tiny):
    preds = dsr / "preds.jsonl"
    r = cli("eval", "run", "--qa", dsr / "benchmark.parquet", "--layout", "dsrbench", "--videos", dsr / "videos",
            "--model", tiny, "--frames", "4", "--max-new-tokens", "3", "--out", preds, "--quiet")
    assert r.exit_code == 0, r.output
    got = lines(preds)
    assert [x["id"] for x in got] == ["0", "1", "2"]
    assert [(x["videoID"], x["answer"], x["type"]) for x in got] == [(d["videoID"], d["answer"], d["type"])
                                                                     for d in DSR_ROWS]
    assert all(isinstance(x["prediction"], str) for x in got)
    assert RunnerConfig(out="x", layout="dsrbench").num_frames == 32
    assert RunnerConfig(out="x", layout="dsrbench").max_new_tokens == 2048
    r = cli("eval", "qa", preds, "--out", dsr / "report", "--no-plots")
    assert r.exit_code == 0, r.output
    rep = json.loads((dsr / "report" / "report.json").read_text())
    assert rep["bench"] == "dsr" and rep["n_items"] == 3 and set(rep["tasks"]) == {d["type"] for d in DSR_ROWS}
    # the released parquet as ground truth gives the same items (ids are row numbers)
    r = cli("eval", "qa", preds, "--gt", dsr / "benchmark.parquet", "--out", dsr / "report2", "--no-plots")
    assert r.exit_code == 0, r.output
    assert json.loads((dsr / "report2" / "report.json").read_text())["n_missing"] == 0


def test_eval_run_spacevista_and_eval_qa_score_it(cli, vista, tiny):
    preds = vista / "preds.jsonl"
    r = cli("eval", "run", "--qa", vista / "bench_final.json", "--layout", "spacevista", "--model", tiny,
            "--max-new-tokens", "3", "--batch-size", "2", "--out", preds, "--quiet")
    assert r.exit_code == 0, r.output
    got = lines(preds)
    assert [x["id"] for x in got] == ["0", "1", "2", "3"]
    assert [x["answer_type"] for x in got] == ["mc", "numerical", "text", "mc"]
    assert [x["num_frames_sent"] for x in got] == [16, 10, 16, 16]
    r = cli("eval", "qa", preds, "--out", vista / "report", "--no-plots")
    assert r.exit_code == 0, r.output
    rep = json.loads((vista / "report" / "report.json").read_text())
    assert rep["bench"] == "spacevista" and rep["n_items"] == 4
    assert set(rep["by_scale"]) == {"Tabletop", "Indoor", "Outdoor", "TinyTabletop"}


@pytest.mark.parametrize("layout", ["dsrbench", "spacevista"])
def test_missing_media_fails_in_one_line_before_the_model(cli, dsr, vista, tmp_path, layout):
    if layout == "dsrbench":
        qa, media, expect = dsr / "benchmark.parquet", tmp_path / "none", "koala_a.mp4 does not exist (3 of 3 missing)"
    else:
        bench = json.loads((vista / "bench_final.json").read_text())
        bench[2]["videos"][0][24] = "image_data/scene2/images/gone.png"
        qa = tmp_path / "bench.json"
        qa.write_text(json.dumps(bench))
        media, expect = vista, "entry 2 frame"
    out = tmp_path / "out" / "p.jsonl"
    r = cli("eval", "run", "--qa", qa, "--layout", layout, "--videos", media, "--model", tmp_path / "no-model",
            "--out", out)
    assert r.exit_code == 1 and expect in r.output and len(r.output.strip().splitlines()) == 1, r.output
    if layout == "dsrbench":
        assert "Koala-36M" in r.output and "<videoID>.mp4" in r.output
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
