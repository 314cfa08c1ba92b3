"""Qwen3-VL through the same paths: prompt layout as its processor expands videos, train-gsm (GSM + VEGA fusion)
overfitting 16 items from the CLI on a tiny random Qwen3-VL, `eval run` answering them."""

from __future__ import annotations

import json

import numpy as np
import pytest
from gsm_fixtures import assert_eval_run_answers_all, make_records, make_scenes, write_records
from tiny_qwen import make_tiny_qwen3

from spatialctl import gsm, qa_format, qwen


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("qwen3")
    base = make_tiny_qwen3(root / "tinyq3")
    scenes = make_scenes(root, genfeat=True, size=64)
    qa = write_records(root / "qa.jsonl", make_records(16))
    return root, base, scenes, qa


def test_video_prompt_follows_qwen3_vl_processor_expansion(data):
    _, base, _, _ = data
    tok = qwen.load_tokenizer(base)
    vc = qwen.VideoProcessorConfig.from_model_dir(base)
    assert vc.family == "qwen3_vl" and vc.patch_size == 16
    record = qa_format.QARecord(id="a", scene="s", question="How many chairs?", answer=3.0, answer_type="number",
                                family="x", type="object_counting")
    times = np.array([0.0, 0.5, 1.0])
    video = qwen.process_video(np.zeros((3, 64, 64, 3), np.uint8), vc)
    ex = gsm.frames_example(record, np.zeros((3, 64, 64, 3), np.uint8), times, tok, vc)
    t, h, w = video["video_grid_thw"][0]
    # Qwen3VLProcessor.replace_video_token: per temporal patch "<{t:.1f} seconds>" + vision span of h*w/4 pads,
    # t = mean time of the patch's first and last frame (the last frame repeated to fill the patch)
    stamps = [(0.0 + 0.5) / 2, (1.0 + 1.0) / 2]
    expected = "".join(f"<{s:.1f} seconds><|vision_start|>" + "<|video_pad|>" * (h * w // 4) + "<|vision_end|>"
                       for s in stamps)
    text = tok.decode(ex["input_ids"])
    assert t == 2 and expected + qa_format.prompt_text(record.question, None, "number") in text


@pytest.mark.parametrize("cap", [False, True])
def test_video_grid_equals_transformers_qwen3_vl_video_processor(cap, tmp_path):
    """Grid sizes, with and without the per-frame pixel cap, against transformers' own count (its pixel path needs
    torchvision, which has no CPU build)."""
    from transformers.models.qwen3_vl.video_processing_qwen3_vl import Qwen3VLVideoProcessor

    ref = Qwen3VLVideoProcessor(cap_pixels_per_frame=cap)
    cfg = qwen.VideoProcessorConfig(patch_size=16, family="qwen3_vl", min_pixels=ref.size["shortest_edge"],
                                    max_pixels=ref.size["longest_edge"], cap_pixels_per_frame=cap)
    grids = []
    for n, h, w in ((16, 480, 640), (4, 360, 640), (32, 240, 320), (8, 1080, 1920), (2, 64, 48)):
        t, gh, gw = qwen.process_video(np.zeros((n, h, w, 3), np.uint8), cfg)["video_grid_thw"][0]
        assert t * gh * gw == ref.get_num_of_video_patches(n, h, w), (n, h, w)
        grids.append(t * gh * gw)
    if cap:  # the cap changes the grid of a 16-frame 480x640 clip (4160 patches, uncapped 1536)
        assert grids[0] == 4160
    # the model's own setting is what applies
    (tmp_path / "video_preprocessor_config.json").write_text(json.dumps(
        {"video_processor_type": "Qwen3VLVideoProcessor", "cap_pixels_per_frame": cap, "max_video_tokens": 512}))
    read = qwen.VideoProcessorConfig.from_model_dir(str(tmp_path))
    assert (read.cap_pixels_per_frame, read.max_video_tokens) == (cap, 512)


def test_train_gsm_with_vega_on_qwen3_overfits_and_eval_run_answers(cli, data):
    root, base, scenes, qa = data
    out = root / "run"
    r = cli("train-gsm", "--qa", qa, "--out", out, "--scenes", scenes, "--base", base, "--fusion", "vega",
            "--geometry", "pointmap", "--queries", "4", "--geo-grid", "2", "--lora-rank", "16", "--lora-dropout", "0",
            "--lr", "5e-3", "--batch-size", "16", "--num-frames", "4", "--max-steps", "30", "--warmup-ratio", "0.1",
            "--quiet")
    assert r.exit_code == 0, r.output
    losses = [json.loads(line)["loss"] for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert losses[-1] < 0.2 and losses[-1] < 0.1 * losses[0], losses
    preds = root / "preds.jsonl"
    assert_eval_run_answers_all(cli, qa, out, scenes, preds, "--frames", "4")
