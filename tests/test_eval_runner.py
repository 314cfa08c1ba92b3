"""`eval run` end to end on a tiny random Qwen2.5-VL saved to disk: scene-store and video frames, batching,
resume after an interruption, LoRA and LoRA + GSM adapters, then `eval qa` on what it wrote."""

import json

import numpy as np
import pytest
import torch
from tiny_qwen import make_tiny_qwen

from spatialctl import qwen
from spatialctl.errors import SpatialctlError
from spatialctl.qa_format import QARecord, write_qa
from spatialctl.stages.eval.runner import RunnerConfig, read_done, run, sample_video
from spatialctl.video import write_video


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    return make_tiny_qwen(tmp_path_factory.mktemp("tiny_qwen"))


def records(video: str | None = None) -> list[QARecord]:
    out = [
        QARecord(id="q1", scene="scene", question="Which is closer?", answer="B", answer_type="mc", family="vsi",
                 type="object_rel_distance", options=["sofa", "lamp", "bed", "desk"], frames=[0, 1, 2]),
        QARecord(id="q2", scene="scene", question="How far apart (m)?", answer=2.0, answer_type="number",
                 family="vsi", type="object_abs_distance", unit="m"),
        QARecord(id="q3", scene="scene", question="How many chairs?", answer=3.0, answer_type="number",
                 family="vsi", type="object_counting"),
    ]
    if video:
        out.append(QARecord(id="q4", scene="elsewhere", question="How many lamps?", answer=1.0,
                            answer_type="number", family="vsi", type="object_counting", video=video,
                            timestamps=[0.2, 0.5]))
    return out


@pytest.fixture
def qa_setup(tmp_path, make_scene):
    make_scene("scene.zarr", n=4, h=28, w=28)
    rng = np.random.default_rng(0)
    write_video(str(tmp_path / "clip.mp4"), rng.integers(0, 255, (10, 32, 32, 3), dtype=np.uint8), 10.0)
    qa = tmp_path / "qa.jsonl"
    write_qa(qa, records(video="clip.mp4"))
    return tmp_path, str(qa)


def lines(path) -> list[dict]:
    return [json.loads(x) for x in open(path).read().splitlines()]


def test_sample_video_spreads_frames(tmp_path):
    frames = np.zeros((10, 16, 16, 3), np.uint8)
    frames[:, 0, 0, 0] = np.arange(10) * 20  # frame index written into a pixel
    write_video(str(tmp_path / "v.mp4"), frames, 10.0, lossless=True)
    got, times = sample_video(str(tmp_path / "v.mp4"), 4)
    assert len(got) == 4 and times[0] == pytest.approx(0.0) and times[-1] == pytest.approx(0.9)
    np.testing.assert_allclose(got[:, 0, 0, 0], [0, 60, 120, 180], atol=6)
    got, times = sample_video(str(tmp_path / "v.mp4"), 8, timestamps=[0.3, 0.5])
    np.testing.assert_allclose(times, [0.3, 0.5])


def test_runner_end_to_end_and_resume(qa_setup, tiny_model, cli):
    tmp_path, qa = qa_setup
    out = tmp_path / "preds.jsonl"
    cfg = RunnerConfig(out=str(out), model=tiny_model, num_frames=4, max_new_tokens=4, scenes_dir=str(tmp_path),
                       batch_size=2, device="cpu")
    res = run(cfg, qa)
    assert len(res.done) == 4 and not res.skipped
    first = lines(out)
    assert [r["id"] for r in first] == ["q1", "q2", "q3", "q4"]
    assert all(isinstance(r["prediction"], str) for r in first)
    assert first[0]["answer"] == "B" and first[1]["answer"] == 2.0 and first[0]["type"] == "object_rel_distance"

    # Greedy decoding is deterministic: the same inputs give the same answers, one at a time or batched.
    single = tmp_path / "single.jsonl"
    run(RunnerConfig(out=str(single), model=tiny_model, num_frames=4, max_new_tokens=4, scenes_dir=str(tmp_path),
                     device="cpu"), qa)
    assert [r["prediction"] for r in lines(single)] == [r["prediction"] for r in first]

    # An interrupted run: two answers written, the third torn mid-line. Resume redoes only what is missing.
    text = out.read_text().splitlines(keepends=True)
    out.write_text("".join(text[:2]) + text[2][:10])
    assert read_done(out) == {"q1", "q2"}
    res = run(cfg, qa)
    assert len(res.done) == 2 and len(res.skipped) == 2
    assert lines(out) == first

    # Everything done: nothing is loaded or rerun.
    assert run(cfg, qa).done == []
    # Another model setting on the same file is refused rather than mixed in.
    with pytest.raises(SpatialctlError, match="another config"):
        run(RunnerConfig(out=str(out), model=tiny_model, num_frames=2, max_new_tokens=4, scenes_dir=str(tmp_path),
                         device="cpu"), qa)

    # The predictions carry their truth, so `eval qa` scores them without --gt.
    r = cli("eval", "qa", str(out), "--bench", "ours", "--out", str(tmp_path / "rep"), "--n-boot", "50", "--no-plots")
    assert r.exit_code == 0, r.output
    rep = json.loads((tmp_path / "rep" / "report.json").read_text())
    assert rep["n_items"] == 4 and rep["n_missing"] == 0
    assert set(rep["tasks"]) == {"object_rel_distance", "object_abs_distance", "object_counting"}


