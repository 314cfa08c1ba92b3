"""train-gsm --boost: SpatialBoost's dual-channel attention in the Qwen-VL vision tower, multi-view records
(--views N, each view an image), and batch size x gradient accumulation. On tiny random Qwen2.5-VL and Qwen3-VL
saved to a folder and loaded through the user's path."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from gsm_fixtures import assert_eval_run_answers_all, make_records, make_scenes, write_records
from safetensors.torch import load_file
from tiny_qwen import make_tiny_qwen, make_tiny_qwen3

from spatialctl import boost, gsm, qwen

FAMILIES = ("qwen2_5_vl", "qwen3_vl")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("boostqwen")
    scenes = make_scenes(root, genfeat=False, size=64)
    qa = write_records(root / "qa.jsonl", make_records(16))
    bases = {"qwen2_5_vl": make_tiny_qwen(root / "tiny-qwen2_5_vl"), "qwen3_vl": make_tiny_qwen3(root / "tiny-qwen3_vl")}
    return root, scenes, qa, bases


def _views(base: str, n: int = 3, seed: int = 0):
    frames = np.random.default_rng(seed).integers(0, 255, (n, 64, 64, 3), dtype=np.uint8)
    return frames, qwen.process_images(frames, qwen.VideoProcessorConfig.from_model_dir(base, images=True))


def _tower_out(visual, views) -> list[torch.Tensor]:
    out = visual(torch.from_numpy(views["pixel_values"]), grid_thw=torch.from_numpy(views["image_grid_thw"]))
    # every tensor the LLM is given: the merged tokens, and Qwen3-VL's deepstack features
    return [out.last_hidden_state, out.pooler_output, *(getattr(out, "deepstack_features", None) or [])]


@pytest.mark.parametrize("family", FAMILIES)
def test_boosted_tower_equals_the_tower_at_step_0_and_attn_plus_at_alpha_0(data, family):
    """Identity at step 0 on the real classes; with the gates at α = 0 the tower is the base class with Attn⁺'s
    weights in every attention (so the wrapper runs Attn⁺ exactly as the block would)."""
    _, _, _, bases = data
    model = qwen.load_model(bases[family]).eval()
    _, views = _views(bases[family])
    with torch.no_grad():
        ref = _tower_out(model.model.visual, views)
        layers = boost.wrap_tower(model, None)
        assert layers == [0, 1]
        got = _tower_out(model.model.visual, views)
        for a, b in zip(got, ref, strict=True):
            assert torch.equal(a, b)  # bit for bit
        # move Attn⁺ away from its copy, gates to α = 0 -> output = Attn⁺ alone
        gen = torch.Generator().manual_seed(1)
        for _, m in boost.boosted_modules(model.model.visual):
            for p in m.plus.parameters():
                p.add_(0.2 * torch.randn(p.shape, generator=gen))
            m.a.fill_(-float("inf"))
        unboosted = qwen.load_model(bases[family]).eval().model.visual
        for (_, m), block in zip(boost.boosted_modules(model.model.visual), unboosted.blocks, strict=True):
            block.attn.load_state_dict(m.plus.state_dict())
        got = _tower_out(model.model.visual, views)
        want = _tower_out(unboosted, views)
        assert not torch.allclose(got[1], ref[1], atol=1e-3)
        for a, b in zip(got, want, strict=True):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("family", FAMILIES)
def test_views_are_images_as_qwens_image_processor_lays_them_out(data, family):
    """Pixels and grids equal transformers' Qwen2-VL image processor (Qwen3-VL's at patch 16); the prompt holds one
    <|vision_start|><|image_pad|>*n<|vision_end|> span per view, and the model accepts it (its placeholder check)."""
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    _, _, _, bases = data
    frames, views = _views(bases[family])
    ref = Qwen2VLImageProcessorPil.from_pretrained(bases[family])(list(frames), return_tensors="np")
    np.testing.assert_array_equal(views["image_grid_thw"], ref["image_grid_thw"])
    np.testing.assert_allclose(views["pixel_values"], ref["pixel_values"], rtol=1e-5, atol=1e-5)

    tok = qwen.load_tokenizer(bases[family])
    record = make_records(1)[0]
    image_cfg = qwen.VideoProcessorConfig.from_model_dir(bases[family], images=True)
    ex = gsm.frames_example(record, frames, np.arange(3.0), tok, None, with_answer=True, image_cfg=image_cfg)
    ids = ex["input_ids"].tolist()
    vs, ve, pad = (tok.convert_tokens_to_ids(t) for t in (qwen.VISION_START, qwen.VISION_END, qwen.IMAGE_PAD))
    n = [int(np.prod(g)) // 4 for g in views["image_grid_thw"]]
    start = ids.index(vs)
    span = [vs] + [pad] * n[0] + [ve]
    assert ids[start:start + 3 * len(span)] == span * 3
    assert qwen.VIDEO_PAD not in tok.convert_ids_to_tokens(ids)
    assert (ex["mm_token_type_ids"] == 1).sum() == sum(n) and set(ex["mm_token_type_ids"]) == {0, 1}
    model = gsm.GeometryVLM(qwen.load_model(bases[family]).eval(), None, None)
    with torch.no_grad():
        loss = model(gsm.collate([ex], tok.pad_token_id))
    assert torch.isfinite(loss)


@pytest.fixture(scope="module")
def runs(data):
    """``train-gsm --boost --views 2`` from the CLI: full LLM fine-tuning on Qwen2.5-VL, LoRA on Qwen3-VL; Attn⁺ and
    gates in every vision block. (family -> (output folder, CLI result))."""
    from typer.testing import CliRunner

    from spatialctl.cli import app

    root, scenes, qa, bases = data
    out = {}
    for family, weights in (("qwen2_5_vl", ("--full-finetune",)), ("qwen3_vl", ("--lora-rank=16", "--lora-dropout=0"))):
        folder = root / f"run-{family}"
        r = CliRunner().invoke(app, [str(a) for a in (
            "train-gsm", "--qa", qa, "--out", folder, "--scenes", scenes, "--base", bases[family], "--no-gsm",
            "--boost", "--views", "2", *weights, "--lr", "5e-3", "--batch-size", "16",
            "--max-steps", "30", "--warmup-ratio", "0.1", "--quiet")])
        out[family] = (folder, r)
    return out


@pytest.mark.parametrize("family", FAMILIES)
def test_boost_with_views_overfits_16_items_and_eval_run_answers(cli, data, runs, family):
    root, scenes, qa, bases = data
    out, r = runs[family]
    assert r.exit_code == 0, r.output
    losses = [json.loads(line)["loss"] for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert losses[-1] < 0.2 and losses[-1] < 0.1 * losses[0], losses
    spec = json.loads((out / boost.BOOST_CONFIG).read_text())
    assert spec["layers"] == [0, 1] and spec["model_type"] == family
    delta = load_file(out / boost.BOOST_WEIGHTS)
    assert any(float(v.abs()) > 0 for k, v in delta.items() if k.endswith(".a"))  # the gates trained
    assert not any("visual" in k for k in load_file(out / gsm.ADAPTER_WEIGHTS))  # the tower's delta lives apart
    assert gsm.adapter_views(str(out)) == 2
    preds = root / f"preds-{family}.jsonl"
    assert len(assert_eval_run_answers_all(cli, qa, out, scenes, preds)) == 16
    # the run record says what was shown: the adapter's 2 views, not the layout's 8 frames
    assert json.loads((root / f"preds-{family}.jsonl.run.json").read_text())["config"]["num_frames"] == 2
    # what eval loads: the tower wrapped with the trained Attn⁺ and gates (the answers alone could come from the LLM)
    _, views = _views(bases[family])
    base = qwen.load_model(bases[family]).eval()
    with torch.no_grad():
        plain = _tower_out(base.model.visual, views)[1]
        wrapped = gsm.load_adapter(base, str(out))
        applied = _tower_out(wrapped.base.model.visual, views)[1]
    assert not torch.allclose(plain, applied, atol=1e-4)
    loaded = dict(boost.boosted_modules(wrapped.base.model.visual))
    assert sorted(loaded) == ["blocks.0.attn", "blocks.1.attn"]
    for name, m in loaded.items():
        assert torch.equal(m.a.detach(), delta[f"{name}.a"])


def test_batch_size_and_grad_accum_give_the_update_of_one_big_batch(data, tmp_path):
    """8 records per optimizer step as 8x1 and 2x4 (batch size x accumulation): the same losses and trained
    weights (LoRA, Attn⁺ and gates) after 2 steps. Every answer is one letter, so each micro-batch's mean loss has
    equal weight. (Adam's first steps hide a uniform gradient scale; what this checks is which records each step
    sees and that padding, accumulation and the tower's packed images mix them as one batch would.)"""
    from spatialctl.stages.train_gsm.config import TrainGSMConfig
    from spatialctl.stages.train_gsm.loop import run

    _, scenes, qa, bases = data
    results, losses = {}, {}
    for bs, accum in ((8, 1), (2, 4)):
        out = tmp_path / f"b{bs}x{accum}"
        cfg = TrainGSMConfig(qa=qa, out=str(out), scenes=scenes, base=bases["qwen2_5_vl"], gsm=False, boost=True,
                             views=2, lora_rank=4, lora_dropout=0.0, lr=1e-2, batch_size=bs, grad_accum=accum,
                             max_steps=2, warmup_ratio=0.0, max_grad_norm=0.0, quiet=True)
        losses[(bs, accum)] = run(cfg).details.losses
        ckpt = out / "checkpoints" / "step-000002" / "trainable.safetensors"
        results[(bs, accum)] = load_file(ckpt)
    for key, got in losses.items():
        np.testing.assert_allclose(got, losses[(8, 1)], rtol=1e-5, err_msg=str(key))
    ref = results[(8, 1)]
    assert any(".a" in k for k in ref) and any("lora" in k for k in ref)
    for key, got in results.items():
        assert set(got) == set(ref)
        for k, v in got.items():
            torch.testing.assert_close(v, ref[k], rtol=1e-3, atol=1e-4, msg=f"{key}: {k}")


@pytest.mark.parametrize("args,words", [
    (("--views", "2"), "--views"),  # the GSM is on by default: its slots need a video
    (("--no-gsm", "--boost-layers", "0"), "--boost"),
    (("--no-gsm", "--boost", "--objective", "grpo"), "--objective sft"),
    (("--no-gsm", "--views", "-1"), "--views"),
    (("--no-gsm", "--boost", "--freeze-llm", "--init-adapter", "nowhere"), "adapter_config.json"),
    (("--no-gsm", "--boost", "--init-adapter", "."), "--full-finetune or --freeze-llm"),
    (("--no-gsm", "--boost", "--boost-layers", "2"), "--boost-layers"),  # the tiny tower has blocks 0 and 1
    (("--no-gsm", "--boost", "--boost-layers", ","), "layers ','"),  # no index: would boost nothing
    (("--no-gsm", "--views", "2", "--num-frames", "8"), "--num-frames"),  # would be ignored
    (("--no-gsm", "--boost", "--full-finetune", "--lora-rank", "8"), "--lora-rank: LoRA settings"),  # ignored
    (("--no-gsm", "--boost", "--freeze-llm", "--lora-dropout", "0"), "--lora-dropout: LoRA settings"),
])
def test_cli_errors(cli, data, tmp_path, args, words):
    _, scenes, qa, bases = data
    r = cli("train-gsm", "--qa", qa, "--out", tmp_path / "o", "--scenes", scenes, "--base", bases["qwen2_5_vl"], *args)
    assert r.exit_code == 2 and words in r.output, r.output
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("family", FAMILIES)
def test_stage_3_trains_only_attn_plus_and_gates_from_a_previous_adapter(cli, data, runs, family, tmp_path):
    """--init-adapter (full weights on Qwen2.5-VL, LoRA merged on Qwen3-VL; the boost continued) + --freeze-llm:
    only Attn⁺ and the gates move, and the folder carries the starting language model in full."""
    _, scenes, qa, bases = data
    init, _ = runs[family]
    out = tmp_path / "s3"
    r = cli("train-gsm", "--qa", qa, "--out", out, "--scenes", scenes, "--base", bases[family], "--no-gsm", "--boost",
            "--boost-layers", "0", "--freeze-llm", "--init-adapter", init)
    assert r.exit_code == 2 and "already fixes the boosted layers" in r.output and not out.exists(), r.output
    other = next(bases[f] for f in FAMILIES if f != family)  # its weights fit only the base it was trained on
    r = cli("train-gsm", "--qa", qa, "--out", out, "--scenes", scenes, "--base", other, "--no-gsm", "--boost",
            "--freeze-llm", "--init-adapter", init)
    assert r.exit_code == 2 and f"trained on {bases[family]}, not --base {other}" in r.output, r.output
    assert not out.exists()
    r = cli("train-gsm", "--qa", qa, "--out", out, "--scenes", scenes, "--base", bases[family], "--no-gsm", "--boost",
            "--views", "2", "--freeze-llm", "--init-adapter", init, "--lr", "1e-3", "--batch-size", "8",
            "--max-steps", "2", "--warmup-ratio", "0", "--quiet")
    assert r.exit_code == 0, r.output
    delta, before = load_file(out / boost.BOOST_WEIGHTS), load_file(init / boost.BOOST_WEIGHTS)
    n_boost = sum(v.numel() for v in delta.values())
    assert json.loads((out / "train_config.json").read_text())["trainable_parameters"] == n_boost
    assert set(delta) == set(before) and any(not torch.equal(delta[k], before[k]) for k in delta)
    started = gsm.load_adapter(qwen.load_model(bases[family]), str(init)).base
    lm = load_file(out / gsm.ADAPTER_WEIGHTS)
    want = {k: v for k, v in started.state_dict().items() if not k.startswith("model.visual.")}
    assert set(lm) == set(want)
    for k, v in want.items():
        assert torch.equal(lm[k], v), k


def test_boost_parameters_train_at_boost_lr_and_nothing_else_of_the_tower(data):
    from spatialctl.stages.train_gsm.config import TrainGSMConfig
    from spatialctl.stages.train_gsm.model import build_model, param_groups

    _, _, _, bases = data
    cfg = TrainGSMConfig(qa="qa.jsonl", out="o", base=bases["qwen2_5_vl"], gsm=False, boost=True, boost_layers=[-1],
                         boost_lr=0.5, lr=0.1, lora_rank=4)
    model = build_model(cfg, qwen.load_tokenizer(cfg.base), {})
    wrapped = boost.boosted_modules(model.base.model.visual)
    assert [name for name, _ in wrapped] == ["blocks.1.attn"]  # --boost-layers -1: the last block only
    boosted = {id(p) for _, m in wrapped for p in [*m.plus.parameters(), m.a]}
    tower = [p for p in model.base.model.visual.parameters() if p.requires_grad]
    assert {id(p) for p in tower} == boosted
    groups = param_groups(model, cfg)
    assert {id(p) for g in groups if g["lr"] == 0.5 for p in g["params"]} == boosted
    assert all(g["lr"] == 0.1 for g in groups if not {id(p) for p in g["params"]} & boosted)


def test_multi_view_adapter_on_a_released_layout_fails_before_touching_out(cli, data, runs, tmp_path):
    """An option clash (a --views adapter, a video benchmark's layout) is a one-line usage error, and --overwrite
    has not deleted the previous predictions by then."""
    from released_fixtures import spacevista_bench

    adapter, _ = runs["qwen2_5_vl"]
    spacevista_bench(str(tmp_path))
    preds, record = tmp_path / "p.jsonl", tmp_path / "p.jsonl.run.json"
    preds.write_text('{"id": "0", "prediction": "A"}\n')
    record.write_text("{}")
    r = cli("eval", "run", "--qa", tmp_path / "bench_final.json", "--layout", "spacevista", "--adapter", adapter,
            "--out", preds, "--overwrite", "--quiet")
    assert r.exit_code == 2 and "multi-view adapter" in r.output and len(r.output.strip().splitlines()) == 1, r.output
    assert preds.read_text() == '{"id": "0", "prediction": "A"}\n' and record.read_text() == "{}"
    # --frames other than its views would be ignored: refused too
    r = cli("eval", "run", "--qa", data[2], "--adapter", adapter, "--frames", "4", "--out",
            tmp_path / "q.jsonl", "--quiet")
    assert r.exit_code == 2 and "--views 2" in r.output and not (tmp_path / "q.jsonl").exists(), r.output


def test_eval_asks_a_multi_view_adapter_at_its_training_resolution(cli, data, runs, tmp_path, monkeypatch):
    """An adapter trained with --max-pixels is shown its views at that size by `eval run` (train_config.json), not at
    the image processor's default; here 64x64 views -> 28x28 at 2*28*28 pixels, 56x56 by default."""
    import shutil

    root, scenes, _, bases = data
    adapter = tmp_path / "adapter"
    shutil.copytree(runs["qwen2_5_vl"][0], adapter, ignore=shutil.ignore_patterns("checkpoints"))
    train = json.loads((adapter / "train_config.json").read_text())
    train["config"]["max_pixels"] = 2 * 28 * 28  # as `train-gsm --max-pixels 1568` records it
    (adapter / "train_config.json").write_text(json.dumps(train))
    grids = []
    process = qwen.process_images

    def spy(frames, cfg):
        out = process(frames, cfg)
        grids.extend(out["image_grid_thw"].tolist())
        return out

    monkeypatch.setattr(qwen, "process_images", spy)
    qa = write_records(tmp_path / "qa.jsonl", make_records(2))
    r = cli("eval", "run", "--qa", qa, "--adapter", adapter, "--scenes", scenes, "--out", tmp_path / "p.jsonl",
            "--max-new-tokens", "1", "--quiet")
    assert r.exit_code == 0, r.output
    assert grids == [[1, 2, 2]] * 4, grids  # 2 records x 2 views


@pytest.mark.parametrize("overwrite", [False, True])
def test_train_gsm_leaves_another_stages_boost_files_alone(cli, data, tmp_path, overwrite):
    """boost-encoder's boost.safetensors/boost_config.json in --out: train-gsm neither deletes (--overwrite) nor
    replaces them, nor leaves them beside its adapter for eval run to apply to the VLM's tower."""
    _, scenes, qa, bases = data
    out = tmp_path / "o"
    out.mkdir()
    (out / boost.BOOST_CONFIG).write_text('{"family": "dinov3"}')
    (out / boost.BOOST_WEIGHTS).write_bytes(b"boost-encoder's")
    r = cli("train-gsm", "--qa", qa, "--out", out, "--scenes", scenes, "--base", bases["qwen2_5_vl"], "--no-gsm",
            "--boost", "--max-steps", "1", *(["--overwrite"] if overwrite else []))
    assert r.exit_code == 2 and "did not write it" in r.output and len(r.output.strip().splitlines()) == 1, r.output
    assert sorted(p.name for p in out.iterdir()) == sorted([boost.BOOST_CONFIG, boost.BOOST_WEIGHTS])
    assert (out / boost.BOOST_WEIGHTS).read_bytes() == b"boost-encoder's"
