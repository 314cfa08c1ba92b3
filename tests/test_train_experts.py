"""--experts scale on a tiny random Qwen2.5-VL: one LoRA per scale, a peft X-LoRA router that learns to tell
the scales apart, and a saved run that loads through the path `eval run --adapter` takes."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from gsm_fixtures import make_scenes, write_records
from safetensors.torch import load_file
from tiny_qwen import make_tiny_qwen

from spatialctl import gsm, qa_format, qwen, store
from spatialctl.errors import SpatialctlError
from spatialctl.stages.train_gsm import TrainGSMConfig, run
from spatialctl.stages.train_gsm.config import ExpertsConfig
from spatialctl.stages.train_gsm.experts import decision_stats, record_scales, separation

# Two scales built to be separable: tabletop questions (scene s0, small objects) always answer A, outdoor
# questions (scene s1, street objects) always answer C. Only a router that follows the scale gets both right.
SCALE_DATA = {
    "tabletop": ("s0", "A", ["red cube", "blue sphere", "green box", "lamp"]),
    "outdoor": ("s1", "C", ["yellow car", "person", "table", "chair"]),
}


def scale_records(n_per_scale: int = 4) -> list[qa_format.QARecord]:
    records = []
    for scale, (scene, answer, objects) in SCALE_DATA.items():
        for i in range(n_per_scale):
            a, b = objects[i % 4], objects[(i + 1) % 4]
            records.append(qa_format.QARecord(
                id=f"{scale}{i}", scene=scene, question=f"Which object is closer to the camera, the {a} or the {b}? ({i})",
                answer=answer, answer_type="mc", family="spacevista", type="rel_distance",
                options=[a, b, "same distance", "not visible"], scale=scale, frames=[0, 1]))
    return records


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("experts")
    base = make_tiny_qwen(root / "tinyq")
    scenes = make_scenes(root)
    qa = write_records(root / "qa.jsonl", scale_records())
    return base, scenes, qa


def _cfg(data, out, **kw) -> TrainGSMConfig:
    base, scenes, qa = data
    args = dict(qa=qa, out=str(out), scenes=scenes, base=base, experts=ExpertsConfig(mode="scale", router_lr=1e-2),
                lora_rank=8, lora_dropout=0.0, lr=1e-2, batch_size=8, num_frames=2, queries=4, geo_grid=2,
                warmup_ratio=0.0, max_steps=40, gsm=False,
                gradient_checkpointing=False, save_every=1000, quiet=True)
    return TrainGSMConfig(**{**args, **kw})


def test_scale_experts_train_route_save_and_load(data, tmp_path):
    out = tmp_path / "run"
    result = run(_cfg(data, out)).details
    # phase 1: one expert per scale, each fitted to its own scale's records
    assert set(result.experts) == {"tabletop", "outdoor"}
    for scale, r in result.experts.items():
        assert r.losses[-1] < 0.2 * r.losses[0], (scale, r.losses)
        assert (out / "experts" / scale / "adapter_model.safetensors").is_file()
    # phase 2: only the router trains (no GSM here: it would be a second way to tell the scales apart), and the
    # routing loss falls
    info = json.loads((out / "train_config.json").read_text())
    assert info["router"]["experts"] == {"tabletop": "experts/tabletop", "outdoor": "experts/outdoor"}
    router = load_file(out / "adapter_model.safetensors")
    assert router and all(k.startswith("layers.") for k in router)
    assert result.losses[-1] < 0.5 * result.losses[0], result.losses

    # the usage report, at the position that decides the answer: shares over both experts per scale, entropies
    # within [0, log E], and routing that differs between the scales (a router blind to the scale gives ~0)
    usage = json.loads((out / "router_usage.json").read_text())
    assert usage["experts"] == ["tabletop", "outdoor"]
    for scale in ("tabletop", "outdoor"):
        per = usage["per_scale"][scale]
        assert per["records"] == 4 and sum(per["share"].values()) == pytest.approx(1.0, abs=1e-4)
        assert len(per["share_per_layer"]["outdoor"]) == 14  # 2 decoder layers x 7 LoRA targets
        assert 0 <= per["entropy"] <= usage["max_entropy"]
    assert usage["separation"] > 0.04, usage  # measured 0.07-0.09 (seeds 0, 1); 0 for a scale-blind router
    assert usage["own_expert_rate"] in (0.0, 0.125, 0.25, 0.375, 0.5, 0.625, 0.75, 0.875, 1.0)

    # the saved run loads and answers through eval's loading path (base model + load_adapter + generate)
    base, scenes, qa = data
    tok = qwen.load_tokenizer(base)
    model = gsm.load_adapter(qwen.load_model(base), str(out), tokenizer=tok)
    assert model.xlora is not None
    vc = qwen.VideoProcessorConfig.from_model_dir(base)
    records = scale_records()
    examples = [gsm.prepare_example(r, store.resolve_scene(r.scene, scenes), tok, vc, None, num_frames=2,
                                    with_answer=False) for r in records]
    answers = model.answer(examples, tok, max_new_tokens=2)
    # Base and experts are frozen and shared, so only routing that follows the scale answers both scales right
    # (tabletop always A, outdoor always C).
    assert answers == [r.answer for r in records], answers
    assert torch.equal(model.xlora.internal_xlora_classifier.layers[0].weight, router["layers.0.weight"])

    # the loaded experts are the trained ones (peft's loader renames keys; a silent miss would leave zeros)
    expert = load_file(out / "experts" / "outdoor" / "adapter_model.safetensors")
    key = next(k for k in expert if "lora_B" in k and "q_proj" in k)
    module_name = key.removeprefix("base_model.model.").removesuffix(".lora_B.weight")
    module = model.base.get_submodule(module_name)
    assert torch.equal(module.lora_B["1"].weight, expert[key])  # expert 1 = outdoor


def test_decision_stats_and_separation():
    scalings = torch.zeros(2, 4, 3, 2)
    scalings[0, ..., 0] = 1.0  # record 0: all weight on expert 0 ...
    scalings[0, 1, :, :] = torch.tensor([0.25, 0.75])  # ... except at its last prompt token
    scalings[1] = 0.5  # record 1: uniform
    labels = torch.tensor([[-100, -100, 5, 6], [-100, -100, -100, 7]])  # answers start at positions 2 and 3
    share, entropy = decision_stats(scalings, labels)
    assert share.shape == (2, 3, 2)
    assert share[0].tolist() == [[0.25, 0.75]] * 3 and share[1].tolist() == [[0.5, 0.5]] * 3
    assert entropy[1] == pytest.approx(0.6931472, abs=1e-6)
    assert entropy[0] == pytest.approx(-(0.25 * math.log(0.25) + 0.75 * math.log(0.75)), abs=1e-6)
    same = np.full((3, 2), 0.5)
    apart = same.copy()
    apart[1] = [0.1, 0.9]
    assert separation([same, same]) == 0.0
    assert separation([same, apart, same]) == pytest.approx(0.4)


def test_records_need_scales(tmp_path):
    recs = scale_records(1)
    recs[0].scale = None
    with pytest.raises(SpatialctlError, match="has no scale"):
        record_scales(write_records(tmp_path / "a.jsonl", recs))
    with pytest.raises(SpatialctlError, match="at least two"):
        record_scales(write_records(tmp_path / "b.jsonl", [r for r in scale_records(2) if r.scale == "outdoor"]))
