"""train-gsm under FSDP (2 CPU processes over gloo) gives the single-process adapter and resumes exactly; the
shipped DeepSpeed ZeRO-2 config takes our batch / accumulation / clipping options (DeepSpeed itself needs CUDA)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from gsm_fixtures import make_records, make_scenes, write_records
from safetensors.torch import load_file
from tiny_qwen import make_tiny_qwen

from spatialctl.errors import UsageError
from spatialctl.stages.train_gsm import TrainGSMConfig, run
from spatialctl.stages.train_gsm.distributed import _fill_deepspeed

REPO = Path(__file__).resolve().parents[1]
ACCEL = REPO / "configs" / "accelerate"
WEIGHTS = ("adapter_model.safetensors", "gsm.safetensors")

# FSDP vs one process with the same global batch (2 processes x 2 samples vs 2 micro-batches x 2 samples, which
# StepBatchSampler deals out identically). Each sample's forward and backward run on the same gathered fp32 weights
# with the same kernels in both, and averaging two gradients is exact in binary floating point ((a + b) / 2 in
# either order). What differs is the clipping norm: FSDP sums squares per shard, then across processes, another fp32
# summation order (~1 ulp, 6e-8 relative). Adam's step lr * m / (sqrt(v) + eps) is nearly scale-invariant, so for
# most weights that moves the result by ~lr * 1e-7; but parameters whose exact gradient is zero (attention key
# biases: softmax ignores a shift) receive rounding noise, and where |g| ~ eps Adam multiplies a noise difference
# d by lr / eps. With noise differences d <~ 1e-11 (1 ulp of the ~1e-4 per-token terms summed into them), lr 1e-4
# and eps 1e-8 that is <~ 1e-7 per step: TOL = 1e-6 over 3 steps. (At lr 1e-2 the same noise gives 2.8e-6 on
# gsm.geo_blocks.0.self_attn.k.bias, measured.) Measured here: 0.0; with --full-finetune 6e-8.
TOL = 1e-6


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("train_gsm_dist")
    return make_tiny_qwen(root / "tinyq"), make_scenes(root), write_records(root / "qa.jsonl", make_records(16))


def _args(data, out, **kw) -> dict:
    base, scenes, qa = data
    return {"qa": qa, "scenes": scenes, "base": base, "out": str(out), "lora_rank": 4, "queries": 4, "geo_grid": 2,
            "num_frames": 4, "max_steps": 3, "batch_size": 2, "lora_dropout": 0.0, "lr": 1e-4, "save_every": 1,
            "quiet": True, **kw}


def _launch_fsdp(args: dict, *extra: str) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO), "CUDA_VISIBLE_DEVICES": ""}
    flags = [x for k, v in args.items() if k != "quiet" for x in (f"--{k.replace('_', '-')}", str(v))]
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(ACCEL / "fsdp.yaml"),
           "--main_process_port", "0", "-m", "spatialctl", "train-gsm", *flags, "--quiet", *extra]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]


def test_fsdp_on_two_cpu_processes_gives_the_one_process_adapter_and_resumes_exactly(data, tmp_path):
    fsdp, one = tmp_path / "fsdp", tmp_path / "one"
    _launch_fsdp(_args(data, fsdp))
    info = json.loads((fsdp / "train_config.json").read_text())
    assert info["distributed_type"] == "FSDP" and info["world_size"] == 2 and info["samples_per_step"] == 4

    # sharded, not replicated: each process's Adam moments cover its half of every parameter
    ckpt = fsdp / "checkpoints" / "step-000003"
    trainable = load_file(ckpt / "trainable.safetensors")
    moments = [torch.load(ckpt / f"optimizer-rank{r}.pt")["state"] for r in (0, 1)]
    full = sum(v.numel() for v in trainable.values())
    assert sum(s["exp_avg"].numel() for m in moments for s in m.values()) == full
    assert all(sum(s["exp_avg"].numel() for s in m.values()) < full for m in moments)

    run(TrainGSMConfig(**_args(data, one, grad_accum=2)))
    for name in WEIGHTS:
        a, b = load_file(one / name), load_file(fsdp / name)
        assert a.keys() == b.keys(), name
        assert max((a[k] - b[k]).abs().max().item() for k in a) <= TOL, name
    # the comparison is of trained weights: LoRA's B starts at zero and has moved by far more than TOL
    assert max(v.abs().max().item() for k, v in load_file(fsdp / WEIGHTS[0]).items() if "lora_B" in k) > 100 * TOL

    # resume from step 2 (as after a kill during step 3): the sharded optimizer state goes back exactly
    finished = {name: load_file(fsdp / name) for name in WEIGHTS}
    shutil.rmtree(ckpt)
    for name in (*WEIGHTS, "adapter_config.json", "gsm_config.json", "train_config.json"):
        (fsdp / name).unlink()
    _launch_fsdp(_args(data, fsdp), "--resume")
    for name in WEIGHTS:
        again = load_file(fsdp / name)
        assert again.keys() == finished[name].keys(), name
        assert all(torch.equal(again[k], finished[name][k]) for k in again), name


def _zero2_plugin(tmp_path=None, stage: int = 2):
    """The plugin accelerate builds from the shipped launch config (optionally with another ZeRO stage)."""
    from accelerate.utils import DeepSpeedPlugin

    launch = yaml.safe_load((ACCEL / "deepspeed_zero2.yaml").read_text())
    assert launch["distributed_type"] == "DEEPSPEED"
    path = REPO / launch["deepspeed_config"]["deepspeed_config_file"]
    if stage != 2:
        config = json.loads(path.read_text())
        config["zero_optimization"]["stage"] = stage
        path = tmp_path / "ds.json"
        path.write_text(json.dumps(config))
    return DeepSpeedPlugin(hf_ds_config=str(path))


def test_deepspeed_zero2_config_takes_batch_accumulation_and_clipping_from_the_options(data, tmp_path):
    plugin = _zero2_plugin()
    assert plugin.zero_stage == 2 and "optimizer" not in plugin.deepspeed_config  # our AdamW and its groups
    cfg = TrainGSMConfig(**_args(data, tmp_path, batch_size=3, grad_accum=4, max_grad_norm=0.5))
    _fill_deepspeed(plugin, cfg, world=2)
    got = {k: plugin.deepspeed_config[k] for k in ("train_micro_batch_size_per_gpu", "gradient_accumulation_steps",
                                                      "train_batch_size", "gradient_clipping")}
    assert got == {"train_micro_batch_size_per_gpu": 3, "gradient_accumulation_steps": 4, "train_batch_size": 24,
                   "gradient_clipping": 0.5}

    def autos(d, prefix=""):
        for k, v in d.items():
            yield from autos(v, f"{prefix}{k}.") if isinstance(v, dict) else [f"{prefix}{k}"] * (v == "auto")

    # what is left is filled from --bf16 by accelerate; "auto" sizes that accelerate derives from model.config
    # (reduce_bucket_size) would fail, as our GeometryVLM has none
    assert list(autos(plugin.deepspeed_config)) == ["bf16.enabled"]
    plugin.deepspeed_config["gradient_accumulation_steps"] = 8  # a number that contradicts --grad-accum
    with pytest.raises(UsageError, match="gradient_accumulation_steps=8"):
        _fill_deepspeed(plugin, cfg, world=2)
    with pytest.raises(UsageError, match="stage 3"):
        _fill_deepspeed(_zero2_plugin(tmp_path, stage=3), cfg, world=1)
    with pytest.raises(UsageError, match="--resume"):
        _fill_deepspeed(_zero2_plugin(), TrainGSMConfig(**_args(data, tmp_path, resume=True)), world=1)


def test_deepspeed_launch_without_cuda_is_refused_before_any_output(data, tmp_path, monkeypatch):
    # accelerate would quietly train without DeepSpeed on a machine without CUDA
    monkeypatch.setenv("ACCELERATE_USE_DEEPSPEED", "true")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(UsageError, match="needs CUDA"):
        run(TrainGSMConfig(**_args(data, tmp_path / "out")))
    assert not (tmp_path / "out").exists()
