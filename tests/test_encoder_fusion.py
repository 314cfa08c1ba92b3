"""train-gsm --fusion encoder: an AutoModel encoder's (tiny DINOv3) patch features fused into the video tokens;
overfits 16 items from the CLI on tiny random Qwen2.5-VL and Qwen3-VL, and `eval run` answers them."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from boost_tiny import make_tiny_encoder
from gsm_fixtures import assert_eval_run_answers_all, make_records, make_scenes, write_records
from tiny_qwen import make_tiny_qwen, make_tiny_qwen3

from spatialctl import vega


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("encfusion")
    enc = make_tiny_encoder(root / "dinov3")
    scenes = make_scenes(root, genfeat=False, size=64)
    qa = write_records(root / "qa.jsonl", make_records(16))
    return root, enc, scenes, qa


def test_encoder_features_are_the_encoders_patch_tokens(data):
    from transformers import DINOv3ViTModel

    _, enc, _, _ = data
    feats = vega.EncoderFeatures(enc)
    frames = np.random.default_rng(0).integers(0, 255, (3, 64, 64, 3), dtype=np.uint8)
    got = feats(frames)
    assert got.shape == (3, 28, 28, 32)  # no preprocessor_config.json: 224x224 area at patch 8
    model = DINOv3ViTModel.from_pretrained(enc).eval()
    pixels, grid = feats.prep(frames)
    with torch.no_grad():
        hidden = model(pixel_values=torch.from_numpy(pixels)).last_hidden_state
    # CLS + 2 register tokens first, then the patch grid row by row
    np.testing.assert_allclose(got.reshape(3, -1, 32), hidden[:, 3:].numpy(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("family", ["qwen2_5_vl", "qwen3_vl"])
def test_train_gsm_fusion_encoder_overfits_and_eval_run_answers(cli, data, family):
    root, enc, scenes, qa = data
    base = (make_tiny_qwen if family == "qwen2_5_vl" else make_tiny_qwen3)(root / f"tiny-{family}")
    out = root / f"run-{family}"
    r = cli("train-gsm", "--qa", qa, "--out", out, "--scenes", scenes, "--base", base, "--no-gsm",
            "--fusion", "encoder", "--fusion-encoder", enc, "--lora-rank", "16", "--lora-dropout", "0", "--lr", "5e-3",
            "--batch-size", "16", "--num-frames", "4", "--max-steps", "40", "--warmup-ratio", "0.1", "--quiet")
    assert r.exit_code == 0, r.output
    assert json.loads((out / vega.VEGA_CONFIG).read_text())["encoder"] == enc
    losses = [json.loads(line)["loss"] for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert losses[-1] < 0.2 and losses[-1] < 0.1 * losses[0], losses
    preds = root / f"preds-{family}.jsonl"
    assert_eval_run_answers_all(cli, qa, out, scenes, preds, "--frames", "4")
