"""VEGA-3D fusion: the module against the released definition, the generative-token grid, and train-gsm
--fusion vega overfitting 16 items from the CLI, answered by `eval run`."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from gsm_fixtures import assert_eval_run_answers_all, make_records, make_scenes, write_records
from tiny_qwen import make_tiny_qwen
from torch import nn

from spatialctl import qwen, vega


# The released definition (H-EmbodVis/VEGA-3D @ 9c96924, llava/model/feature_fusion.py FeatureFusionModule with
# fusion_method="token_gated", and the generative projector from llava/model/multimodal_projector/builder.py's
# "mlp2x_gelu"), written here from that definition; the residual variant as issue 19 states it.
class ReleasedTokenGated(nn.Module):
    def __init__(self, hidden_size, gen_dim):
        super().__init__()
        self.generative_projector = nn.Sequential(nn.Linear(gen_dim, hidden_size), nn.GELU(),
                                                  nn.Linear(hidden_size, hidden_size))
        self.norm1 = nn.LayerNorm(hidden_size)
        self.norm2 = nn.LayerNorm(hidden_size)
        self.gate_projection = nn.Sequential(nn.Linear(hidden_size * 2, 1), nn.Sigmoid())

    def forward(self, features_2d, features_gen_raw, residual=False):
        features_gen = self.generative_projector(features_gen_raw)
        f2d = self.norm1(features_2d)
        fgen = self.norm2(features_gen)
        gate = self.gate_projection(torch.cat([f2d, fgen], dim=-1))
        mixed = gate * f2d + (1.0 - gate) * fgen
        return features_2d + 0.2 * (mixed - features_2d) if residual else mixed


@pytest.mark.parametrize("method", vega.METHODS)
def test_fusion_equals_the_released_definition_on_the_same_weights(method):
    torch.manual_seed(0)
    ours = vega.VegaFusion(vega.VegaConfig(hidden_size=32, gen_dim=12, method=method))
    ref = ReleasedTokenGated(32, 12)
    with torch.no_grad():  # random, non-default weights everywhere (LayerNorm affine included)
        for p in ours.parameters():
            p.normal_(0, 0.3)
    mapping = {"projector": "generative_projector", "norm_2d": "norm1", "norm_gen": "norm2",
               "gate.": "gate_projection.0."}
    state = {}
    for k, v in ours.state_dict().items():
        for a, b in mapping.items():
            if k.startswith(a):
                k = b + k[len(a):]
                break
        state[k] = v
    ref.load_state_dict(state)
    f2d, fgen = torch.randn(2, 49, 32) * 3 + 1, torch.randn(2, 49, 12)
    out = ours(f2d, fgen)
    expected = ref(f2d, fgen, residual=method == "token_gated_residual")
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
    # the gate is one value per token: mixing a token with itself (same normalised input) returns it
    assert not torch.allclose(out, f2d)


def test_generative_tokens_follow_the_merged_visual_grid():
    frames = np.random.default_rng(0).integers(0, 255, (3, 112, 168, 3), dtype=np.uint8)
    cfg = qwen.VideoProcessorConfig(min_pixels=56 * 56, max_pixels=112 * 168)
    video = qwen.process_video(frames, cfg)
    t, gh, gw = video["video_grid_thw"][0]
    feats = np.zeros((3, 8, 12, 5), np.float32)
    feats[..., 0] = np.arange(3)[:, None, None]  # channel 0: frame index
    feats[:, :, :, 1] = np.arange(12)[None, None, :]  # channel 1: column
    tokens = vega.gen_tokens(feats, video["video_grid_thw"])
    assert tokens.shape == (qwen.video_token_count(video["video_grid_thw"]), 5)
    grid = tokens.reshape(t, gh // 2, gw // 2, 5)
    # frames (0, 1) form patch 0; the padded (2, 2) patch 1, as the processor repeats the last frame
    np.testing.assert_allclose(grid[0, ..., 0], 0.5)
    np.testing.assert_allclose(grid[1, ..., 0], 2.0)
    # 12 columns pooled to the merged grid's gw/2 = 6 cells: means of column pairs
    assert (gh // 2, gw // 2) == (4, 6)
    np.testing.assert_allclose(grid[0, 0, :, 1], [0.5, 2.5, 4.5, 6.5, 8.5, 10.5])
    with pytest.raises(Exception, match="temporal patches"):
        vega.gen_tokens(feats[:1], video["video_grid_thw"])


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("vega")
    base = make_tiny_qwen(root / "tinyq")
    scenes = make_scenes(root, genfeat=True)
    qa = write_records(root / "qa.jsonl", make_records(16))
    return root, base, scenes, qa


@pytest.mark.parametrize("with_gsm", [False, True])
def test_train_gsm_fusion_vega_overfits_and_eval_run_answers(cli, data, with_gsm):
    root, base, scenes, qa = data
    out = root / f"run-gsm{int(with_gsm)}"
    args = ["train-gsm", "--qa", qa, "--out", out, "--scenes", scenes, "--base", base, "--fusion", "vega",
            "--lora-rank", "16", "--lora-dropout", "0", "--lr", "5e-3", "--batch-size", "16", "--num-frames", "4",
            "--max-steps", "30", "--warmup-ratio", "0.1", "--quiet"]
    args += ["--queries", "4", "--geo-grid", "2", "--geometry", "pointmap"] if with_gsm else ["--no-gsm"]
    r = cli(*args)
    assert r.exit_code == 0, r.output
    assert (out / vega.VEGA_WEIGHTS).is_file() and (out / "gsm.safetensors").is_file() == with_gsm
    assert json.loads((out / vega.VEGA_CONFIG).read_text())["gen_dim"] == 8
    losses = [json.loads(line)["loss"] for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert losses[-1] < 0.2 and losses[-1] < 0.1 * losses[0], losses

    preds = root / f"preds-gsm{int(with_gsm)}.jsonl"
    lines = assert_eval_run_answers_all(cli, qa, out, scenes, preds, "--frames", "4")
    assert len({x["answer"] for x in lines}) == 4

    # scenes without generative features: a one-line error naming what is missing, no predictions file
    bare = make_scenes(root / f"bare{int(with_gsm)}", genfeat=False)
    r = cli("eval", "run", "--qa", qa, "--adapter", out, "--scenes", bare, "--frames", "4", "--out", root / f"none{int(with_gsm)}.jsonl",
            "--quiet")
    assert r.exit_code != 0 and "genfeat" in r.output, r.output


def _released_resize_center_crop(frames, out_h, out_w):
    # VEGA-3D @ 9c96924, llava/model/multimodal_generative_encoder/common.py resize_center_crop, from its definition
    n, c, h, w = frames.shape
    scale = max(out_h / h, out_w / w)
    new_h, new_w = max(1, int(round(h * scale))), max(1, int(round(w * scale)))
    x = torch.nn.functional.interpolate(frames, size=(new_h, new_w), mode="bilinear", align_corners=False)
    top, left = max(0, (new_h - out_h) // 2), max(0, (new_w - out_w) // 2)
    return x[:, :, top:top + out_h, left:left + out_w]


@pytest.mark.parametrize("hw", [(72, 128), (96, 96), (50, 140)])
def test_genfeat_frames_are_resized_and_centre_cropped_as_released(hw):
    from spatialctl.models import wan_features as wf

    frames = torch.randint(0, 256, (1, 2, *hw, 3), dtype=torch.uint8)
    video = wf.frames_to_video(frames, (32, 48))  # (1, 3, T, 32, 48)
    x = frames[0].permute(0, 3, 1, 2).float() / 127.5 - 1.0  # the release maps to [-1, 1] before resizing
    expected = _released_resize_center_crop(x, 32, 48).clamp(-1, 1)
    torch.testing.assert_close(video[0].permute(1, 0, 2, 3), expected)
    assert wf.parse_resolution("1280x720") == (720, 1280)
