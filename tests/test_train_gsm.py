"""train-gsm end to end on a tiny random Qwen2.5-VL: gradients, overfitting, exact resume, 2-process CPU run."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from gsm_fixtures import make_records, make_scenes, write_records
from safetensors.torch import load_file
from tiny_qwen import make_tiny_qwen

from spatialctl import gsm, qwen, store
from spatialctl.stages.train_gsm import TrainGSMConfig, run
from spatialctl.stages.train_gsm.data import QADataset, StepBatchSampler, load_records
from spatialctl.stages.train_gsm.model import build_model

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("train_gsm")
    base = make_tiny_qwen(root / "tinyq")
    scenes = make_scenes(root, genfeat=True)
    qa = write_records(root / "qa.jsonl", make_records(16))
    return base, scenes, qa


def _cfg(data, out, **kw) -> TrainGSMConfig:
    base, scenes, qa = data
    args = dict(qa=qa, out=str(out), scenes=scenes, base=base, lora_rank=8, lora_dropout=0.0, lr=1e-2, batch_size=16,
                num_frames=4, queries=4, geo_grid=2, warmup_ratio=0.1, save_every=1000, quiet=True)
    return TrainGSMConfig(**{**args, **kw})


@pytest.mark.parametrize("full_finetune", [False, True])
def test_gradients_reach_exactly_the_trainable_parameters(data, tmp_path, full_finetune):
    cfg = _cfg(data, tmp_path, geometry=("dust3r", "pointmap", "genfeat"), full_finetune=full_finetune)
    tok = qwen.load_tokenizer(cfg.base)
    records, urls = load_records(cfg.qa, cfg.scenes)
    model = build_model(cfg, tok, {"dust3r": 16, "genfeat": 8})
    ds = QADataset(records, urls, tok, qwen.VideoProcessorConfig.from_model_dir(cfg.base), model.gsm.cfg, 4)
    batch = gsm.collate([ds[i] for i in range(2)], tok.pad_token_id)
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    model.train()
    for _ in range(2):  # after one step LoRA's B is non-zero, so A receives gradient too
        opt.zero_grad()
        model(batch).backward()
        opt.step()
    names = {n for n, p in model.named_parameters() if p.requires_grad}
    got = {n for n, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    assert got == names
    assert any(n.startswith("gsm.fusion.") for n in names) and any(n.startswith("gsm.projectors.") for n in names)
    assert not any(".visual." in n for n in names)
    if full_finetune:
        assert any("embed_tokens" in n for n in names) and any("lm_head" in n for n in names)
        assert not any("lora" in n for n in names)
    else:
        lm = {n for n in names if not n.startswith("gsm.")}
        assert lm and all("lora_" in n and ".language_model." in n for n in lm)


def test_overfit_16_items_then_answer_them(data, tmp_path):
    out = tmp_path / "run"
    result = run(_cfg(data, out, max_steps=30, lora_rank=16, lr=5e-3)).details
    assert result.losses[-1] < 0.1 * result.losses[0], result.losses
    assert result.losses[-1] < 0.2
    for name in ("adapter_model.safetensors", "adapter_config.json", "gsm.safetensors", "gsm_config.json",
                 "train_config.json"):
        assert (out / name).is_file(), name
    assert json.loads((out / "train_config.json").read_text())["config"]["lora_rank"] == 16

    # answer through the inference path eval uses: base model + load_adapter + greedy generate
    base, scenes, qa = data
    tok = qwen.load_tokenizer(base)
    model = gsm.load_adapter(qwen.load_model(base), str(out), tokenizer=tok)
    vc = qwen.VideoProcessorConfig.from_model_dir(base)
    records = make_records(16)
    examples = [gsm.prepare_example(r, store.resolve_scene(r.scene, scenes), tok, vc, model.gsm.cfg, num_frames=4,
                                    with_answer=False) for r in records]
    answers = model.answer(examples, tok, max_new_tokens=4)
    assert answers == [r.answer for r in records]
    assert len(set(answers)) == 4


def test_resume_after_a_kill_equals_an_uninterrupted_run(data, tmp_path):
    kw = dict(max_steps=5, batch_size=4, grad_accum=2, save_every=2, lora_dropout=0.1, lr=3e-3, log_every=1)
    full = run(_cfg(data, tmp_path / "full", **kw)).details

    class Killed(Exception):
        pass

    def kill(step, loss):
        if step == 3:  # after the step-2 checkpoint, mid-way to the next one
            raise Killed

    with pytest.raises(Killed):
        run(_cfg(data, tmp_path / "resumed", **kw), on_step=kill)
    assert not (tmp_path / "resumed" / "adapter_model.safetensors").exists()
    again = run(_cfg(data, tmp_path / "resumed", resume=True, **kw)).details
    assert again.start_step == 2
    assert again.losses == full.losses[2:]
    # the log is the uninterrupted run's: step 3, logged before the kill, is not logged twice
    log = [json.loads(line) for line in (tmp_path / "resumed" / "train_log.jsonl").read_text().splitlines()]
    assert [row["step"] for row in log] == [1, 2, 3, 4, 5]
    assert [row["loss"] for row in log[2:]] == full.losses[2:]
    for name in ("adapter_model.safetensors", "gsm.safetensors"):
        a, b = load_file(tmp_path / "full" / name), load_file(tmp_path / "resumed" / name)
        assert a.keys() == b.keys()
        assert all(torch.equal(a[k], b[k]) for k in a), name
    with pytest.raises(Exception, match="another training configuration"):
        run(_cfg(data, tmp_path / "resumed", resume=True, **{**kw, "lr": 1e-3}))


def test_a_run_killed_before_its_first_checkpoint_is_still_ours(data, tmp_path):
    """Its folder holds a log and an empty checkpoints folder only: a plain rerun names both ways on, --overwrite
    replaces it and --resume starts it again from step 0 (the old rows gone)."""
    from spatialctl.errors import SpatialctlError

    kw = dict(max_steps=2, batch_size=4, save_every=10, lr=3e-3, log_every=1)

    def kill(step, loss):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run(_cfg(data, tmp_path / "o", **kw), on_step=kill)
    assert (tmp_path / "o" / "train_log.jsonl").exists() and not (tmp_path / "o" / "train_config.json").exists()
    with pytest.raises(SpatialctlError, match="pass --resume to continue it or --overwrite"):
        run(_cfg(data, tmp_path / "o", **kw))
    again = run(_cfg(data, tmp_path / "o", resume=True, **kw)).details
    assert again.start_step == 0
    log = (tmp_path / "o" / "train_log.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in log] == [1, 2]
    run(_cfg(data, tmp_path / "o", overwrite=True, **kw))
    before = {p.name: p.read_bytes() for p in (tmp_path / "o").iterdir() if p.is_file()}
    assert "train_config.json" in before
    # --overwrite with bad input: the error comes before anything of the finished run is replaced
    with pytest.raises(SpatialctlError, match="no such QA file"):
        run(_cfg(data, tmp_path / "o", overwrite=True, **{**kw, "qa": str(tmp_path / "missing.jsonl")}))
    assert {p.name: p.read_bytes() for p in (tmp_path / "o").iterdir() if p.is_file()} == before


def test_batches_are_a_function_of_the_step():
    full = StepBatchSampler(10, 2, 2, world=2, rank=1, seed=3, start_step=0, total_steps=6)
    late = StepBatchSampler(10, 2, 2, world=2, rank=1, seed=3, start_step=4, total_steps=6)
    assert list(late) == list(full)[8:]
    # all ranks together see every sample once per epoch
    seen = [i for r in range(2) for b in list(StepBatchSampler(8, 2, 1, 2, r, 0, 0, 2)) for i in b]
    assert sorted(seen) == list(range(8))


def test_two_process_cpu_run_saves_one_adapter(data, tmp_path):
    base, scenes, qa = data
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": REPO, "CUDA_VISIBLE_DEVICES": ""}
    # accelerate's --cpu flag runs one process unless mpirun is set up; --multi_gpu on a machine without CUDA
    # starts 2 processes through torch.distributed, which accelerate runs as MULTI_CPU over gloo.
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "0",
           "-m", "spatialctl", "train-gsm", "--qa", qa,
           "--scenes", scenes, "--base", base, "--out", str(out), "--lora-rank", "4", "--queries", "4",
           "--geo-grid", "2", "--num-frames", "4", "--max-steps", "2", "--batch-size", "2", "--quiet"]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    info = json.loads((out / "train_config.json").read_text())
    assert info["world_size"] == 2 and info["samples_per_step"] == 4
    assert info["distributed_type"] == "MULTI_CPU"
    assert sorted(os.listdir(out / "checkpoints")) == ["step-000002"]
    ckpt = os.listdir(out / "checkpoints" / "step-000002")
    assert {"optimizer-rank0.pt", "optimizer-rank1.pt", "trainable.safetensors"} <= set(ckpt)
    tok = qwen.load_tokenizer(base)
    loaded = gsm.load_adapter(qwen.load_model(base), str(out), tokenizer=tok)
    assert loaded.gsm.cfg.num_queries == 4


def test_cli_errors(cli, data, tmp_path):
    base, scenes, qa = data
    r = cli("train-gsm", "--qa", tmp_path / "missing.jsonl", "--out", tmp_path / "o", "--base", base)
    assert r.exit_code == 1 and "no such QA file" in r.output
    r = cli("train-gsm", "--qa", qa, "--out", tmp_path / "o", "--base", base, "--scenes", tmp_path)
    assert r.exit_code == 1 and "no scene store" in r.output
    r = cli("train-gsm", "--qa", qa, "--out", tmp_path / "o", "--base", base, "--scenes", scenes, "--batch-size", "0")
    assert r.exit_code == 2
    r = cli("train-gsm", "--qa", qa, "--out", tmp_path / "o", "--base", str(tmp_path / "nomodel"), "--scenes", scenes)
    assert r.exit_code == 1 and "model" in r.output