def _lora_adapter(tiny_model: str, out_dir: str, with_gsm: bool) -> None:
    from peft import LoraConfig, get_peft_model

    from spatialctl import gsm

    torch.manual_seed(1)
    tok = qwen.load_tokenizer(tiny_model)
    base = qwen.load_model(tiny_model)
    peft_model = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
    with torch.no_grad():  # a trained adapter, not the identity that peft starts from
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
    gsm_cfg = None
    module = None
    if with_gsm:
        gsm_cfg = gsm.GSMConfig(hidden_size=64, num_queries=4, geometry=("pointmap",), geo_grid=2, pointmap_patch=2)
        module = gsm.GeometrySelectionModule(gsm_cfg)
    wrapped = gsm.GeometryVLM(peft_model, module, tok.convert_tokens_to_ids(qwen.GEO_PAD) if with_gsm else None)
    gsm.save_adapter(out_dir, wrapped, gsm_cfg, base=tiny_model)


@pytest.mark.parametrize("with_gsm", [False, True])
def test_runner_with_adapter(qa_setup, tiny_model, with_gsm, cli):
    tmp_path, qa = qa_setup
    adapter = str(tmp_path / "adapter")
    _lora_adapter(tiny_model, adapter, with_gsm)
    scene_only = tmp_path / "scene_qa.jsonl"
    write_qa(scene_only, records())
    base_out, ad_out = tmp_path / "base.jsonl", tmp_path / "adapted.jsonl"
    common = dict(num_frames=4, max_new_tokens=6, scenes_dir=str(tmp_path), device="cpu")
    run(RunnerConfig(out=str(base_out), model=tiny_model, **common), str(scene_only))
    # --model left out: the adapter's recorded base model is used (through the CLI, as a user runs it).
    r = cli("eval", "run", "--adapter", adapter, "--qa", str(scene_only), "--out", str(ad_out), "--frames", "4",
            "--max-new-tokens", "6", "--scenes", str(tmp_path), "--device", "cpu", "--batch-size", "3", "--quiet")
    assert r.exit_code == 0, r.output
    adapted = lines(ad_out)
    assert [x["id"] for x in adapted] == ["q1", "q2", "q3"] and adapted[0]["adapter"] == adapter
    assert [x["prediction"] for x in adapted] != [x["prediction"] for x in lines(base_out)]
    if with_gsm:  # the geometry module needs scene stores: a video-only record is a one-line error
        r = cli("eval", "run", "--adapter", adapter, "--qa", qa, "--out", str(tmp_path / "v.jsonl"), "--frames", "4",
                "--device", "cpu", "--quiet")
        assert r.exit_code == 1 and "scene store" in r.output


def test_missing_model_is_a_one_line_error(qa_setup, cli):
    tmp_path, qa = qa_setup
    r = cli("eval", "run", "--model", "nobody/no-such-model", "--qa", qa, "--out", str(tmp_path / "p.jsonl"))
    assert r.exit_code == 1
    assert "huggingface-cli download nobody/no-such-model" in r.output
