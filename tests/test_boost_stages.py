"""The three boost-encoder stages: what each trains, and a tiny run from the CLI end to end."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch
from boost_tiny import make_tiny_encoder, make_tiny_llm
from PIL import Image

from spatialctl import boost, qa_format
from spatialctl.errors import SpatialctlError


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    return make_tiny_encoder(root / "enc", "dinov3"), make_tiny_llm(root / "llm")


def _records(tmp_path, n=2) -> list[qa_format.QARecord]:
    out = []
    for i in range(n):
        image = tmp_path / f"{i:06d}.png"
        Image.fromarray(np.random.default_rng(i).integers(0, 256, (24, 32, 3), dtype=np.uint8)).save(image)
        history = [{"question": "What is the depth at pixel (3, 4) of this image?", "answer": 1.5 + i,
                    "answer_type": "number", "unit": "m", "options": None}]
        out.append(qa_format.QARecord(id=f"r{i}", scene="s", question="Describe the layout of this image briefly.",
                                      answer="a cup 1 m away ahead", answer_type="text", family="multiturn",
                                      type="hierarchical", frames=[i], images=[str(image)], history=history,
                                      metadata={"frame": i}))
    return out


def _models(models_dir, stage_llm_lora=False):
    from spatialctl.stages.boost_encoder import projector, train

    enc_dir, llm_dir = models_dir
    tokenizer, llm, _ = train.load_llm(llm_dir, torch.float32, torch.device("cpu"))
    encoder, family, path = boost.load_encoder(enc_dir)
    prep = boost.ImagePrep.for_model(encoder, family, path, 32)
    torch.manual_seed(0)
    proj = projector.Projector(32, 32, 1)
    return tokenizer, train.Models(encoder, family, prep, proj, llm, torch.device("cpu"), torch.float32)


def _snapshot(models):
    return {f"{part}:{n}": p.detach().clone() for part in ("encoder", "projector", "llm")
            for n, p in getattr(models, part).named_parameters()}


def test_chat_encoding_supervises_only_answers(models_dir, tmp_path):
    from spatialctl.stages.boost_encoder import data

    tokenizer, _ = _models(models_dir)
    record = _records(tmp_path, 1)[0]
    pre, post, labels = data.encode_chat(tokenizer, data.turns_for_stage(record, 2), 1024)
    assert len(post) == len(labels)
    supervised = tokenizer.decode([t for t, lab in zip(post, labels, strict=True) if lab != data.IGNORE])
    assert supervised == "1.5<|im_end|>a cup 1 m away ahead<|im_end|>"
    assert tokenizer.decode(pre).endswith("<|im_start|>user\n")
    # Stage 1 aligns on the last turn only.
    assert len(data.turns_for_stage(record, 1)) == 1 and len(data.turns_for_stage(record, 3)) == 2
    with pytest.raises(SpatialctlError, match="multi-turn"):
        data.select_records([qa_format.QARecord(**{**record.to_dict(), "family": "static"})], 3, "qa.jsonl")


@pytest.mark.parametrize("stage", [1, 3])
def test_stage_trains_exactly_its_parameters(models_dir, tmp_path, stage):
    from spatialctl.stages.boost_encoder import data, train

    tokenizer, models = _models(models_dir)
    if stage == 3:
        boost.wrap(models.encoder, models.family, None)
    examples = data.build_examples(_records(tmp_path), stage, tokenizer, data.FrameSource(str(tmp_path)), 256)
    before = _snapshot(models)
    # Two steps: the gates' gradient is exactly 0 while Attn⁺ still equals Attn, so they move from step 2 on.
    stats = train.train(models, examples, stage, lr=1e-2, epochs=1, max_steps=2, seed=0)
    assert stats["steps"] == 2 and np.isfinite(stats["first_loss"])
    after = _snapshot(models)
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    if stage == 3:
        allowed = {k for k in before if k.startswith("encoder:") and (".plus." in k or k.endswith(".a"))}
        must = {k for k in allowed if k.endswith(".a") or k.endswith("_proj.weight")}
    else:
        allowed = {k for k in before if k.startswith("projector:")}
        must = allowed
    assert changed <= allowed, sorted(changed - allowed)[:3]
    assert must <= changed, sorted(must - changed)[:3]
    assert len(must) >= 2


def test_stage3_requires_grad_set(models_dir):
    from spatialctl.stages.boost_encoder import train

    _, models = _models(models_dir)
    boost.wrap(models.encoder, models.family, [0])
    params = train.stage_parameters(models, 3)
    names = {f"{part}:{n}" for part in ("encoder", "projector", "llm")
             for n, p in getattr(models, part).named_parameters() if p.requires_grad}
    plus = {f"encoder:{n}" for n, _ in models.encoder.named_parameters() if ".plus." in n or n.endswith(".a")}
    assert names == plus and len(params) == len(plus)
    assert all(".layer.0." in n for n in names)


def test_cli_three_stages_end_to_end(models_dir, tmp_path, cli, monkeypatch):
    enc_dir, llm_dir = models_dir
    monkeypatch.chdir(tmp_path)
    r = cli("synth", "s0", "--seed", "0", "--frames", "4", "--size", "64x48", "--quiet")
    assert r.exit_code == 0, r.output
    r = cli("make-qa", "s0/scene.zarr", "--families", "multiturn", "--per-scene", "2", "--out", "multiturn.jsonl",
            "--quiet")
    assert r.exit_code == 0, r.output
    records = qa_format.read_qa("multiturn.jsonl")
    assert records and all(len(rec.turns()) > 2 for rec in records)

    r = cli("boost-encoder", "--encoder", enc_dir, "--llm", llm_dir, "--qa", "multiturn.jsonl", "--stage", "all",
            "--out", "boost", "--image-size", "32", "--max-steps", "2", "--max-length", "256", "--lr-boost", "1e-2",
            "--merge", "--quiet")
    assert r.exit_code == 0, r.output
    result = json.loads(r.stdout.strip().splitlines()[-1])
    assert set(result["stages"]) == {"1", "2", "3"} and all(s["steps"] == 2 for s in result["stages"].values())
    for name in ("projector.safetensors", "llm_lora/adapter_config.json", "boost.safetensors", "boost_config.json",
                 "merged/config.json", "train_state.json", "train_log.jsonl"):
        assert os.path.exists(tmp_path / "boost" / name), name
    config = json.loads((tmp_path / "boost" / "boost_config.json").read_text())
    assert config["family"] == "dinov3" and config["layers"] == [0, 1] and config["encoder"] == enc_dir

    # The delta applies to the base encoder; it moved away from identity; merged and wrapped agree exactly.
    wrapped = boost.load(enc_dir, str(tmp_path / "boost"))
    merged = boost.load(str(tmp_path / "boost" / "merged"))
    base, family, _ = boost.load_encoder(enc_dir)
    frames = np.random.default_rng(0).integers(0, 256, (1, 32, 32, 3), dtype=np.uint8)
    prep = boost.ImagePrep(8, family.mean, family.std, 32)
    pixels, grid = prep(frames)
    with torch.no_grad():
        out = [boost.patch_features(m, family, boost.model_inputs(family, pixels, grid, 8), grid)
               for m in (wrapped, merged, base)]
    assert (out[0] - out[1]).abs().max().item() == 0.0
    assert (out[0] - out[2]).abs().max().item() > 0.0

    # Stage 3 alone resumes from the saved projector and LoRA.
    r = cli("boost-encoder", "--encoder", enc_dir, "--llm", llm_dir, "--qa", "multiturn.jsonl", "--stage", "3",
            "--out", "boost", "--image-size", "32", "--max-steps", "1", "--max-length", "256", "--quiet")
    assert r.exit_code == 0, r.output
    assert (tmp_path / "boost" / "boost.safetensors").exists()
    assert not (tmp_path / "boost" / "merged").exists()  # made from the replaced delta, so removed
    # The probe, before and after boosting, from the CLI.
    r = cli("eval", "probe", "--encoder", enc_dir, "--boost", "boost", "--scenes", "s0", "--image-size", "32",
            "--out", "probe.json", "--quiet")
    assert r.exit_code == 0, r.output
    report = json.loads((tmp_path / "probe.json").read_text())
    assert np.isfinite(report["base"]["abs_rel"]) and np.isfinite(report["boosted"]["abs_rel"])
    assert report["abs_rel_change"] == pytest.approx(report["boosted"]["abs_rel"] - report["base"]["abs_rel"])


def test_cli_errors(models_dir, tmp_path, cli):
    enc_dir, llm_dir = models_dir
    qa = tmp_path / "qa.jsonl"
    qa_format.write_qa(qa, _records(tmp_path))
    r = cli("boost-encoder", "--encoder", enc_dir, "--llm", llm_dir, "--qa", str(qa), "--stage", "2",
            "--out", str(tmp_path / "empty"), "--quiet")
    assert r.exit_code == 1 and "run stage 1 first" in r.output
    r = cli("boost-encoder", "--encoder", enc_dir, "--llm", llm_dir, "--qa", str(qa), "--stage", "5",
            "--out", str(tmp_path / "o"))
    assert r.exit_code == 2
    r = cli("boost-encoder", "--encoder", enc_dir, "--llm", "nobody/no-llm", "--qa", str(qa), "--out",
            str(tmp_path / "o"), "--quiet")
    assert r.exit_code == 1 and "huggingface-cli download nobody/no-llm" in r.output


def test_a_run_killed_in_its_first_stage_can_be_run_again(models_dir, tmp_path):
    """The state file is written before training, so the log of a run killed mid-stage is ours to replace."""
    from spatialctl.stages.boost_encoder import BoostConfig, run

    enc_dir, llm_dir = models_dir
    qa = tmp_path / "qa.jsonl"
    qa_format.write_qa(qa, _records(tmp_path))

    def killed(it, desc):
        for i, x in enumerate(it):
            if i == 1:
                raise KeyboardInterrupt
            yield x

    cfg = BoostConfig(encoder=enc_dir, llm=llm_dir, out=str(tmp_path / "o"), stage="1", image_size=32, max_steps=3,
                      max_length=256, quiet=True)
    with pytest.raises(KeyboardInterrupt):
        run(cfg, [str(qa)], killed)
    assert (tmp_path / "o" / "train_log.jsonl").exists()
    summary = run(cfg, [str(qa)])
    assert summary.details["1"]["steps"] == 3
