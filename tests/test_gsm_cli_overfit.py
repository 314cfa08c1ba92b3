"""The GSM mode alone (no fusion, no boost) from the CLI: 16 items overfit on tiny random Qwen2.5-VL and Qwen3-VL,
and `eval run` answers every one of them through the saved adapter (issue #19's done-when for the GSM mode)."""

from __future__ import annotations

import json

import pytest
from gsm_fixtures import assert_eval_run_answers_all, make_records, make_scenes, write_records
from tiny_qwen import make_tiny_qwen, make_tiny_qwen3

from spatialctl import gsm, vega


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("gsmcli")
    scenes = make_scenes(root, genfeat=False, size=64)
    qa = write_records(root / "qa.jsonl", make_records(16))
    return root, scenes, qa


@pytest.mark.parametrize("family", ["qwen2_5_vl", "qwen3_vl"])
def test_train_gsm_overfits_and_eval_run_answers(cli, data, family):
    root, scenes, qa = data
    base = (make_tiny_qwen if family == "qwen2_5_vl" else make_tiny_qwen3)(root / f"tiny-{family}")
    out = root / f"run-{family}"
    r = cli("train-gsm", "--qa", qa, "--out", out, "--scenes", scenes, "--base", base, "--geometry", "pointmap",
            "--queries", "4", "--geo-grid", "2", "--lora-rank", "16", "--lora-dropout", "0", "--lr", "5e-3",
            "--batch-size", "16", "--num-frames", "4", "--max-steps", "30", "--warmup-ratio", "0.1", "--quiet")
    assert r.exit_code == 0, r.output
    assert (out / gsm.GSM_WEIGHTS).is_file() and not (out / vega.VEGA_WEIGHTS).exists()
    losses = [json.loads(line)["loss"] for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert losses[-1] < 0.2 and losses[-1] < 0.1 * losses[0], losses
    preds = root / f"preds-{family}.jsonl"
    assert len(assert_eval_run_answers_all(cli, qa, out, scenes, preds, "--frames", "4")) == 16


def test_eval_asks_a_video_adapter_at_its_training_resolution(cli, data, tmp_path, monkeypatch):
    """An adapter trained with --max-pixels (train_config.json) is shown its frames at that size by `eval run`, not
    at the video processor's default: 64x64 frames -> 28x28 at 2*28*28 pixels per frame (Qwen2.5-VL bounds each frame), 56x56 by default."""
    import shutil

    from spatialctl import qwen

    root, scenes, _ = data
    adapter = tmp_path / "adapter"
    shutil.copytree(root / "run-qwen2_5_vl", adapter, ignore=shutil.ignore_patterns("checkpoints"))
    train = json.loads((adapter / "train_config.json").read_text())
    grids = []
    process = qwen.process_video

    def spy(frames, cfg):
        out = process(frames, cfg)
        grids.append(out["video_grid_thw"].tolist())
        return out

    monkeypatch.setattr(qwen, "process_video", spy)
    qa = write_records(tmp_path / "qa.jsonl", make_records(1))
    for max_pixels, grid in ((0, [[2, 4, 4]]), (2 * 28 * 28, [[2, 2, 2]])):  # 4 frames: 2 temporal patches
        train["config"]["max_pixels"] = max_pixels  # as `train-gsm --max-pixels N` records it
        (adapter / "train_config.json").write_text(json.dumps(train))
        grids.clear()
        r = cli("eval", "run", "--qa", qa, "--adapter", adapter, "--scenes", scenes, "--frames", "4",
                "--out", tmp_path / f"p{max_pixels}.jsonl", "--max-new-tokens", "1", "--quiet")
        assert r.exit_code == 0, r.output
        assert grids == [grid], (max_pixels, grids)
