"""The GSM module, geometry features, the numpy video processor, prompts and adapter save/load."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from gsm_fixtures import ENC_CHANNELS, GEN_CHANNELS, make_records, make_scenes
from tiny_qwen import make_tiny_qwen

from spatialctl import gsm, qwen, store
from spatialctl.errors import SpatialctlError


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("gsm")
    return make_tiny_qwen(root / "tinyq"), make_scenes(root, genfeat=True)


def test_video_processor_matches_transformers_image_processor():
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    frames = np.random.default_rng(0).integers(0, 255, (5, 50, 90, 3), dtype=np.uint8)  # odd T: last is repeated
    cfg = qwen.VideoProcessorConfig(min_pixels=56 * 56, max_pixels=112 * 112)
    out = qwen.process_video(frames, cfg)
    gt, gh, gw = out["video_grid_thw"][0]
    assert (gh * 14, gw * 14) == qwen.smart_resize(50, 90, 28, 56 * 56, 112 * 112)
    assert gt == 3 and out["pixel_values_videos"].shape == (gt * gh * gw, 3 * 2 * 14 * 14)
    ref = Qwen2VLImageProcessorPil(min_pixels=56 * 56, max_pixels=112 * 112)(list(frames), return_tensors="np")
    n = gh * gw
    img = ref["pixel_values"].reshape(5, n, 3, 2, 14, 14)[:, :, :, 0]  # an image is one frame repeated in time
    vid = out["pixel_values_videos"].reshape(gt, n, 3, 2, 14, 14)
    np.testing.assert_allclose(vid[:, :, :, 0], img[0::2], atol=1e-5)
    np.testing.assert_allclose(vid[:2, :, :, 1], img[1::2], atol=1e-5)
    np.testing.assert_allclose(vid[2, :, :, 1], img[4], atol=1e-5)


def test_smart_resize_rule():
    h, w = qwen.smart_resize(480, 640, 28, 128 * 28 * 28, 768 * 28 * 28)
    assert h % 28 == 0 and w % 28 == 0 and 128 * 784 <= h * w <= 768 * 784
    assert abs(h / w - 0.75) < 0.05
    assert qwen.smart_resize(20, 20, 28, 56 * 56, 10**6) == (56, 56)  # grown up to min_pixels
    with pytest.raises(SpatialctlError):
        qwen.smart_resize(1, 500, 28, 56 * 56, 10**6)


def test_missing_model_says_how_to_fetch(tmp_path):
    with pytest.raises(SpatialctlError, match="huggingface-cli download"):
        qwen.load_model("nobody/not-a-model")
    with pytest.raises(SpatialctlError, match="no such model folder"):
        qwen.load_model(str(tmp_path / "absent"))


def test_prompt_ids_video_then_geometry_then_question(tiny):
    tok = qwen.load_tokenizer(tiny[0])
    p = qwen.build_prompt_ids(tok, "How far is the lamp?", n_video_tokens=6, n_geo_tokens=4, answer="2.5")
    ids = p.input_ids
    vs, ve, vid, geo = (tok.convert_tokens_to_ids(t) for t in (qwen.VISION_START, qwen.VISION_END, qwen.VIDEO_PAD,
                                                                 qwen.GEO_PAD))
    start = ids.index(vs)
    assert ids[start + 1:start + 7] == [vid] * 6 and ids[start + 7] == ve and ids[start + 8:start + 12] == [geo] * 4
    assert [i for i, m in enumerate(p.mm_token_type_ids) if m == 2] == list(range(start + 1, start + 7))
    target = [t for t in p.labels if t != -100]
    assert tok.decode(target) == "2.5<|im_end|>" and ids[-len(target):] == target
    assert tok.decode(p.question_ids) == "How far is the lamp?"


def _gsm(geometry=("dust3r", "pointmap"), d=64, k=5):
    torch.manual_seed(0)
    cfg = gsm.GSMConfig(hidden_size=d, num_queries=k, geometry=geometry, geo_grid=2,
                        input_dims={"dust3r": ENC_CHANNELS, "genfeat": GEN_CHANNELS})
    return cfg, gsm.GeometrySelectionModule(cfg)


def _examples(cfg, scenes, tok, vc, n=3):
    return [gsm.prepare_example(r, store.resolve_scene(r.scene, scenes), tok, vc, cfg, num_frames=4 - (i % 2))
            for i, r in enumerate(make_records(n))]


def test_gsm_output_shapes_and_masking(tiny):
    tok = qwen.load_tokenizer(tiny[0])
    vc = qwen.VideoProcessorConfig.from_model_dir(tiny[0])
    for geometry in (("dust3r", "pointmap"), ("pointmap",), ("dust3r", "pointmap", "genfeat")):
        cfg, module = _gsm(geometry)
        examples = _examples(cfg, tiny[1], tok, vc)
        assert examples[0]["geometry"]["pointmap"].shape == (4, 2, 2, 4 * 4 * 4 + 1)
        batch = gsm.collate(examples, tok.pad_token_id)
        assert set(batch["geometry"]) == set(geometry)
        emb = torch.randn(len(tok), 64)
        q = torch.nn.functional.embedding(batch["question_ids"], emb)
        out = module(q, batch["question_mask"], batch["geometry"], batch["geo_pos"], batch["geo_mask"])
        assert out.shape == (3, 5, 64) and torch.isfinite(out).all()
        # the final RMSNorm (weight 1 at init): every token has unit root-mean-square
        torch.testing.assert_close(out.pow(2).mean(-1), torch.ones(3, 5), rtol=1e-4, atol=1e-4)
        # padding is invisible: garbage in padded question slots / padded frames changes nothing
        q2 = q.clone()
        q2[~batch["question_mask"]] = 100.0
        geo2 = {s: v.clone() for s, v in batch["geometry"].items()}
        for v in geo2.values():
            v[~batch["geo_mask"]] = 100.0
        out2 = module(q2, batch["question_mask"], geo2, batch["geo_pos"], batch["geo_mask"])
        torch.testing.assert_close(out, out2)
        assert batch["geo_mask"].sum(1).tolist() == [16, 12, 16]  # 4, 3, 4 frames of 2x2 cells


def test_pointmap_tokens_keep_scale_only_in_log_scale_channel():
    rng = np.random.default_rng(0)
    pts = rng.standard_normal((2, 8, 8, 3)).astype(np.float32)
    conf = np.ones((2, 8, 8), np.float32)
    conf[0, :2] = 0  # invalid pixels stay zero
    a = gsm.pointmap_tokens(pts, conf, 2, 4)
    b = gsm.pointmap_tokens(pts * 10.0, conf, 2, 4)
    np.testing.assert_allclose(a[..., :-1], b[..., :-1], atol=1e-5)
    np.testing.assert_allclose(b[..., -1] - a[..., -1], np.log(10.0), atol=1e-5)
    cells = a[0, 0, :, :-1].reshape(2, 4, 4, 4)  # (cell col, patch row, patch col, xyz + log conf)
    assert (cells[:, :2] == 0).all() and (cells[:, 2:, :, 3] > 0).all()


def test_missing_geometry_is_a_clear_error(tiny, tmp_path):
    from conftest import SCENE_ATTRS, scene_arrays

    from spatialctl import store

    url = str(tmp_path / "plain.zarr")
    store.write_scene(url, scene_arrays(n=2, h=56, w=56), SCENE_ATTRS, {"stage": "test"})
    cfg, _ = _gsm()
    with pytest.raises(SpatialctlError, match="encoder_features"):
        gsm.load_geometry(url, [0, 1], cfg)
    with pytest.raises(SpatialctlError, match="no scene store"):
        store.resolve_scene("absent", str(tmp_path))


def test_adapter_round_trip_gives_the_same_outputs(tiny, tmp_path):
    from peft import LoraConfig, get_peft_model

    path, scenes = tiny
    tok = qwen.load_tokenizer(path)
    vc = qwen.VideoProcessorConfig.from_model_dir(path)
    cfg, module = _gsm(("dust3r", "pointmap", "genfeat"))
    torch.manual_seed(1)
    vlm = get_peft_model(qwen.load_model(path), LoraConfig(r=4, target_modules=r".*language_model.*\.(q_proj|v_proj)$"))
    with torch.no_grad():
        for name, p in vlm.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)  # a LoRA that changes the outputs
    model = gsm.GeometryVLM(vlm, module, tok.convert_tokens_to_ids(qwen.GEO_PAD)).eval()
    batch = gsm.collate(_examples(cfg, scenes, tok, vc, n=2), tok.pad_token_id)
    with torch.no_grad():
        ref = model(batch)
    gsm.save_adapter(str(tmp_path / "ad"), model, cfg, base=path, prompt_suffix="Answer inside <answer></answer>.")
    assert gsm.adapter_base(str(tmp_path / "ad")) == path
    assert gsm.adapter_prompt_suffix(str(tmp_path / "ad")) == "Answer inside <answer></answer>."
    for merge in (False, True):
        loaded = gsm.load_adapter(qwen.load_model(path), str(tmp_path / "ad"), tokenizer=tok, merge=merge)
        with torch.no_grad():
            torch.testing.assert_close(loaded(batch), ref, rtol=1e-4, atol=1e-4)
    with torch.no_grad():  # and the adapter matters: the bare base model scores differently
        bare = gsm.GeometryVLM(qwen.load_model(path), module, model.geo_token_id)(batch)
    assert not torch.allclose(bare, ref, atol=1e-3)
    with pytest.raises(SpatialctlError, match="not a train-gsm adapter"):
        gsm.load_adapter(qwen.load_model(path), str(tmp_path))


def test_prompt_suffix_goes_after_the_question(tiny):
    path, scenes = tiny[0], tiny[1]
    tok = qwen.load_tokenizer(path)
    vc = qwen.VideoProcessorConfig.from_model_dir(path)
    record = make_records(1)[0]
    url = store.resolve_scene(record.scene, scenes)
    plain = gsm.prepare_example(record, url, tok, vc, None, num_frames=2, with_answer=False)
    asked = gsm.prepare_example(record, url, tok, vc, None, num_frames=2, with_answer=False, prompt_suffix="answer")
    extra = len(asked["input_ids"]) - len(plain["input_ids"])
    assert extra > 0 and np.array_equal(asked["pixel_values_videos"], plain["pixel_values_videos"])
    assert tok.decode(asked["input_ids"]).count("answer") == tok.decode(plain["input_ids"]).count("answer") + 1
