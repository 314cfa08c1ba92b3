"""GRPO for train-gsm: the loss's gradient direction, group advantages, rewards, and training on a tiny task."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from gsm_fixtures import make_records, make_scenes, write_records
from safetensors.torch import load_file
from tiny_qwen import make_tiny_qwen

from spatialctl import gsm, qwen, scoring, store
from spatialctl.qa_format import QARecord
from spatialctl.stages.train_gsm import TrainGSMConfig, run
from spatialctl.stages.train_gsm.config import GRPOConfig
from spatialctl.stages.train_gsm.grpo import grpo_loss
from spatialctl.stages.train_gsm.rewards import (
    RewardFunction,
    format_reward,
    group_advantages,
    parse_progressive,
    progressive_mra,
)

TARGET = "B"


def test_loss_gradient_raises_log_prob_of_positive_advantage():
    logp = torch.tensor([[-1.0, -2.0], [-1.5, -0.5]], requires_grad=True)
    adv = torch.tensor([1.0, -1.0])
    mask = torch.tensor([[True, True], [True, False]])
    loss, _ = grpo_loss(logp, logp.detach(), adv, mask, kl_beta=0.0)
    loss.backward()
    # gradient descent must raise the better answer's tokens and lower the worse one's
    assert (logp.grad[0] < 0).all() and logp.grad[1, 0] > 0
    assert logp.grad[1, 1] == 0  # not a completion token
    assert logp.grad[0, 0] == pytest.approx(-0.25)  # -A / tokens / sequences


def test_kl_pulls_toward_reference():
    logp = torch.tensor([[-1.0]], requires_grad=True)
    loss, kl = grpo_loss(logp, torch.tensor([[-2.0]]), torch.tensor([0.0]), torch.ones(1, 1, dtype=torch.bool), 1.0)
    loss.backward()
    assert kl.item() == pytest.approx(np.exp(-1) + 1 - 1) and logp.grad.item() > 0  # descent lowers it toward ref


def test_group_advantages():
    adv = group_advantages(np.array([1.0, 0.0, 0.0, 0.0, 0.5, 0.5, 0.5, 0.5]), 4)
    assert adv[0] > 0 and (adv[1:4] < 0).all() and np.allclose(adv[4:], 0)
    assert adv[:4].sum() == pytest.approx(0.0, abs=1e-9)


def test_rewards():
    assert format_reward("<think>far</think> <answer>A</answer>") == 1.0
    assert format_reward("<answer>A</answer>") == 0.0 and format_reward("x <think></think><answer>A</answer>") == 0.0
    mc = QARecord(id="m", scene="s", question="q", answer="B", answer_type="mc", family="f", type="t",
                  options=["a", "b", "c", "d"], scale="indoor")
    fn = RewardFunction("answer_tag", 0.5, parse_progressive(("0.8", "outdoor=0.9")))
    r = fn(mc, "<think>hmm</think><answer>B</answer>", 0.0)
    assert (r.answer, r.format, r.total) == (1.0, 1.0, 1.5)
    assert fn(mc, "B", 0.0).total == 0.0  # untagged: no answer under the strict parser
    # progressive MRA: plain MRA at the start, only the tight thresholds at the end
    for pred in (1.04, 1.1, 1.3, 2.0):
        assert progressive_mra(pred, 1.0, 0.5) == scoring.mean_relative_accuracy(pred, 1.0)
    num = QARecord(id="n", scene="s", question="q", answer=10.0, answer_type="number", family="f", type="t",
                   scale="outdoor")
    early = fn(num, "<think>.</think><answer>12</answer>", 0.0).answer
    late = fn(num, "<think>.</think><answer>12</answer>", 1.0).answer
    assert early == scoring.mean_relative_accuracy(12.0, 10.0) > 0.5 and late == 0.0  # 20% off: 0.9 floor
    assert fn(num, "<think>.</think><answer>10.3</answer>", 1.0).answer == 1.0


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """A tiny model whose answers are letters at random (its head favours A-D), and questions whose answer is
    always B: a task the base answers right a fraction of the time and LoRA can learn."""
    root = tmp_path_factory.mktemp("grpo")
    base = make_tiny_qwen(root / "tinyq")
    model, tok = qwen.load_model(base), qwen.load_tokenizer(base)
    with torch.no_grad():
        model.lm_head.weight.mul_(0.1)
        g = torch.Generator().manual_seed(0)
        for letter in "ABCD":
            model.lm_head.weight[tok.convert_tokens_to_ids(letter)] = torch.randn(model.lm_head.weight.shape[1],
                                                                                  generator=g)
    model.save_pretrained(base)
    scenes = make_scenes(root)
    records = make_records(8)
    for r in records:
        r.answer = TARGET
    return base, scenes, write_records(root / "qa.jsonl", records), records


def _cfg(data, out, grpo=None, **kw):
    base, scenes, qa, _ = data
    args = dict(qa=qa, out=str(out), scenes=scenes, base=base, objective="grpo", lora_rank=8, lora_dropout=0.0,
                lr=5e-3, batch_size=2, num_frames=2, queries=4, geo_grid=2, warmup_ratio=0.0, max_steps=6,
                gradient_checkpointing=False, save_every=1000, quiet=True)
    section = dict(group_size=4, max_new_tokens=1, reward_parser="lmms", format_weight=0.0, prompt="", kl_beta=0.01)
    return TrainGSMConfig(**{**args, **kw}, grpo=GRPOConfig(**{**section, **(grpo or {})}))


def test_grpo_rewards_rise_and_the_adapter_answers(data, tmp_path):
    result = run(_cfg(data, tmp_path / "run", lr=2e-3)).details
    assert result.rewards[0] < 0.7, result.rewards  # sampled before any update: the base is right sometimes
    assert np.mean(result.rewards[-2:]) == 1.0, result.rewards
    base, scenes, _, records = data
    tok = qwen.load_tokenizer(base)
    model = gsm.load_adapter(qwen.load_model(base), str(tmp_path / "run"), tokenizer=tok)
    vc = qwen.VideoProcessorConfig.from_model_dir(base)
    # The adapter carries the instruction it was trained with (none here), so `eval run --adapter` asks the same way.
    suffix = gsm.adapter_prompt_suffix(str(tmp_path / "run"))
    assert suffix == ""
    examples = [gsm.prepare_example(r, store.resolve_scene(r.scene, scenes), tok, vc, model.gsm.cfg, num_frames=2,
                                    with_answer=False, prompt_suffix=suffix) for r in records]
    assert [a[:1] for a in model.answer(examples, tok, max_new_tokens=1)] == [TARGET] * len(records)


def test_grpo_resume_after_a_kill_equals_an_uninterrupted_run(data, tmp_path):
    kw = dict(max_steps=3, save_every=1, lr=1e-3)
    full = run(_cfg(data, tmp_path / "full", **kw)).details

    class Killed(Exception):
        pass

    def kill(step, loss):
        if step == 2:
            raise Killed

    with pytest.raises(Killed):
        run(_cfg(data, tmp_path / "resumed", **kw), on_step=kill)
    again = run(_cfg(data, tmp_path / "resumed", resume=True, **kw)).details
    assert again.start_step == 2 and again.rewards == full.rewards[2:] and again.losses == full.losses[2:]
    a, b = load_file(tmp_path / "full" / "adapter_model.safetensors"), load_file(tmp_path / "resumed" / "adapter_model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_grpo_usage_errors(data, tmp_path):
    from spatialctl.errors import UsageError

    with pytest.raises(UsageError, match="LoRA-only"):
        run(_cfg(data, tmp_path / "x", full_finetune=True))
    with pytest.raises(UsageError, match="group-size"):
        run(_cfg(data, tmp_path / "x", grpo={"group_size": 1}))
    with pytest.raises(UsageError, match="progressive"):
        run(_cfg(data, tmp_path / "x", grpo={"progressive": ("indoor=1.5",)}))


def test_cli_options_reach_the_config(cli, data, tmp_path):
    base, scenes, qa, _ = data
    r = cli("train-gsm", "--qa", qa, "--out", tmp_path / "o", "--base", base, "--scenes", scenes,
            "--objective", "grpo", "--full-finetune")
    assert r.exit_code == 2 and "LoRA-only" in r.output
    r = cli("train-gsm", "--qa", qa, "--out", tmp_path / "o", "--base", base, "--scenes", scenes,
            "--objective", "grpo", "--progressive", "indoor=0.9,x")
    assert r.exit_code == 2 and "progressive" in r.output
    r = cli("train-gsm", "--qa", qa, "--out", tmp_path / "o", "--base", base, "--scenes", scenes, "--experts", "scale")
    assert r.exit_code == 1 and "no scale" in r.output
