"""GSM token layout against DSR Suite's rule, positions from the installed Qwen2.5-VL, multi-turn targets."""

from __future__ import annotations

import pytest
import torch
from tiny_qwen import make_tiny_qwen

from spatialctl import qa_format, qwen


def dsr_insert(ids: list[int], video_pad: int, count: int) -> list[int]:
    # DSR Suite (TencentARC/DSR_Suite @ ae81203, model/qwen-vl-finetune/qwen_test_sti.py, add_after_consecutive),
    # from its definition: `count` more video pads after the first token that is a video pad followed by another.
    for i in range(len(ids) - 1):
        if ids[i] == video_pad and ids[i + 1] != video_pad:
            return ids[:i + 1] + [video_pad] * count + ids[i + 1:]
    return ids


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    path = make_tiny_qwen(tmp_path_factory.mktemp("dsr") / "tinyq")
    return path, qwen.load_tokenizer(path)


@pytest.mark.parametrize("n_video, k", [(6, 4), (24, 32)])
def test_geometry_slots_sit_where_dsr_suite_inserts_its_video_pads(tiny, n_video, k):
    _, tok = tiny
    question = "How far is the lamp from the chair?"
    # the stock prompt, as Qwen's processor expands the chat template's single <|video_pad|>
    messages = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": question}]}]
    text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    text = text.replace(qwen.VIDEO_PAD, qwen.VIDEO_PAD * n_video)
    stock = tok(text, add_special_tokens=False)["input_ids"]
    vid, geo = tok.convert_tokens_to_ids(qwen.VIDEO_PAD), tok.convert_tokens_to_ids(qwen.GEO_PAD)
    expected = dsr_insert(stock, vid, k)

    ours = qwen.build_prompt_ids(tok, question, n_video_tokens=n_video, n_geo_tokens=k)
    assert [vid if t == geo else t for t in ours.input_ids] == expected
    assert ours.input_ids.count(geo) == k
    # the model's video features fill the video's own pads only
    assert sum(m == 2 for m in ours.mm_token_type_ids) == n_video
    assert qwen.build_prompt_ids(tok, question, n_video_tokens=n_video, n_geo_tokens=0).input_ids == stock


def test_geometry_slots_take_the_positions_the_model_gives_tokens_after_the_video(tiny):
    from transformers import Qwen2_5_VLForConditionalGeneration

    path, tok = tiny
    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(path)
    grid = torch.tensor([[2, 4, 6]])  # 2 temporal patches of 2x3 merged tokens
    n_video, k = 12, 5

    def positions(n_geo):
        p = qwen.build_prompt_ids(tok, "Which is closer?", n_video_tokens=n_video, n_geo_tokens=n_geo, answer="A")
        ids = torch.tensor([p.input_ids])
        pos, _ = model.model.get_rope_index(ids, torch.tensor([p.mm_token_type_ids]), video_grid_thw=grid,
                                            second_per_grid_ts=torch.tensor([1.0]),
                                            attention_mask=torch.ones_like(ids))
        return p.input_ids, pos[:, 0]

    ids0, pos0 = positions(0)
    ids, pos = positions(k)
    geo = tok.convert_tokens_to_ids(qwen.GEO_PAD)
    first = ids.index(geo)
    # everything up to the video's last pad is placed as without the GSM (3D positions of the video grid)
    assert torch.equal(pos[:, :first], pos0[:, :first])
    # the slots continue as text where the model would put the token after the video, one step each
    start = pos0[:, first]
    assert torch.equal(pos[:, first:first + k], start[:, None] + torch.arange(k))
    # and the rest of the prompt shifts by K
    assert torch.equal(pos[:, first + k:], pos0[:, first:] + k)
    assert ids[first + k:] == ids0[first:]


def test_every_assistant_turn_of_a_multi_turn_record_is_a_target(tiny):
    _, tok = tiny
    history = [("How many chairs are there?", "3"), ("Which one is closest?", "B")]
    p = qwen.build_prompt_ids(tok, "How far is it in meters?", n_video_tokens=4, n_geo_tokens=2, answer="1.5",
                              history=history)
    im_end = tok.convert_tokens_to_ids(qwen.IM_END)
    spans, cur = [], []
    for t, lab in zip(p.input_ids, p.labels, strict=True):
        if lab != -100:
            assert lab == t
            cur.append(t)
        elif cur:
            spans.append(cur)
            cur = []
    spans.append(cur)
    assert [tok.decode(s) for s in spans] == ["3<|im_end|>", "B<|im_end|>", "1.5<|im_end|>"]
    assert all(s[-1] == im_end for s in spans)
    text = tok.decode(p.input_ids)
    assert text.count("<|im_start|>user\n") == 3 and text.count("<|im_start|>assistant\n") == 3
    assert text.index("<|vision_start|>") < text.index("How many chairs")
    # the same conversation as a generation prompt: earlier answers are context, the last one is asked for
    q = qwen.build_prompt_ids(tok, "How far is it in meters?", n_video_tokens=4, n_geo_tokens=2, history=history)
    assert p.input_ids[:len(q.input_ids)] == q.input_ids
    assert tok.decode(q.input_ids).endswith("<|im_start|>assistant\n")
    assert tok.decode(q.question_ids) == "How far is it in meters?"


def test_multi_turn_record_turns_reach_the_prompt(tiny):
    from spatialctl.gsm import frames_example

    _, tok = tiny
    import numpy as np

    record = qa_format.QARecord(id="m", scene="s", question="And the table?", answer="2", answer_type="number",
                                family="dsr", type="distance", unit="m",
                                history=[{"question": "How far is the lamp?", "answer": 1.5, "answer_type": "number",
                                          "unit": "m"}])
    frames = np.zeros((2, 56, 56, 3), np.uint8)
    ex = frames_example(record, frames, np.array([0.0, 0.5]), tok, qwen.VideoProcessorConfig(min_pixels=56 * 56, max_pixels=56 * 56),
                        with_answer=True)
    targets = tok.decode([t for t in ex["labels"] if t != -100])
    assert targets == "1.5<|im_end|>2<|im_end|>"
